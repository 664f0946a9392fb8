"""Hostile or broken clients cost only themselves: stalls, silence, floods of connections."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import msgspec
from test_collector import frames_for, send_concurrently

from hookdb.client import Emitter
from hookdb.client.protocol import Reply
from hookdb.client.wire import encode_envelope, frame, new_event_id

from conftest import in_threads, run_sql, wait_for, wait_for_rows


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

    in_threads(work, ((n,) for n in range(100)))
    assert wait_for_rows(dsn, 2000) == 2000
    assert {str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")} == emitted


def test_a_frame_that_makes_handling_fail_costs_only_itself(
    start_collector, socket_path: Path, dsn: str
) -> None:
    """A payload nested 5,000 deep: whatever it raises in the collector, only its own connection pays."""
    collector = start_collector()
    nested = b"[" * 5000 + b"]" * 5000
    body = encode_envelope(
        event_id=new_event_id(),
        occurred_at_ns=time.time_ns(),
        source="app",
        event_type="PostToolUse",
        session_id="deep",
        tenant=None,
        payload=nested,
        ack=True,
    )
    others = threading.Thread(
        target=send_concurrently, args=(socket_path, [frames_for(c, 200) for c in range(3)])
    )
    others.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
        bad.settimeout(10)
        bad.connect(str(socket_path))
        bad.sendall(frame(body))
        reply = read_reply(bad)
        assert bad.recv(1) == b""  # and the connection is closed
    others.join()
    assert reply.status != "accepted"
    assert wait_for_rows(dsn, 600) == 600
    assert collector.proc.poll() is None
    with Emitter(str(socket_path), ack=True, timeout=5) as emitter:  # still serving
        emitter.emit("Stop", {"after": "the deep one"})
        assert emitter.sent == 1
    if reply.status == "internal_error":  # nothing foresaw it: the frame is kept as a dead letter
        letters = (collector.log_path.parent / "state" / "deadletter" / "deadletter.jsonl").read_text()
        assert [msgspec.json.decode(line)["envelope"] for line in letters.splitlines()] == [
            base64.b64encode(body).decode()
        ]
        assert len(collector.events("frame.rejected")) == 1


def read_reply(sock: socket.socket) -> Reply:
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed without a reply"
        data += chunk
    return msgspec.msgpack.decode(data[4:], type=Reply)
