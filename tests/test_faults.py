"""Faults an operator meets, survived without one: a second collector on a live state directory, a full
spool disk, an outbox on another file system with a damaged file in it, an embedded PostgreSQL whose
collector was SIGKILLed.

Real collector processes, real PostgreSQL, real tmpfs mounts (the tests run as root). Each test counts
what was sent, acknowledged, stored, duplicated, dead-lettered and lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import trio
from pg import StoppablePostgres
from test_nothing_lost import ack_roundtrip, envelope, make_frames, stored_ids, with_database

from hookdb.client import Emitter
from hookdb.client.outbox import OutboxFile
from hookdb.client.records import FILE_HEADER_SIZE, OUTBOX_FILE, Damage, Record, RecordReader, encode_record
from hookdb.client.wire import new_event_id
from hookdb.collector.spool.deadletters import pending_files
from hookdb.collector.spool.deadletters import read as read_deadletters
from hookdb.collector.spool.segments import QUARANTINE, Position, Spool

from conftest import BIN, Collector, run_sql, wait_for, wait_for_rows

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted on ``directory`` for the block; always unmounted."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path, name: str) -> Path:
    """Write a file into ``directory`` until its file system is full."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def alive(collector: Collector) -> None:
    if collector.proc.poll() is not None:
        pytest.fail(f"collector exited with {collector.proc.returncode}:\n{collector.output[-5000:]}")


def duplicated(dsn: str) -> int:
    return run_sql(dsn, "SELECT count(*) - count(DISTINCT event_id) FROM hook_audit_log")[0][0]


