"""Delivery in processes of their own (``database.delivery_processes`` of 2 or more), so it uses more cores.

Delivery — decoding entries, projections, search documents, the writes — is most of the collector's CPU
per event, and one Python process runs on one core. The collector keeps intake, the spool, the batcher and
the checkpoint; each batch goes to one of the delivery processes, which does what the in-process pipeline
does (``prepare_batches`` and ``Delivery``: its own breaker and connections, rows at fault isolated and
dead-lettered) and answers when the batch is committed, with what its metrics counted meanwhile and how its
database looks. The checkpoint moves only over batches committed without a gap (``checkpoint.Commits``),
whichever process committed them.

A process that dies (or is killed as hung: silent for ``database.delivery_hung_seconds``) is started again
(later and later while they die before their first report: ``restart_seconds``), and its unanswered
batches are sent again, each on its own, to whichever process is free first (``crashes``): one committed
but not answered is written twice and adds no row (exactly once holds by the table's key, as after a
crash); one that kills its process again is split until the record at fault stands alone, and that record
is dead-lettered. At shutdown the collector ends each process's input; a process delivers what it holds,
answers and exits. Past the shutdown deadline the collector kills them; what they held is delivered after
the next start.

Between them: frames (``client.wire``) of msgpack messages over a socketpair; the first one the config.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal, NoReturn

import msgspec
import structlog
import trio
import trio_asyncio

from hookdb.client.wire import FrameDecoder, frame
from hookdb.collector import prices
from hookdb.collector.config import Config
from hookdb.collector.delivery.breaker import State
from hookdb.collector.delivery.checkpoint import Commits
from hookdb.collector.delivery.crashes import GIVE_UP_AFTER, Crashes, Done
from hookdb.collector.delivery.pipeline import (
    Batch,
    Delivery,
    Item,
    Record,
    Status,
    breaker_of,
    dead_letter,
    prepare_batches,
    to_item,
)
from hookdb.collector.intake.tenancy import user_ids
from hookdb.collector.ops import logs, metrics
from hookdb.collector.spool.segments import Spool
from hookdb.collector.store import connect, ledger

log = logs.get("hookdb.delivery")

REPORT_SECONDS = 0.5  # a process reports at least this often (its metrics and database state), busy or not
RESTART_SECONDS = 1.0  # how long after a process died another one is started, doubled for each process
MAX_RESTART_SECONDS = 30.0  # that died before its first report (it cannot start), up to this
EXIT_SECONDS = 5.0  # how long a process that answered everything may take to exit
_MAX_MESSAGE = 1 << 31  # a batch's records (batch.max_bytes, or one record of up to listener.max_frame_bytes)


class Start(msgspec.Struct, tag=True, array_like=True):
    """The first message to a delivery process: the collector's config, and the database it resolved."""

    config: bytes  # the Config, as JSON
    dsn: str
    index: int  # which of the delivery processes it is (in its log lines)


class Work(msgspec.Struct, tag=True, array_like=True):
    """A batch to write: its number and its spool records."""

    seq: int
    records: list[Record]
    defer_search: bool  # made while delivery was behind: its search documents are queued (search_backlog)


class Report(msgspec.Struct, tag=True, array_like=True):
    """A delivery process's answer: the batches committed since its last report, what its metrics counted
    since then, and how its database looks."""

    committed: list[int]
    deltas: list[metrics.Delta]
    db_ok: bool
    breaker: State
    failures: int
    last_error: str | None
    oldest_pending_ns: int | None
    refused: list[connect.Refused]  # connection setups refused: logged by the collector, once per cause


_encode = msgspec.msgpack.Encoder().encode
_to_process = msgspec.msgpack.Decoder(Start | Work)
_to_collector = msgspec.msgpack.Decoder(Report)


@dataclass
class _Status:
    """What a delivery process tells of itself (``pipeline.Status``), in its reports."""

    db_ok: bool = False
    oldest_pending_ns: int | None = None


# -- the collector's side -----------------------------------------------------------------------------------


@dataclass
class BreakerView:
    """The delivery processes' breakers as one, for ``/health/db`` and systemd's status: the worst state of
    any (a process that cannot write holds its batches back, and so the checkpoint)."""

    state: State = "closed"
    consecutive_failures: int = 0
    last_error: str | None = None


_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}
_End = Literal["done", "died", "hung"]  # how a delivery process's run ended


@dataclass
class _Slot:
    """One delivery process's place: the batches it holds, unanswered, and its last report."""

    index: int
    pending: dict[int, Batch[Record]] = field(default_factory=dict)
    pid: int | None = None  # of the process running for it
    report: Report | None = None  # its process's last (None until its first)
    deaths: int = 0  # its processes that died in a row, none of them since its first report
    answered: trio.Event = field(default_factory=trio.Event)  # set (and renewed) at each report


