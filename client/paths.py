"""Where the collector's socket lives, computed the same way by clients and the collector."""

from __future__ import annotations

import os

SOCKET_ENV = "HOOKDB_SOCKET"
SYSTEM_RUNTIME_DIR = "/run/hookdb"
SOCKET_NAME = "hookdb.sock"


def default_socket_path() -> str:
    """``$HOOKDB_SOCKET``; else the systemd service's socket when that service is installed; else a
    per-user path (``$XDG_RUNTIME_DIR/hookdb/`` or ``/tmp/hookdb-$UID/``)."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return explicit
    if os.path.isdir(SYSTEM_RUNTIME_DIR):
        return os.path.join(SYSTEM_RUNTIME_DIR, SOCKET_NAME)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "hookdb") if runtime else f"/tmp/hookdb-{os.getuid()}"
    return os.path.join(base, SOCKET_NAME)
