"""The CRC record format shared by the collector's spool, the client outbox and the dead-letter files.

A file is an 8-byte header naming its kind, then records::

    magic (2 bytes) | body length (uint32, BE) | CRC-32 of length and body (uint32, BE) | body

The CRC covers the length too, so a flipped length bit is caught like a flipped body bit; the magic
lets a reader find the next intact record after damage. Pure and standard-library only: the
``hookdb-emit`` hook writes this format on its fallback path.
"""

from __future__ import annotations

import os
import zlib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # not imported at run time: the outbox is on hookdb-emit's path
    from collections.abc import Callable

MAGIC = b"\xb5\x4b"
RECORD_HEADER_SIZE = 10
FILE_HEADER_SIZE = 8
SPOOL_FILE = b"HKSPOOL1"
OUTBOX_FILE = b"HKOUTBX1"


def encode_record(body: bytes) -> bytes:
    """One record holding ``body``."""
    length = len(body).to_bytes(4, "big")
    return MAGIC + length + zlib.crc32(body, zlib.crc32(length)).to_bytes(4, "big") + body


class Record(NamedTuple):
    offset: int
    """Where the record starts in the stream."""
    body: bytes

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER_SIZE + len(self.body)


class Damage(NamedTuple):
    """A span of bytes holding no intact record: skipped, counted, reported."""

    start: int
    end: int


class RecordReader:
    """Turns a byte stream back into records; pure, no I/O.

    ``receive_data`` buffers bytes; ``next_record`` returns the next intact :class:`Record`, a
    :class:`Damage` span of bytes skipped to reach it, or ``None`` until more bytes arrive. After
    ``end_of_data``, ``next_record`` also reports the torn or damaged tail, then ``None`` for good.
    A record is returned only if its magic, length and CRC all check: damage can drop records but
    never alter one. Memory stays below ``max_body`` plus one read.
    """

    def __init__(self, max_body: int, offset: int = 0) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._base = offset  # stream offset of _buf[0]
        self._pos = 0  # next unexamined byte in _buf
        self._damage_from: int | None = None  # stream offset where the current damaged span began
        self._eof = False

    @property
    def offset(self) -> int:
        """Stream offset up to which everything has been returned or reported."""
        return self._base + self._pos if self._damage_from is None else self._damage_from

    def receive_data(self, data: bytes) -> None:
        if self._pos > 1 << 20 or self._pos == len(self._buf):
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += data

    def _check(self, at: int) -> int | None:
        """Length of the intact record at ``at``; -1 if there is none; ``None`` if more bytes are needed."""
        buf = self._buf
        if len(buf) - at < RECORD_HEADER_SIZE:
            return None if not self._eof and buf[at : at + 2] in (MAGIC, MAGIC[:1]) else -1
        if buf[at : at + 2] != MAGIC:
            return -1
        length = int.from_bytes(buf[at + 2 : at + 6], "big")
        if length > self.max_body:
            return -1
        end = at + RECORD_HEADER_SIZE + length
        if len(buf) < end:
            return -1 if self._eof else None
        crc = zlib.crc32(memoryview(buf)[at + RECORD_HEADER_SIZE : end], zlib.crc32(buf[at + 2 : at + 6]))
        return length if crc == int.from_bytes(buf[at + 6 : at + 10], "big") else -1

    def next_record(self) -> Record | Damage | None:
        while True:
            at = self._pos
            if at >= len(self._buf):
                if self._eof and self._damage_from is not None:
                    tail = Damage(self._damage_from, self._base + at)
                    self._damage_from = None
                    return tail
                return None
            length = self._check(at)
            if length is None:
                return None
            if length >= 0:
                if self._damage_from is not None:
                    damage = Damage(self._damage_from, self._base + at)
                    self._damage_from = None
                    return damage
                end = at + RECORD_HEADER_SIZE + length
                self._pos = end
                return Record(self._base + at, bytes(self._buf[at + RECORD_HEADER_SIZE : end]))
            if self._damage_from is None:
                self._damage_from = self._base + at
            found = self._buf.find(MAGIC[:1], at + 1)
            self._pos = len(self._buf) if found < 0 else found

    def end_of_data(self) -> None:
        """No more bytes will come: what cannot complete is now damage."""
        self._eof = True


def write_whole(fd: int, data: bytes, cut: Callable[[], object]) -> None:
    """Write all of ``data`` to ``fd`` through short writes. When a write fails after part of ``data`` is
    in the file, ``cut()`` takes that part out before the error is raised, so the file keeps ending with a
    whole record (the spool and the outbox each know where their last one ends)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        if len(view) < len(data):
            cut()
        raise
