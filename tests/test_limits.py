"""Hostile or broken clients cost only themselves: stalls, silence, floods of connections."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from test_collector import frames_for, send_concurrently

from hookdb.client import Emitter

from conftest import run_sql, wait_for, wait_for_rows


def test_stalled_and_deaf_clients_do_not_stall_others(start_collector, socket_path: Path, dsn: str) -> None:
    collector = start_collector("--set", "listener.idle_seconds=1")
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(str(socket_path))
    stalled.sendall(frames_for(0, 1)[0][:20])  # half a frame, then nothing
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deaf.connect(str(socket_path))
    deaf.setblocking(False)
    unread_acks = 0
    for data in frames_for(1, 20_000, ack=True):  # asks for acks and never reads them
        try:
            deaf.send(data)
        except BlockingIOError:
            break  # the collector stopped reading it: its replies are backed up
        unread_acks += 1

    started = time.monotonic()
    send_concurrently(socket_path, [frames_for(c, 300) for c in range(2, 5)])
    assert wait_for_rows(dsn, 900 + unread_acks, timeout=30) >= 900
    assert time.monotonic() - started < 10

    stalled.settimeout(10)
    assert stalled.recv(1) == b""  # closed by the collector after idle_seconds
    wait_for(lambda: collector.output.count('"connection.idle_closed"') == 2, 30)  # the deaf one too
    stalled.close()
    deaf.close()


def test_connections_beyond_the_limit_wait_their_turn(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector("--set", "listener.max_connections=2", "--set", "listener.idle_seconds=1")
    idle = []
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(socket_path))
        idle.append(s)
    time.sleep(0.2)
    started = time.monotonic()
    send_concurrently(socket_path, [frames_for(9, 10)])  # connects (backlog), served once a slot frees
    assert wait_for_rows(dsn, 10) == 10
    assert time.monotonic() - started >= 0.5  # it had to wait for an idle connection to be closed
    for s in idle:
        s.close()


def test_many_emitters_at_once(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    emitted: set[str] = set()
    lock = threading.Lock()

    def work(n: int) -> None:
        with Emitter(str(socket_path), ack=True, timeout=5) as emitter:
            for i in range(20):
                event_id = str(emitter.emit("PreToolUse", {"n": n, "i": i}))
                with lock:
                    emitted.add(event_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for_rows(dsn, 2000) == 2000
    assert {str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")} == emitted
