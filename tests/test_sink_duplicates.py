"""The sink inserts a batch as all new and writes it again with ON CONFLICT when it holds an event already
stored (or one twice): each event is stored and projected once either way, every tenant of the batch alike.

Real PostgreSQL, ``PostgresSink`` in-process.
"""

from __future__ import annotations

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
