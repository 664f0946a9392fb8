"""Serve a Starlette (ASGI) app with hypercorn's trio worker inside the caller's nursery.

``serve`` runs hypercorn's per-connection server (the one ``hypercorn.trio.serve`` runs) on listeners of
our own, because that function's listeners accept without limit: here accepting waits while an endpoint
has ``max_connections`` open, so the rest queue in the kernel and cost the process no file descriptor. It
also reports the real port when asked for port 0 and gives status lines their reason phrase (hypercorn's
h11 leaves it empty).

Time and size bounds: hypercorn closes a connection whose request headers are not complete
``header_seconds`` after it opened or after its previous answer, however slowly they trickle;
``read_body`` bounds a body's size and time; ``Refusal`` answers before the body is read and then
discards what the client still sends for a moment, so that client reads the answer rather than a reset.
"""

from __future__ import annotations

import logging
from functools import partial
from http import HTTPStatus
from typing import NamedTuple

import hypercorn
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hookdb.collector.ops import logs

log = logs.get("hookdb.http")

JSON = "application/json"
LINGER_SECONDS = 1.0
TOO_LARGE = b'{"error": "request body too large"}'
TOO_SLOW = b'{"error": "the request body took too long"}'

# h11 writes a response head as one chunk starting "HTTP/1.1 200 \r\n" (empty reason): its replacement.
_STATUS_LINES = {
    b"HTTP/1.1 %d \r\n" % status: b"HTTP/1.1 %d %s\r\n" % (status, status.phrase.encode())
    for status in HTTPStatus
}
_STATUS_LINE_BYTES = len(b"HTTP/1.1 200 \r\n")


class Limits(NamedTuple):
    """What one HTTP endpoint allows a client."""

    max_connections: int
    header_seconds: float  # from a connection's start or its previous answer to a request's full headers


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts; raises ValueError naming the problem."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


async def serve(
    name: str,
    app: ASGIApp,
    listen: str,
    limits: Limits,
    *,
    stop: trio.Event | None = None,  # None: until cancelled
    grace_seconds: float = 3.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` until cancelled, or until ``stop`` is set and the requests in progress
    have had ``grace_seconds`` to finish; reports the bound port through ``task_status``."""
    host, port = parse_listen(listen)
    sockets = await trio.open_tcp_listeners(port, host=host)
    config = hypercorn.Config()
    config.keep_alive_timeout = limits.header_seconds
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our logging set-up
    context = WorkerContext(None)
    cap = _Cap(name, limits.max_connections)
    wrapped = ASGIWrapper(app)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            await TCPServer(wrapped, config, context, {}, _Connection(stream))  # type: ignore[arg-type]
        finally:
            await trio.aclose_forcefully(stream)
            cap.release()

    listeners = [_CappedListener(sock, cap) for sock in sockets]
    task_status.started(sockets[0].socket.getsockname()[1])
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(
                partial(trio.serve_listeners, connection, listeners, handler_nursery=connections)
            )
            if stop is None:
                await trio.sleep_forever()
            await stop.wait()
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        await context.terminated.set()  # idle connections close now, busy ones after their answer
        connections.cancel_scope.deadline = trio.current_time() + grace_seconds


async def read_body(request: Request, limit: int, seconds: float) -> bytes | Response:
    """The request's whole body, or the answer refusing it: 413 as soon as it is known to exceed ``limit``
    (from ``Content-Length``, before reading any of it), 408 if it takes longer than ``seconds``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return Refusal(TOO_LARGE, 413)
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(seconds):
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            size += len(chunk)
            if size > limit:  # a chunked body: stop reading at the limit
                return Refusal(TOO_LARGE, 413) if more else Response(TOO_LARGE, 413, media_type=JSON)
            chunks.append(chunk)
            if not more:
                return b"".join(chunks)
    return Response(TOO_SLOW, 408, {"connection": "close"}, media_type=JSON)


async def internal_error(request: Request, exc: Exception) -> Response:
    """The answer to a request whose handler failed: a 500 for that request alone."""
    log.error("http.handler_failed", path=request.url.path, error=repr(exc))
    return Response(b'{"error": "internal error"}', 500, media_type=JSON)


class Refusal(Response):
    """An error answered while the request body is still unread (or partly read).

    The answer is sent in full first; then what the client still sends is discarded (never kept) for at
    most ``LINGER_SECONDS``, because closing a connection with unread data resets it, and a client busy
    sending its body would see that reset instead of the answer.
    """

    media_type = JSON

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        with trio.move_on_after(LINGER_SECONDS):
            while (await receive()).get("more_body", False):
                pass
        await send({"type": "http.response.body", "body": b""})


class _Cap:
    """The connections one endpoint may have open; at the cap, accepting waits (logged once per episode)."""

    def __init__(self, name: str, limit: int) -> None:
        self._name = name
        self._limit = limit
        self._free = trio.Semaphore(limit)
        self._full = False

    async def acquire(self) -> None:
        if self._free.value == 0 and not self._full:
            self._full = True
            log.warning("http.connections_capped", endpoint=self._name, max_connections=self._limit)
        await self._free.acquire()
        if self._free.value > 0:
            self._full = False

    def release(self) -> None:
        self._free.release()


class _CappedListener(trio.abc.Listener[trio.SocketStream]):
    def __init__(self, inner: trio.SocketListener, cap: _Cap) -> None:
        self._inner = inner
        self._cap = cap

    async def accept(self) -> trio.SocketStream:
        await self._cap.acquire()
        try:
            return await self._inner.accept()
        except BaseException:
            self._cap.release()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Connection(trio.abc.HalfCloseableStream):
    """A TCP stream as hypercorn uses it (``socket``, no TLS handshake), adding reason phrases."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        line = _STATUS_LINES.get(bytes(data[:_STATUS_LINE_BYTES]))
        if line is not None and data[-4:] == b"\r\n\r\n":  # a whole response head, not a body
            data = line + data[_STATUS_LINE_BYTES:]
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()
