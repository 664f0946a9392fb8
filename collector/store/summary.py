"""The dashboard's summary (migrations 0008 and 0010): what a batch's new events add to ``event_hours``,
``tool_calls``, ``tool_call_sessions`` and ``tool_call_days``, written in the batch's transaction so the
stats never read the log.

A tool call whose PreToolUse and first end are both in the batch is complete here: its duration bucket is
computed here and it is added to its session's counts (``tool_call_sessions``) and its day's
(``tool_call_days``), with no row of its own. Any other call is one ``tool_calls`` row, upserted by its
PreToolUse and by its first end, whichever comes first, in any batch and from any collector: the row lock
orders the two, and the upsert returns what the summary had counted of the call before (``prior``), so each
call is counted once as started and moved once to its duration bucket when it ends. Only new events reach
:func:`write` (a redelivered one was not inserted), and the additions commute: collectors writing at once
lock rows table by table (``tool_calls``, ``tool_call_sessions``, ``tool_call_days``) in key order and
cannot deadlock. The statements run last in the transaction, to hold the busy rows (this hour's) the
shortest. A call complete in one batch leaves nothing to meet a later event of the same ``tool_use_id``
under another event id (the same hook installed twice): that one counts the call again, where rebuilding
the summary from the log counts it once.

What PostgreSQL would compute per call is computed here, alike: a call's day is its session's start day,
from the session upsert earlier in the transaction; its duration in milliseconds is the exact microseconds
rounded once to a double, and :func:`bucket` does ``hookdb_duration_bucket``'s arithmetic.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import asyncpg

from hookdb.collector import classification as cls
from hookdb.collector.spool.entry import EPOCH
from hookdb.collector.store.rows import Row, since_epoch

OPEN_BUCKET = -2  # tool_call_days.bucket of the calls that started and have not ended
_START = cls.TOOL_CALL_START
_FAILED = "PostToolUseFailure"
_HOUR = timedelta(hours=1)
_MS = timedelta(milliseconds=1)
_LN2 = math.log(2.0)

_ADD_HOURS = """
INSERT INTO event_hours AS h (tenant_id, hour, events)
SELECT $1::text, * FROM unnest($2::timestamptz[], $3::bigint[])
ON CONFLICT (tenant_id, hour) DO UPDATE SET events = h.events + EXCLUDED.events
"""
# The calls not complete in the batch, upserted in key order; each answers what it holds now and what the
# summary had counted of it before. A call's day is its session's start day when its PreToolUse is stored.
_UPSERT_CALLS = """
INSERT INTO tool_calls AS c (tenant_id, session_id, tool_use_id, tool_name, started_at, ended_at, failed, day)
SELECT $1::text, u.sid, u.tuid, u.tool, u.sa, u.ea, u.failed, u.day
FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bool[], $8::date[])
     WITH ORDINALITY AS u (sid, tuid, tool, sa, ea, failed, day, n)
ORDER BY n
ON CONFLICT (tenant_id, session_id, tool_use_id) DO UPDATE SET
    tool_name = CASE WHEN c.started_at IS NULL THEN EXCLUDED.tool_name ELSE c.tool_name END,
    started_at = coalesce(c.started_at, EXCLUDED.started_at),
    day = coalesce(c.day, EXCLUDED.day),
    ended_at = coalesce(c.ended_at, EXCLUDED.ended_at),
    failed = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.failed ELSE c.failed END,
    prior = CASE WHEN c.started_at IS NULL THEN 0 WHEN c.ended_at IS NULL THEN 1 ELSE 2 END
RETURNING day, tool_name, started_at, ended_at, failed, prior
"""
# Counts added to the summary rows, in key order (the arrays' order).
_ADD_SESSIONS = """
INSERT INTO tool_call_sessions AS t (tenant_id, session_id, tool_name, bucket, calls, failures, min_ms,
                                     max_ms)
SELECT $1::text, * FROM unnest($2::text[], $3::text[], $4::smallint[], $5::bigint[], $6::bigint[],
                               $7::float8[], $8::float8[])
