"""From the spool to PostgreSQL: read records back, batch them, and write each batch exactly once.

Four stages joined by channels that hold at most one item each (so memory stays bounded by a few
batches, whatever the spool holds, and each step works while the next one waits on PostgreSQL):
``read_spool`` → ``batch_records`` → ``prepare_batches`` → ``Delivery.run``, whose ``database.writers``
writers each take the next batch on their own connection, so PostgreSQL works on one batch while the
collector gets the next one ready.
Each write asks the breaker first; a data error splits the batch until the rows at fault are
isolated and dead-lettered, and so does an error of no known class (e.g. 54000 index row size) once it
repeats for the same batch; the spool's checkpoint moves only over batches fully committed (or
dead-lettered) without a gap before them (``checkpoint.Commits``), however the writers' commits
interleave. Rows are built straight from the spool entries: what intake validated is not checked again.
With ``database.delivery_processes`` of 2 or more, the last two stages run in delivery processes of their
own, each given whole batches of records (``processes``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, NamedTuple, Protocol, TypeVar

import asyncpg
import msgspec
import trio

from hookdb.collector.classification import is_data_error, may_be_row_fault, sqlstate_class
from hookdb.collector.config import Config
from hookdb.collector.delivery.batcher import Batcher
from hookdb.collector.delivery.breaker import Breaker, Permit
from hookdb.collector.delivery.checkpoint import Commits
from hookdb.collector.ops import logs, metrics
from hookdb.collector.spool import deadletters
from hookdb.collector.spool.entry import Entry, Peer, StaleEntry, decode_entry, from_ns
from hookdb.collector.spool.segments import Position, Spool
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row, entry_row
from hookdb.collector.store.sink import PostgresSink, Prepared, Unpreparable, prepare

log = logs.get("hookdb.delivery")

# What counts as the database being unavailable; anything else is a bug and stops the collector.
# InternalClientError included: asyncpg raises it for a query on a connection whose server just sent
# an unsolicited FATAL (e.g. 57P01 at a fast shutdown) before the socket's end was read.
AVAILABILITY_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


# While delivery is behind, deferred search documents are made only once no batch came for this long.
BEHIND_IDLE_SECONDS = 1.0


class Item(msgspec.Struct, gc=False):
    """One spooled event on its way to PostgreSQL: its entry and row, or why it cannot be stored.

    Built without a Python frame and not tracked by the GC (it is in no reference cycle): one per event.
    """

    end: Position
    received_at_ns: int
    entry: Entry | StaleEntry  # a StaleEntry has no row: it goes to the dead letters
    row: Row | None


class Record(NamedTuple):
    """A spool record not decoded yet: what a delivery process is sent (``processes``)."""

    end: Position
    body: bytes


class _Placed(Protocol):
    @property
    def end(self) -> Position: ...


T = TypeVar("T", bound=_Placed)


@dataclass(slots=True)
class Batch(Generic[T]):
    """Records the batcher put together, decoded (``Item``) where they are delivered, else ``Record``."""

    items: list[T]
    seq: int  # in the order the batches were made: the checkpoint follows it
    defer_search: bool = False  # made while delivery was behind: its search documents are made later
    prepared: Prepared | None = None  # filled by prepare_batches while the previous batch is written

    @property
    def end(self) -> Position:
        return self.items[-1].end


async def read_spool(spool: Spool, send: trio.MemorySendChannel[list[tuple[Position, bytes]]]) -> None:
    """Stream undelivered records from the spool's checkpoint on, until the spool's input closes."""
    async with send, aclosing(spool.read(spool.checkpoint)) as chunks:
        async for records in chunks:
            await send.send(records)


def to_item(body: bytes, end: Position) -> Item:
    try:
        entry = decode_entry(body)
    except StaleEntry as stale:  # spooled by a collector that accepted it, refused by this one
        return Item(end, stale.received_at_ns or time.time_ns(), stale, None)
    return Item(end, entry.head.received_at_ns, entry, entry_row(entry))


def decoded(body: bytes, end: Position) -> tuple[Item, int]:
    """A record as delivery in this process takes it, and its size for the batcher (its payload's)."""
    item = to_item(body, end)
    return item, len(body) if item.row is None else len(item.row.payload)


def undecoded(body: bytes, end: Position) -> tuple[Record, int]:
    """A record as a delivery process is sent it (decoded there, once), and its size for the batcher."""
    return Record(end, body), len(body)


class SearchDeferral:
    """Whether a batch made now defers its search documents (``store/search_backlog``): from when more than
    ``threshold`` events are undelivered (``search.defer_backlog_events``; 0: never) until at most half as
    many are, so a backlog near the threshold does not switch back and forth. Each switch is logged."""

    def __init__(self, threshold: int, pending: Callable[[], int]) -> None:
        self._threshold = threshold
        self._pending = pending
        self._on = False

    def __call__(self) -> bool:
        if self._threshold:
            pending = self._pending()
            if pending <= self._threshold // 2 if self._on else pending > self._threshold:
                self._on = not self._on
                log.info("search.deferral_" + ("started" if self._on else "ended"), pending_events=pending)
        return self._on


async def batch_records(
    receive: trio.MemoryReceiveChannel[list[tuple[Position, bytes]]],
    send: trio.MemorySendChannel[Batch[T]],
    batcher: Batcher[T],
    commits: Commits,
    make: Callable[[bytes, Position], tuple[T, int]],
    defer_search: Callable[[], bool],
) -> None:
    """Group records (each as ``make`` makes it: ``decoded`` or ``undecoded``) into batches by the batcher's
    policy, numbered by ``commits``, each told whether to defer its search documents (``SearchDeferral``);
    flush the rest when the input ends."""

    def batch(items: list[T]) -> Batch[T]:
        return Batch(items, commits.issue(), defer_search())

    async with receive, send:
        while True:
            deadline = batcher.deadline()
            records = None
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    records = await receive.receive()
                except trio.EndOfChannel:
                    break
            if records is None:  # the linger time ran out; only the receive may be cut short, never a send
                await send.send(batch(batcher.take()))
                continue
            now = trio.current_time()
            add = batcher.add
            for end, body in records:
                for items in add(*make(body, end), now):
                    await send.send(batch(items))
        if len(batcher):
            await send.send(batch(batcher.take()))


async def prepare_batches(
    receive: trio.MemoryReceiveChannel[Batch[Item]],
    send: trio.MemorySendChannel[Batch[Item]],
    blob_min_bytes: int,
) -> None:
    """Get each batch ready for its transaction (blobs, projections' file reads) ahead of the writer."""
    async with receive, send:
        async for batch in receive:
            rows = [item.row for item in batch.items if item.row is not None]
            if len(rows) == len(batch.items):
                try:
                    batch.prepared = await prepare(rows, blob_min_bytes, batch.defer_search)
                except Exception:  # the writer prepares it again in parts, isolating the rows at fault
                    log.exception("batch.unpreparable", events=len(rows))
            await send.send(batch)


class Status(Protocol):
    """What delivery tells of itself (the collector's ``Health``, or a delivery process's report)."""

    db_ok: bool  # the last write (or connection check) succeeded
    oldest_pending_ns: int | None  # received_at of the first event of the batch being delivered


def spool_checkpoint(spool: Spool, commits: Commits) -> Callable[[Batch[Item]], None]:
    """The checkpoint of delivery in the collector's own process: a committed batch moves the spool's
    checkpoint over it and every batch after it already committed, never past one that is not."""

    def committed(batch: Batch[Item]) -> None:
        advance = commits.committed(batch.seq, batch.end, len(batch.items))
        if advance is not None:
            spool.delivered(advance.upto, advance.records)

    return committed


def breaker_of(config: Config) -> Breaker:
    """The write breaker the config describes."""
    settings = config.breaker
    return Breaker(
        failures=settings.failures,
        open_seconds=settings.open_seconds,
        backoff=settings.backoff,
        max_open_seconds=max(settings.max_open_seconds, settings.open_seconds),
        jitter=settings.jitter,
        probe_timeout_seconds=settings.probe_timeout_seconds,
    )


class Delivery:
    """Writes batches through the breaker, each of ``writers`` writers on its own connection; the one place
    that talks to PostgreSQL.

    Between batches each writer checks its connection every ``health_check_seconds``, so an idle collector
    notices a lost database (and a recovered one) as surely as a busy one. ``checkpoint`` is told of each
    batch committed (or dead-lettered), in commit order (``spool_checkpoint``, or a delivery process's
    answer to the collector).
    """

    def __init__(
        self,
        *,
        options: ConnectOptions,
        checkpoint: Callable[[Batch[Item]], None],
        breaker: Breaker,
        health: Status,
        state_dir: Path,
        write_timeout: float,
        retry_seconds: float,
        health_check_seconds: float,
        writers: int = 1,
        search_max_lag: float = 0.0,
    ) -> None:
        self._options = options
        self._checkpoint = checkpoint
        self.breaker = breaker
        self._health = health
        self._state_dir = state_dir
        self._write_timeout = write_timeout
        self._retry_seconds = retry_seconds
        self._health_check_seconds = health_check_seconds
        self._sinks: list[PostgresSink | None] = [None] * writers
        self._breaker_moved = trio.Event()  # set (and renewed) at every breaker transition
        self._dead_letters = trio.Lock()  # one writer appends to the dead-letter file at a time
        # Whether search_backlog may hold rows: at start (another run's), and after a deferring batch.
        self._search_backlog = True
        self._indexed = 0  # events whose deferred documents were made since the backlog was last found empty
        self._behind = False  # the last batch committed deferred its search documents
        self._max_lag = search_max_lag  # search.defer_max_seconds (0: no bound)
        # When this delivery's deferred documents next may be overdue (None: it deferred none since the
        # backlog was last found empty), and whether that was logged since.
        self._overdue_at: float | None = None
        self._overdue = False

    @classmethod
    def from_config(
        cls,
        config: Config,
        dsn: str,
        checkpoint: Callable[[Batch[Item]], None],
        health: Status,
        breaker: Breaker,
    ) -> Delivery:
        """The delivery the config describes, on ``dsn``."""
        return cls(
            options=ConnectOptions.from_config(config, dsn, application_name="hookdb-collector"),
            checkpoint=checkpoint,
            breaker=breaker,
            health=health,
            state_dir=config.state_dir,
            write_timeout=config.database.write_timeout_seconds,
            retry_seconds=config.breaker.retry_seconds,
            health_check_seconds=config.database.health_check_seconds,
            writers=config.database.writer_connections,
            search_max_lag=config.search.defer_max_seconds,
        )

    async def start(self, *, said: bool = False) -> None:
        """Connect (and migrate) at start; an unreachable database is the breaker's to retry meanwhile, as
        the spool takes events. ``said``: the collector's own start logged it already (a delivery process)."""
        try:
            await self.open()
            self._health.db_ok = True
        except AVAILABILITY_ERRORS as exc:
            if not said:
                log.warning("database.unreachable_at_start", error=str(exc))

    async def open(self, writer: int = 0) -> PostgresSink:
        sink = self._sinks[writer]
        if sink is None:
            sink = self._sinks[writer] = await PostgresSink.connect(self._options)
            if sink.applied_migrations:
                log.info("schema.migrated", migrations=sink.applied_migrations)
        return sink

    async def aclose(self) -> None:
        for writer, sink in enumerate(self._sinks):
            if sink is not None:
                self._sinks[writer] = None
                with suppress(Exception):
                    await sink.aclose()

    async def run(self, receive: trio.MemoryReceiveChannel[Batch[Item]]) -> None:
        async with receive, trio.open_nursery() as nursery:
            for writer in range(len(self._sinks)):
                nursery.start_soon(self._run_writer, receive.clone(), writer)
        await self.aclose()

    async def _run_writer(self, receive: trio.MemoryReceiveChannel[Batch[Item]], writer: int) -> None:
        async with receive:
            while True:
                try:
                    batch = await self._next(receive, writer)
                except trio.EndOfChannel:
                    break
                if batch is not None:
                    await self._deliver(batch, writer)

    async def _next(self, receive: trio.MemoryReceiveChannel[Batch[Item]], writer: int) -> Batch[Item] | None:
        """The next batch, if one is ready; else (``None``) deferred search documents made, or the connection
        checked after ``health_check_seconds`` idle. While delivery is behind (the last batch deferred its
        documents) they are made only once no batch came for ``BEHIND_IDLE_SECONDS``. The first writer alone
        makes them: the work is done while idle, and writers making them at once contend on the search index
        (its pending entries are one list). Once this delivery's deferred documents may be overdue
        (``search.defer_max_seconds``), each batch is preceded by one backlog row queued that long ago."""
        if writer == 0 and self._search_backlog and self.breaker.state == "closed":
            if self._overdue_at is not None and trio.current_time() >= self._overdue_at:
                await self._index(writer, overdue=True)
            try:
                return receive.receive_nowait()
            except trio.WouldBlock:
                pass
            if self._behind:
                with trio.move_on_after(BEHIND_IDLE_SECONDS):
                    return await receive.receive()
                self._behind = False
            await self._index(writer)
            return None
        with trio.move_on_after(self._health_check_seconds):
            return await receive.receive()
        await self._check(writer)
        return None

    async def _index(self, writer: int, *, overdue: bool = False) -> None:
        """Make the documents of one ``search_backlog`` row (``overdue``: one queued ``search_max_lag`` ago),
        through the breaker like a batch; when none is left, say how many were made and stop looking until
        this delivery defers a batch's documents again. With ``overdue`` and none that old, look again in
        ``BEHIND_IDLE_SECONDS``."""
        permit = self.breaker.acquire(trio.current_time())
        if permit is None:
            return
        error: BaseException | None = None
        indexed = None
        with trio.move_on_after(self._write_timeout) as attempt:
            try:
                sink = await self.open(writer)
                indexed = await sink.index_search(self._max_lag if overdue else None)
            except AVAILABILITY_ERRORS as exc:
                error = exc
        if attempt.cancelled_caught:
            error = TimeoutError(f"deferred search documents took longer than {self._write_timeout:g} s")
        if error is not None:
            self._failed(permit, error, writer)
            if self.breaker.state == "closed":
                await trio.sleep(self._retry_seconds)
            return
        self.breaker.success(permit, trio.current_time())
        self._log_transitions()
        if indexed is None and overdue:
            self._overdue_at = trio.current_time() + BEHIND_IDLE_SECONDS
            return
        if overdue and not self._overdue:
            self._overdue = True
            log.warning("search.backlog_overdue", max_seconds=self._max_lag)
        if indexed is None:
            self._search_backlog = False
            self._overdue_at, self._overdue = None, False
            if self._indexed:
                log.info("search.backlog_indexed", events=self._indexed)
                self._indexed = 0
            return
        self._indexed += indexed.events
        metrics.search_indexed.inc(indexed.events)
        if indexed.refused is not None:
            metrics.search_refused.inc()
            refused = {"tenant": indexed.tenant, "events": indexed.events, "error": indexed.refused}
            log.error("search.backlog_refused", **refused)

    async def _check(self, writer: int) -> None:
        """An idle-time ``SELECT 1`` through the breaker (so it can also be the half-open probe)."""
        permit = self.breaker.acquire(trio.current_time())
        self._log_transitions()
        if permit is None:
            return
        with trio.move_on_after(self.breaker.probe_timeout_seconds) as attempt:
            try:
                await (await self.open(writer)).ping()
            except AVAILABILITY_ERRORS as exc:
                self._failed(permit, exc, writer)
                return
        if attempt.cancelled_caught:
            self._failed(permit, TimeoutError("health check unanswered"), writer)
            return
        self.breaker.success(permit, trio.current_time())
        self._health.db_ok = True
        self._log_transitions()

    def _failed(self, permit: Permit, error: BaseException, writer: int) -> None:
        self._health.db_ok = False
        metrics.db_errors.labels(sqlstate_class(error)).inc()
        self.breaker.failure(permit, trio.current_time(), f"{type(error).__name__}: {error}")
        if not self._log_transitions() and self.breaker.consecutive_failures == 1:
            log.warning("write.failed", error=str(error), sqlstate_class=sqlstate_class(error))
        sink = self._sinks[writer]
        if sink is not None:
            sink.terminate()
            self._sinks[writer] = None

    async def _deliver(self, batch: Batch[Item], writer: int) -> None:
        """Write one batch; wait and retry for as long as it takes (the breaker paces the attempts).

        An error that a row may cause fails the first attempt only: the next one splits the batch on that
        SQLSTATE if it comes again, so the row at fault is dead-lettered and the others are written.
        """
        self._health.oldest_pending_ns = batch.items[0].received_at_ns
        suspects: frozenset[str] = frozenset()
        while True:
            now = trio.current_time()
            permit = self.breaker.acquire(now)
            self._log_transitions()
            if permit is None:
                retry_at = self.breaker.retry_at(now)
                # Another writer's probe may close the breaker long before its deadline: wake up then.
                with trio.move_on_at(now + self._retry_seconds if retry_at is None else retry_at):
                    await self._breaker_moved.wait()
                continue
            timeout = self.breaker.probe_timeout_seconds if permit.is_probe else self._write_timeout
            started = time.perf_counter()
            error: BaseException | None = None
            dead: list[tuple[Item, str, str | None]] = []
            with trio.move_on_after(timeout) as attempt:
                try:
                    dead = await self._write_isolating(writer, batch.items, batch.prepared, suspects)
                except AVAILABILITY_ERRORS as exc:
                    error = exc
            if attempt.cancelled_caught:
                error = TimeoutError(f"batch write took longer than {timeout:g} s")
            if error is None:
                if dead:
                    async with self._dead_letters:
                        await dead_letter(self._state_dir, dead)
                self.breaker.success(permit, trio.current_time())
                self._log_transitions()
                self._health.db_ok = True
                self._committed(batch, time.perf_counter() - started)
                return
            sqlstate = getattr(error, "sqlstate", None)
            if may_be_row_fault(error) and sqlstate not in suspects:
                # The database answered: not an outage. Try again at once, splitting if it comes again.
                suspects |= {sqlstate}
                log.warning("write.refused", error=str(error), sqlstate=sqlstate, events=len(batch.items))
                metrics.db_errors.labels(sqlstate_class(error)).inc()
                self.breaker.success(permit, trio.current_time())
                self._log_transitions()
                continue
            self._failed(permit, error, writer)
            if self.breaker.state == "closed":
                await trio.sleep(self._retry_seconds)

    def _committed(self, batch: Batch[Item], seconds: float) -> None:
        self._checkpoint(batch)
        self._search_backlog |= batch.defer_search
        self._behind = batch.defer_search
        if batch.defer_search and self._max_lag and self._overdue_at is None:
            self._overdue_at = trio.current_time() + self._max_lag
        metrics.copy_seconds.observe(seconds)
        now_ns = time.time_ns()
        metrics.observe_many(
            metrics.commit_latency, [(now_ns - item.received_at_ns) / 1e9 for item in batch.items]
        )

    async def _write_isolating(
        self,
        writer: int,
        items: list[Item],
        prepared: Prepared | None = None,
        suspects: frozenset[str] = frozenset(),
    ) -> list[tuple[Item, str, str | None]]:
        """Write ``items``; on a data error (or one of the ``suspects`` SQLSTATEs, or rows the collector could
        not prepare) split them until each row at fault stands alone.

        Returns the rows refused as data (by PostgreSQL, or by the preparation), with the error and SQLSTATE
        (``None`` for a preparation's). Parts written before an availability error are simply written again
        with the retry: duplicates add no rows.
        """
        refused = [(item, str(item.entry), None) for item in items if item.row is None]
        rows = [item for item in items if item.row is not None]
        if not rows:
            return refused
        sink = await self.open(writer)
        try:
            if prepared is not None:
                inserted = await sink.write_prepared(prepared)
            else:
                inserted = await sink.write([item.row for item in rows if item.row is not None])
        except (asyncpg.PostgresError, Unpreparable) as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            if isinstance(exc, asyncpg.PostgresError) and not (is_data_error(exc) or sqlstate in suspects):
                raise
            if len(rows) == 1:
                return [*refused, (rows[0], f"{type(exc).__name__}: {exc}", sqlstate)]
            middle = len(rows) // 2
            return [
                *refused,
                *await self._write_isolating(writer, rows[:middle], suspects=suspects),
                *await self._write_isolating(writer, rows[middle:], suspects=suspects),
            ]
        metrics.batches.inc()
        metrics.batch_size.observe(len(rows))
        metrics.events_persisted.inc(inserted)
        metrics.events_duplicate.inc(len(rows) - inserted)
        return refused

    def _log_transitions(self) -> bool:
        changed = self.breaker.transitions()
        for t in changed:
            metrics.breaker_transitions.labels(t.from_state, t.to_state).inc()
            fields = {"from_state": t.from_state, "to_state": t.to_state, "reason": t.reason}
            if t.to_state == "open":
                fields["retry_in_seconds"] = round((self.breaker.open_until or t.at) - t.at, 1)
                fields["last_error"] = self.breaker.last_error
            log.warning("breaker.transition", **fields)
        if changed:
            metrics.breaker_state.set({"closed": 0, "half_open": 1, "open": 2}[self.breaker.state])
            self._breaker_moved.set()
            self._breaker_moved = trio.Event()
        return bool(changed)


async def dead_letter(state_dir: Path, dead: list[tuple[Item, str, str | None]]) -> None:
    """Append ``dead`` (each with its error and SQLSTATE) to the dead-letter file, logged and counted."""
    await trio.to_thread.run_sync(deadletters.append, state_dir, _letters(dead))
    metrics.dead_letters.inc(len(dead))


def _letters(dead: list[tuple[Item, str, str | None]]) -> list[deadletters.DeadLetter]:
    letters = []
    for item, error, sqlstate in dead:
        entry = item.entry
        if isinstance(entry, StaleEntry):
            event_id = event_type = session_id = None
            peer = entry.peer
        else:
            head = entry.head
            event_id, event_type, session_id, peer = (
                str(head.event_id),
                head.event_type,
                head.session_id,
                None if head.peer is None else Peer(*head.peer),
            )
        letters.append(
            deadletters.DeadLetter(
                dead_at=datetime.now(UTC),
                error=error,
                sqlstate=sqlstate,
                received_at=from_ns(item.received_at_ns),
                peer=peer,
                event_id=event_id,
                event_type=event_type,
                session_id=session_id,
                envelope=entry.envelope,
            )
        )
        log.error("event.dead_lettered", error=error, sqlstate=sqlstate, peer=peer, event_id=event_id)
    return letters