class Processes:
    """Runs ``database.delivery_processes`` delivery processes and hands each batch to one of them; moves
    the spool's checkpoint as they answer."""

    def __init__(
        self, config: Config, dsn: str, spool: Spool, commits: Commits, health: Status, view: BreakerView
    ) -> None:
        self._settings = config
        self._config = msgspec.json.encode(config)
        self._dsn = dsn
        # Batches a process holds: one being prepared, one being written on each of its connections.
        self._in_flight = config.database.writer_connections + 1
        self._spool = spool
        self._commits = commits
        self._health = health
        self._view = view
        self._slots = [_Slot(i) for i in range(config.database.processes)]
        self._hung_seconds = config.database.delivery_hung_seconds
        self._state_dir = config.state_dir
        self._crashes = Crashes[Record]()
        self._waiting: set[trio.CancelScope] = set()  # feeds waiting for the batcher's next batch

    async def start(self) -> None:
        """Connect once, migrating the schema, before the collector says it is ready (as delivery in its own
        process does); an unreachable database is the processes' to retry."""
        first = Delivery.from_config(
            self._settings, self._dsn, _unused, self._health, breaker_of(self._settings)
        )
        await first.start()
        await first.aclose()

    async def run(self, receive: trio.MemoryReceiveChannel[Batch[Record]]) -> None:
        """Deliver every batch of ``receive``, until it ends and every batch is answered."""
        async with receive, trio.open_nursery() as nursery:
            for slot in self._slots:
                nursery.start_soon(self._keep, slot, receive.clone())

    async def _keep(self, slot: _Slot, receive: trio.MemoryReceiveChannel[Batch[Record]]) -> None:
        """Keep one delivery process running until its input has ended and it answered every batch."""
        async with receive:
            while True:
                if await self._serve(slot, receive):
                    return
                await trio.sleep(restart_seconds(slot.deaths))

    async def _serve(self, slot: _Slot, receive: trio.MemoryReceiveChannel[Batch[Record]]) -> bool:
        """Run one process for ``slot``; True when it ended with its work done, False when it died."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A session of its own: a terminal's SIGINT reaches the collector, which ends the process's input.
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:  # e.g. out of processes or memory: tried again, as after a death
            not_started: str | None = str(exc)
        else:
            not_started = None
        finally:
            theirs.close()
        if not_started is not None:
            ours.close()
            slot.deaths += 1
            self._show_health()
            log.error(
                "delivery.process_not_started",
                process=slot.index,
                error=not_started,
                restart_seconds=restart_seconds(slot.deaths),
            )
            return False
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        ended = trio.Event()  # the collector's input ended: no batch will come
        slot.pid, slot.report = process.pid, None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed, slot, stream, receive, ended)
                end = await self._answers(slot, stream, ended)
                nursery.cancel_scope.cancel()
        except BaseException:  # the shutdown deadline passed (or the collector failed): no waiting
            with trio.CancelScope(shield=True):
                await _stop(process, stream, 0)
            raise
        finally:
            slot.pid, slot.report = None, None
            metrics.delivery_processes.set(self._ready())
        with trio.CancelScope(shield=True):
            await _stop(process, stream, 0 if end == "hung" else EXIT_SECONDS)
        if end == "done":
            return True
        slot.deaths += 1
        self._show_health()
        if end == "died":
            log.error(
                "delivery.process_died",
                process=slot.index,
                exit_code=process.returncode,
                batches_unanswered=len(slot.pending),
                restart_seconds=restart_seconds(slot.deaths),
            )
        metrics.delivery_process_restarts.labels(end).inc()
        held, slot.pending = list(slot.pending.values()), {}
        for batch in self._crashes.died(held):
            await self._give_up(batch, slot.index, process.returncode)
        for waiting in self._waiting:  # processes waiting for the batcher take them up
            waiting.cancel()
        return False

    async def _give_up(self, batch: Batch[Record], index: int, exit_code: int | None) -> None:
        """Dead-letter a record that was alone in its process each time it died."""
        error = f"its delivery process died with it alone {GIVE_UP_AFTER} times (last exit code {exit_code})"
        log.error("delivery.record_given_up", process=index, events=len(batch.items), error=error)
        with trio.CancelScope(shield=True):  # once written, it must count as delivered
            await dead_letter(self._state_dir, [(to_item(r.body, r.end), error, None) for r in batch.items])
            self._done(self._crashes.given_up(batch))

    async def _feed(
        self,
        slot: _Slot,
        stream: trio.SocketStream,
        receive: trio.MemoryReceiveChannel[Batch[Record]],
        ended: trio.Event,
    ) -> None:
        with suppress(trio.BrokenResourceError):  # the process died: _answers sees its end and says so
            await stream.send_all(frame(_encode(Start(self._config, self._dsn, slot.index))))
            while True:
                if self._crashes.queued:  # what dead processes held first, each batch on its own
                    await self._send_alone(slot, stream)
                    continue
                while len(slot.pending) >= self._in_flight:
                    await slot.answered.wait()
                with trio.CancelScope() as waiting:  # cancelled when a dead process's batches come back
                    self._waiting.add(waiting)
                    try:
                        batch = await receive.receive()
                    except trio.EndOfChannel:
                        if self._crashes.queued:
                            continue
                        break
                    finally:
                        self._waiting.discard(waiting)
                if waiting.cancelled_caught:
                    continue  # they go first, here and now rather than after the dead one's restart
                slot.pending[batch.seq] = batch
                await stream.send_all(_work(batch))
            ended.set()
            while slot.pending:
                await slot.answered.wait()
            await stream.send_eof()  # the process delivers what it holds, answers and exits

    async def _send_alone(self, slot: _Slot, stream: trio.SocketStream) -> None:
        """Send the next batch a dead process held to this one with nothing else, and wait for its answer:
        should this process die too, that batch is the one at fault (``crashes``)."""
        while slot.pending:
            await slot.answered.wait()
        batch = self._crashes.take()
        if batch is None:  # another process took it
            return
        slot.pending[batch.seq] = batch
        await stream.send_all(_work(batch))
        while slot.pending:
            await slot.answered.wait()

    async def _answers(self, slot: _Slot, stream: trio.SocketStream, ended: trio.Event) -> _End:
        """Take the process's reports until it closes its end ("done" if it did with its work done, else
        "died"), or until it has not reported for ``database.delivery_hung_seconds`` ("hung")."""
        decoder = FrameDecoder(_MAX_MESSAGE)
        with suppress(trio.BrokenResourceError):  # reset: it died with the collector's bytes unread
            while True:
                with trio.move_on_after(self._hung_seconds) as waiting:
                    data = await stream.receive_some(1 << 20)
                if waiting.cancelled_caught:
                    log.error(
                        "delivery.process_hung",
                        process=slot.index,
                        pid=slot.pid,
                        seconds=self._hung_seconds,
                        batches_unanswered=len(slot.pending),
                    )
                    return "hung"
                if not data:
                    break
                decoder.receive_data(data)
                for body in decoder.next_frames():
                    self._take(slot, _to_collector.decode(body))
        return "done" if ended.is_set() and not slot.pending else "died"

    def _done(self, done: Done | None) -> None:
        """A batch of the batcher's is committed (all its parts, when it was split): move the checkpoint."""
        if done is not None:
            advance = self._commits.committed(done.seq, done.end, done.records)
            if advance is not None:
                self._spool.delivered(advance.upto, advance.records)

    def _ready(self) -> int:
        return sum(s.report is not None for s in self._slots)

    def _show_health(self) -> None:
        """``/health/db`` and the metrics from the processes' last reports; unavailable while none is up
        after a death (not while they first start), as writes then are."""
        metrics.delivery_processes.set(self._ready())
        reports = [s.report for s in self._slots if s.report is not None]
        if not reports:
            deaths = max(s.deaths for s in self._slots)
            if deaths:
                self._health.db_ok = False
                self._view.last_error = (
                    f"no delivery process is up: one died {deaths} times in a row (delivery.process_died)"
                )
            return
        worst = max(reports, key=lambda r: (_SEVERITY[r.breaker], r.failures))
        self._view.state, self._view.consecutive_failures = worst.breaker, worst.failures
        self._view.last_error = worst.last_error
        metrics.breaker_state.set(_SEVERITY[worst.breaker])
        self._health.db_ok = all(r.db_ok for r in reports)
        pending = [r.oldest_pending_ns for r in reports if r.oldest_pending_ns is not None]
        self._health.oldest_pending_ns = min(pending, default=None)

    def _take(self, slot: _Slot, report: Report) -> None:
        if slot.report is None:  # its first report: the process is up, taking batches (and connecting)
            log.info("delivery.process_started", process=slot.index, pid=slot.pid)
            slot.deaths = 0
        metrics.add(report.deltas)
        for refused in report.refused:
            connect.log_refusal(refused)
        for seq in report.committed:
            batch = slot.pending.pop(seq)
            self._done(self._crashes.committed(seq, batch.end, len(batch.items)))
        slot.report = report
        self._show_health()
        slot.answered.set()
        slot.answered = trio.Event()


