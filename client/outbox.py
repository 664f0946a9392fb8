"""The client outbox: where events go when the collector cannot take them, until it drains them.

Each writing process appends to files of its own (CRC records, see ``records``), created as
``*.tmp``, locked with ``flock`` and only then renamed to ``*.out``: the collector drains and deletes
an ``.out`` file only when it can take the lock, so never while its writer may still append.
Standard library only: ``hookdb-emit`` uses it on its fallback path.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress

from hookdb.client.records import OUTBOX_FILE, encode_record, write_whole

SUFFIX = ".out"
DIR_MODE = 0o2770  # group-writable like the socket; setgid so files keep the directory's group


class OutboxFile:
    """An outbox file owned by this process; it is handed to the collector by :meth:`close`."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        name = f"{os.getpid()}-{os.urandom(6).hex()}"
        tmp = os.path.join(directory, name + ".tmp")
        self.path = os.path.join(directory, name + SUFFIX)
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o660)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._size = 0
            self._write_all(OUTBOX_FILE)
            os.rename(tmp, self.path)
        except BaseException:
            os.close(self._fd)
            os.unlink(tmp)
            raise

    def append(self, envelope: bytes) -> None:
        """Append one envelope (a crash leaves whole records or a torn tail); raises ``OSError`` if it
        could not be written whole (e.g. a full disk), after cutting off what was written of it."""
        self._write_all(encode_record(envelope))

    def _write_all(self, data: bytes) -> None:
        """Write ``data`` through short writes; on failure cut it off: the file ends with a whole record."""
        write_whole(self._fd, data, self._cut)
        self._size += len(data)

    def _cut(self) -> None:
        with suppress(OSError):  # else the torn tail stays: the collector's reader skips it as damage
            os.ftruncate(self._fd, self._size)

    def close(self, *, sync: bool = True) -> None:
        """Make the records durable and release the file to the collector."""
        if self._fd < 0:
            return
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
