"""A session's timeline pairs each tool call's start with its end, however far apart, and a page costs what
is near it, not the session's length: through a real ``hookdb api`` and the read queries on a real
PostgreSQL.

A page's calls are paired among the session's events within ``queries.NEAR`` of it; the calls left
unpaired there (a subagent's Agent call, a background command, a call still running) are found by the times
the summary's ``tool_calls`` row gives, or, for a call without one (complete in one batch, or stored some
other way, as these tests store events), looked for in the whole session. Either way a start pairs with the
first end of its ``tool_use_id`` and an end with the first start, as SQL over the whole session says.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import seed
from test_api import TOKENS, add_event, all_pages, client

from hookdb.collector.api import queries, reader
from hookdb.collector.api.models import EventQuery

from conftest import migrate, run_sql

START = seed.BASE + timedelta(days=5)
MINUTE = 60.0
# Every first start and first end per (session, tool_use_id), as the whole session says.
FIRSTS = """
SELECT DISTINCT ON (payload->>'tool_use_id', event_type = 'PreToolUse')
       event_id::text, occurred_at, event_type = 'PreToolUse' AS is_start, payload->>'tool_use_id' AS id
FROM hook_audit_log
WHERE tenant_id = 'acme' AND session_id = $1
  AND event_type IN ('PreToolUse', 'PostToolUse', 'PostToolUseFailure')
ORDER BY payload->>'tool_use_id', event_type = 'PreToolUse', occurred_at
"""


def tool_event(
    dsn: str, session_id: str, offset: float, kind: str, tool_use_id: str, tool: str = "Bash"
) -> None:
    add_event(
        dsn,
        session_id,
        kind,
        START + timedelta(seconds=offset),
        {"tool_name": tool, "tool_use_id": tool_use_id, "tool_input": {"command": f"run {tool_use_id}"}},
        tool_name=tool,
    )


def bulk_calls(dsn: str, session_id: str, calls: int, every: float, lasting: float) -> None:
    """``calls`` Bash calls, one each ``every`` seconds from START, each ending ``lasting`` seconds later."""
    run_sql(
        dsn,
        """INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type,
                                       tool_name, source, payload)
           SELECT 'acme', gen_random_uuid(), t, t, $1::text, kind, 'Bash', 'claude-code',
                  jsonb_build_object('hook_event_name', kind, 'session_id', $1, 'tool_name', 'Bash',
                                     'tool_use_id', 'tu-' || n, 'tool_input',
                                     jsonb_build_object('command', 'echo ' || n))
           FROM generate_series(1, $2) n,
                LATERAL (VALUES ('PreToolUse', 0.0), ('PostToolUse', $4::float8)) e(kind, after),
                LATERAL (SELECT $5::timestamptz + (n * $3::float8 + after) * interval '1 s' AS t) at""",
        session_id,
        calls,
        every,
        lasting,
        START,
    )


def expected_pairs(dsn: str, session_id: str) -> dict[str, tuple[str | None, float | None]]:
    """Each stored event's counterpart and duration, by event id, from the whole session."""
    firsts = {(r["id"], r["is_start"]): r for r in run_sql(dsn, FIRSTS, session_id)}
    rows = run_sql(
        dsn,
        "SELECT event_id::text, occurred_at, event_type, payload->>'tool_use_id' AS id FROM hook_audit_log "
        "WHERE tenant_id = 'acme' AND session_id = $1",
        session_id,
    )
    expected: dict[str, tuple[str | None, float | None]] = {}
    for r in rows:
        other = firsts.get((r["id"], r["event_type"] != "PreToolUse")) if r["id"] else None
        expected[r["event_id"]] = (
            (other["event_id"], abs((other["occurred_at"] - r["occurred_at"]).total_seconds()) * 1000)
            if other
            else (None, None)
        )
    return expected


