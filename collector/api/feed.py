"""The live feed: one LISTEN connection per API process, fanned out to each tenant's stream subscribers.

LISTEN needs a session that outlives transactions: with the API behind a transaction-mode pooler, that one
connection goes straight to the server (``api.listen_dsn``); the cards are read through the pooler.

PostgreSQL sends ``hookdb_sessions`` notifications after the writer's transaction commits (a trigger on
``sessions``; see schema.sql). Notices arriving together are coalesced, the changed session cards are
read once per tenant under that tenant's row-level security, and every subscriber of the tenant gets
them as Server-Sent Events. No subscriber polls. A subscriber that cannot keep up is disconnected
(its page reconnects and reloads) rather than slowing the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec
import trio
import trio_asyncio

from hookdb.collector.api import queries
from hookdb.collector.api.models import Change, Error, SessionCard
from hookdb.collector.api.reader import Reader, unavailable
from hookdb.collector.ops import logs
from hookdb.collector.store.connect import ConnectOptions, through_pooler

log = logs.get("hookdb.api.feed")

CHANNEL = "hookdb_sessions"
COALESCE_SECONDS = 0.05
SUBSCRIBER_BUFFER = 256
NOTICE_BUFFER = 10_000
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


class _Notice(msgspec.Struct):
    tenant_id: str
    session_id: str
    kind: str


_decode_notice = msgspec.json.Decoder(_Notice).decode
_encode = msgspec.json.Encoder(decimal_format="number").encode


def sse(event: str, data: msgspec.Struct | dict[str, str]) -> bytes:
    """One Server-Sent Event; JSON never contains a raw newline, so ``data`` is one line."""
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


AVAILABLE = sse("available", {})


class Feed:
    def __init__(self, options: ConnectOptions, reader: Reader, ping_seconds: float) -> None:
        self._options = options
        self._reader = reader
        self._ping_seconds = ping_seconds
        self._subscribers: dict[str, set[trio.MemorySendChannel[bytes]]] = {}
        self._notices_in, self._notices = trio.open_memory_channel[_Notice](NOTICE_BUFFER)
        self.available = False
        self._said_pooled = False  # api.feed_through_pooler logged, once
        self._problem = Error(error="database_unavailable", detail="the live feed is connecting")

    @contextmanager
    def subscribe(self, tenant: str) -> Iterator[trio.MemoryReceiveChannel[bytes]]:
        """The stream of ``tenant``'s events (already SSE-encoded) while the block runs."""
        send, receive = trio.open_memory_channel[bytes](SUBSCRIBER_BUFFER)
        self._subscribers.setdefault(tenant, set()).add(send)
        try:
            yield receive
        finally:
            self._drop(tenant, send)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for tenant, channels in list(self._subscribers.items()):
            for channel in list(channels):
                self._drop(tenant, channel)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a LISTEN connection up and deliver what it hears; never returns.

        Started once the first attempt has either listened or failed: a stream opened as soon as the
        API is ready then finds the feed up, unless the database is down.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver)
            announced = False

            def announce() -> None:
                nonlocal announced
                if not announced:
                    announced = True
                    task_status.started()

            failures = 0
            while True:
                try:
                    await self._listen(announce)
                except Exception as exc:
                    problem = unavailable(exc)
                    if problem is None:
                        raise
                    self._set_unavailable(problem.detail)
                announce()
                failures += 1
                await trio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])

    async def _listen(self, listening: Callable[[], None]) -> None:
        options = self._options
        conn = await trio_asyncio.aio_as_trio(options.connect)()
        lost = trio.Event()

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            try:
                self._notices_in.send_nowait(_decode_notice(payload))
            except msgspec.DecodeError:
                log.warning("feed.bad_notice", payload=payload[:200])
            except trio.WouldBlock:
                pass  # 10,000 changes not yet read: subscribers reload when told the feed is back

        try:
            # With database.pooler = "transaction" and no api.listen_dsn, the server said so at its start.
            unsaid = not options.through_pooler and not self._said_pooled
            if unsaid and await trio_asyncio.aio_as_trio(through_pooler)(conn):
                self._said_pooled = True
                log.warning(
                    "api.feed_through_pooler",
                    detail="the live feed's connection goes through a pooler, which in transaction mode does "
                    "not keep its LISTEN: the feed may miss changes; set api.listen_dsn to a DSN that reaches"
                    " the server directly",
                )
            conn.add_termination_listener(lambda _conn: lost.set())
            await trio_asyncio.aio_as_trio(conn.add_listener)(CHANNEL, heard)
            self._set_available()
            listening()
            while not lost.is_set():
                with trio.move_on_after(self._ping_seconds):
                    await lost.wait()
                if not lost.is_set():
                    with trio.fail_after(self._ping_seconds):
                        await trio_asyncio.aio_as_trio(conn.execute)("SELECT 1")
            raise ConnectionResetError("the listening connection closed")
        finally:
            conn.terminate()

    async def _deliver(self) -> None:
        async for first in self._notices:
            pending = {(first.tenant_id, first.session_id): first.kind}
            with trio.move_on_after(COALESCE_SECONDS):
                async for notice in self._notices:
                    key = (notice.tenant_id, notice.session_id)
                    if pending.get(key) != "new":
                        pending[key] = notice.kind
            by_tenant: dict[str, dict[str, str]] = {}
            for (tenant, session_id), kind in pending.items():
                if self._subscribers.get(tenant):
                    by_tenant.setdefault(tenant, {})[session_id] = kind
            for tenant, kinds in by_tenant.items():
                await self._publish(tenant, kinds)

    async def _publish(self, tenant: str, kinds: dict[str, str]) -> None:
        try:
            cards: list[SessionCard] = await self._reader.read(
                tenant, lambda conn: queries.session_cards(conn, tenant, list(kinds))
            )
        except Exception as exc:
            if unavailable(exc) is None:
                raise
            return  # the listening connection notices the outage too, and tells the subscribers
        for card in cards:
            self._broadcast(tenant, sse("session", Change(kind=kinds[card.session_id], session=card)))  # type: ignore[arg-type]

    def _broadcast(self, tenant: str, message: bytes) -> None:
        for channel in list(self._subscribers.get(tenant, ())):
            try:
                channel.send_nowait(message)
            except trio.WouldBlock:
                log.warning("feed.subscriber_dropped", tenant=tenant, reason="too slow")
                self._drop(tenant, channel)

    def _drop(self, tenant: str, channel: trio.MemorySendChannel[bytes]) -> None:
        channels = self._subscribers.get(tenant, set())
        channels.discard(channel)
        if not channels:
            self._subscribers.pop(tenant, None)
        channel.close()

    def _set_available(self) -> None:
        if not self.available:
            self.available = True
            log.info("feed.listening", channel=CHANNEL)
            for tenant in list(self._subscribers):
                self._broadcast(tenant, AVAILABLE)

    def _set_unavailable(self, detail: str) -> None:
        self._problem = Error(error="database_unavailable", detail=detail)
        if self.available:
            self.available = False
            log.warning("feed.lost", detail=detail)
            message = sse("unavailable", self._problem)
            for tenant in list(self._subscribers):
                self._broadcast(tenant, message)

    @property
    def problem(self) -> Error:
        return self._problem
