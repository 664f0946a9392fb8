"""``hookdb api``: serve the read API and web page with hypercorn's trio worker until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import trio
import trio_asyncio
from starlette.types import ASGIApp

from hookdb.collector.api.app import Api
from hookdb.collector.api.feed import Feed
from hookdb.collector.api.reader import Reader
from hookdb.collector.config import Config
from hookdb.collector.ops import http, logs, systemd
from hookdb.collector.store import embedded
from hookdb.collector.store.connect import ConnectOptions

log = logs.get("hookdb.api")

GRACE_SECONDS = 5.0
HEADER_SECONDS = 5.0  # hypercorn's default keep-alive timeout, which bounded the headers before
MAX_CONNECTIONS = 512  # live streams included; well below the default soft limit of 1024 descriptors


async def run(config: Config) -> None:
    settings = config.api
    if not settings.tokens:
        log.warning("api.no_tokens", detail="api.tokens is empty: every request will be refused with 401")
    async with trio_asyncio.open_loop():
        dsn, server = await embedded.resolve(config.dsn, config.state_dir)
        options = ConnectOptions.from_config(
            config,
            dsn,
            application_name="hookdb-api",
            role=settings.role,
            role_setting="api.role",
            statement_timeout=settings.statement_timeout_seconds,
            # A generic plan cannot know how long a session is: the timeline's would read all of a
            # long session for every page. Planning afresh costs well under a millisecond.
            settings=(("plan_cache_mode", "force_custom_plan"),),
        )
        try:
            async with Reader(options, settings.pool_size) as reader, trio.open_nursery() as nursery:
                feed = Feed(_listen_options(options, settings.listen_dsn), reader, settings.heartbeat_seconds)
                await nursery.start(feed.run)
                stop = trio.Event()
                nursery.start_soon(_stop_on_signal, stop, feed)
                port = await nursery.start(
                    _serve, Api(reader, feed, settings).app(), settings.listen, stop, nursery.cancel_scope
                )
                url = f"http://{settings.listen.rpartition(':')[0]}:{port}"
                log.info("api.listening", listen=settings.listen, url=url, pid=os.getpid())
                systemd.notify("READY=1", f"STATUS=serving on {url}")
        finally:
            if server is not None:
                await trio.to_thread.run_sync(server.cleanup)
    log.info("api.stopped")


def _listen_options(options: ConnectOptions, listen_dsn: str) -> ConnectOptions:
    """The live feed's LISTEN needs a session: ``api.listen_dsn`` reaches the server directly; without it
    the feed listens through the API's DSN, which a transaction pooler would not keep."""
    if listen_dsn:
        return replace(options, dsn=listen_dsn, pooler="none")
    if options.through_pooler:
        log.warning(
            "api.feed_through_pooler",
            detail='database.pooler = "transaction" and no api.listen_dsn: the live feed may miss changes; '
            "set api.listen_dsn to a DSN that reaches the server directly",
        )
    return options


async def _serve(
    app: ASGIApp,
    listen: str,
    stop: trio.Event,
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    limits = http.Limits(MAX_CONNECTIONS, HEADER_SECONDS)
    await http.serve(
        "api", app, listen, limits, stop=stop, grace_seconds=GRACE_SECONDS, task_status=task_status
    )
    done.cancel()  # the server has finished its requests: stop the feed too


async def _stop_on_signal(stop: trio.Event, feed: Feed) -> None:
    # Kept open until the end: a second signal during the graceful stop must not kill the process.
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if stop.is_set():
                    continue
                log.info("api.stopping", signal=signal.Signals(signum).name)
                systemd.notify("STOPPING=1")
                feed.close()  # live streams end, so the server need not wait out their grace period
                stop.set()
    finally:
        if stop.is_set():  # nor one during the teardown after it (closing the pool, the embedded server)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
