"""Draining the client outbox (``hookdb.client.outbox``) into the spool.

A file is drained only while its writer's lock can be taken, and deleted only after its records are
synced into the spool: a crash at any point re-drains it, and duplicates collapse on ``event_id``.
The file's owner stands in for the peer credentials a socket would have given.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import trio

from hookdb.client.outbox import SUFFIX
from hookdb.client.records import FILE_HEADER_SIZE, OUTBOX_FILE, Damage, RecordReader
from hookdb.client.wire import ProtocolError
from hookdb.collector.intake.admission import KeptRefusal, admit
from hookdb.collector.intake.tenancy import TenantPolicy
from hookdb.collector.ops import logs, metrics
from hookdb.collector.spool import deadletters
from hookdb.collector.spool.deadletters import DeadLetter
from hookdb.collector.spool.entry import Peer
from hookdb.collector.spool.segments import QUARANTINE, READ_BYTES, Spool

log = logs.get("hookdb.outbox")

APPEND_EVENTS = 1000
STALE_TMP_SECONDS = 3600.0  # a writer dies between creating and renaming a file: it holds no records


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

    def __init__(self, directory: Path, spool: Spool, tenants: TenantPolicy, state_dir: Path) -> None:
        self.directory = directory
        self._spool = spool
        self._tenants = tenants
        self._state_dir = state_dir

    async def run(self, interval: float) -> None:
        """Drain at start and then every ``interval`` seconds."""
        while True:
            await self.drain()
            await trio.sleep(interval)

    async def drain(self) -> int:
        """Move every released outbox file into the spool; return how many events were moved."""
        files = await trio.to_thread.run_sync(_released_files, self.directory)
        metrics.outbox_files.set(len(files))
        moved = 0
        for path in files:
            moved += await self._drain_file(path)
        return moved

    async def _drain_file(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its writer is still appending; next round
            st = os.fstat(fd)
            peer = Peer(None, st.st_uid, st.st_gid)
            events, rejected, damage = await self._move_records(fd, peer)
        finally:
            os.close(fd)
        await self._spool.sync()  # the outbox copy goes only once the spool copy is on disk
        await trio.to_thread.run_sync(_retire, path, self._spool.directory / QUARANTINE if damage else None)
        if damage:
            log.error("outbox.damaged", file=path.name, spans=[tuple(d) for d in damage], quarantined=True)
        log.info("outbox.drained", file=path.name, events=events, rejected=rejected)
        return events

    async def _move_records(self, fd: int, peer: Peer) -> tuple[int, int, list[Damage]]:
        header = await trio.to_thread.run_sync(os.pread, fd, FILE_HEADER_SIZE, 0)
        if header != OUTBOX_FILE:
            return 0, 0, [Damage(0, os.fstat(fd).st_size)]
        grant = self._tenants.grant(peer)
        reader = RecordReader(self._spool.max_record, FILE_HEADER_SIZE)
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
                try:
                    entries.append(admit(item.body, peer, grant, time.time_ns())[0])
                except ProtocolError as exc:
                    rejected += 1
                    metrics.events_rejected.labels(exc.reason).inc()
                    log.warning(
                        "frame.rejected", reason=exc.reason, detail=exc.detail, peer=peer, source="outbox"
                    )
                    if isinstance(exc, KeptRefusal):
                        kept.append(exc.letter)
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


def _retire(path: Path, quarantine: Path | None) -> None:
    if quarantine is None:
        path.unlink()
    else:
        quarantine.mkdir(exist_ok=True)
        path.rename(quarantine / f"outbox-{path.name}")
