"""Where the collector's socket and the client outbox live: computed the same way by clients and collector.

Standard library only, cheap to import: ``hookdb-emit`` needs both paths on its hot path.
"""

import os

SOCKET_ENV = "HOOKDB_SOCKET"
OUTBOX_ENV = "HOOKDB_OUTBOX"
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


def outbox_dir(socket_path: str) -> str:
    """``$HOOKDB_OUTBOX``, else ``outbox/`` beside the socket."""
    return os.environ.get(OUTBOX_ENV) or os.path.join(os.path.dirname(socket_path) or ".", "outbox")
