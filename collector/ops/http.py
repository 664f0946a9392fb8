"""A small HTTP/1.1 server on trio and h11 for the collector's own endpoints.

h11 does the protocol (sans-io, like our wire module); this module only moves bytes, bounds request
sizes and times, and hands each request to a handler. One task per connection, all in the caller's
nursery; a handler's exception becomes a 500 for that request alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import h11
import trio

from hookdb.collector.ops import logs

log = logs.get("hookdb.http")

MAX_HEADER_BYTES = 16 * 1024
IDLE_SECONDS = 30.0
READ_BYTES = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts; raises ValueError naming the problem."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


async def serve(
    listen: str,
    handler: Handler,
    *,
    max_body: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``listen`` until cancelled; reports the bound port through ``task_status``."""
    host, port = parse_listen(listen)
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(partial(_serve_connection, handler=handler, max_body=max_body), listeners)


async def _serve_connection(stream: trio.SocketStream, *, handler: Handler, max_body: int) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        while True:
            request = await _read_request(stream, conn, max_body)
            if request is None:
                return
            if isinstance(request, Response):
                response = request
            else:
                try:
                    response = await handler(request)
                except Exception:
                    log.exception("http.handler_failed")
                    response = Response(500, b'{"error": "internal error"}')
            await _send(stream, conn, response)
            if conn.our_state is h11.MUST_CLOSE or isinstance(request, Response):
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.TooSlowError):
        return
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> h11.Event | type[h11.PAUSED]:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        with trio.fail_after(IDLE_SECONDS):
            conn.receive_data(await stream.receive_some(READ_BYTES))


async def _read_request(
    stream: trio.SocketStream, conn: h11.Connection, max_body: int
) -> Request | Response | None:
    """The next request, or a ready error response (too large, malformed), or ``None`` at end."""
    try:
        event = await _next_event(stream, conn)
    except h11.RemoteProtocolError as exc:
        return Response(exc.error_status_hint, b'{"error": "malformed request"}')
    if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
        return None
    assert isinstance(event, h11.Request)
    headers = {name.decode().lower(): value.decode("latin-1") for name, value in event.headers}
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        return Response(413, b'{"error": "request body too large"}')
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    body = bytearray()
    while True:
        part = await _next_event(stream, conn)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > max_body:
                return Response(413, b'{"error": "request body too large"}')
        elif isinstance(part, h11.EndOfMessage):
            return Request(event.method.decode(), path, query, headers, bytes(body))
        else:
            return None


async def _send(stream: trio.SocketStream, conn: h11.Connection, response: Response) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *response.headers,
    ]
    if response.status >= 400 and conn.their_state is not h11.DONE:
        headers.append(("connection", "close"))  # the rest of a refused body is not worth reading
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    data += conn.send(h11.Data(data=response.body)) if response.body else b""
    data += conn.send(h11.EndOfMessage())
    with trio.fail_after(IDLE_SECONDS):
        await stream.send_all(data)
