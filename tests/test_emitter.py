"""``Emitter`` inside an agent process: never raises, never blocks for long, reconnects by itself."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import trio

from hookdb.client import Emitter

from conftest import run_sql, wait_for_rows


def test_collector_down_costs_little_never_raises_and_loses_nothing(
    start_collector, socket_path: Path, dsn: str
) -> None:
    emitter = Emitter(str(socket_path))
    started = time.monotonic()
    ids = [emitter.emit("PreToolUse", {"i": i}, session_id="s") for i in range(100)]
    assert time.monotonic() - started < 1.0
    assert all(isinstance(i, uuid.UUID) for i in ids)
    assert (emitter.sent, emitter.outboxed, emitter.lost) == (0, 100, 0)
    emitter.close()  # hands the outbox file to the collector
    start_collector()
    assert wait_for_rows(dsn, 100) == 100
    assert {r[0] for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")} == set(ids)
    assert list((socket_path.parent / "outbox").glob("*.out")) == []


def test_a_stuck_collector_blocks_emit_no_longer_than_the_timeout(tmp_path: Path) -> None:
    """A listener that accepts but never reads: the kernel buffer fills, then emit gives up in time."""
    path = tmp_path / "stuck.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        emitter = Emitter(str(path), timeout=0.05)
        big = {"blob": "x" * 200_000}
        worst = 0.0
        for _ in range(500):
            started = time.monotonic()
            emitter.emit("PostToolUse", big)
            worst = max(worst, time.monotonic() - started)
            if emitter.outboxed >= 3:
                break
        assert emitter.outboxed >= 3
        assert worst < 0.5  # one timeout per attempt, two attempts at most, plus scheduling slack


def test_unencodable_payload_is_dropped_not_raised(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    emitter = Emitter(str(socket_path))
    emitter.emit("Stop", {"not json": object()})
    assert emitter.lost == 1
    emitter.emit("Stop", {"fine": True})
    assert wait_for_rows(dsn, 1) == 1


def test_reconnects_after_the_collector_restarts(start_collector, socket_path: Path, dsn: str) -> None:
    first = start_collector()
    emitter = Emitter(str(socket_path))
    emitter.emit("SessionStart", {"n": 1}, session_id="s")
    wait_for_rows(dsn, 1)
    assert first.stop() == 0
    emitter.emit("Stop", {"n": 2}, session_id="s")  # collector gone: into the outbox, not raised
    start_collector()
    emitter.emit("SessionEnd", {"n": 3}, session_id="s")  # sent to the new collector
    assert wait_for_rows(dsn, 3) == 3  # the Stop too, once the new collector drains the outbox
    assert sorted(r[0] for r in run_sql(dsn, "SELECT event_type FROM hook_audit_log")) == [
        "SessionEnd",
        "SessionStart",
        "Stop",
    ]


def test_emit_from_asyncio_and_trio(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    emitter = Emitter(str(socket_path))

    async def from_asyncio() -> None:
        emitter.emit("PreToolUse", {"loop": "asyncio"}, source="agent-sdk")

    async def from_trio() -> None:
        emitter.emit("PreToolUse", {"loop": "trio"}, source="agent-sdk")

    asyncio.run(from_asyncio())
    trio.run(from_trio)
    assert wait_for_rows(dsn, 2) == 2
    loops = {
        r[0] for r in run_sql(dsn, "SELECT payload->>'loop' FROM hook_audit_log WHERE source = 'agent-sdk'")
    }
    assert loops == {"asyncio", "trio"}
