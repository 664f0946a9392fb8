"""A collector alive and accepting but never reading costs an agent's run one time-out, not one per hook."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookdb.client import Emitter
from hookdb.client.emit_cli import DEFAULT_SEND_TIMEOUT
from hookdb.client.transport import UNRESPONSIVE_MARKER

from conftest import BIN, run_sql, wait_for_rows

HOOKS = 12  # a Claude Code run: SessionStart, prompts, tool uses, Stop


@pytest.fixture
def hung_socket(tmp_path: Path) -> Iterator[Path]:
    """A Unix socket whose server accepts every connection and never reads or replies."""
    path = tmp_path / "hookdb.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return  # closed

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(5)
        for conn in held:
            conn.close()


def run_hooks(socket_path: Path, n: int) -> tuple[float, list[bytes]]:
    """``n`` sequential ``hookdb-emit`` runs; their total wall time and each one's stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_OUTBOX", "HOOKDB_EMIT_TIMEOUT")}
    env["HOOKDB_SOCKET"] = str(socket_path)
    errors = []
    started = time.monotonic()
    for i in range(n):
        hook = b'{"hook_event_name": "PreToolUse", "session_id": "hung", "i": %d}' % i
        result = subprocess.run(
            [str(BIN / "hookdb-emit")], input=hook, capture_output=True, env=env, timeout=30, check=False
        )
        assert (result.returncode, result.stdout) == (0, b"")
        errors.append(result.stderr)
    return time.monotonic() - started, errors


def test_12_hooks_against_a_hung_collector_cost_one_timeout_and_land_once(
    hung_socket: Path, tmp_path: Path, start_collector, dsn: str
) -> None:
    baseline, _ = run_hooks(tmp_path / "nowhere" / "hookdb.sock", HOOKS)  # refused at once: the outbox
    hung, errors = run_hooks(hung_socket, HOOKS)
    assert hung - baseline <= DEFAULT_SEND_TIMEOUT + 1.0  # without the marker: 12 time-outs, +6 s
    assert all(b"timed out" in e and b"event kept in" in e for e in errors), errors
    outbox = tmp_path / "outbox"
    assert (outbox / UNRESPONSIVE_MARKER).exists()
    assert len(list(outbox.glob("*.out"))) == HOOKS

    os.unlink(hung_socket)  # the hung collector is replaced by a real one
    start_collector()
    assert wait_for_rows(dsn, HOOKS) == HOOKS
    later = 0
    while later < 5:  # a busy test machine may miss the brief probe once or twice: still nothing lost
        later += 1
        if run_hooks(hung_socket, 1)[1] == [b""]:
            break  # an ack in time: the marker is cleared
    assert not (outbox / UNRESPONSIVE_MARKER).exists()
    assert wait_for_rows(dsn, HOOKS + later) == HOOKS + later
    time.sleep(1)
    rows = run_sql(dsn, "SELECT count(*), count(DISTINCT event_id) FROM hook_audit_log")
    assert tuple(rows[0]) == (HOOKS + later, HOOKS + later)  # exactly once


def test_an_emitter_pays_one_timeout_then_probes_until_an_ack_comes_back(hung_socket: Path) -> None:
    with Emitter(str(hung_socket), ack=True, timeout=DEFAULT_SEND_TIMEOUT) as emitter:
        started = time.monotonic()
        for i in range(HOOKS):
            emitter.emit("PreToolUse", {"i": i})
        assert time.monotonic() - started <= DEFAULT_SEND_TIMEOUT + 1.0
        assert (emitter.sent, emitter.outboxed, emitter.lost) == (0, HOOKS, 0)
    assert (hung_socket.parent / "outbox" / UNRESPONSIVE_MARKER).exists()
