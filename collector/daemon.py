"""``hookdb collector run``: listener → spool → batcher → breaker → PostgreSQL, supervised by trio.

Start-up takes the state directory's lock (one collector per state directory), recovers the spool (never
refusing to start over a damaged file or a full disk), connects, then listens.
Shutdown is cancellation in order: SIGTERM/SIGINT stops accepting and reading, everything received
goes into the spool, the spool is delivered for up to ``collector.shutdown_seconds``, the spool is
synced, and the process exits 0; what was not delivered is replayed at the next start.
"""

from __future__ import annotations

import fcntl
import gc
import os
import signal
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_asyncio
from starlette.types import ASGIApp

from hookdb.collector import prices
from hookdb.collector.config import Config, ConfigError
from hookdb.collector.delivery.batcher import Batcher
from hookdb.collector.delivery.checkpoint import Commits
from hookdb.collector.delivery.pipeline import (
    Batch,
    Delivery,
    Item,
    Record,
    SearchDeferral,
    batch_records,
    breaker_of,
    decoded,
    prepare_batches,
    read_spool,
    spool_checkpoint,
    undecoded,
)
from hookdb.collector.delivery.processes import BreakerView, Processes
from hookdb.collector.intake import hooks_http, otlp_http
from hookdb.collector.intake.listener import Listener, bind_socket
from hookdb.collector.intake.outbox import OutboxDrainer
from hookdb.collector.intake.tenancy import TenantPolicy, TokenTenants, user_ids
from hookdb.collector.ops import http, logs, systemd
from hookdb.collector.ops.health import BreakerStatus, Health
from hookdb.collector.ops.health import app as health_app
from hookdb.collector.spool.segments import Position, Recovery, Spool, disk_full
from hookdb.collector.store import embedded, ledger

log = logs.get("hookdb.collector")

SPOOL_RECORD_OVERHEAD = 2048  # spool metadata (with the tenant's name) and record header
STATUS_SECONDS = 5.0
LOCK_FILE = "collector.lock"
PID_WIDTH = 20  # the pid is written padded in place: rewriting it needs no new disk block on a full disk


class StateDirLocked(RuntimeError):
    """Another collector holds the state directory's lock."""


