"""``hookdb collector run``: listener → batcher → PostgreSQL sink, supervised in one trio nursery.

Shutdown is cancellation in order: SIGTERM/SIGINT stops accepting and reading, every event already
received is batched and written within ``collector.shutdown_seconds``, then the process exits 0.
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import suppress

import asyncpg
import trio
import trio_asyncio

from hookdb.collector import embedded, logs, metrics
from hookdb.collector.batcher import Batcher
from hookdb.collector.config import Config
from hookdb.collector.events import Row, row_bytes
from hookdb.collector.listener import Listener, bind_socket
from hookdb.collector.sink import PostgresSink

log = logs.get("hookdb.collector")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


def sqlstate_class(exc: BaseException) -> str:
    """The two-character SQLSTATE class of a database error; ``"io"`` for errors below SQL."""
    code = getattr(exc, "sqlstate", None)
    return code[:2] if isinstance(code, str) else "io"


async def batch_events(
    rows: trio.MemoryReceiveChannel[Row], batches: trio.MemorySendChannel[list[Row]], batcher: Batcher[Row]
) -> None:
    """Group rows into batches by the batcher's policy until ``rows`` is closed, then flush the rest."""
    async with rows, batches:
        while True:
            deadline = batcher.deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    row = await rows.receive()
                except trio.EndOfChannel:
                    break
                for batch in batcher.add(row, row_bytes(row), trio.current_time()):
                    await batches.send(batch)
                continue
            await batches.send(batcher.take())  # the linger time ran out
        if len(batcher):
            await batches.send(batcher.take())


class Writer:
    """Writes batches in order; a failed write is retried with backoff on a fresh connection."""

    def __init__(self, dsn: str, connect_timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._sink: PostgresSink | None = None

    async def open(self) -> PostgresSink:
        if self._sink is None:
            self._sink = await PostgresSink.connect(self._dsn, connect_timeout=self._connect_timeout)
            if self._sink.schema_created:
                log.info("schema.applied")
        return self._sink

    async def run(self, batches: trio.MemoryReceiveChannel[list[Row]]) -> None:
        async with batches:
            async for batch in batches:
                await self._write(batch)
        await self.aclose()

    async def _write(self, batch: list[Row]) -> None:
        delay = RETRY_FIRST_SECONDS
        failures = 0
        while True:
            started = time.perf_counter()
            try:
                sink = await self.open()
                inserted = await sink.write(batch)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                metrics.db_errors.labels(sqlstate_class(exc)).inc()
                if failures == 0:
                    log.warning(
                        "write.failed", error=str(exc), sqlstate_class=sqlstate_class(exc), events=len(batch)
                    )
                failures += 1
                await self.aclose()
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            metrics.copy_seconds.observe(time.perf_counter() - started)
            metrics.batches.inc()
            metrics.batch_size.observe(len(batch))
            metrics.events_persisted.inc(inserted)
            metrics.events_duplicate.inc(len(batch) - inserted)
            if failures:
                log.info("write.recovered", failed_attempts=failures)
            return

    async def aclose(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            with suppress(Exception):
                await sink.aclose()


async def _resolve_dsn(config: Config) -> tuple[str, object | None]:
    if config.dsn:
        return config.dsn, None
    server, dsn = await trio.to_thread.run_sync(embedded.start, config.state_dir)
    log.info("embedded_postgres.started", dsn=dsn, data_dir=str(config.state_dir / "postgres"))
    return dsn, server


async def run(config: Config) -> None:
    """Run the collector until SIGTERM or SIGINT."""
    async with trio_asyncio.open_loop():
        dsn, server = await _resolve_dsn(config)
        try:
            writer = Writer(dsn, config.database.connect_timeout_seconds)
            await writer.open()  # fail fast on a bad DSN or an unreachable server at start-up
            await _serve(config, writer)
        finally:
            if server is not None:
                await trio.to_thread.run_sync(server.cleanup)


async def _serve(config: Config, writer: Writer) -> None:
    rows_in, rows_out = trio.open_memory_channel[Row](config.batch.queue_events)
    batches_in, batches_out = trio.open_memory_channel[list[Row]](1)
    batcher: Batcher[Row] = Batcher(
        max_items=config.batch.max_events,
        max_bytes=config.batch.max_bytes,
        linger=config.batch.linger_seconds,
    )
    listener = Listener(
        accept=rows_in.send,
        default_tenant=config.collector.default_tenant,
        max_frame_bytes=config.listener.max_frame_bytes,
        read_bytes=config.listener.read_bytes,
    )
    path = config.socket_path
    sock = await bind_socket(path, config.listener.socket_mode)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batch_events, rows_out, batches_in, batcher)
            nursery.start_soon(writer.run, batches_out)

            async def listen() -> None:
                async with rows_in:
                    await listener.serve(sock)

            nursery.start_soon(listen)
            log.info("collector.ready", socket=path, pid=os.getpid())
            async for signum in signals:
                log.info("collector.stopping", signal=signal.Signals(signum).name)
                break
            with suppress(FileNotFoundError):
                os.unlink(path)  # new clients fail fast instead of queueing on a closing socket
            listener.close_reading()
            nursery.cancel_scope.deadline = trio.current_time() + config.collector.shutdown_seconds
    if nursery.cancel_scope.cancelled_caught:
        log.error(
            "collector.shutdown_deadline",
            seconds=config.collector.shutdown_seconds,
            unwritten_events=len(batcher) + rows_out.statistics().current_buffer_used,
        )
    log.info("collector.stopped")
