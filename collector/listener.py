"""The Unix socket listener: accepts clients, splits their streams into frames, validates each.

A bad frame costs only its own connection; a slow client costs only its own task; when the pipeline
is full, connections stop being read (backpressure) rather than anything being dropped.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import trio

from hookdb.client.wire import FrameDecoder, ProtocolError
from hookdb.collector import logs, metrics
from hookdb.collector.events import Peer, Row, event_row

log = logs.get("hookdb.listener")

_PEERCRED = struct.Struct("3i")


class SocketInUse(RuntimeError):
    """Another live process is serving the socket path."""


async def bind_socket(path: str, mode: int) -> trio.socket.SocketType:
    """Bind and listen on ``path``: replace a stale socket file, never a live one or a non-socket."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
        probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            os.unlink(path)  # a dead collector's socket
            log.info("socket.stale_replaced", path=path)
        else:
            raise SocketInUse(f"another collector is serving {path}; stop it first")
        finally:
            probe.close()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, mode)
    sock.listen(socket.SOMAXCONN)
    return sock


def peer_of(sock: trio.socket.SocketType) -> Peer | None:
    try:
        return Peer(*_PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)))
    except OSError:
        return None


class Listener:
    """Serves client connections and hands each valid event to ``accept``.

    ``close_reading`` (shutdown) stops every connection from waiting for more data; each then takes
    what the kernel already holds for it without waiting, hands over its complete frames, and closes.
    """

    def __init__(
        self,
        *,
        accept: Callable[[Row], Awaitable[None]],
        default_tenant: str,
        max_frame_bytes: int,
        read_bytes: int,
    ) -> None:
        self._accept = accept
        self._default_tenant = default_tenant
        self._max_frame_bytes = max_frame_bytes
        self._read_bytes = read_bytes
        self._closing = False
        self._reads: set[trio.CancelScope] = set()

    def close_reading(self) -> None:
        self._closing = True
        for scope in self._reads:
            scope.cancel()

    async def serve(self, sock: trio.socket.SocketType) -> None:
        """Accept connections until ``close_reading``; return when every connection is done."""
        listener = trio.SocketListener(sock)
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as accepting:
                self._reads.add(accepting)
                while not self._closing:
                    stream = await listener.accept()
                    nursery.start_soon(self._serve_connection, stream)
        await listener.aclose()

    async def _read(self, stream: trio.SocketStream) -> bytes | None:
        """The next bytes from a client; ``b""`` at end of stream, ``None`` once reading is closed."""
        if not self._closing:
            with trio.CancelScope() as scope:
                self._reads.add(scope)
                try:
                    return await stream.receive_some(self._read_bytes)
                finally:
                    self._reads.discard(scope)
        try:  # shutting down: what the kernel holds is ours to keep, so take it without waiting
            return os.read(stream.socket.fileno(), self._read_bytes) or b""
        except BlockingIOError:
            return None

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        peer = peer_of(stream.socket)
        decoder = FrameDecoder(self._max_frame_bytes)
        metrics.connections_open.inc()
        try:
            while (data := await self._read(stream)) is not None:
                if not data:
                    decoder.end_of_stream()
                    return
                decoder.receive_data(data)
                received_at = datetime.now(UTC)
                while (body := decoder.next_frame()) is not None:
                    row = event_row(body, peer, received_at, self._default_tenant)
                    metrics.events_received.inc()
                    await self._accept(row)
            if decoder.buffered:
                log.warning("connection.cut_by_shutdown", peer=peer, partial_bytes=decoder.buffered)
        except ProtocolError as exc:
            metrics.events_rejected.labels(exc.reason).inc()
            log.warning("frame.rejected", reason=exc.reason, detail=exc.detail, peer=peer)
        except (trio.BrokenResourceError, ConnectionError) as exc:
            log.info("connection.broken", peer=peer, error=str(exc), partial_bytes=decoder.buffered)
        finally:
            metrics.connections_open.dec()
            with trio.CancelScope(shield=True):
                await stream.aclose()
