"""Blocking, time-bounded delivery of frames over the collector's Unix socket.

Built on ``_socket`` rather than ``socket``: the public module imports ``enum`` and ``selectors``,
which would double the start-up cost of every ``hookdb-emit`` run.

A collector that is alive but not answering (accepting, not reading) would cost every event the full
time-out. So a time-out is remembered for a while by every client of the outbox directory
(:class:`Unresponsive`): meanwhile each send is only a brief probe before the event goes to the outbox,
and the first ack that comes back in time forgets it.
"""

import _socket
import os
import time

from hookdb.client.wire import ACCEPTED, BUSY, HEADER_SIZE, encode_reply, frame

PROBE_TIMEOUT = 0.03  # the time-out of a send while a recent time-out is remembered: 11 of them < 0.5 s
UNRESPONSIVE_SECONDS = 30.0  # how long a time-out is remembered after the last one
UNRESPONSIVE_MARKER = "collector-unresponsive"  # in the outbox directory, which every client may write
_BUSY_REPLY = encode_reply(None, BUSY)
_BUSY_FRAME = frame(_BUSY_REPLY)
_BUSY_MESSAGE = "the collector refused the connection: this user holds too many"


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
    if reply == _BUSY_REPLY:  # not a verdict on the event: it goes to the outbox
        raise ConnectionRefusedError(_BUSY_MESSAGE)
    if reply != encode_reply(event_id, ACCEPTED):
        raise Refused(reply)


def send(sock: _socket.socket, data: bytes) -> None:
    """``sendall``; when the collector closed the connection first, say why if it told us (busy)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError) as exc:
        sock.setblocking(False)
        try:
            busy = sock.recv(len(_BUSY_FRAME)) == _BUSY_FRAME
        except OSError:
            busy = False
        if busy:
            raise ConnectionRefusedError(_BUSY_MESSAGE) from exc
        raise


def deliver(path: str, data: bytes, event_id: str, timeout: float) -> None:
    """Connect, send one acknowledged frame and wait for its ack, all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    sock = connect(path, timeout)
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        send(sock, data)
        await_reply(sock, event_id, deadline)
    finally:
        sock.close()


class Unresponsive:
    """The memory of a recent time-out: the mtime of a marker file in the outbox directory.

    Shared by every client process of that directory; every failure to read or write it is ignored
    (at worst a send waits its full time-out).
    """

    def __init__(self, outbox_dir: str) -> None:
        self.path = os.path.join(outbox_dir, UNRESPONSIVE_MARKER)
        try:
            self._since: float | None = os.stat(self.path).st_mtime
        except OSError:
            self._since = None

    @property
    def recent(self) -> bool:
        """A time-out happened within the last ``UNRESPONSIVE_SECONDS``: send only a brief probe."""
        return self._since is not None and time.time() - self._since < UNRESPONSIVE_SECONDS

    def timeout(self, timeout: float) -> float:
        """The time-out for the next send: ``timeout``, or a brief probe after a recent time-out."""
        return min(timeout, PROBE_TIMEOUT) if self.recent else timeout

    def remember(self) -> None:
        """A send timed out: (re)start the period of brief probes, for this process even if not for others."""
        self._since = time.time()
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o660))
            os.utime(self.path)
        except OSError:
            pass

    def forget(self) -> None:
        """An ack came back in time: later sends wait their full time-out again."""
        if self._since is not None:
            self._since = None
            try:  # noqa: SIM105 - contextlib would cost start-up time
                os.unlink(self.path)
            except OSError:
                pass
