"""The sink inserts a batch as all new and writes it again with ON CONFLICT when it holds an event already
stored (or one twice): each event is stored and projected once either way, every tenant of the batch alike.

Real PostgreSQL, ``PostgresSink`` in-process.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import trio
import trio_asyncio

from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row
from hookdb.collector.store.sink import PostgresSink

from conftest import run_sql

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def rows(tenant: str, count: int, start: int = 0) -> list[Row]:
    return [
        Row(tenant, uuid.uuid4(), T0 + timedelta(seconds=start + i), T0, "s", "Notification", None, "app",
            None, None, None, b'{"message": "hi"}')
        for i in range(count)
    ]  # fmt: skip


def counts(dsn: str) -> dict[str, tuple[int, int]]:
    """tenant → (stored events, the session's event_count)."""
    stored = dict(run_sql(dsn, "SELECT tenant_id, count(*) FROM hook_audit_log GROUP BY 1"))
    sessions = dict(run_sql(dsn, "SELECT tenant_id, event_count FROM sessions"))
    return {t: (stored[t], sessions[t]) for t in stored}


def test_a_batch_with_stored_or_repeated_events_is_written_again_and_counts_each_new_event_once(
    dsn: str,
) -> None:
    first = rows("alpha", 3)
    fresh, other = rows("alpha", 2, start=10), rows("beta", 1)

    async def write() -> tuple[list[int], list[bool]]:
        async with trio_asyncio.open_loop():
            sink = await PostgresSink.connect(ConnectOptions(dsn=dsn))
            inserted, all_new = [], []
            try:
                for batch in (
                    first,
                    # Two events already stored, one twice in the batch, and a new one of another tenant,
                    # whose rows the retry writes again: the failed attempt rolled back as a whole.
                    [*other, first[0], *fresh, first[1], fresh[0]],
                    rows("alpha", 2, start=20),  # all new again
                ):
                    inserted.append(await sink.write(batch))
                    all_new.append(sink._all_new)
            finally:
                await sink.aclose()
            return inserted, all_new

    inserted, all_new = trio.run(write)
    assert inserted == [3, 3, 2]
    assert all_new == [True, False, True]  # tried as all new again after a batch that was
    assert counts(dsn) == {"alpha": (7, 7), "beta": (1, 1)}


def test_a_sessions_meta_keeps_each_keys_latest_event_whatever_order_the_batches_commit_in(dsn: str) -> None:
    """Two SDK Results and two ends of one session in two batches, the later batch committed first (two
    writers, delivery processes or collectors): each meta key is the later event's."""

    def event(event_type: str, payload: bytes, at: datetime) -> Row:
        return Row(
            "alpha", uuid.uuid4(), at, at, "s", event_type, None, "agent-sdk", None, None, None, payload
        )

    later = [
        event("Result", b'{"num_turns": 7, "subtype": "success", "total_cost_usd": 0.5}', T0 + timedelta(1)),
        event("SessionEnd", b'{"reason": "logout"}', T0 + timedelta(1)),
    ]
    earlier = [
        event("Result", b'{"num_turns": 3, "subtype": "error_max_turns", "is_error": true}', T0),
        event("SessionEnd", b'{"reason": "clear"}', T0),
    ]

    async def write() -> None:
        async with trio_asyncio.open_loop():
            sink = await PostgresSink.connect(ConnectOptions(dsn=dsn))
            try:
                await sink.write(later)
                await sink.write(earlier)
            finally:
                await sink.aclose()

    trio.run(write)
    [(meta,)] = run_sql(dsn, "SELECT meta FROM sessions")
    meta = json.loads(meta)
    assert (meta["num_turns"], meta["subtype"], meta["end_reason"]) == (7, "success", "logout")
    assert meta["is_error"] is True  # set by the earlier event only: nothing later replaced it
