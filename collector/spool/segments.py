"""The durable spool: an event counts as accepted once it is in a spool segment on disk.

Segments are files of CRC records (``hookdb.client.records``) named by sequence number. The
listener appends; a reader streams records back in order to the batcher; once a batch has
committed, ``delivered`` moves the checkpoint past it and deletes segments wholly behind it.
``fsync`` decides when appended bytes are forced to disk: ``always`` (acks wait for a group
commit), ``interval`` (a timer), ``never`` (the kernel decides).

Opening a spool recovers it without ever refusing to start: a torn tail in the last segment (a crash
mid-write) is cut off; any other damage moves the segment to ``quarantine/`` after its intact,
undelivered records have been copied into a fresh segment.

A full disk (ENOSPC, or EDQUOT for a quota) is backpressure, as a full spool is: the append that meets it
cuts off what it wrote, waits and retries (clients meanwhile fall back to their outbox), so every segment
stays whole and no empty segment is left behind. A recovery that cannot write opens no new segment and
leaves a damaged segment in place, read where it is and quarantined once delivered.
"""

from __future__ import annotations

import errno
import math
import os
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import trio

from hookdb.client.records import (
    FILE_HEADER_SIZE,
    MAGIC,
    RECORD_HEADER_SIZE,
    SPOOL_FILE,
    Damage,
    Record,
    RecordReader,
    encode_record,
    write_whole,
)
from hookdb.collector.ops import logs, metrics
from hookdb.collector.ops.files import fsync_dir

log = logs.get("hookdb.spool")

FsyncMode = Literal["always", "interval", "never"]

SUFFIX = ".seg"
CHECKPOINT = "delivered"
QUARANTINE = "quarantine"
READ_BYTES = 1 << 20
# How long a reader that caught up lets appends gather before it reads them: one wake-up (and one batcher
# step) per few events rather than per event when each append is one (a hookdb-emit each). It adds at most
# this much to an event's way, far below batch.linger_seconds.
GATHER_SECONDS = 0.005
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_RETRY_SECONDS = 1.0  # how often a write waiting on a full disk is tried again
DISK_FULL_QUIET_SECONDS = 10.0  # a full disk again within this long is the same episode (logged once)


