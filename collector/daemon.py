"""``hookdb collector run``: listener → spool → batcher → breaker → PostgreSQL, supervised by trio.

Start-up recovers the spool (never refusing to start over a damaged file), connects, then listens.
Shutdown is cancellation in order: SIGTERM/SIGINT stops accepting and reading, everything received
goes into the spool, the spool is delivered for up to ``collector.shutdown_seconds``, the spool is
synced, and the process exits 0; what was not delivered is replayed at the next start.
"""

from __future__ import annotations

import os
import signal
from contextlib import suppress

import trio
import trio_asyncio

from hookdb.collector import embedded, logs, outbox
from hookdb.collector.batcher import Batcher
from hookdb.collector.breaker import Breaker
from hookdb.collector.config import Config
from hookdb.collector.delivery import AVAILABILITY_ERRORS, Batch, Delivery, Item, batch_records, read_spool
from hookdb.collector.listener import Listener, bind_socket
from hookdb.collector.spool import Position, Recovery, Spool

log = logs.get("hookdb.collector")

SPOOL_RECORD_OVERHEAD = 64  # spool metadata and record header around the largest frame


def open_spool(config: Config) -> tuple[Spool, Recovery]:
    """Open (and recover) the spool under the state directory; blocking."""
    return Spool.open(
        config.state_dir / "spool",
        fsync=config.spool.fsync,
        fsync_interval=config.spool.fsync_interval_seconds,
        segment_bytes=config.spool.segment_bytes,
        max_bytes=config.spool.max_bytes,
        max_record=config.listener.max_frame_bytes + SPOOL_RECORD_OVERHEAD,
    )


def _log_recovery(report: Recovery) -> None:
    if report.torn_tail_bytes:
        log.warning("spool.torn_tail_cut", bytes=report.torn_tail_bytes)
    for name, damage in report.damaged:
        log.error("spool.damaged", segment=name, start=damage.start, end=damage.end)
    if report.quarantined:
        log.error("spool.quarantined", segments=report.quarantined, salvaged_records=report.salvaged_records)
    if report.records or report.salvaged_records:
        log.info("spool.replaying", records=report.records + report.salvaged_records, bytes=report.bytes)


async def run(config: Config) -> None:
    """Run the collector until SIGTERM or SIGINT."""
    spool, report = await trio.to_thread.run_sync(open_spool, config)
    _log_recovery(report)
    try:
        async with trio_asyncio.open_loop():
            dsn, server = await _resolve_dsn(config)
            try:
                await _serve(config, dsn, spool)
            finally:
                if server is not None:
                    await trio.to_thread.run_sync(server.cleanup)
    finally:
        await trio.to_thread.run_sync(spool.close)


async def _resolve_dsn(config: Config) -> tuple[str, object | None]:
    if config.dsn:
        return config.dsn, None
    server, dsn = await trio.to_thread.run_sync(embedded.start, config.state_dir)
    log.info("embedded_postgres.started", dsn=dsn, data_dir=str(config.state_dir / "postgres"))
    return dsn, server


async def _serve(config: Config, dsn: str, spool: Spool) -> None:
    breaker = Breaker(
        failures=config.breaker.failures,
        open_seconds=config.breaker.open_seconds,
        backoff=config.breaker.backoff,
        max_open_seconds=max(config.breaker.max_open_seconds, config.breaker.open_seconds),
        jitter=config.breaker.jitter,
        probe_timeout_seconds=config.breaker.probe_timeout_seconds,
    )
    delivery = Delivery(
        dsn=dsn,
        spool=spool,
        breaker=breaker,
        state_dir=config.state_dir,
        connect_timeout=config.database.connect_timeout_seconds,
        write_timeout=config.database.write_timeout_seconds,
        retry_seconds=config.breaker.retry_seconds,
    )
    try:
        await delivery.open()
    except AVAILABILITY_ERRORS as exc:  # the spool takes events meanwhile; the breaker paces retries
        log.warning("database.unreachable_at_start", error=str(exc))
    listener = Listener(
        spool=spool,
        max_frame_bytes=config.listener.max_frame_bytes,
        read_bytes=config.listener.read_bytes,
        max_connections=config.listener.max_connections,
        idle_seconds=config.listener.idle_seconds,
    )
    batcher: Batcher[Item] = Batcher(
        max_items=config.batch.max_events,
        max_bytes=config.batch.max_bytes,
        linger=config.batch.linger_seconds,
    )
    path = config.socket_path
    sock = await bind_socket(path, config.listener.socket_mode)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as background:
            background.start_soon(spool.run_syncer)
            async with trio.open_nursery() as pipeline:
                records_in, records_out = trio.open_memory_channel[list[tuple[Position, bytes]]](1)
                batches_in, batches_out = trio.open_memory_channel[Batch](1)
                pipeline.start_soon(read_spool, spool, records_in)
                pipeline.start_soon(
                    batch_records, records_out, batches_in, batcher, config.collector.default_tenant
                )
                pipeline.start_soon(delivery.run, batches_out)
                draining = trio.CancelScope()

                async def drain_outbox() -> None:
                    with draining:
                        await outbox.run_drainer(config.outbox_dir, spool, config.outbox.scan_seconds)

                async with trio.open_nursery() as intake:
                    intake.start_soon(listener.serve, sock)
                    intake.start_soon(drain_outbox)
                    log.info(
                        "collector.ready", socket=path, pid=os.getpid(), spool_records=spool.pending_records
                    )
                    async for signum in signals:
                        log.info("collector.stopping", signal=signal.Signals(signum).name)
                        break
                    with suppress(FileNotFoundError):
                        os.unlink(path)  # new clients go to their outbox at once instead of a closing socket
                    listener.close_reading()
                    draining.cancel()  # a half-drained outbox file is drained again at the next start
                    intake.cancel_scope.deadline = trio.current_time() + config.collector.shutdown_seconds
                spool.close_input()
                pipeline.cancel_scope.deadline = trio.current_time() + config.collector.shutdown_seconds
            if pipeline.cancel_scope.cancelled_caught:
                log.warning(
                    "collector.shutdown_deadline",
                    seconds=config.collector.shutdown_seconds,
                    undelivered_records=spool.pending_records,
                )
            background.cancel_scope.cancel()
    await delivery.aclose()
    log.info("collector.stopped", undelivered_records=spool.pending_records)
