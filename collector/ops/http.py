"""Serve a Starlette (ASGI) app with hypercorn's trio worker inside the caller's nursery.

``serve`` runs hypercorn's per-connection server (the one ``hypercorn.trio.serve`` runs) on listeners of
our own, because that function's listeners accept without limit: here accepting waits while an endpoint
has ``max_connections`` open, so the rest queue in the kernel and cost the process no file descriptor. It
also reports the real port when asked for port 0 and gives status lines their reason phrase (hypercorn's
h11 leaves it empty).

``_Server`` trims hypercorn's trips through the scheduler and its per-request work, which made it twice
as slow as the h11 server it replaces. What is left is hypercorn's layering itself (events, streams, a
task per request): with an app that only answers, ~80 µs of CPU and ~0.08 ms more per request than that
server's loop on this project's 2-core machine.

Time and size bounds: hypercorn closes a connection whose request headers are not complete
``header_seconds`` after it opened or after its previous answer, however slowly they trickle;
``read_body`` bounds a body's size and time; ``Refusal`` answers before the body is read and then
discards what the client still sends for a moment, so that client reads the answer rather than a reset.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from typing import NamedTuple

import hypercorn
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, ConnectionState, LifespanState
from hypercorn.typing import Scope as HypercornScope
from hypercorn.utils import parse_socket_addr
from starlette.requests import Request
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
    inline = isinstance(app, WholeRequest)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            await _Server(wrapped, config, context, {}, _Connection(stream), inline=inline).run()
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
            if message["type"] == "http.disconnect":  # nobody to answer; not a failure of ours
                return Response(b'{"error": "the client went away"}', 400, media_type=JSON)
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


class WholeRequest:
    """An ASGI app that answers each request from the request alone (no streaming, no waiting for the
    client's disconnect): ``serve`` runs it in the connection's own task once the whole request has
    arrived, rather than in a task of its own.

    That saves the new task and, above all, the trip through the scheduler between parsing a request
    and answering it, where any other work of the process that is ready (e.g. delivering the previous
    event) would run first. A request whose body is still coming gets its own task as usual, so the app
    may still refuse it early.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


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


class _Server(TCPServer):
    """hypercorn's connection server with fewer trips through trio's scheduler per request.

    Each trip costs ~10-15 µs; hypercorn makes 18 task steps per request (measured with a trio
    instrument) where the h11 server this replaced made 2, and this makes 4. Dropped: yielding to take
    the send lock when it is free, a yield for each ASGI message passed between the connection and the
    app (``_AppQueue``), and a new keep-alive timer task after every answer. The timer is one
    task per connection whose deadline moves (``_KeepAlive``), with hypercorn's behaviour (an idle
    connection closes after ``keep_alive_timeout`` or at once on shutdown, a busy one after its answer)
    and one fix: a connection the client closed while idle is closed at once, not when the timer ends,
    so it frees its place under the cap.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        stream: _Connection,
        *,
        inline: bool,
    ) -> None:
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]  # a plain stream
        self.connection = stream
        self.inline = inline
        self.idle_task = self._keep_alive = _KeepAlive(self.config.keep_alive_timeout)

    async def run(self) -> None:
        """hypercorn's ``TCPServer.run`` for a plain TCP stream, with ``_TaskGroup`` for the apps."""
        socket = self.connection.socket
        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())
            async with _TaskGroup(self.inline) as task_group:
                self._task_group = task_group
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    False,
                    client,
                    server,
                    self.protocol_send,
                    "http/1.1",
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
        except OSError:
            pass
        finally:
            await self._close()

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData) or self.send_lock.locked():
            await super().protocol_send(event)
            return
        data = self.connection.due(event.data)
        if not data:  # a head held for its body, or hypercorn's empty write at the end of an answer
            return
        self.send_lock.acquire_nowait()  # hypercorn's path otherwise
        try:
            with trio.CancelScope(shield=True):
                await self.connection.send_due(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
        finally:
            self.send_lock.release()

    async def _idle_timeout(self) -> None:
        with self._keep_alive.scope:  # expires when the connection has been idle too long
            await self.context.terminated.wait()
            if self._keep_alive.scope.deadline == math.inf:  # busy: hypercorn closes it after the answer
                await trio.sleep_forever()
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def _read_data(self) -> None:
        # hypercorn's loop without its read time-out, which is not set here (``_KeepAlive`` bounds an idle
        # connection) but cost a cancel scope per read.
        while True:
            try:
                data = await self.connection.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            await self.protocol.handle(RawData(data))
            self._task_group.start_waiting()  # a request still incomplete: its app may answer early
            if not data:
                break
        await self.protocol.handle(Closed())
        self._task_group.start_waiting()
        if self._keep_alive.scope.deadline != math.inf:  # the client left while idle: close now
            self._keep_alive.scope.cancel()

    async def _close(self) -> None:
        self._keep_alive.scope.cancel()
        await super()._close()


class _TaskGroup(TaskGroup):
    """hypercorn's task group, handing each app its messages through an ``_AppQueue``; with ``inline``,
    an app waits to be started (see ``WholeRequest``) rather than getting a task at once."""

    def __init__(self, inline: bool) -> None:
        super().__init__()
        self._inline = inline
        self._waiting: _AppQueue | None = None

    async def spawn_app(
        self,
        app: AppWrapper,
        config: Config,
        scope: HypercornScope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        run_sync, from_thread = trio.to_thread.run_sync, trio.from_thread.run
        queue = _AppQueue(config.max_app_queue_size, self.spawn)
        queue.app = partial(_handle, app, config, scope, queue.get, send, run_sync, from_thread)
        if self._inline:
            self._waiting = queue
        else:
            queue.start()
        return queue.put

    def start_waiting(self) -> None:
        """Give the app still waiting to be started (its request is not whole yet) a task of its own."""
        if self._waiting is not None:
            self._waiting.start()
            self._waiting = None


class _AppQueue:
    """The ASGI messages from a connection to its app: a trio memory channel, but ``put`` and ``get``
    go through the scheduler only when they must wait (full, or empty), not once per message.

    A request's body and its end are put by the connection's task one after the other, and the app
    reads them in one go; each would otherwise cost a trip through the scheduler on the way to the
    answer. The app still waits (and so yields) for whatever has not arrived. An ``app`` not started
    yet runs in the putting task when the request's last message is put, and gets a task of its own
    (``start``) when it is needed sooner: the queue is full, or more must be read first.
    """

    def __init__(self, size: int, spawn: Callable[[Callable[[], Awaitable[None]]], None]) -> None:
        self.app: Callable[[], Awaitable[None]] | None = None  # not started yet
        self._spawn = spawn
        self._items: deque[ASGIReceiveEvent] = deque()
        self._size = size
        self._arrived = trio.lowlevel.ParkingLot()
        self._taken = trio.lowlevel.ParkingLot()

    def start(self) -> None:
        """Run the app in a task of its own, unless it has started already."""
        if self.app is not None:
            self._spawn(self.app)
            self.app = None

    async def put(self, message: ASGIReceiveEvent) -> None:
        if len(self._items) >= self._size:
            self.start()  # only the app can make room
        while len(self._items) >= self._size:
            await self._taken.park()
        self._items.append(message)
        self._arrived.unpark()
        if self.app is not None and message["type"] == "http.request" and not message.get("more_body"):
            app, self.app = self.app, None
            await app()  # the whole request is here: answer it in this task

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            await self._arrived.park()
        self._taken.unpark()
        return self._items.popleft()


class _KeepAlive:
    """hypercorn's idle timer (a ``SingleTask``) as a deadline: ``restart`` when a connection goes idle,
    ``stop`` when a request arrives; the first ``restart`` starts the one task that waits for it."""

    def __init__(self, seconds: float) -> None:
        self.scope = trio.CancelScope()
        self._seconds = seconds
        self._started = False

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]) -> None:
        self.scope.deadline = trio.current_time() + self._seconds
        if not self._started:
            self._started = True
            task_group.spawn(action)

    async def stop(self) -> None:
        self.scope.deadline = math.inf


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
    """A TCP stream as hypercorn uses it (``socket``, no TLS handshake), adding reason phrases.

    hypercorn writes a response's head and its body separately; a head with a ``Content-Length`` (whose
    body always follows at once) is held and sent with the body in one segment, which halves the sends
    on the hot path (each one on loopback wakes the client).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket
        self._head = b""

    def due(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """What goes out now when hypercorn writes ``data``: nothing while a response head waits for its
        body (or for hypercorn's empty write at the end of an answer), else the held head and ``data``."""
        line = _STATUS_LINES.get(bytes(data[:_STATUS_LINE_BYTES]))
        if line is not None and data[-4:] == b"\r\n\r\n":  # a whole response head, not a body
            head = line + data[_STATUS_LINE_BYTES:]
            if line[9] != ord("1") and b"\r\ncontent-length:" in head.lower():
                self._head = head
                return b""
            data = head
        if self._head:
            data, self._head = self._head + data, b""
        return data

    async def send_due(self, data: bytes | bytearray | memoryview) -> None:
        """Send what ``due`` returned."""
        await self._stream.send_all(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = self.due(data)
        if data:  # not worth a trip through the scheduler
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._head:
            await self.send_all(b"")
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()