@pytest.mark.parametrize("summary", [False, True], ids=["scanned", "summarized"])
def test_calls_near_and_far_pair_as_the_whole_session_says(dsn: str, start_api: Any, summary: bool) -> None:
    """Short calls, calls across pages, an Agent call spanning the session, a call lasting longer than NEAR,
    a start without an end, an end without a start, and a tool_use_id that ended twice (its first end
    counts): every page of the timeline pairs each as SQL over the whole session does, whether the far ones
    are found through the summary's tool_calls or by a scan of the session."""
    migrate(dsn)
    sid = "s-pairs"
    run_sql(
        dsn,
        "INSERT INTO sessions (tenant_id, session_id, status, started_at, updated_at) "
        "VALUES ('acme', $1, 'active', $2, $2)",
        sid,
        START,
    )
    long = queries.NEAR.total_seconds() * 3
    tool_event(dsn, sid, 0, "PreToolUse", "tu-agent", "Agent")
    for n in range(60):  # a short call every 20 s: 20 minutes, longer than NEAR
        tool_event(dsn, sid, 1 + 20 * n, "PreToolUse", f"tu-short-{n}")
        tool_event(dsn, sid, 1 + 20 * n + 3, "PostToolUse", f"tu-short-{n}")
    tool_event(dsn, sid, 5, "PreToolUse", "tu-build")
    tool_event(dsn, sid, 5 + long, "PostToolUse", "tu-build")  # past NEAR of the page its start is on
    tool_event(dsn, sid, 6, "PreToolUse", "tu-running")  # never ends
    tool_event(dsn, sid, 7 * MINUTE, "PostToolUseFailure", "tu-orphan")  # its start was never stored
    tool_event(dsn, sid, 8 * MINUTE, "PreToolUse", "tu-twice")
    tool_event(dsn, sid, 8 * MINUTE + 1, "PostToolUseFailure", "tu-twice")
    tool_event(dsn, sid, 30 * MINUTE, "PostToolUse", "tu-twice")  # a later end: not its first
    tool_event(dsn, sid, long + 10, "PostToolUse", "tu-agent", "Agent")
    if summary:
        run_sql(dsn, "SELECT hookdb_fill_summary('acme')")
        assert run_sql(dsn, "SELECT count(*) AS n FROM tool_calls")[0]["n"] == 60 + 5
    expected = expected_pairs(dsn, sid)
    assert (
        sum(1 for pair, _ in expected.values() if pair) == 2 * 60 + 2 + 2 + 2 + 1
    )  # tu-twice's later end too

    api = start_api(dsn, TOKENS)
    with client(api) as http:
        for limit in (7, 40, 500):
            events = all_pages(http, f"/api/sessions/{sid}/events", limit=limit)
            assert len(events) == len(expected)
            got = {e["event_id"]: (e["paired_event_id"], e["duration_ms"]) for e in events}
            assert got == expected, limit


async def _rows_read_per_page(dsn: str, session_id: str, limit: int) -> list[int]:
    """The hook_audit_log and tool_calls rows PostgreSQL reads for each page of the session's timeline
    (each page in a transaction of its own, as the reader gives one, counted by pg_stat_xact_user_tables:
    its counts since they were last flushed to the cumulative statistics, so the difference across the
    page)."""
    conn = await asyncpg.connect(dsn)
    await reader._setup(conn)  # the reader's codecs: jsonb as the JSON text
    read = (
        "SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)::bigint "
        "FROM pg_stat_xact_user_tables WHERE relname LIKE 'hook_audit_log%' OR relname = 'tool_calls'"
    )
    counts: list[int] = []
    page_cursor: Any = None
    try:
        while True:
            async with conn.transaction(readonly=True):
                await conn.execute("SELECT set_config('hookdb.tenant', 'acme', true)")
                before = await conn.fetchval(read)
                query = (
                    EventQuery(limit=limit)
                    if page_cursor is None
                    else EventQuery(limit=limit, cursor=page_cursor)
                )
                page = await queries.events(conn, "acme", session_id, query)
                counts.append(await conn.fetchval(read) - before)
            page_cursor = page.next_cursor
            if page_cursor is None:
                return counts
    finally:
        await conn.close()


CALLS, EVERY = 5000, 10.0  # a session of 5,000 calls, one every 10 s for 14 hours
NEAR_ROWS = 2 * queries.NEAR.total_seconds() / EVERY * 2  # both events of each call within NEAR either side


def test_a_page_reads_what_is_near_it_not_the_whole_session(dsn: str) -> None:
    """Calls of 2 s: each page of 500 events reads the page and the calls within NEAR of it (~620 rows),
    not every call of the session again (10,000 rows a page, which made an export of a long session cost
    the square of its length)."""
    migrate(dsn)
    bulk_calls(dsn, "s-long", CALLS, EVERY, lasting=2.0)
    run_sql(dsn, "ANALYZE hook_audit_log")
    counts = asyncio.run(_rows_read_per_page(dsn, "s-long", 500))
    assert len(counts) == 2 * CALLS // 500
    assert max(counts) <= 2 * 501 + NEAR_ROWS + 10, counts  # the page (twice: the page, its calls), the near


def test_calls_longer_than_near_are_found_by_the_summary_not_a_scan(dsn: str) -> None:
    """Calls of 30 minutes, longer than NEAR: most of a page's calls end (or started) beyond it, and each is
    found at the time its tool_calls row gives (that row and the event read), not by reading the session's
    calls (in the log or in the summary) again for every page. Another session's calls are in the summary
    too: a page never reads them."""
    migrate(dsn)
    bulk_calls(dsn, "s-slow", CALLS, EVERY, lasting=30 * MINUTE)
    bulk_calls(dsn, "s-beside", CALLS, EVERY, lasting=30 * MINUTE)
    run_sql(dsn, "SELECT hookdb_fill_summary('acme')")
    run_sql(dsn, "ANALYZE hook_audit_log")
    counts = asyncio.run(_rows_read_per_page(dsn, "s-slow", 500))
    assert len(counts) == 2 * CALLS // 500
    assert max(counts) <= 2 * 501 + NEAR_ROWS + 2 * 501 + 50, counts  # and a call and an event per far one
