"""The dashboard's summary (migration 0008): what a batch's new events add to ``event_hours``,
``tool_calls`` and ``tool_call_days``, written in the batch's transaction so the stats never read the log.

A tool call is one ``tool_calls`` row, upserted by its PreToolUse and by its first end, whichever comes
first, in any batch and from any collector: the row lock orders the two, and the upsert returns what the
summary had counted of the call before (``prior``), so each call is counted once as started and moved
once to its duration bucket when it ends. Only new events reach :func:`write` (a redelivered one was not
inserted), and the additions commute: collectors writing at once lock rows in key order and cannot
deadlock. The statements run last in the transaction, to hold the busy rows (this hour's) the shortest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg

from hookdb.collector import classification as cls
from hookdb.collector.store.rows import Row

OPEN_BUCKET = -2  # tool_call_days.bucket of the calls that started and have not ended
_FAILED = "PostToolUseFailure"

_ADD_HOURS = """
INSERT INTO event_hours AS h (tenant_id, hour, events)
SELECT $1::text, * FROM unnest($2::timestamptz[], $3::bigint[])
ON CONFLICT (tenant_id, hour) DO UPDATE SET events = h.events + EXCLUDED.events
"""
# The calls upserted in key order; then what changed in their counting, summed per summary row, added in
# key order. A call's day is its session's start day when its PreToolUse is stored (the session row is
# written earlier in the transaction).
_ADD_CALLS = f"""
WITH up AS (
    INSERT INTO tool_calls AS c (tenant_id, session_id, tool_use_id, tool_name, started_at, ended_at, failed,
                                 day)
    SELECT $1::text, u.sid, u.tuid, u.tool, u.sa, u.ea, u.failed,
           CASE WHEN u.sa IS NOT NULL THEN (SELECT (s.started_at AT TIME ZONE 'UTC')::date FROM sessions s
                                            WHERE s.tenant_id = $1 AND s.session_id = u.sid) END
    FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bool[])
         WITH ORDINALITY AS u (sid, tuid, tool, sa, ea, failed, n)
    ORDER BY n
    ON CONFLICT (tenant_id, session_id, tool_use_id) DO UPDATE SET
        tool_name = CASE WHEN c.started_at IS NULL THEN EXCLUDED.tool_name ELSE c.tool_name END,
        started_at = coalesce(c.started_at, EXCLUDED.started_at),
        day = coalesce(c.day, EXCLUDED.day),
        ended_at = coalesce(c.ended_at, EXCLUDED.ended_at),
        failed = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.failed ELSE c.failed END,
        prior = CASE WHEN c.started_at IS NULL THEN 0 WHEN c.ended_at IS NULL THEN 1 ELSE 2 END
    RETURNING day, coalesce(tool_name, '') AS tool, failed, started_at, ended_at, prior,
              abs(extract(epoch FROM ended_at - started_at) * 1000)::double precision AS ms
), moves AS (
    SELECT day, tool, {OPEN_BUCKET}::smallint AS bucket, -1 AS calls, 0 AS failures,
           NULL::double precision AS ms
    FROM up WHERE day IS NOT NULL AND prior = 1 AND ended_at IS NOT NULL
    UNION ALL
    SELECT day, tool, coalesce(hookdb_duration_bucket(ms), {OPEN_BUCKET}::smallint), 1,
           (ended_at IS NOT NULL AND failed)::int, ms
    FROM up
    WHERE day IS NOT NULL AND started_at IS NOT NULL AND (prior = 0 OR (prior = 1 AND ended_at IS NOT NULL))
)
INSERT INTO tool_call_days AS d (tenant_id, day, tool_name, bucket, calls, failures, min_ms, max_ms)
SELECT $1::text, day, tool, bucket, sum(calls), sum(failures), min(ms), max(ms)
FROM moves GROUP BY day, tool, bucket ORDER BY day, tool, bucket
ON CONFLICT (tenant_id, day, tool_name, bucket) DO UPDATE SET
    calls = d.calls + EXCLUDED.calls, failures = d.failures + EXCLUDED.failures,
    min_ms = least(d.min_ms, EXCLUDED.min_ms), max_ms = greatest(d.max_ms, EXCLUDED.max_ms)
"""
CALL_EVENTS = frozenset({cls.TOOL_CALL_START, *cls.TOOL_CALL_END})


class Call(NamedTuple):
    """What one batch says of a tool call: its earliest start and its earliest end."""

    session_id: str
    tool_use_id: str
    tool_name: str | None
    started_at: datetime | None
    ended_at: datetime | None
    failed: bool


def hour_of(at: datetime) -> datetime:
    """The UTC hour ``event_hours`` counts an event under."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def add_call(calls: dict[tuple[str, str], Call], session_id: str, row: Row, payload: dict[str, Any]) -> None:
    """Fold a tool call event (of ``CALL_EVENTS``) of ``session_id`` into the batch's ``calls``: the
    projection calls this with the payload it decoded, so no event is parsed for the summary."""
    tool_use_id = payload.get("tool_use_id")
    if not isinstance(tool_use_id, str) or "\x00" in tool_use_id:
        return
    key = (session_id, tool_use_id)
    call = calls.get(key) or Call(session_id, tool_use_id, None, None, None, False)
    at = row.occurred_at
    if row.event_type == cls.TOOL_CALL_START:
        if call.started_at is None or at < call.started_at:
            call = call._replace(tool_name=row.tool_name, started_at=at)
    elif call.ended_at is None or at < call.ended_at:
        call = call._replace(ended_at=at, failed=row.event_type == _FAILED)
    calls[key] = call


async def write(
    conn: asyncpg.Connection, tenant: str, hours: dict[datetime, int], calls: dict[tuple[str, str], Call]
) -> None:
    """Add what one tenant's new events (each once, as projected) add to the summary, in key order."""
    if hours:
        await conn.execute(_ADD_HOURS, tenant, *zip(*sorted(hours.items()), strict=True))
    if calls:
        await conn.execute(_ADD_CALLS, tenant, *zip(*(calls[k] for k in sorted(calls)), strict=True))


async def fill(conn: asyncpg.Connection, tenant: str) -> None:
    """Rebuild a tenant's summary from its stored events (for rows inserted without the collector)."""
    await conn.execute("SELECT hookdb_fill_summary($1)", tenant)
