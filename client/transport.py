"""Blocking, time-bounded delivery of frames over the collector's Unix socket.

Built on ``_socket`` rather than ``socket``: the public module imports ``enum`` and ``selectors``,
which would double the start-up cost of every ``hookdb-emit`` run.
"""

from __future__ import annotations

import _socket


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


def send_frames(path: str, data: bytes, timeout: float) -> None:
    """Connect, send ``data`` whole, and close; raises ``OSError`` on any failure or time-out."""
    sock = connect(path, timeout)
    try:
        sock.sendall(data)
    finally:
        sock.close()
