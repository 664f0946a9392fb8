"""systemd integration without libsystemd: readiness and watchdog notifications, socket activation.

Both protocols are a few lines over plain sockets (sd_notify(3), sd_listen_fds(3)); outside systemd
every function here does nothing.
"""

from __future__ import annotations

import os
import socket

LISTEN_FDS_START = 3


def _notify_address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    return "\0" + address[1:] if address.startswith("@") else address  # "@" is the abstract namespace


def enabled() -> bool:
    """Whether systemd asked for notifications (``$NOTIFY_SOCKET``)."""
    return _notify_address() is not None


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1`` … to systemd; False outside it."""
    address = _notify_address()
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(states).encode(), address)
        except OSError:
            return False  # systemd went away; nothing to tell
    return True


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when systemd expects keep-alives from this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


def inherited_socket() -> socket.socket | None:
    """The listening Unix socket passed by socket activation (``$LISTEN_FDS``), if it was passed to us."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    sock = socket.socket(fileno=LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ValueError(
            f"socket activation passed a {sock.family.name}/{sock.type.name} socket; expected AF_UNIX stream"
        )
    os.set_inheritable(LISTEN_FDS_START, False)
    return sock
