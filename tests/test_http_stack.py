"""The collector's HTTP endpoints under hostile clients: real 413s, 401 before any body, time bounds on
headers and bodies, and a connection cap that keeps idle connections from using up file descriptors."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus

from test_http_hooks import TOKEN, start_with_http

from hookdb.client.transport import await_reply, connect
from hookdb.client.wire import encode_envelope, frame, new_event_id

from conftest import wait_for, wait_for_rows
from fixtures import corpus

PATH = "/v1/hooks/claude-code"


def raw(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    return sock


def request_head(length: int | None, token: str = TOKEN) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (
        b"POST %s HTTP/1.1\r\nHost: collector\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\n%s\r\n\r\n" % (PATH.encode(), token.encode(), framing)
    )


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """The status line and body of the one response on ``sock`` (which the server then closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0], body


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (whatever it answers first)."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def send_chunks_until_closed(sock: socket.socket) -> threading.Thread:
    """Send an endless chunked body on ``sock`` from a thread that ends when the server closes it."""

    def send() -> None:
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        try:
            while True:
                sock.sendall(chunk)
        except OSError:
            return

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_an_oversized_content_length_is_a_real_413(start_collector) -> None:
    _, port = start_with_http(start_collector, "--set", "http_hooks.max_body_bytes=100000")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"hook_event_name": "PostToolUse", "blob": "x" * 4_000_000}).encode()
    conn.request("POST", PATH, body=body, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()  # the whole body was sent: the server discarded it rather than reset
    assert (response.status, response.reason) == (413, HTTPStatus(413).phrase)
    assert json.loads(response.read()) == {"error": "request body too large"}


def test_an_oversized_chunked_body_is_a_real_413(start_collector) -> None:
    _, port = start_with_http(start_collector, "--set", "http_hooks.max_body_bytes=100000")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    chunks = (b"x" * 65536 for _ in range(60))  # 3.9 MB, no Content-Length
    conn.request("POST", PATH, body=chunks, headers={"Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
    response = conn.getresponse()
    assert (response.status, response.reason) == (413, HTTPStatus(413).phrase)
    assert json.loads(response.read()) == {"error": "request body too large"}


def test_an_endless_chunked_body_is_cut_at_the_limit(start_collector) -> None:
    _, port = start_with_http(start_collector, "--set", "http_hooks.max_body_bytes=100000")
    sock = raw(port, request_head(None))
    sender = send_chunks_until_closed(sock)
    assert read_answer(sock) == (status_line(413), b'{"error": "request body too large"}')
    sender.join(10)
    assert not sender.is_alive()  # the server closed the connection instead of reading on


def test_a_bad_token_is_401_before_any_of_the_body_is_read(start_collector, dsn: str) -> None:
    _, port = start_with_http(start_collector)
    # Headers announce an 8 MB body (under the limit) that never comes: the answer cannot wait for it.
    started = time.monotonic()
    sock = raw(port, request_head(8_000_000, token="not-the-token"))
    line, body = read_answer(sock)
    assert line == status_line(401)
    assert json.loads(body) == {"error": "a valid bearer token is required"}
    assert time.monotonic() - started < 5
    assert closed_within(sock, 10)
    # Endless unauthenticated bodies: each refused and closed, none read into memory.
    senders = []
    for _ in range(10):
        sock = raw(port, request_head(None, token="not-the-token"))
        senders.append((sock, send_chunks_until_closed(sock)))
    for sock, sender in senders:
        assert read_answer(sock)[0] == status_line(401)
        sender.join(10)
        assert not sender.is_alive()
    status = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status.request(
        "POST", PATH, body=corpus.raw_hook_payload("Stop"), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status.getresponse().status == 200
    assert wait_for_rows(dsn, 1) == 1


def test_idle_and_slowloris_connections_are_closed_in_the_configured_time(start_collector) -> None:
    collector, hooks_port = start_with_http(
        start_collector,
        "--set",
        "http_hooks.header_timeout_seconds=1",
        "--set",
        "http_hooks.body_timeout_seconds=1",
        "--set",
        "metrics.header_timeout_seconds=1",
    )
    metrics_port = collector.metrics_port()
    for port in (hooks_port, metrics_port):
        idle = raw(port, b"")
        trickle = raw(port, b"GET /healthz HTTP/1.1\r\nHost: collector\r\n")
        stop = threading.Event()

        def drip(sock: socket.socket = trickle, stop: threading.Event = stop) -> None:  # a byte per 0.2 s
            while not stop.wait(0.2):
                try:
                    sock.sendall(b"X")
                except OSError:
                    return

        dripping = threading.Thread(target=drip, daemon=True)
        dripping.start()
        started = time.monotonic()
        assert closed_within(idle, 5)
        assert closed_within(trickle, 5)
        assert time.monotonic() - started < 5
        stop.set()
    # A body that trickles: answered 408 once the body deadline passes, then closed.
    sock = raw(hooks_port, request_head(1000) + b"{")
    started = time.monotonic()
    assert read_answer(sock)[0] == status_line(408)
    assert time.monotonic() - started < 5
    assert closed_within(sock, 5)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_connections(port: int, n: int) -> Iterator[socket.socket]:
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # connected or in the server's backlog: either way
            sock.connect(("127.0.0.1", port))
        yield sock


def test_the_connection_cap_keeps_idle_connections_from_exhausting_descriptors(
    start_collector, tmp_path, dsn: str
) -> None:
    collector = start_collector(
        "--set", "metrics.max_connections=20", "--set", "metrics.header_timeout_seconds=1"
    )
    pid, port = collector.proc.pid, collector.metrics_port()
    # 100 descriptors in all: without the cap, 120 idle connections would take every one of them.
    subprocess.run(["prlimit", f"--pid={pid}", "--nofile=100:100"], check=True)
    before = open_fds(pid)
    flood = list(idle_connections(port, 120))
    try:
        time.sleep(0.5)
        assert open_fds(pid) <= before + 20
        # Meanwhile the Unix socket takes and acknowledges events...
        client = connect(str(tmp_path / "hookdb.sock"), 5.0)
        try:
            for i in range(20):
                event_id = new_event_id()
                body = encode_envelope(
                    event_id=event_id,
                    occurred_at_ns=time.time_ns(),
                    source="test",
                    event_type="PostToolUse",
                    session_id="capped",
                    tenant=None,
                    payload=json.dumps({"tool_name": "Bash", "i": i}).encode(),
                    ack=True,
                )
                client.sendall(frame(body))
                await_reply(client, event_id, time.monotonic() + 5)
        finally:
            client.close()
        assert wait_for_rows(dsn, 20) == 20
        # ...and /healthz is answered once the idle connections ahead of it have timed out.
        health = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        health.request("GET", "/healthz")
        assert health.getresponse().status == 200
        assert open_fds(pid) <= before + 20
    finally:
        for sock in flood:
            sock.close()
    assert collector.proc.poll() is None
    assert collector.events("http.connections_capped")
    # Every idle connection's descriptor is given back; the events may have opened the second writer's
    # database connection (database.writers = 2), which stays.
    wait_for(lambda: open_fds(pid) <= before + 1, 30)


def test_a_connection_the_client_closed_frees_its_place_at_once(start_collector) -> None:
    collector = start_collector(
        "--set", "metrics.max_connections=5", "--set", "metrics.header_timeout_seconds=60"
    )
    port = collector.metrics_port()
    for _ in range(30):  # six times the cap, one connection each, closed by the client after its answer
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()


def test_a_body_of_many_chunks_in_one_segment_is_read_whole(start_collector, dsn: str) -> None:
    """More chunks arrive at once than the app's queue holds: the app must be running to make room."""
    _, port = start_with_http(start_collector)
    body = json.dumps({"hook_event_name": "Stop", "session_id": "s-chunks", "pad": "x" * 500}).encode()
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    sock = raw(port, request_head(None) + chunks + b"0\r\n\r\n")  # ~70 chunks in one write
    assert read_answer(sock) == (status_line(200), b"{}")
    assert wait_for_rows(dsn, 1) == 1


def test_pipelined_requests_are_answered_in_order(start_collector, dsn: str) -> None:
    _, port = start_with_http(start_collector)
    bodies = [json.dumps({"hook_event_name": "Stop", "session_id": f"s{i}"}).encode() for i in range(3)]
    head = b"".join(request_head(len(body)) + body for body in bodies)
    head += b"GET %s HTTP/1.1\r\nHost: collector\r\n\r\n" % PATH.encode()  # and one refused, last
    sock = raw(port, head)
    data = b""
    while data.count(b"HTTP/1.1 ") < 4 or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    assert re.findall(rb"HTTP/1\.1 [^\r]*", data) == [status_line(200)] * 3 + [status_line(405)]
    assert wait_for_rows(dsn, 3) == 3
