"""Calls complete in one batch are counted per session (tool_call_sessions) without a tool_calls row: the
stats' tools, whose partial first and last days read them, come out as they do after rebuilding the summary
from the stored events, with one sink or two at once; and what the summary computes in Python of a call
(its duration, bucket and hour) is what PostgreSQL computes of it."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
from test_dashboard_summary import event, rebuilt, summary, write

from hookdb.collector.api import queries
from hookdb.collector.store import summary as summary_module
from hookdb.collector.store.rows import Row

from conftest import migrate, run_sql

DAY1 = datetime(2026, 11, 3, tzinfo=UTC)
RANGE = (DAY1 + timedelta(hours=12), DAY1 + timedelta(days=2, hours=12))  # partial first and last days
# Session → its start: before the range, in its partial first day, its whole day, its partial last day, after.
SESSIONS = {
    "before": DAY1 + timedelta(hours=8),
    "first": DAY1 + timedelta(hours=20),
    "whole": DAY1 + timedelta(days=1, hours=10),
    "last": DAY1 + timedelta(days=2, hours=6),
    "after": DAY1 + timedelta(days=2, hours=18),
}
TOOLS = ("Bash", "Read", None)
DURATIONS_MS = (0.5, 5, 40, 41, 900, 1500, 20_000)


def session_rows(session: str, rng: random.Random, n: int) -> list[Row]:
    """A session's start and ``n`` calls after it, each start followed by its end (some failed, a few never
    ending), in time order."""
    at = SESSIONS[session]
    rows = [event("SessionStart", at, session)]
    for i in range(n):
        at += timedelta(seconds=30)
        call, tool = f"{session}-{i}", rng.choice(TOOLS)
        rows.append(event("PreToolUse", at, session, tool, call))
        if i % 11 != 10:
            end = at + timedelta(milliseconds=rng.choice(DURATIONS_MS))
            rows.append(
                event("PostToolUseFailure" if i % 5 == 0 else "PostToolUse", end, session, tool, call)
            )
    return rows


def batches(seed: int, n: int = 40) -> list[list[Row]]:
    """Every session's rows in batches of 12: most calls start and end in one batch, the others end in the
    next batch, or (their start held back to a last batch) a batch before they start; in shuffled order."""
    rng = random.Random(seed)
    out: list[list[Row]] = []
    for session in SESSIONS:
        rows = session_rows(session, rng, n)
        out += [rows[k : k + 12] for k in range(0, len(rows), 12)]
    late = [b.pop() for b in out[::2] if b[-1].event_type == "PreToolUse"]
    rng.shuffle(out)
    return [*out, late]


def tools(dsn: str) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return await queries.tools(conn, "acme", *RANGE)
        finally:
            await conn.close()

    return asyncio.run(go())


def check_live_equals_rebuilt(dsn: str, sinks: int) -> None:
    migrate(dsn)
    written = batches(seed=sinks)
    assert sum(write(dsn, *written, sinks=sinks)) == sum(map(len, written))
    assert run_sql(dsn, "SELECT count(*) FROM tool_call_sessions")[0][0] > 0  # calls complete in a batch
    assert run_sql(dsn, "SELECT count(*) FROM tool_calls")[0][0] > 0  # and the others
    live_tools, live = tools(dsn), summary(dsn)
    assert live == rebuilt(dsn)
    assert run_sql(dsn, "SELECT count(*) FROM tool_call_sessions") == [(0,)]  # rebuilt: every call a row
    assert live_tools == tools(dsn)
    in_range = {s for s, at in SESSIONS.items() if RANGE[0] <= at < RANGE[1]}
    starts = Counter(r.tool_name for b in written for r in b
                     if r.event_type == "PreToolUse" and r.session_id in in_range)  # fmt: skip
    assert {t.tool: t.calls for t in live_tools} == starts


def test_tools_of_partial_days_from_per_session_counts_equal_a_rebuild(dsn: str) -> None:
    check_live_equals_rebuilt(dsn, sinks=1)


def test_two_sinks_counting_the_same_sessions_at_once_equal_a_rebuild(dsn: str) -> None:
    check_live_equals_rebuilt(dsn, sinks=2)


def test_durations_buckets_and_hours_are_computed_as_postgresql_does(dsn: str) -> None:
    rng = random.Random(3)
    t0 = datetime(2026, 11, 3, 23, 59, 59, 999_999, tzinfo=UTC)
    micros = [0, 1, 999, 1000, 1001, 1500, 86_400_000_000 + 7, 10**13]
    micros += [round(2 ** (k / 8) * 1000) + d for k in range(0, 200) for d in (-1, 0, 1)]  # bucket edges
    micros += [2**k * 1000 for k in range(0, 30)]  # whole powers of two milliseconds
    micros += [rng.randrange(1, 10**11) for _ in range(3000)]
    starts = [t0 + timedelta(microseconds=rng.randrange(-(10**12), 10**12)) for _ in micros]
    ends = [s + timedelta(microseconds=m * rng.choice((1, -1))) for s, m in zip(starts, micros, strict=True)]
    migrate(dsn)
    got = run_sql(
        dsn,
        "SELECT abs(extract(epoch FROM e - s) * 1000)::double precision AS ms, "
        "hookdb_duration_bucket(abs(extract(epoch FROM e - s) * 1000)::double precision) AS bucket, "
        "date_trunc('hour', s AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour "
        "FROM unnest($1::timestamptz[], $2::timestamptz[]) WITH ORDINALITY AS u (s, e, n) ORDER BY n",
        starts,
        ends,
    )
    ours = [summary_module.duration_ms(s, e) for s, e in zip(starts, ends, strict=True)]
    assert ours == [r["ms"] for r in got]
    assert [summary_module.bucket(ms) for ms in ours] == [r["bucket"] for r in got]
    # Hours of times in another zone and across hours count as the hours PostgreSQL truncates them to.
    zone = timezone(timedelta(hours=5, minutes=30))
    rows = [event("Notification", s.astimezone(zone)) for s in starts]
    hours = summary_module.count_hours(rows)
    assert sum(hours.values()) == len(rows)
    expected = Counter(r["hour"] for r in got)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert {epoch + n * timedelta(hours=1): c for n, c in hours.items()} == expected
    one_hour = [event("Notification", t0 - timedelta(minutes=m)) for m in range(59)]
    assert summary_module.count_hours(one_hour) == {(t0 - epoch) // timedelta(hours=1): 59}
