"""The durable spool: an event counts as accepted once it is in a spool segment on disk.

Segments are files of CRC records (``hookdb.client.records``) named by sequence number. The
listener appends; a reader streams records back in order to the batcher; once a batch has
committed, ``delivered`` moves the checkpoint past it and deletes segments wholly behind it.
``fsync`` decides when appended bytes are forced to disk: ``always`` (acks wait for a group
commit), ``interval`` (a timer), ``never`` (the kernel decides).

Opening a spool recovers it without ever refusing to start: a torn tail in the last segment (a crash
mid-write) is cut off; any other damage moves the segment to ``quarantine/`` after its intact,
undelivered records have been copied into a fresh segment.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import trio

from hookdb.client.records import (
    FILE_HEADER_SIZE,
    SPOOL_FILE,
    Damage,
    Record,
    RecordReader,
    encode_record,
)
from hookdb.collector.ops import logs
from hookdb.collector.ops.files import fsync_dir

log = logs.get("hookdb.spool")

FsyncMode = Literal["always", "interval", "never"]

SUFFIX = ".seg"
CHECKPOINT = "delivered"
QUARANTINE = "quarantine"
READ_BYTES = 1 << 20


class _EndOfInput(Exception):
    pass


class Position(NamedTuple):
    """A place in the spool: segment number and byte offset; orders like the records."""

    segment: int
    offset: int


@dataclass
class Segment:
    seq: int
    path: Path
    size: int
    sealed: bool


@dataclass
class Recovery:
    """What opening the spool found and did."""

    segments: int = 0
    records: int = 0
    bytes: int = 0
    torn_tail_bytes: int = 0
    damaged: list[tuple[str, Damage]] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    salvaged_records: int = 0


def segment_name(seq: int) -> str:
    return f"{seq:020d}{SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            found.append((int(path.stem), path))
        except ValueError:
            continue
    return sorted(found)


def read_checkpoint(directory: Path) -> Position:
    try:
        seq, offset = (directory / CHECKPOINT).read_text().split()
        return Position(int(seq), int(offset))
    except (OSError, ValueError):
        return Position(0, 0)


def scan_segment(path: Path, max_record: int) -> Iterator[Record | Damage]:
    """Every record and damaged span of one segment file, read in bounded chunks."""
    with open(path, "rb") as f:
        header = f.read(FILE_HEADER_SIZE)
        if header != SPOOL_FILE:
            yield Damage(0, os.fstat(f.fileno()).st_size)
            return
        reader = RecordReader(max_record, FILE_HEADER_SIZE)
        while chunk := f.read(READ_BYTES):
            reader.receive_data(chunk)
            while (item := reader.next_record()) is not None:
                yield item
        reader.end_of_data()
        while (item := reader.next_record()) is not None:
            yield item


class Spool:
    """The spool of one collector; create with :meth:`open` (blocking: run in a thread)."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncMode,
        fsync_interval: float,
        segment_bytes: int,
        max_bytes: int,
        max_record: int,
    ) -> None:
        self.directory = directory
        self.fsync_mode = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.max_record = max_record
        self.segments: list[Segment] = []
        self.checkpoint = Position(0, 0)
        self.pending_records = 0
        self._fd = -1
        self._written = Position(0, 0)
        self._synced = Position(0, 0)
        self._grew = trio.Event()
        self._freed = trio.Event()
        self._sync_wanted = trio.Event()
        self._synced_event = trio.Event()
        self._sync_lock = trio.Lock()
        self._input_closed = False
        self._appends_waiting = 0
        self._unsynced: list[int] = []  # sealed segments' descriptors awaiting their last fsync

    # -- opening and recovery (blocking) ------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, **settings: object) -> tuple[Spool, Recovery]:
        spool = cls(directory, **settings)  # type: ignore[arg-type]
        return spool, spool._recover()

    def _recover(self) -> Recovery:
        """Check every segment in bounded memory: cut torn tails, quarantine damaged segments and copy
        their intact undelivered records into a fresh segment, one at a time."""
        report = Recovery()
        self.directory.mkdir(parents=True, exist_ok=True)
        checkpoint = read_checkpoint(self.directory)
        found = list_segments(self.directory)
        quarantined: list[tuple[int, Path]] = []
        for seq, path in found:
            if seq < checkpoint.segment:
                path.unlink()  # wholly delivered before the last stop
                continue
            size = path.stat().st_size
            damaged = False
            pending = 0
            cut_at: int | None = None
            for item in scan_segment(path, self.max_record):
                if isinstance(item, Record):
                    pending += Position(seq, item.offset) >= checkpoint
                elif item.end == size and not damaged and item.start >= FILE_HEADER_SIZE:
                    cut_at = item.start  # a torn tail: the process died mid-write
                else:
                    damaged = True
                    report.damaged.append((path.name, item))
            if damaged:
                quarantine = self.directory / QUARANTINE
                quarantine.mkdir(exist_ok=True)
                path.rename(quarantine / path.name)
                report.quarantined.append(path.name)
                quarantined.append((seq, quarantine / path.name))
                continue
            if cut_at is not None:
                with open(path, "r+b") as f:
                    f.truncate(cut_at)
                    os.fsync(f.fileno())
                report.torn_tail_bytes += size - cut_at
                size = cut_at
            if not pending:
                path.unlink()
                continue
            self.segments.append(Segment(seq, path, size, sealed=True))
            report.records += pending
        self._open_segment((found[-1][0] + 1) if found else 1)
        for seq, path in quarantined:
            for item in scan_segment(path, self.max_record):
                if isinstance(item, Record) and Position(seq, item.offset) >= checkpoint:
                    self._write(encode_record(item.body))
                    report.salvaged_records += 1
        os.fsync(self._fd)
        fsync_dir(self.directory)
        self.pending_records = report.records + report.salvaged_records
        self.checkpoint = max(checkpoint, Position(self.segments[0].seq, FILE_HEADER_SIZE))
        self._synced = self._written
        report.segments = len(self.segments)
        report.bytes = self.pending_bytes
        return report

    def _open_segment(self, seq: int) -> None:
        """Start segment ``seq`` as the one appended to; making it durable is left to the next sync."""
        path = self.directory / segment_name(seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(self._fd, SPOOL_FILE)
        self.segments.append(Segment(seq, path, FILE_HEADER_SIZE, sealed=False))
        self._written = Position(seq, FILE_HEADER_SIZE)

    def _write(self, record: bytes) -> Position:
        view = memoryview(record)
        while view:
            view = view[os.write(self._fd, view) :]
        active = self.segments[-1]
        active.size += len(record)
        self._written = Position(active.seq, active.size)
        return self._written

    # -- state ----------------------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes on disk not yet delivered."""
        total = sum(s.size for s in self.segments)
        return total - (
            self.checkpoint.offset if self.segments and self.checkpoint.segment == self.segments[0].seq else 0
        )

    @property
    def disk_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- appending (trio) -----------------------------------------------------------------------------

    async def append(self, bodies: list[bytes]) -> Position:
        """Append records in one write, waiting while the spool is full; return the position after them."""
        data = b"".join(encode_record(body) for body in bodies)
        while self.disk_bytes + len(data) > self.max_bytes and self.pending_records:
            if self._freed.is_set():
                self._freed = trio.Event()
            self._appends_waiting += 1
            try:
                await self._freed.wait()
            finally:
                self._appends_waiting -= 1
        active = self.segments[-1]
        if active.size + len(data) > self.segment_bytes and active.size > FILE_HEADER_SIZE:
            self._rotate()
        position = self._write(data)
        self.pending_records += len(bodies)
        self._grew.set()
        self._grew = trio.Event()
        return position

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more bytes can be appended now without waiting for deliveries."""
        return not self.full and (self.disk_bytes + size <= self.max_bytes or not self.pending_records)

    @property
    def full(self) -> bool:
        """True while appends are waiting for delivered segments to be deleted."""
        return self._appends_waiting > 0

    def _rotate(self) -> None:
        """Seal the active segment and start the next; the old one is synced and closed by the next sync."""
        self.segments[-1].sealed = True
        old_fd = self._fd
        self._open_segment(self.segments[-1].seq + 1)
        if self.fsync_mode == "never":
            os.close(old_fd)
        else:
            self._unsynced.append(old_fd)

    async def wait_durable(self, position: Position) -> None:
        """Return once ``position`` is on disk as the fsync setting promises (group commit for ``always``)."""
        if self.fsync_mode != "always":
            return
        while self._synced < position:
            self._sync_wanted.set()
            await self._synced_event.wait()

    async def sync(self) -> None:
        """Force everything appended so far to disk, whatever the fsync setting."""
        async with self._sync_lock:
            target, sealed = self._written, self._unsynced
            self._unsynced = []
            await trio.to_thread.run_sync(self._fsync, [*sealed, self._fd], bool(sealed))
            for fd in sealed:
                os.close(fd)
            self._synced = max(self._synced, target)
            event, self._synced_event = self._synced_event, trio.Event()
            event.set()

    def _fsync(self, fds: list[int], new_files: bool) -> None:
        for fd in fds:
            os.fsync(fd)
        if new_files:
            fsync_dir(self.directory)

    async def run_syncer(self) -> None:
        """The group-commit task (``always``) or timer (``interval``); returns at once for ``never``."""
        if self.fsync_mode == "never":
            return
        while True:
            if self.fsync_mode == "always":
                await self._sync_wanted.wait()
                self._sync_wanted = trio.Event()
            else:
                await trio.sleep(self.fsync_interval)
            if self._synced < self._written:
                await self.sync()

    # -- reading (trio) -------------------------------------------------------------------------------

    async def read(self, start: Position) -> AsyncIterator[list[tuple[Position, bytes]]]:
        """Yield the records from ``start`` on as lists of ``(end position, body)``, one list per disk read,
        waiting for new records until :meth:`close_input`."""
        seq, offset = start
        while True:
            segment = next(s for s in self.segments if s.seq >= seq)
            if segment.seq != seq:
                seq, offset = segment.seq, FILE_HEADER_SIZE
            try:
                async for records in self._read_segment(segment, offset):
                    yield records
            except _EndOfInput:
                return
            seq, offset = seq + 1, FILE_HEADER_SIZE

    def close_input(self) -> None:
        """No more appends will come (shutdown): readers stop at the end instead of waiting."""
        self._input_closed = True
        self._grew.set()

    async def _read_segment(
        self, segment: Segment, offset: int
    ) -> AsyncIterator[list[tuple[Position, bytes]]]:
        """Records of one segment from ``offset``; follows the segment while it grows, ends once sealed."""
        reader = RecordReader(self.max_record, offset)
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            while True:
                if offset < segment.size:
                    want = min(READ_BYTES, segment.size - offset)
                    chunk = await trio.to_thread.run_sync(os.pread, fd, want, offset)
                    offset += len(chunk)
                    reader.receive_data(chunk)
                    records = []
                    while (item := reader.next_record()) is not None:
                        if isinstance(item, Record):
                            records.append((Position(segment.seq, item.end), item.body))
                        else:  # damaged after start-up recovery checked it: the disk is failing
                            log.error(
                                "spool.damage_while_reading",
                                segment=segment.path.name,
                                start=item.start,
                                end=item.end,
                            )
                    if records:
                        yield records
                elif segment.sealed:
                    return
                elif self._input_closed:
                    raise _EndOfInput
                else:
                    await self._grew.wait()
        finally:
            os.close(fd)

    # -- delivery -------------------------------------------------------------------------------------

    def delivered(self, upto: Position, records: int) -> None:
        """Everything before ``upto`` is committed (or dead-lettered): checkpoint it, drop whole segments."""
        self.checkpoint = max(self.checkpoint, upto)
        self.pending_records -= records
        tmp = self.directory / (CHECKPOINT + ".tmp")
        tmp.write_text(f"{self.checkpoint.segment} {self.checkpoint.offset}\n")
        tmp.replace(self.directory / CHECKPOINT)  # a lost checkpoint only means a replay; no fsync needed
        freed = False
        while self.segments[0].sealed and (
            self.segments[0].seq < upto.segment
            or (self.segments[0].seq == upto.segment and self.segments[0].size <= upto.offset)
        ):
            self.segments.pop(0).path.unlink()
            freed = True
        if freed:
            self._freed.set()

    def close(self) -> None:
        """Sync and close (blocking); the spool opens again with everything undelivered."""
        for fd in [*self._unsynced, self._fd]:
            if self.fsync_mode != "never":
                os.fsync(fd)
            os.close(fd)
        self._unsynced, self._fd = [], -1
