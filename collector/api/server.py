"""``hookdb api``: serve the read API and web page with hypercorn's trio worker until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal

import hypercorn
import hypercorn.trio
import trio
import trio_asyncio

from hookdb.collector.api.app import Api
from hookdb.collector.api.feed import Feed
from hookdb.collector.api.reader import Reader
from hookdb.collector.config import Config
from hookdb.collector.ops import logs, systemd
from hookdb.collector.store import embedded
from hookdb.collector.store.connect import ConnectOptions

log = logs.get("hookdb.api")

GRACE_SECONDS = 5.0


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
            statement_timeout=settings.statement_timeout_seconds,
            # A generic plan cannot know how long a session is: the timeline's would read all of a
            # long session for every page. Planning afresh costs well under a millisecond.
            settings=(("plan_cache_mode", "force_custom_plan"),),
        )
        try:
            async with Reader(options, settings.pool_size) as reader, trio.open_nursery() as nursery:
                feed = Feed(options, reader, settings.heartbeat_seconds)
                await nursery.start(feed.run)
                stop = trio.Event()
                nursery.start_soon(_stop_on_signal, stop, feed)
                hyper = hypercorn.Config()
                hyper.bind = [settings.listen]
                hyper.graceful_timeout = GRACE_SECONDS
                hyper.accesslog = None
                hyper.errorlog = logging.getLogger("hypercorn.error")  # through our logging set-up
                binds = await nursery.start(
                    _serve, Api(reader, feed, settings).app(), hyper, stop, nursery.cancel_scope
                )
                log.info("api.listening", listen=settings.listen, url=binds[0], pid=os.getpid())
                systemd.notify("READY=1", f"STATUS=serving on {binds[0]}")
        finally:
            if server is not None:
                await trio.to_thread.run_sync(server.cleanup)
    log.info("api.stopped")


async def _serve(
    app: object,
    hyper: hypercorn.Config,
    stop: trio.Event,
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await hypercorn.trio.serve(app, hyper, shutdown_trigger=stop.wait, task_status=task_status)  # type: ignore[arg-type]
    done.cancel()  # the server has finished its requests: stop the feed too


async def _stop_on_signal(stop: trio.Event, feed: Feed) -> None:
    # Kept open until the end: a second signal during the graceful stop must not kill the process.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.is_set():
                continue
            log.info("api.stopping", signal=signal.Signals(signum).name)
            systemd.notify("STOPPING=1")
            feed.close()  # live streams end, so the server need not wait out their grace period
            stop.set()