def _unused(batch: Batch[Item]) -> None:
    raise AssertionError("the start-up connection writes no batch")


def _work(batch: Batch[Record]) -> bytes:
    return frame(_encode(Work(batch.seq, batch.items, batch.defer_search)))


async def _stop(process: trio.Process, stream: trio.SocketStream, seconds: float) -> None:
    """Close the process's line; give it ``seconds`` to exit, then kill it."""
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.aclose()
    with trio.move_on_after(seconds):
        await process.wait()
        return
    process.kill()
    await process.wait()


def restart_seconds(deaths: int) -> float:
    """How long after its ``deaths``-th death in a row a slot's next process is started: a process that
    cannot start (a broken install, a memory limit below its imports) is not restarted every second."""
    return min(RESTART_SECONDS * 2 ** min(max(deaths - 1, 0), 16), MAX_RESTART_SECONDS)


# -- the delivery process's side ----------------------------------------------------------------------------


def main() -> None:
    """``python -m hookdb.collector.delivery.processes FD``: deliver what the collector sends over FD."""
    # The collector ends it, by its input; systemd's SIGTERM to the whole unit is the collector's to act on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure()
    trio.run(_deliver, socket.socket(fileno=int(sys.argv[1])))


async def _deliver(sock: socket.socket) -> None:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    decoder = FrameDecoder(_MAX_MESSAGE)
    start = await _next(stream, decoder)
    if not isinstance(start, Start):
        return  # the collector closed its end before it started this process: nothing to deliver
    config = msgspec.json.decode(start.config, type=Config)
    structlog.contextvars.bind_contextvars(delivery_process=start.index)
    ledger.use_prices(prices.table(config.prices.overrides))
    ledger.use_transcript_owners(user_ids(config.http_hooks.transcript_owners))  # checked by the collector
    connect.forward_refusals()
    health = _Status()
    answered: list[int] = []
    held: set[int] = set()  # the batches received and not committed yet
    told = trio.Event()

    def committed(batch: Batch[Item]) -> None:
        answered.append(batch.seq)
        held.discard(batch.seq)
        told.set()

    async with trio_asyncio.open_loop():
        writer = breaker_of(config)
        target = Delivery.from_config(config, start.dsn, committed, health, writer)
        before = metrics.readings()

        async def report() -> None:
            nonlocal before, told
            now = metrics.readings()
            sent, answered[:] = list(answered), []
            message = Report(
                sent, metrics.changes(before, now), health.db_ok, writer.state, writer.consecutive_failures,
                writer.last_error, health.oldest_pending_ns, connect.take_refusals(),
            )  # fmt: skip
            before, told = now, trio.Event()
            try:
                await stream.send_all(frame(_encode(message)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                _gone(len(held))

        async def reporting() -> None:
            while True:
                with trio.move_on_after(REPORT_SECONDS):
                    await told.wait()
                await report()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reporting)  # from the start: connecting may take a while, and is no hang
            await target.start(said=True)
            gc.freeze()  # as the collector does (daemon.py): start-up's objects out of the young generation
            gc.set_threshold(20_000, 20, 20)
            async with trio.open_nursery() as pipeline:
                work_in, work_out = trio.open_memory_channel[Batch[Item]](0)
                ready_in, ready_out = trio.open_memory_channel[Batch[Item]](0)
                pipeline.start_soon(_receive, stream, decoder, work_in, held)
                pipeline.start_soon(prepare_batches, work_out, ready_in, config.database.blob_min_bytes)
                pipeline.start_soon(target.run, ready_out)
            nursery.cancel_scope.cancel()
        await report()
        await target.aclose()


async def _next(stream: trio.SocketStream, decoder: FrameDecoder) -> Start | Work | None:
    """The collector's next message; None when it has closed its end."""
    while (body := decoder.next_frame()) is None:
        try:
            data = await stream.receive_some(1 << 20)
        except trio.BrokenResourceError:  # reset: the collector died with this process's answers unread
            return None
        if not data:
            return None
        decoder.receive_data(data)
    return _to_process.decode(body)


async def _receive(
    stream: trio.SocketStream,
    decoder: FrameDecoder,
    send: trio.MemorySendChannel[Batch[Item]],
    held: set[int],
) -> None:
    async with send:
        while (work := await _next(stream, decoder)) is not None:
            if isinstance(work, Work):
                held.add(work.seq)
                items = [to_item(body, end) for end, body in work.records]
                await send.send(Batch(items, work.seq, work.defer_search))
    if held:
        # The collector ends a process's input only once it answered everything: it is gone (killed, or past
        # its shutdown deadline). Nobody takes the answers; the batches are in its spool, delivered again.
        _gone(len(held))


def _gone(unanswered: int) -> NoReturn:
    """The collector is gone: exit at once (its spool holds whatever this process had not answered)."""
    log.warning("delivery.collector_gone", batches_unanswered=unanswered)
    sys.stdout.flush()
    os._exit(1)


if __name__ == "__main__":
    main()
