"""Rows the collector itself fails to prepare (a bug in its projections, or an input nothing foresaw) are
isolated like rows PostgreSQL refuses: the event at fault is dead-lettered with the error, the batch's
other events are written, and delivery goes on. Before, the exception stopped the collector, at every start
again while the event stayed in the spool.

Real PostgreSQL, a real spool directory, the delivery stages in-process; the fault is injected into the
projections' search step for one event.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from hookdb.client.wire import encode_envelope, new_event_id
from hookdb.collector.delivery.breaker import Breaker
from hookdb.collector.delivery.checkpoint import Commits
from hookdb.collector.delivery.pipeline import (
    Batch,
    Delivery,
    Item,
    prepare_batches,
    spool_checkpoint,
    to_item,
)
from hookdb.collector.intake.admission import admit_frames
from hookdb.collector.intake.tenancy import Grant
from hookdb.collector.ops.health import Health
from hookdb.collector.spool import deadletters
from hookdb.collector.spool.segments import Position, Spool
from hookdb.collector.store import search
from hookdb.collector.store.connect import ConnectOptions

from conftest import run_sql


def item(payload: dict[str, Any], event_id: str) -> Item:
    body = encode_envelope(
        event_id=event_id,
        occurred_at_ns=time.time_ns(),
        source="claude-code",
        event_type="PreToolUse",
        session_id="s",
        tenant=None,
        payload=json.dumps({"tool_name": "Bash", **payload}).encode(),
    )
    (entry,) = admit_frames([body], None, Grant("default", frozenset()), time.time_ns()).entries
    return to_item(entry, Position(1, 0))


def test_an_event_the_collector_cannot_prepare_is_dead_lettered_and_the_rest_delivered(
    dsn: str, tmp_path: Path, monkeypatch
) -> None:
    def document(row: Any, payload: dict[str, Any]) -> Any:
        if "poison" in payload:
            raise KeyError("nothing foresaw this")
        return real(row, payload)

    real = search.document
    monkeypatch.setattr(search, "document", document)
    ids = [new_event_id() for _ in range(7)]
    items = [
        item({"poison": True} if i == 4 else {"tool_input": {"command": f"ls {i}"}}, e)
        for i, e in enumerate(ids)
    ]
    spool, _ = Spool.open(
        tmp_path / "spool", fsync="never", fsync_interval=1.0, segment_bytes=1 << 20, max_bytes=1 << 30,
        max_record=1 << 20,
    )  # fmt: skip
    breaker = Breaker()
    delivery = Delivery(
        options=ConnectOptions(dsn=dsn),
        checkpoint=spool_checkpoint(spool, commits := Commits()),
        breaker=breaker,
        health=Health(breaker=breaker, spool=spool),
        state_dir=tmp_path,
        write_timeout=30,
        retry_seconds=0.1,
        health_check_seconds=30,
    )

    async def deliver() -> None:
        with trio.fail_after(60):
            async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
                batches_in, batches_out = trio.open_memory_channel[Batch](1)
                ready_in, ready_out = trio.open_memory_channel[Batch](1)
                nursery.start_soon(prepare_batches, batches_out, ready_in, 65536)
                nursery.start_soon(delivery.run, ready_out)
                async with batches_in:
                    await batches_in.send(Batch(items, commits.issue()))

    trio.run(deliver)
    stored = {str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")}
    assert stored == set(ids) - {ids[4]}
    letters = [x for path in deadletters.pending_files(tmp_path) for x in deadletters.read(path)]
    assert [(x.event_id, x.error) for x in letters] == [
        (ids[4], "Unpreparable: KeyError: 'nothing foresaw this'")
    ]
    assert run_sql(dsn, "SELECT event_count FROM sessions")[0][0] == 6