def disk_full(exc: OSError) -> bool:
    """Whether ``exc`` says the file system (or the quota) has no room: a wait, not a failure."""
    return exc.errno in DISK_FULL


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
    damaged: bool = False  # left in place by a recovery that could not write: quarantined once delivered


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
    salvage_deferred: list[str] = field(default_factory=list)
    """Damaged segments the full disk left no room to salvage: read in place, quarantined once delivered."""


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
        self._next_seq = 1
        self._disk_full_since: float | None = None  # monotonic time the current full-disk episode began
        self._disk_full_last = -math.inf  # when a write last met a full disk
        self._disk_full_waiting = False  # a write met a full disk and none has gone through since
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
        damaged_segments: list[Segment] = []
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
                segment = Segment(seq, path, size, sealed=True, damaged=True)
                self.segments.append(segment)
                damaged_segments.append(segment)
                report.records += pending
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
        self._next_seq = max(found[-1][0] if found else 0, checkpoint.segment) + 1
        try:
            self._open_segment()
            for segment in damaged_segments:
                self._salvage(segment, checkpoint, report)
            os.fsync(self._fd)
        except OSError as exc:
            if not disk_full(exc):
                raise
            self._disk_full(exc)  # the first append opens the segment once it can write
            report.salvage_deferred = [s.path.name for s in self.segments if s.damaged]
        fsync_dir(self.directory)
        self.pending_records = report.records + report.salvaged_records
        if self.segments:
            self.checkpoint = max(checkpoint, Position(self.segments[0].seq, FILE_HEADER_SIZE))
        else:
            self.checkpoint = checkpoint
        self._synced = self._written
        report.segments = len(self.segments)
        report.bytes = self.pending_bytes
        return report

    def _salvage(self, segment: Segment, checkpoint: Position, report: Recovery) -> None:
        """Copy the damaged segment's intact undelivered records into the active one, then quarantine it;
        on a full disk the copy is cut off again and the segment stays in place."""
        start = self._written
        records = 0
        try:
            for item in scan_segment(segment.path, self.max_record):
                if isinstance(item, Record) and Position(segment.seq, item.offset) >= checkpoint:
                    self._write(encode_record(item.body))
                    records += 1
            os.fsync(self._fd)  # the copy is on disk before the original leaves
            self._quarantine(segment.path)
        except OSError:
            self._cut(start)
            raise
        self.segments.remove(segment)
        report.quarantined.append(segment.path.name)
        report.records -= records  # they are pending in the active segment now, as salvaged records
        report.salvaged_records += records

    def _open_segment(self) -> int:
        """Start the next segment as the one appended to and return the previous one's descriptor (or -1);
        making it durable is left to the next sync. A failure leaves no file and changes nothing."""
        seq = self._next_seq
        path = self.directory / segment_name(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            view = memoryview(SPOOL_FILE)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            path.unlink()  # an empty or headless segment would look damaged at the next start
            raise
        if self._fd >= 0:
            self.segments[-1].sealed = True
        old_fd, self._fd = self._fd, fd
        self._next_seq = seq + 1
        self.segments.append(Segment(seq, path, FILE_HEADER_SIZE, sealed=False))
        self._written = Position(seq, FILE_HEADER_SIZE)
        return old_fd

    def _write(self, data: bytes) -> Position:
        """Append ``data`` to the active segment; if it cannot be written whole, cut off what was."""
        start = self._written
        write_whole(self._fd, data, lambda: self._cut(start))
        active = self.segments[-1]
        active.size += len(data)
        self._written = Position(active.seq, active.size)
        return self._written

    def _cut(self, end: Position) -> None:
        """Truncate the active segment back to ``end``, the end of its last whole record."""
        os.ftruncate(self._fd, end.offset)
        self.segments[-1].size = end.offset
        self._written = end

    def _quarantine(self, path: Path) -> None:
        quarantine = self.directory / QUARANTINE
        quarantine.mkdir(exist_ok=True)
        path.rename(quarantine / path.name)

    def _disk_full(self, exc: OSError) -> None:
        """A write met a full disk: count and log the episode once (a nearly full disk lets some writes
        through between refusals: those are one episode until it stays writable for a while)."""
        now = time.monotonic()
        if now - self._disk_full_last > DISK_FULL_QUIET_SECONDS:
            self._disk_full_since = now
            metrics.spool_disk_full.inc()
            log.error("spool.disk_full", error=str(exc), retry_seconds=DISK_FULL_RETRY_SECONDS)
        self._disk_full_last = now
        self._disk_full_waiting = True

    def _disk_writable(self) -> None:
        """A write went through after the disk was full: logged once an episode, with how long it took."""
        if self._disk_full_waiting:
            self._disk_full_waiting = False
            if self._disk_full_since is not None:
                log.info(
                    "spool.disk_writable", waited_seconds=round(time.monotonic() - self._disk_full_since, 3)
                )
                self._disk_full_since = None

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
        """Append records in one write, waiting while the spool (or its disk) is full; return the position
        after them."""
        data = _encode_records(bodies)
        while True:
            while self.disk_bytes + len(data) > self.max_bytes and self.pending_records:
                await self._wait_for_room()
            try:
                position = self._append_now(data)
            except OSError as exc:
                if not disk_full(exc):
                    raise
                self._disk_full(exc)
                if not self._drop_delivered_active():
                    await self._wait_for_room(DISK_FULL_RETRY_SECONDS)  # deliveries free space, or time does
                continue
            self._disk_writable()
            break
        self.pending_records += len(bodies)
        self._grew.set()
        self._grew = trio.Event()
        return position

    async def _wait_for_room(self, retry_seconds: float = math.inf) -> None:
        """Wait (counted in :attr:`full`) until a delivery frees space, or ``retry_seconds`` pass."""
        if self._freed.is_set():
            self._freed = trio.Event()
        self._appends_waiting += 1
        try:
            with trio.move_on_after(retry_seconds):
                await self._freed.wait()
        finally:
            self._appends_waiting -= 1

    def _drop_delivered_active(self) -> bool:
        """Delete the active segment if all of it is delivered, and say whether it was: on a full disk it may
        hold the only space there is, and deliveries delete only sealed segments. The next append opens a
        new one."""
        if (
            self._fd < 0
            or self.pending_records
            or self.checkpoint < self._written
            or self._sync_lock.locked()
        ):
            return False  # (a sync in progress may be using the descriptor: next retry)
        os.close(self._fd)
        self._fd = -1
        active = self.segments.pop()
        active.sealed = True  # a reader at its end moves on and waits for the next segment
        active.path.unlink()
        self._grew.set()
        self._grew = trio.Event()
        return True

    def _append_now(self, data: bytes) -> Position:
        """Write ``data`` to the active segment, opening or rotating to a new one first when due."""
        if self._fd < 0:
            self._open_segment()
        elif self.segments[-1].size + len(data) > self.segment_bytes and (
            self.segments[-1].size > FILE_HEADER_SIZE
        ):
            self._rotate()
        return self._write(data)

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more bytes can be appended now without waiting for deliveries or disk space."""
        return not self.full and (self.disk_bytes + size <= self.max_bytes or not self.pending_records)

    @property
    def full(self) -> bool:
        """True while appends wait for delivered segments to be deleted, or for a full disk to have room."""
        return self._appends_waiting > 0

    def _rotate(self) -> None:
        """Seal the active segment and start the next; the old one is synced and closed by the next sync."""
        old_fd = self._open_segment()
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
            active = [self._fd] if self._fd >= 0 else []
            await trio.to_thread.run_sync(self._fsync, [*sealed, *active], bool(sealed))
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
            while (segment := next((s for s in self.segments if s.seq >= seq), None)) is None:
                if self._input_closed:
                    return
                await self._grew.wait()  # no segment yet: the disk was full when the spool opened
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
        """Records of one segment from ``offset``; follows the segment while it grows, ends once sealed.

        Intact records are split off each read in bulk (:func:`split_records`); from the first damage on
        (the disk failing after start-up recovery checked it), the segment's rest goes through a
        ``RecordReader``, which skips and reports damaged spans.
        """
        reader: RecordReader | None = None
        rest = b""  # the start of a record the last read cut off
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            while True:
                if offset < segment.size:
                    # A record larger than a read is completed by the next one, not copied again per read.
                    want = min(max(READ_BYTES, _missing(rest)), segment.size - offset)
                    if segment.sealed or segment.size - offset > READ_BYTES:
                        chunk = await trio.to_thread.run_sync(os.pread, fd, want, offset)
                    else:
                        # The last bytes appended, moments ago: in the page cache, read at memory speed and
                        # without a worker thread, whose hop costs more than the read when every append is
                        # one event (a hookdb-emit each). A backlog is read in a thread: disk reads may block.
                        chunk = os.pread(fd, want, offset)
                    offset += len(chunk)
                    records: list[tuple[Position, bytes]] = []
                    if reader is None:
                        data = rest + chunk if rest else chunk
                        start = offset - len(data)
                        records, used = split_records(data, Position(segment.seq, start), self.max_record)
                        rest = data[used:]
                        if not _cut_short(rest, self.max_record):
                            reader = RecordReader(self.max_record, start + used)
                            chunk, rest = rest, b""
                    if reader is not None:
                        reader.receive_data(chunk)
                        records += self._read_records(reader, segment)
                    if records:
                        yield records
                elif segment.sealed:
                    return
                elif self._input_closed:
                    raise _EndOfInput
                else:
                    await self._grew.wait()
                    with trio.move_on_after(GATHER_SECONDS):
                        while segment.size - offset < READ_BYTES and not segment.sealed:
                            if self._input_closed:
                                break
                            await self._grew.wait()
        finally:
            os.close(fd)

    @staticmethod
    def _read_records(reader: RecordReader, segment: Segment) -> list[tuple[Position, bytes]]:
        records = []
        while (item := reader.next_record()) is not None:
            if isinstance(item, Record):
                records.append((Position(segment.seq, item.end), item.body))
            else:  # damaged after start-up recovery checked it: the disk is failing
                log.error(
                    "spool.damage_while_reading", segment=segment.path.name, start=item.start, end=item.end
                )
        return records

    # -- delivery -------------------------------------------------------------------------------------

    def delivered(self, upto: Position, records: int) -> None:
        """Everything before ``upto`` is committed (or dead-lettered): checkpoint it, drop whole segments."""
        self.checkpoint = max(self.checkpoint, upto)
        self.pending_records -= records
        freed = False
        while (
            self.segments
            and self.segments[0].sealed
            and (
                self.segments[0].seq < upto.segment
                or (self.segments[0].seq == upto.segment and self.segments[0].size <= upto.offset)
            )
        ):
            segment = self.segments.pop(0)
            if segment.damaged:
                self._retire_damaged(segment.path)
            else:
                segment.path.unlink()
            freed = True
        self._write_checkpoint()  # after the deletions: they free what a full disk needs for it
        if freed:
            self._freed.set()

    def _retire_damaged(self, path: Path) -> None:
        """Quarantine a damaged segment read in place, now delivered; if even that fails, it stays where it
        is, behind the checkpoint: the next start deletes it as delivered."""
        try:
            self._quarantine(path)
        except OSError as exc:
            log.exception("spool.quarantine_failed", segment=path.name, error=str(exc))
            return
        log.error("spool.quarantined", segments=[path.name], salvaged_records=0)

    def _write_checkpoint(self) -> None:
        """Record the checkpoint; a lost checkpoint only means a replay, so no fsync, and a full disk only
        skips it."""
        tmp = self.directory / (CHECKPOINT + ".tmp")
        try:
            tmp.write_text(f"{self.checkpoint.segment} {self.checkpoint.offset}\n")
            tmp.replace(self.directory / CHECKPOINT)
        except OSError as exc:
            if not disk_full(exc):
                raise
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Sync and close (blocking); the spool opens again with everything undelivered."""
        for fd in [*self._unsynced, *([self._fd] if self._fd >= 0 else [])]:
            if self.fsync_mode != "never":
                os.fsync(fd)
            os.close(fd)
        self._unsynced, self._fd = [], -1


_RECORD_HEADER = struct.Struct(">2sII")  # magic, body length, CRC-32 (see hookdb.client.records)
new_position = tuple.__new__  # a Position without its generated __new__'s Python frame (one per record)


def split_records(data: bytes, at: Position, max_body: int) -> tuple[list[tuple[Position, bytes]], int]:
    """The intact records at the start of ``data`` (which begins at ``at`` in the spool), each with the
    position after it, and how many bytes they take; stops at the first record cut off or not intact."""
    records = []
    unpack = _RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    seq, base = at
    used, size = 0, len(data)
    while size - used >= RECORD_HEADER_SIZE:
        magic, length, crc = unpack(data, used)
        end = used + RECORD_HEADER_SIZE + length
        if magic != MAGIC or length > max_body or end > size:
            break
        body = data[used + RECORD_HEADER_SIZE : end]  # the copy it is delivered as, checked as it is
        if crc32(body, crc32(data[used + 2 : used + 6])) != crc:
            break
        records.append((new_position(Position, (seq, base + end)), body))
        used = end
    return records, used


def _cut_short(rest: bytes, max_body: int) -> bool:
    """Whether ``rest`` (what :func:`split_records` left) can be the start of an intact record."""
    if len(rest) < RECORD_HEADER_SIZE:
        return MAGIC.startswith(rest[:2])
    magic, length, _ = _RECORD_HEADER.unpack_from(rest)
    return magic == MAGIC and length <= max_body and len(rest) < RECORD_HEADER_SIZE + length


def _missing(rest: bytes) -> int:
    """How many bytes the record that ``rest`` begins still lacks (0 while its header is incomplete)."""
    if len(rest) < RECORD_HEADER_SIZE:
        return 0
    return RECORD_HEADER_SIZE + _RECORD_HEADER.unpack_from(rest)[1] - len(rest)


def _encode_records(bodies: list[bytes]) -> bytes:
    """The records of ``bodies`` (as ``encode_record`` makes them), each body copied once."""
    pieces: list[bytes] = []
    append = pieces.append
    header = _RECORD_HEADER.pack
    crc32 = zlib.crc32
    for body in bodies:
        n = len(body)
        append(header(MAGIC, n, crc32(body, crc32(n.to_bytes(4, "big")))))
        append(body)
    return b"".join(pieces)
