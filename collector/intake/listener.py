"""The Unix socket listener: accepts clients, splits their streams into frames, spools each valid one.

A bad frame costs only its own connection; so does any exception while handling a connection (a frame
that made it is refused, told why and kept as a dead letter), never the process. A slow or stuck client
costs only its own task (and is closed after ``listener.idle_seconds``); when the spool is full,
connections stop being read (backpressure) rather than anything being dropped. File descriptors are a
budget: the soft ``RLIMIT_NOFILE`` is raised to the hard limit, ``listener.max_connections`` is kept below
it with room for everything else, one uid may hold at most ``listener.max_connections_per_uid``
connections (more are refused at once, so one local user cannot starve the others), and an accept that
fails for want of descriptors or memory is retried after a pause instead of ending the accept loop.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import resource
import socket
import stat
import struct
import time
import uuid
from collections import Counter
from contextlib import suppress
from pathlib import Path

import msgspec
import trio

from hookdb.client.protocol import Reply
from hookdb.client.wire import (
    ACCEPTED,
    BUSY,
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    ProtocolError,
    encode_reply,
    frame,
)
from hookdb.collector.intake.admission import INTERNAL_ERROR, KeptRefusal, admit_frames, fit
from hookdb.collector.intake.tenancy import Grant, TenantPolicy
from hookdb.collector.ops import logs, metrics
from hookdb.collector.spool import deadletters
from hookdb.collector.spool.entry import Peer
from hookdb.collector.spool.segments import Spool

log = logs.get("hookdb.listener")

_PEERCRED = struct.Struct("3i")
REPLY_SECONDS = 5.0  # how long a refusal may wait for a client that does not read
# Out of descriptors or kernel memory: what trio.serve_listeners also waits out rather than dying of.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_SECONDS = 0.1
# Descriptors kept for everything but client connections: spool segments, database connections, the
# HTTP listeners and their connections, outbox and dead-letter files, logs, trio's own (at most a quarter
# of a small limit).
RESERVED_FDS = 256

# An event id as MessagePack text, encoded in C: str(uuid) and encode_reply cost more than the rest of an ack.
_uuid_text = msgspec.msgpack.Encoder().encode
_ACCEPTED_HEAD, _ACCEPTED_TAIL = frame(encode_reply(str(uuid.UUID(int=0)), ACCEPTED)).split(
    _uuid_text(uuid.UUID(int=0))
)


def accepted_frame(event_id: uuid.UUID) -> bytes:
    """The reply frame accepting ``event_id``: ``frame(encode_reply(str(event_id), ACCEPTED))``, faster."""
    return b"".join((_ACCEPTED_HEAD, _uuid_text(event_id), _ACCEPTED_TAIL))


class SocketInUse(RuntimeError):
    """Another live process is serving the socket path, or the path is not a socket."""


class _Idle(Exception):
    pass


async def bind_socket(path: str, mode: int, owner: str = "", group: str = "") -> trio.socket.SocketType:
    """Bind and listen on ``path``: replace a stale socket file, never a live one or a non-socket.

    ``owner`` and ``group`` (names or ids; empty: unchanged) and ``mode`` decide who may connect.
    """
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
    if owner or group:
        os.chown(path, _user_id(owner), _group_id(group))
    sock.listen(socket.SOMAXCONN)
    return sock


def _user_id(name: str) -> int:
    if not name:
        return -1
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid


def _group_id(name: str) -> int:
    if not name:
        return -1
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def connection_cap(max_connections: int, other_connections: int = 0) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return ``max_connections`` kept below it, with
    room for ``other_connections`` (the HTTP listeners' caps) and the collector's own files.

    Clamped (with one log line) rather than refused by ``check-config``: the limit is the running
    process's, which a configuration file cannot know.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return max_connections
    cap = max(soft - min(RESERVED_FDS + other_connections, soft // 4 + other_connections), 1)
    if max_connections > cap:
        log.warning(
            "listener.max_connections_clamped",
            max_connections=max_connections,
            clamped_to=cap,
            fd_limit=soft,
            reserved_fds=soft - cap,
        )
        return cap
    return max_connections


def peer_of(sock: trio.socket.SocketType) -> Peer | None:
    try:
        return Peer(*_PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)))
    except OSError:
        return None


class Listener:
    """Serves client connections and appends each valid frame to the spool.

    ``close_reading`` (shutdown) stops accepting and stops every connection from waiting for more data;
    each then takes what the kernel already holds for it without waiting, spools its complete frames,
    and closes.
    """

    def __init__(
        self,
        *,
        spool: Spool,
        tenants: TenantPolicy,
        state_dir: Path,
        max_frame_bytes: int,
        read_bytes: int,
        max_connections: int,
        max_connections_per_uid: int,
        idle_seconds: float,
        other_connections: int = 0,
    ) -> None:
        self._spool = spool
        self._tenants = tenants
        self._state_dir = state_dir
        self._max_frame_bytes = max_frame_bytes
        self._read_bytes = read_bytes
        self._idle_seconds = idle_seconds
        self._slots = trio.Semaphore(connection_cap(max_connections, other_connections))
        self._max_per_uid = max_connections_per_uid
        self._per_uid: Counter[int | None] = Counter()  # open connections by the peer's uid
        self._capped: set[int | None] = set()  # uids refused since they were last below the cap
        self._closing = False
        self._waits: set[trio.CancelScope] = set()

    def close_reading(self) -> None:
        self._closing = True
        for scope in self._waits:
            scope.cancel()

    async def serve(self, sock: trio.socket.SocketType) -> None:
        """Accept connections until ``close_reading``; return when every connection is done."""
        listener = trio.SocketListener(sock)
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as accepting:
                self._waits.add(accepting)
                while not self._closing:
                    await self._slots.acquire()
                    try:
                        stream = await self._accept(listener)
                    except BaseException:
                        self._slots.release()
                        raise
                    peer = peer_of(stream.socket)
                    if self._admit_connection(peer):
                        nursery.start_soon(self._serve_connection, stream, peer)
                    else:
                        self._refuse_busy(stream)
        await listener.aclose()

    async def _accept(self, listener: trio.SocketListener) -> trio.SocketStream:
        """The next connection; out of descriptors or memory, wait until one can be accepted."""
        retries = 0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                if not retries:
                    log.warning(
                        "listener.accept_failing",
                        error=errno.errorcode[exc.errno],
                        open_connections=sum(self._per_uid.values()),
                        retry_seconds=ACCEPT_RETRY_SECONDS,
                    )
                metrics.accept_retries.inc()
                retries += 1
                await trio.sleep(ACCEPT_RETRY_SECONDS)
            else:
                if retries:
                    log.info("listener.accept_resumed", retries=retries)
                return stream

    def _admit_connection(self, peer: Peer | None) -> bool:
        """Count the connection to its uid, or say no when that uid already holds its share."""
        uid = peer.uid if peer is not None else None
        if self._per_uid[uid] >= self._max_per_uid:
            metrics.connections_refused.labels("uid_cap").inc()
            if uid not in self._capped:  # once per episode, not once per refused connection
                self._capped.add(uid)
                log.warning(
                    "connection.uid_cap_reached", peer=peer, max_connections_per_uid=self._max_per_uid
                )
            return False
        self._per_uid[uid] += 1
        return True

    def _release_connection(self, peer: Peer | None) -> None:
        uid = peer.uid if peer is not None else None
        self._per_uid[uid] -= 1
        if not self._per_uid[uid]:
            del self._per_uid[uid]
            self._capped.discard(uid)

    def _refuse_busy(self, stream: trio.SocketStream) -> None:
        """Tell the client at once (its send buffer is empty: never blocks) and close: it uses its outbox."""
        try:
            with suppress(OSError):
                os.write(stream.socket.fileno(), frame(encode_reply(None, BUSY)))
            stream.socket.close()
        finally:
            self._slots.release()

    async def _read(self, stream: trio.SocketStream) -> bytes | None:
        """The next bytes from a client: ``b""`` at end of stream, ``None`` once reading is closed."""
        if not self._closing:
            with trio.CancelScope(deadline=trio.current_time() + self._idle_seconds) as scope:
                self._waits.add(scope)
                try:
                    return await stream.receive_some(self._read_bytes)
                finally:
                    self._waits.discard(scope)
            if not self._closing:
                raise _Idle
        try:  # shutting down: what the kernel holds is ours to keep, so take it without waiting
            return os.read(stream.socket.fileno(), self._read_bytes) or b""
        except BlockingIOError:
            return None

    async def _serve_connection(self, stream: trio.SocketStream, peer: Peer | None) -> None:
        # Up to what hookdb's clients may send: a frame over listener.max_frame_bytes is stored shrunk.
        decoder = FrameDecoder(max(self._max_frame_bytes, DEFAULT_MAX_FRAME_BYTES))
        metrics.connections_open.inc()
        try:
            await self._serve_frames(stream, decoder, peer)
        except Exception:  # a bug or an input nothing foresaw costs this connection, never the process
            metrics.connection_failures.inc()
            log.exception("connection.failed", peer=peer, partial_bytes=decoder.buffered)
        finally:
            metrics.connections_open.dec()
            self._release_connection(peer)
            self._slots.release()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve_frames(
        self, stream: trio.SocketStream, decoder: FrameDecoder, peer: Peer | None
    ) -> None:
        try:
            grant = self._tenants.grant(peer)  # None: each frame is refused (and kept as a dead letter)
            while (data := await self._read(stream)) is not None:
                if not data:
                    decoder.end_of_stream()
                    return
                decoder.receive_data(data)
                await self._spool_frames(stream, decoder, peer, grant)
            if decoder.buffered:
                log.warning("connection.cut_by_shutdown", peer=peer, partial_bytes=decoder.buffered)
        except ProtocolError as exc:
            metrics.events_rejected.labels(exc.reason).inc()
            unforeseen = exc.__cause__ if exc.reason == INTERNAL_ERROR else None  # its traceback, once
            log.warning(
                "frame.rejected", reason=exc.reason, detail=exc.detail, peer=peer, exc_info=unforeseen
            )
            if isinstance(exc, KeptRefusal):
                await trio.to_thread.run_sync(deadletters.append, self._state_dir, [exc.letter])
                metrics.dead_letters.inc()
            with (
                trio.move_on_after(REPLY_SECONDS),
                suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.send_all(frame(msgspec.msgpack.encode(Reply(None, exc.reason, exc.detail))))
        except _Idle:
            log.info(
                "connection.idle_closed",
                peer=peer,
                seconds=self._idle_seconds,
                partial_bytes=decoder.buffered,
            )
        except (trio.BrokenResourceError, ConnectionError) as exc:
            log.info("connection.broken", peer=peer, error=str(exc), partial_bytes=decoder.buffered)

    async def _spool_frames(
        self, stream: trio.SocketStream, decoder: FrameDecoder, peer: Peer | None, grant: Grant | None
    ) -> None:
        """Spool every complete frame (in one append), ack those that asked, then raise for a bad one."""
        received_at_ns = time.time_ns()
        bodies: list[bytes] = []
        refusal: ProtocolError | None = None
        try:
            while frames := decoder.next_frames():
                bodies += frames
        except ProtocolError as exc:  # raised once the frames before it are taken
            refusal = exc
        if any(len(body) > self._max_frame_bytes for body in bodies):
            bodies = [await fit(body, self._max_frame_bytes) for body in bodies]
        entries, acks, refused = admit_frames(bodies, peer, grant, received_at_ns)
        del bodies  # the entries hold the frames now: one copy of a large frame while it is spooled, not two
        if entries:
            position = await self._spool.append(entries)
            metrics.events_received.inc(len(entries))
            if acks:
                await self._spool.wait_durable(position)
                with trio.move_on_after(self._idle_seconds) as sending:
                    await stream.send_all(b"".join([accepted_frame(event_id) for event_id in acks]))
                if sending.cancelled_caught:
                    raise _Idle
        if refused is not None:  # the frames after it were not admitted: nor is what the decoder refused
            raise refused
        if refusal is not None:
            raise refusal