def lock_state_dir(state_dir: Path) -> int:
    """Take the state directory's exclusive lock and write our pid into it; return the descriptor to keep.

    The lock lives as long as the process holds the descriptor (``flock``: released by the kernel even on
    SIGKILL). The lock file is never removed or truncated, so a second instance can never lock another
    inode of the same name and steal it.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, PID_WIDTH + 1, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirLocked(
            f"another collector is serving the state directory {state_dir} (pid {holder})"
        ) from None
    try:
        os.pwrite(fd, f"{os.getpid():<{PID_WIDTH}}\n".encode(), 0)
    except OSError as exc:  # the lock holds all the same; only the pid of the message is missing
        if not disk_full(exc):
            os.close(fd)
            raise
        log.warning("state_dir.pid_not_written", error=str(exc))
    return fd


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
    if report.salvage_deferred:
        log.error("spool.salvage_deferred", segments=report.salvage_deferred, reason="disk full")
    if report.records or report.salvaged_records:
        log.info("spool.replaying", records=report.records + report.salvaged_records, bytes=report.bytes)


def _batcher(config: Config) -> Batcher[Any]:
    """The batcher the config describes (of decoded items, or of records for the delivery processes)."""
    return Batcher(
        max_items=config.batch.max_events,
        max_bytes=config.batch.max_bytes,
        linger=config.batch.linger_seconds,
    )


def tenant_policy(config: Config) -> TenantPolicy:
    """The tenant mapping of the config; raises ``ConfigError`` for a user or group that does not exist."""
    try:
        return TenantPolicy.from_names(
            default=config.tenants.default, uids=config.tenants.uids, gids=config.tenants.gids
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def transcript_owners(config: Config) -> dict[str, int]:
    """``http_hooks.transcript_owners`` as uids; raises ``ConfigError`` for a user that does not exist."""
    try:
        return user_ids(config.http_hooks.transcript_owners)
    except ValueError as exc:
        raise ConfigError(f"http_hooks.transcript_owners: {exc}") from None


async def run(config: Config) -> None:
    """Run the collector until SIGTERM or SIGINT."""
    tenants = tenant_policy(config)  # a bad config must fail before the spool is touched
    ledger.use_transcript_owners(transcript_owners(config))
    lock = lock_state_dir(config.state_dir)  # before anything touches the spool, outbox or embedded database
    try:
        await _run_locked(config, tenants)
    finally:
        os.close(lock)


async def _run_locked(config: Config, tenants: TenantPolicy) -> None:
    spool, report = await trio.to_thread.run_sync(open_spool, config)
    _log_recovery(report)
    try:
        async with trio_asyncio.open_loop():
            dsn, server = await embedded.resolve(config.dsn, config.state_dir)
            try:
                await _serve(config, dsn, spool, tenants)
            finally:
                if server is not None:
                    await trio.to_thread.run_sync(server.cleanup)
    finally:
        await trio.to_thread.run_sync(spool.close)


async def _listening_socket(config: Config) -> tuple[trio.socket.SocketType, bool]:
    """The socket systemd passed us, or our own bound one; and whether the socket file is ours to remove."""
    inherited = systemd.inherited_socket()
    if inherited is not None:
        log.info("socket.inherited", fd=inherited.fileno())
        return trio.socket.from_stdlib_socket(inherited), False
    listener = config.listener
    sock = await bind_socket(
        config.socket_path, listener.socket_mode, listener.socket_owner, listener.socket_group
    )
    return sock, True


async def _report_to_systemd(health: Health, spool: Spool, breaker: BreakerStatus) -> None:
    """``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` (from the trio loop itself) and a ``STATUS=`` line."""
    watchdog = systemd.watchdog_interval()
    interval = min(watchdog or STATUS_SECONDS, STATUS_SECONDS)
    while True:
        status = f"STATUS=spool {spool.pending_records} pending; database {breaker.state}"
        if not health.db_ok:
            status += f" ({breaker.last_error or 'unreachable'})"
        systemd.notify(*(["WATCHDOG=1"] if watchdog else []), status)
        await trio.sleep(interval)


async def _serve_http(
    nursery: trio.Nursery, name: str, app: ASGIApp, listen: str, limits: http.Limits
) -> None:
    """Start an HTTP endpoint in ``nursery`` and log where it listens (the real port when asked for 0)."""
    port = await nursery.start(partial(http.serve, name, app, listen, limits))
    log.info(f"{name}.listening", listen=listen, port=port)


async def _serve(config: Config, dsn: str, spool: Spool, tenants: TenantPolicy) -> None:
    price_table = prices.table(config.prices.overrides)
    ledger.use_prices(price_table)
    commits = Commits()
    deferral = SearchDeferral(config.search.defer_backlog_events, lambda: spool.pending_records)
    delivery: Delivery | Processes
    if config.database.processes == 1:
        breaker = breaker_of(config)
        health = Health(breaker=breaker, spool=spool, search_deferred=deferral)
        delivery = Delivery.from_config(config, dsn, spool_checkpoint(spool, commits), health, breaker)
    else:
        view = BreakerView()
        health = Health(breaker=view, spool=spool, search_deferred=deferral)
        delivery = Processes(config, dsn, spool, commits, health, view)
    await delivery.start()
    listener = Listener(
        spool=spool,
        tenants=tenants,
        state_dir=config.state_dir,
        max_frame_bytes=config.listener.max_frame_bytes,
        read_bytes=config.listener.read_bytes,
        max_connections=config.listener.max_connections,
        max_connections_per_uid=config.listener.max_connections_per_uid,
        idle_seconds=config.listener.idle_seconds,
        # Descriptors the HTTP listeners may hold, so that every cap together stays below the fd limit.
        other_connections=(config.metrics.max_connections if config.metrics.enabled else 0)
        + (config.http_hooks.max_connections if config.http_hooks.enabled else 0)
        + (config.otlp.max_connections if config.otlp.enabled else 0),
    )
    drainer = OutboxDrainer(
        config.outbox_dir, spool, tenants, config.state_dir, config.listener.max_frame_bytes
    )
    sock, owns_path = await _listening_socket(config)
    # What start-up made (modules, settings, the schema's migrations) lives as long as the process: keep it
    # out of the collections the per-event objects trigger, so each one walks only the young objects. The
    # events of a batch live until it commits (thousands of objects): a young generation of 700 would
    # collect them again and again for nothing (2–3 µs of CPU per event, measured with bench_spine).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as background:
            background.start_soon(spool.run_syncer)
            if config.metrics.enabled:
                limits = http.Limits(config.metrics.max_connections, config.metrics.header_timeout_seconds)
                await _serve_http(background, "metrics", health_app(health), config.metrics.listen, limits)
            if config.http_hooks.enabled:
                settings = config.http_hooks
                hooks = hooks_http.app(
                    spool,
                    TokenTenants(settings.tokens),
                    max_body=settings.max_body_bytes,
                    max_frame=config.listener.max_frame_bytes,
                    body_seconds=settings.body_timeout_seconds,
                )
                limits = http.Limits(settings.max_connections, settings.header_timeout_seconds)
                await _serve_http(background, "http_hooks", hooks, settings.listen, limits)
            if config.otlp.enabled:
                otel = config.otlp
                receiver = otlp_http.app(
                    spool,
                    TokenTenants(config.http_hooks.tokens),
                    max_body=otel.max_body_bytes,
                    body_seconds=otel.body_timeout_seconds,
                    max_entry=config.listener.max_frame_bytes,
                    price_table=price_table,
                )
                limits = http.Limits(otel.max_connections, otel.header_timeout_seconds)
                await _serve_http(background, "otlp", receiver, otel.listen, limits)
            if systemd.enabled():
                background.start_soon(_report_to_systemd, health, spool, health.breaker)
            async with trio.open_nursery() as pipeline:
                records_in, records_out = trio.open_memory_channel[list[tuple[Position, bytes]]](1)
                pipeline.start_soon(read_spool, spool, records_in)
                if isinstance(delivery, Delivery):
                    batches_in, batches_out = trio.open_memory_channel[Batch[Item]](1)
                    ready_in, ready_out = trio.open_memory_channel[Batch[Item]](1)
                    pipeline.start_soon(
                        batch_records, records_out, batches_in, _batcher(config), commits, decoded, deferral
                    )
                    pipeline.start_soon(
                        prepare_batches, batches_out, ready_in, config.database.blob_min_bytes
                    )
                    pipeline.start_soon(delivery.run, ready_out)
                else:  # whole batches of records to the delivery processes: decoded there, once
                    sent_in, sent_out = trio.open_memory_channel[Batch[Record]](0)
                    pipeline.start_soon(
                        batch_records, records_out, sent_in, _batcher(config), commits, undecoded, deferral
                    )
                    pipeline.start_soon(delivery.run, sent_out)
                draining = trio.CancelScope()

                async def drain_outbox() -> None:
                    with draining:
                        await drainer.run(config.outbox.scan_seconds)

                async with trio.open_nursery() as intake:
                    intake.start_soon(listener.serve, sock)
                    intake.start_soon(drain_outbox)
                    health.ready = True
                    systemd.notify("READY=1", f"STATUS=spool {spool.pending_records} pending")
                    log.info(
                        "collector.ready",
                        socket=config.socket_path,
                        pid=os.getpid(),
                        spool_records=spool.pending_records,
                        delivery_processes=config.database.processes,
                        writers=config.database.writer_connections,  # each process's connections
                    )
                    async for signum in signals:
                        log.info("collector.stopping", signal=signal.Signals(signum).name)
                        break
                    health.ready = False
                    systemd.notify("STOPPING=1")
                    if owns_path:
                        with suppress(FileNotFoundError):
                            os.unlink(config.socket_path)  # new clients go to their outbox at once
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
    if isinstance(delivery, Delivery):
        await delivery.aclose()
    log.info("collector.stopped", undelivered_records=spool.pending_records)