ON CONFLICT (tenant_id, session_id, tool_name, bucket) DO UPDATE SET
    calls = t.calls + EXCLUDED.calls, failures = t.failures + EXCLUDED.failures,
    min_ms = least(t.min_ms, EXCLUDED.min_ms), max_ms = greatest(t.max_ms, EXCLUDED.max_ms)
"""
_ADD_DAYS = """
INSERT INTO tool_call_days AS d (tenant_id, day, tool_name, bucket, calls, failures, min_ms, max_ms)
SELECT $1::text, * FROM unnest($2::date[], $3::text[], $4::smallint[], $5::bigint[], $6::bigint[],
                               $7::float8[], $8::float8[])
ON CONFLICT (tenant_id, day, tool_name, bucket) DO UPDATE SET
    calls = d.calls + EXCLUDED.calls, failures = d.failures + EXCLUDED.failures,
    min_ms = least(d.min_ms, EXCLUDED.min_ms), max_ms = greatest(d.max_ms, EXCLUDED.max_ms)
"""
CALL_EVENTS = frozenset({_START, *cls.TOOL_CALL_END})


class Call(NamedTuple):
    """What a batch says of a tool call it holds only the start or the end of: its ``tool_calls`` upsert."""

    session_id: str
    tool_use_id: str
    tool_name: str | None
    started_at: datetime | None
    ended_at: datetime | None
    failed: bool


@dataclass(slots=True)
class Calls:
    """A batch's tool call events by (session, tool_use_id): the earliest PreToolUse and the earliest end
    of each call (kept as their rows: nothing is built per event)."""

    starts: dict[tuple[str, str], Row] = field(default_factory=dict)
    ends: dict[tuple[str, str], Row] = field(default_factory=dict)


@dataclass(slots=True)
class Count:
    """What a batch adds to one summary row: calls (-1 for a call moved out of the open bucket), failures,
    and the least and greatest duration among them (None: none ended)."""

    calls: int
    failures: int = 0
    min_ms: float | None = None
    max_ms: float | None = None

    def add(self, other: Count) -> None:
        self.calls += other.calls
        self.failures += other.failures
        if other.min_ms is not None and (self.min_ms is None or other.min_ms < self.min_ms):
            self.min_ms = other.min_ms
        if other.max_ms is not None and (self.max_ms is None or other.max_ms > self.max_ms):
            self.max_ms = other.max_ms


K = TypeVar("K", bound=tuple[Any, ...])


def _add(counts: dict[K, Count], key: K, add: Count) -> None:
    count = counts.get(key)
    if count is None:
        counts[key] = Count(add.calls, add.failures, add.min_ms, add.max_ms)
    else:
        count.add(add)


_occurred_at = operator.attrgetter("occurred_at")


def count_hours(rows: Sequence[Row]) -> dict[int, int]:
    """Events per UTC hour ``event_hours`` counts them under, by the hour's number since the epoch. Without
    a Python frame per event (this runs for every event): a batch within one hour, nearly every batch, is
    counted by its least and greatest time."""
    times = list(map(_occurred_at, rows))
    if not times:
        return {}
    first, last = since_epoch((min(times), max(times)), _HOUR)
    if first == last:
        return {first: len(times)}
    return Counter(since_epoch(times, _HOUR))


def add_call(calls: Calls, session_id: str, row: Row, tool_use_id: object) -> None:
    """Fold a tool call event (of ``CALL_EVENTS``) of ``session_id`` into the batch's ``calls``: the
    projection calls this with the ``tool_use_id`` of the payload it decoded, so no event is parsed for the
    summary."""
    if not isinstance(tool_use_id, str) or "\x00" in tool_use_id:
        return
    key = (session_id, tool_use_id)
    side = calls.starts if row.event_type == _START else calls.ends
    seen = side.get(key)
    if seen is None or row.occurred_at < seen.occurred_at:
        side[key] = row


def bucket(ms: float) -> int:
    """``hookdb_duration_bucket(ms)``, by the same floating-point operations."""
    return -1 if ms < 1 else math.floor(math.log(ms) / _LN2 * 8)


def duration_ms(started_at: datetime, ended_at: datetime) -> float:
    """``abs(extract(epoch FROM ended_at - started_at) * 1000)::double precision``: the exact microseconds,
    divided by 1000 and rounded once."""
    return abs(ended_at - started_at) / _MS


def _columns(counts: dict[K, Count]) -> list[Sequence[Any]]:
    """The counts as one array per column, keys first, in key order."""
    rows = [(*key, c.calls, c.failures, c.min_ms, c.max_ms) for key, c in sorted(counts.items())]
    return list(zip(*rows, strict=True))


async def write(
    conn: asyncpg.Connection,
    tenant: str,
    hours: Mapping[int, int],
    calls: Calls,
    started: Mapping[str, datetime],
) -> None:
    """Add what one tenant's new events (each once, as projected) add to the summary, in key order.
    ``started`` holds the start of each of their sessions as stored in this transaction."""
    if hours:
        numbers = sorted(hours)  # each hour made a datetime once, not once per event
        await conn.execute(
            _ADD_HOURS, tenant, [EPOCH + n * _HOUR for n in numbers], [hours[n] for n in numbers]
        )
    if not calls.starts and not calls.ends:
        return
    days = {session: at.astimezone(UTC).date() for session, at in started.items()}
    # The complete calls' durations by session, tool and bucket (and how many failed): gathered per call,
    # counted per summary row.
    durations: dict[tuple[str, str, int], list[float]] = {}
    failed: dict[tuple[str, str, int], int] = {}
    partial = []
    for key, start in calls.starts.items():
        end = calls.ends.get(key)
        if end is None:
            partial.append(Call(*key, start.tool_name, start.occurred_at, None, False))
            continue
        ms = duration_ms(start.occurred_at, end.occurred_at)
        row_key = (key[0], start.tool_name or "", bucket(ms))
        if (found := durations.get(row_key)) is None:
            durations[row_key] = [ms]
        else:
            found.append(ms)
        if end.event_type == _FAILED:
            failed[row_key] = failed.get(row_key, 0) + 1
    for key, end in calls.ends.items():
        if key not in calls.starts:
            partial.append(Call(*key, None, None, end.occurred_at, end.event_type == _FAILED))
    per_session = {k: Count(len(ms), failed.get(k, 0), min(ms), max(ms)) for k, ms in durations.items()}
    per_day: dict[tuple[date, str, int], Count] = {}
    for (session, tool, in_bucket), count in per_session.items():
        _add(per_day, (days[session], tool, in_bucket), count)
    if partial:
        partial.sort()
        call_days = [None if c.started_at is None else days[c.session_id] for c in partial]
        for row in await conn.fetch(_UPSERT_CALLS, tenant, *zip(*partial, strict=True), call_days):
            _move(per_day, row)
    if per_session:
        await conn.execute(_ADD_SESSIONS, tenant, *_columns(per_session))
    if per_day:
        await conn.execute(_ADD_DAYS, tenant, *_columns(per_day))


def _move(per_day: dict[tuple[date, str, int], Count], row: asyncpg.Record) -> None:
    """What an upserted call changes in its day's counts, from what it holds now and what was counted of it
    before (``prior``: 0 nothing, 1 started, 2 ended): counted as started, or moved to its bucket, once."""
    day, started_at, ended_at, prior = row["day"], row["started_at"], row["ended_at"], row["prior"]
    if day is None or started_at is None or prior == 2 or (prior == 1 and ended_at is None):
        return
    tool = row["tool_name"] or ""
    if prior == 1:
        _add(per_day, (day, tool, OPEN_BUCKET), Count(-1))
    if ended_at is None:
        _add(per_day, (day, tool, OPEN_BUCKET), Count(1))
    else:
        ms = duration_ms(started_at, ended_at)
        _add(per_day, (day, tool, bucket(ms)), Count(1, int(row["failed"]), ms, ms))


async def fill(conn: asyncpg.Connection, tenant: str) -> None:
    """Rebuild a tenant's summary from its stored events (for rows inserted without the collector)."""
    await conn.execute("SELECT hookdb_fill_summary($1)", tenant)