def scrape(collector: Collector, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{collector.metrics_port()}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def report(case: str, **counts: int) -> None:
    print(f"\n{case}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


# -- 11.3: a second collector on a live state directory -----------------------------------------------------


def test_a_second_collector_on_a_live_state_dir_exits_1_and_takes_nothing(
    start_collector, socket_path: Path, tmp_path: Path, private_pg: StoppablePostgres
) -> None:
    run_sql(private_pg.dsn, "CREATE DATABASE hookdb_lock")
    dsn = with_database(private_pg.dsn, "hookdb_lock")
    first = start_collector(
        "--dsn",
        dsn,
        "--set",
        "breaker.open_seconds=1",
        "--set",
        "breaker.retry_seconds=0.2",
        "--set",
        "database.connect_timeout_seconds=2",
        use_dsn=False,
    )
    private_pg.stop()  # delivery is held off: the five events stay in the first collector's spool
    ids, frames = make_frames(0, 5, ack=True)
    acked = ack_roundtrip(socket_path, ids, frames)

    second = subprocess.run(
        [
            str(BIN / "hookdb"),
            "collector",
            "run",
            "--socket",
            str(tmp_path / "other.sock"),  # not the same socket: only the state directory is shared
            "--state-dir",
            str(tmp_path / "state"),
            "--dsn",
            dsn,
            "--set",
            "metrics.enabled=false",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1, second.stderr
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {first.proc.pid}" in lines[0]
    assert "Traceback" not in second.stdout + second.stderr
    alive(first)

    private_pg.start()
    stored = wait_for_rows(dsn, 5)
    alive(first)
    assert set(stored_ids(dsn)) == acked
    report(
        "second collector",
        sent=5,
        acknowledged=len(acked),
        stored=stored,
        duplicated=duplicated(dsn),
        dead_lettered=0,
        lost=5 - stored,
    )
    assert first.stop() == 0


# -- 11.4: the spool's disk is full ------------------------------------------------------------------------


def test_a_full_spool_disk_is_backpressure_and_the_collector_comes_back_by_itself(
    start_collector, socket_path: Path, tmp_path: Path, dsn: str
) -> None:
    spool_dir = tmp_path / "state" / "spool"
    with tmpfs(spool_dir, "2m"):
        settings = ("--set", "outbox.scan_seconds=0.3", "--set", "collector.shutdown_seconds=2")
        collector = start_collector(*settings)
        ids, frames = make_frames(0, 20, ack=True)
        ack_roundtrip(socket_path, ids, frames)  # before the disk fills
        sent = set(ids)
        wait_for_rows(dsn, 20)

        filler = fill(spool_dir, "filler")
        emitter = Emitter(str(socket_path), timeout=0.3, ack=True)
        while_full = [
            str(emitter.emit("PostToolUse", {"i": i, "pad": "x" * 2000}, session_id="f")) for i in range(30)
        ]
        sent.update(while_full)
        assert emitter.lost == 0
        assert emitter.outboxed > 0  # acked clients went to their outbox
        alive(collector)
        assert collector.events("spool.disk_full")
        assert scrape(collector, "hookdb_spool_disk_full_total") >= 1

        # Restart while the disk is still full: recovery must open no segment it cannot write.
        assert collector.stop() == 0
        fill(spool_dir, "filler-2")
        collector = start_collector(*settings)
        segments = list(spool_dir.glob("*.seg"))
        assert all(p.stat().st_size >= FILE_HEADER_SIZE for p in segments), segments
        during = [str(emitter.emit("PostToolUse", {"j": j}, session_id="f")) for j in range(10)]
        sent.update(during)
        alive(collector)

        freed_at = time.monotonic()
        filler.unlink()
        (spool_dir / "filler-2").unlink()
        after = [str(emitter.emit("PostToolUse", {"k": k}, session_id="f")) for k in range(10)]
        sent.update(after)
        emitter.close()
        wait_for(lambda: set(stored_ids(dsn)) >= sent, 60)
        recovered = time.monotonic() - freed_at
        stored = wait_for_rows(dsn, len(sent))
        alive(collector)
        assert not collector.events("spool.damaged")
        assert not collector.events("spool.quarantined")
        assert set(stored_ids(dsn)) == sent
        assert duplicated(dsn) == 0
        report(
            "spool disk full",
            sent=len(sent),
            acknowledged=len(ids) + emitter.sent,
            kept_in_outbox=emitter.outboxed,
            stored=stored,
            duplicated=duplicated(dsn),
            dead_lettered=0,
            lost=len(sent) - stored,
        )
        print(f"all stored {recovered:.2f} s after space returned")
        assert collector.stop() == 0


async def test_a_spool_opened_on_a_full_disk_opens_no_segment_and_salvages_once_it_can(
    tmp_path: Path,
) -> None:
    """Recovery on a full disk: no empty segment is left, a damaged segment is read in place and quarantined
    once delivered; appends wait (``full``) and go through by themselves when space returns."""
    settings = {"fsync": "always", "fsync_interval": 0.05, "segment_bytes": 1 << 20, "max_bytes": 1 << 20}
    with tmpfs(tmp_path / "spool", "1m") as directory:
        spool, _ = Spool.open(directory, max_record=1 << 16, **settings)
        await spool.append([f"event-{i}".encode().ljust(200, b".") for i in range(30)])
        spool.close()
        segment = next(directory.glob("*.seg"))
        data = bytearray(segment.read_bytes())
        data[FILE_HEADER_SIZE + 10 * 220 + 30] ^= 0xFF  # inside the 11th record
        segment.write_bytes(bytes(data))
        filler = fill(directory, "filler")

        spool, recovery = Spool.open(directory, max_record=1 << 16, **settings)
        assert recovery.salvage_deferred == [segment.name]
        assert recovery.quarantined == []
        assert sorted(p.name for p in directory.glob("*.seg")) == [segment.name]  # no new, empty segment
        got: list[tuple[Position, bytes]] = []
        with trio.fail_after(10):
            async for records in spool.read(spool.checkpoint):
                got.extend(records)
                if len(got) >= 29:
                    break
        assert len(got) == 29

        async with trio.open_nursery() as nursery:
            appended: list[Position] = []

            async def append() -> None:
                appended.append(await spool.append([b"after"]))

            nursery.start_soon(append)
            await trio.sleep(0.3)
            assert spool.full
            assert not appended
            spool.delivered(got[-1][0], 29)  # the damaged segment leaves: into quarantine, not deleted
            assert (directory / QUARANTINE / segment.name).read_bytes() == bytes(data)
            filler.unlink()
        assert appended
        assert not spool.full
        spool.close()
        reopened, recovery = Spool.open(directory, max_record=1 << 16, **settings)
        assert (recovery.records, recovery.damaged, recovery.salvage_deferred) == (1, [], [])
        reopened.close()


async def test_a_disk_filled_by_a_delivered_active_segment_frees_it_for_the_next_append(
    tmp_path: Path,
) -> None:
    """Deliveries delete only sealed segments: a fully delivered active segment is dropped on a full disk."""
    settings = {"fsync": "never", "fsync_interval": 0.05, "segment_bytes": 8 << 20, "max_bytes": 8 << 20}
    with tmpfs(tmp_path / "spool", "1m") as directory:
        spool, _ = Spool.open(directory, max_record=1 << 16, **settings)
        end = await spool.append([b"x" * 60_000 for _ in range(8)])
        spool.delivered(end, 8)
        fill(directory, "filler")
        with trio.fail_after(5):
            position = await spool.append([b"y" * 60_000])
        assert position.segment == end.segment + 1
        got: list[tuple[Position, bytes]] = []
        with trio.fail_after(5):
            async for records in spool.read(spool.checkpoint):
                got.extend(records)
                break
        assert [body for _, body in got] == [b"y" * 60_000]
        spool.close()


# -- 11.5 and 11.6: an outbox on another file system, with a damaged file and an undecodable record --------


def write_outbox_file(directory: Path, bodies: list[bytes]) -> Path:
    outbox = OutboxFile(str(directory))
    for body in bodies:
        outbox.append(body)
    outbox.close()
    return Path(outbox.path)


def test_a_damaged_outbox_file_on_another_file_system_is_quarantined_beside_it(
    start_collector, socket_path: Path, dsn: str
) -> None:
    outbox_dir = socket_path.parent / "outbox"
    with tmpfs(outbox_dir, "4m"):
        good = [new_event_id() for _ in range(20)]
        intact = write_outbox_file(outbox_dir, [envelope(i, b'{"n": 1}') for i in good])

        damaged_ids = [new_event_id() for _ in range(10)]
        damaged = write_outbox_file(outbox_dir, [envelope(i, b'{"n": 2}') for i in damaged_ids])
        data = bytearray(damaged.read_bytes())
        record = len(encode_record(envelope(damaged_ids[0], b'{"n": 2}')))
        data[FILE_HEADER_SIZE + 4 * record + 30] ^= 0xFF  # inside the 5th record
        damaged.write_bytes(bytes(data))

        deep_ids = [new_event_id() for _ in range(3)]
        nested = envelope(deep_ids[1], b"[" * 5000 + b"]" * 5000)  # msgspec raises RecursionError on it
        poisoned = write_outbox_file(
            outbox_dir, [envelope(deep_ids[0], b'{"n": 3}'), nested, envelope(deep_ids[2], b"{}")]
        )

        collector = start_collector("--set", "outbox.scan_seconds=0.3")
        expected = set(good) | set(damaged_ids[:4] + damaged_ids[5:]) | {deep_ids[0], deep_ids[2]}
        stored = wait_for_rows(dsn, len(expected))
        wait_for(lambda: not list(outbox_dir.glob("*.out")), 30)
        for _ in range(3):  # several drain rounds: nothing is appended again
            time.sleep(0.4)
            alive(collector)
        assert set(stored_ids(dsn)) == expected
        assert duplicated(dsn) == 0
        assert not intact.exists()
        assert not poisoned.exists()
        assert (outbox_dir / "quarantine" / damaged.name).read_bytes() == bytes(data)
        assert not collector.events("outbox.retire_failed")
        state_dir = socket_path.parent / "state"
        letters = [letter for path in pending_files(state_dir) for letter in read_deadletters(path)]
        assert len(letters) == 1
        letter = letters[0]
        assert not isinstance(letter, str)
        assert letter.error.startswith("bad_payload")
        assert letter.envelope == nested
        report(
            "damaged outbox on tmpfs",
            sent=33,
            acknowledged=0,
            stored=stored,
            duplicated=duplicated(dsn),
            dead_lettered=len(letters),
            damaged_in_quarantine=1,
            lost=33 - stored - len(letters) - 1,
        )

        # The collector restarts over the same outbox: nothing is drained twice.
        assert collector.stop() == 0
        again = start_collector("--set", "outbox.scan_seconds=0.3")
        time.sleep(1.0)
        alive(again)
        assert not again.events("outbox.drained")  # the quarantined file is not drained again
        assert not again.events("spool.replaying")
        assert again.stop() == 0


def test_an_outbox_file_that_cannot_be_retired_is_not_drained_twice(
    start_collector, socket_path: Path, dsn: str
) -> None:
    """The outbox's file system turns read-only: the drained file cannot be deleted, and its records are
    not appended to the spool again at every scan."""
    outbox_dir = socket_path.parent / "outbox"
    with tmpfs(outbox_dir, "4m"):
        ids = [new_event_id() for _ in range(10)]
        stuck = write_outbox_file(outbox_dir, [envelope(i, b'{"n": 1}') for i in ids])
        subprocess.run(["mount", "-o", "remount,ro", str(outbox_dir)], check=True)
        collector = start_collector("--set", "outbox.scan_seconds=0.2")
        stored = wait_for_rows(dsn, 10)
        wait_for(lambda: collector.events("outbox.retire_failed"), 10)
        time.sleep(1.5)  # several scans
        alive(collector)
        assert stuck.exists()
        assert len(collector.events("outbox.drained")) == 1
        assert len(collector.events("outbox.retire_failed")) == 1
        assert set(stored_ids(dsn)) == set(ids)
        report(
            "outbox read-only",
            sent=10,
            acknowledged=0,
            stored=stored,
            duplicated=duplicated(dsn),
            dead_lettered=0,
            lost=10 - stored,
        )
        assert collector.stop() == 0


def test_a_record_the_outbox_disk_cannot_hold_is_reported_and_leaves_the_file_whole(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "outbox", "1m") as directory:
        outbox = OutboxFile(str(directory))
        kept = [envelope(new_event_id(), b'{"n": 1}') for _ in range(3)]
        for body in kept:
            outbox.append(body)
        size = os.path.getsize(outbox.path)
        filler = fill(directory, "filler")
        with pytest.raises(OSError, match="No space left"):
            outbox.append(envelope(new_event_id(), b'"' + b"x" * 200_000 + b'"'))  # short write, then ENOSPC
        assert os.path.getsize(outbox.path) == size  # the torn record is cut off
        filler.unlink()
        outbox.append(kept[0])
        outbox.close()
        items = list(scan_outbox(Path(outbox.path)))
        assert [item.body for item in items if isinstance(item, Record)] == [*kept, kept[0]]
        assert not [item for item in items if isinstance(item, Damage)]


def scan_outbox(path: Path) -> Iterator[Record | Damage]:
    data = path.read_bytes()
    assert data[:FILE_HEADER_SIZE] == OUTBOX_FILE
    reader = RecordReader(1 << 20, FILE_HEADER_SIZE)
    reader.receive_data(data[FILE_HEADER_SIZE:])
    reader.end_of_data()
    while (item := reader.next_record()) is not None:
        yield item


# -- 11.15: the embedded PostgreSQL after a SIGKILLed collector ---------------------------------------------


def postgres_of(pgdata: Path) -> list[psutil.Process]:
    """Running postgres processes of the data directory ``pgdata``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(cmdline):
            found.append(proc)
    return found


def test_a_sigkilled_collector_does_not_keep_the_embedded_postgres_running_forever(
    start_collector, tmp_path: Path
) -> None:
    # Not under pytest's 0700 base directory, which pgserver's own user must traverse (and which other
    # pytest runs may chmod back at any time).
    state_dir = Path(tempfile.mkdtemp(prefix="hookdb-test-embedded-"))
    pgdata = (state_dir / "postgres").resolve()
    try:
        first = start_collector("--state-dir", str(state_dir), use_dsn=False, wait=False)
        first.wait_ready(120)  # initdb on the first start
        ids, frames = make_frames(0, 5, ack=True)
        acked = ack_roundtrip(tmp_path / "hookdb.sock", ids, frames)
        first.proc.kill()
        first.proc.wait()
        assert postgres_of(pgdata)  # the server outlives the collector that started it

        second = start_collector("--state-dir", str(state_dir), use_dsn=False, wait=False)
        second.wait_ready(60)
        embedded_dsn = second.events("embedded_postgres.started")[0]["dsn"]
        stored = wait_for_rows(embedded_dsn, 5)
        assert set(stored_ids(embedded_dsn)) == acked
        report(
            "embedded after SIGKILL",
            sent=5,
            acknowledged=len(acked),
            stored=stored,
            duplicated=duplicated(embedded_dsn),
            dead_lettered=0,
            lost=5 - stored,
        )
        assert second.stop() == 0
        wait_for(lambda: not postgres_of(pgdata), 30)
        assert second.events("embedded_postgres.stale_handles_removed")[0]["pids"] == [first.proc.pid]
        handles = json.loads((pgdata / ".handle_pids.json").read_text())
        assert handles == []
    finally:
        for proc in postgres_of(pgdata):
            proc.kill()
        shutil.rmtree(state_dir, ignore_errors=True)
