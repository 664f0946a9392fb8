"""Draining the client outbox (``hookdb.client.outbox``) into the spool.

A file is drained only while its writer's lock can be taken, and deleted only after its records are
synced into the spool: a crash at any point re-drains it, and duplicates collapse on ``event_id``.
The file's owner stands in for the peer credentials a socket would have given.

A damaged file (or one whose draining failed in any way) is moved to ``quarantine/`` inside the outbox
directory, on the outbox's own file system (the outbox is often on another one than the spool, e.g.
/run and /var/lib). A file that cannot be retired after its records were spooled is remembered and not
drained again by this process.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import NamedTuple

import trio

from hookdb.client.outbox import SUFFIX
from hookdb.client.records import FILE_HEADER_SIZE, OUTBOX_FILE, Damage, RecordReader
from hookdb.client.wire import DEFAULT_MAX_FRAME_BYTES
from hookdb.collector.intake.admission import KeptRefusal, admit_frames, fit, refused_letter
from hookdb.collector.intake.tenancy import TenantPolicy
from hookdb.collector.ops import logs, metrics
from hookdb.collector.spool import deadletters
from hookdb.collector.spool.deadletters import DeadLetter
from hookdb.collector.spool.entry import Peer
from hookdb.collector.spool.segments import QUARANTINE, READ_BYTES, Spool

log = logs.get("hookdb.outbox")

APPEND_EVENTS = 1000
STALE_TMP_SECONDS = 3600.0  # a writer dies between creating and renaming a file: it holds no records


class _FileKey(NamedTuple):
    """An outbox file by name (unique: pid and random) and inode, so a new file is never mistaken for it."""

    name: str
    inode: int


def _released_files(directory: Path) -> list[Path]:
    """Outbox files to try, oldest name first; stale ``.tmp`` leftovers are removed on the way."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if path.suffix == SUFFIX:
            found.append(path)
        elif path.suffix == ".tmp" and time.time() - path.stat().st_mtime > STALE_TMP_SECONDS:
            path.unlink(missing_ok=True)
    return found


class OutboxDrainer:
    """Moves released outbox files into the spool, applying the same admission rules as the socket."""

    def __init__(
        self, directory: Path, spool: Spool, tenants: TenantPolicy, state_dir: Path, max_frame_bytes: int
    ) -> None:
        self.directory = directory
        self._max_frame_bytes = max_frame_bytes
        self._spool = spool
        self._tenants = tenants
        self._state_dir = state_dir
        self._spooled: set[_FileKey] = set()  # spooled, but could not be deleted or quarantined

    async def run(self, interval: float) -> None:
        """Drain at start and then every ``interval`` seconds; a round that cannot even list the directory
        (EMFILE, EACCES, …) is logged once and tried again next round, never fatal."""
        failing = False
        while True:
            try:
                await self.drain()
            except OSError as exc:
                if not failing:
                    log.warning("outbox.scan_failed", directory=str(self.directory), error=str(exc))
                failing = True
            else:
                if failing:
                    log.info("outbox.scan_resumed", directory=str(self.directory))
                failing = False
            await trio.sleep(interval)

    async def drain(self) -> int:
        """Move every released outbox file into the spool; return how many events were moved."""
        files = await trio.to_thread.run_sync(_released_files, self.directory)
        names = {path.name for path in files}
        self._spooled = {key for key in self._spooled if key.name in names}
        metrics.outbox_files.set(len(files) - len(self._spooled))
        moved = 0
        for path in files:
            moved += await self._drain_file(path)
        return moved

    async def _drain_file(self, path: Path) -> int:
        """Move one file's records into the spool and retire it; whatever goes wrong costs only this file."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        events = rejected = 0
        damage: list[Damage] = []
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its writer is still appending; next round
            st = os.fstat(fd)
            key = _FileKey(path.name, st.st_ino)
            if key in self._spooled:
                return 0
            peer = Peer(None, st.st_uid, st.st_gid)
            try:
                events, rejected, damage = await self._move_records(fd, peer)
            except Exception as exc:  # one bad file must never take the collector down
                log.exception("outbox.drain_failed", file=path.name, error=f"{type(exc).__name__}: {exc}")
                damage = [Damage(0, st.st_size)]
        finally:
            os.close(fd)
        await self._spool.sync()  # the outbox copy goes only once the spool copy is on disk
        quarantine = self.directory / QUARANTINE if damage else None
        error = await trio.to_thread.run_sync(_retire, path, quarantine)
        if error is not None:
            self._spooled.add(key)
            log.error("outbox.retire_failed", file=path.name, error=error, events=events)
        if damage:
            log.error("outbox.damaged", file=path.name, spans=[tuple(d) for d in damage], quarantined=True)
        log.info("outbox.drained", file=path.name, events=events, rejected=rejected)
        return events

    async def _move_records(self, fd: int, peer: Peer) -> tuple[int, int, list[Damage]]:
        header = await trio.to_thread.run_sync(os.pread, fd, FILE_HEADER_SIZE, 0)
        if header != OUTBOX_FILE:
            return 0, 0, [Damage(0, os.fstat(fd).st_size)]
        grant = self._tenants.grant(peer)
        # Records up to what hookdb's clients write: one over listener.max_frame_bytes is stored shrunk.
        reader = RecordReader(max(self._spool.max_record, DEFAULT_MAX_FRAME_BYTES), FILE_HEADER_SIZE)
        offset = FILE_HEADER_SIZE
        events = 0
        damage: list[Damage] = []
        entries: list[bytes] = []
        kept: list[DeadLetter] = []
        rejected = 0
        while True:
            chunk = await trio.to_thread.run_sync(os.pread, fd, READ_BYTES, offset)
            if chunk:
                offset += len(chunk)
                reader.receive_data(chunk)
            else:
                reader.end_of_data()
            while (item := reader.next_record()) is not None:
                if isinstance(item, Damage):
                    damage.append(item)
                    continue
                body = await fit(item.body, self._max_frame_bytes)
                admitted = admit_frames([body], peer, grant, time.time_ns())
                entries += admitted.entries
                if (exc := admitted.refusal) is not None:
                    rejected += 1
                    metrics.events_rejected.labels(exc.reason).inc()
                    log.warning(
                        "frame.rejected", reason=exc.reason, detail=exc.detail, peer=peer, source="outbox"
                    )
                    # No client waits for an answer: every refused record is kept, with its reason.
                    kept.append(
                        exc.letter
                        if isinstance(exc, KeptRefusal)
                        else refused_letter(item.body, peer, time.time_ns(), f"{exc.reason}: {exc.detail}")
                    )
                if len(entries) >= APPEND_EVENTS:
                    await self._spool.append(entries)
                    events += len(entries)
                    entries = []
            if not chunk:
                break
        if entries:
            await self._spool.append(entries)
            events += len(entries)
        if kept:
            await trio.to_thread.run_sync(deadletters.append, self._state_dir, kept)
            metrics.dead_letters.inc(len(kept))
        metrics.events_received.inc(events)
        return events, rejected, damage


def _retire(path: Path, quarantine: Path | None) -> str | None:
    """Delete a drained file, or move a damaged one into ``quarantine`` (beside it: never across file
    systems, where a rename fails); the error if that failed."""
    try:
        if quarantine is None:
            path.unlink()
        else:
            quarantine.mkdir(mode=0o700, exist_ok=True)
            path.rename(quarantine / path.name)
    except OSError as exc:
        return str(exc)
    return None
