"""Blocking, time-bounded delivery of frames over the collector's Unix socket.

Built on ``_socket`` rather than ``socket``: the public module imports ``enum`` and ``selectors``,
which would double the start-up cost of every ``hookdb-emit`` run.
"""

from __future__ import annotations

import _socket
import time

from hookdb.client.wire import ACCEPTED, HEADER_SIZE, encode_reply


class Refused(Exception):
    """The collector answered the frame with a refusal; sending it again cannot help."""

    def __init__(self, reply: bytes) -> None:
        super().__init__(f"refused by the collector: {reply!r}")
        self.reply = reply


def connect(path: str, timeout: float) -> _socket.socket:
    """Open a stream connection to ``path``; every later call on it is bounded by ``timeout`` seconds."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _recv_exact(sock: _socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the collector closed the connection before replying")
        data += chunk
    return data


def await_reply(sock: _socket.socket, event_id: str, deadline: float) -> None:
    """Wait until ``deadline`` for the reply to ``event_id``; raise ``Refused`` unless it is an ack.

    Raises ``OSError`` (``TimeoutError`` included) when no reply comes in time.
    """
    length = int.from_bytes(_recv_exact(sock, HEADER_SIZE, deadline), "big")
    if length > 1 << 16:
        raise ConnectionError(f"a reply of {length} bytes is not a hookdb reply")
    reply = _recv_exact(sock, length, deadline)
    if reply != encode_reply(event_id, ACCEPTED):
        raise Refused(reply)


def deliver(path: str, data: bytes, event_id: str, timeout: float) -> None:
    """Connect, send one acknowledged frame and wait for its ack, all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    sock = connect(path, timeout)
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(data)
        await_reply(sock, event_id, deadline)
    finally:
        sock.close()
