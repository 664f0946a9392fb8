"""The spool on real files: order, delivery, recovery from torn and damaged segments, backpressure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trio

from hookdb.client.records import FILE_HEADER_SIZE, RECORD_HEADER_SIZE, encode_record
from hookdb.collector.spool import segments
from hookdb.collector.spool.segments import QUARANTINE, Position, Spool, split_records

from conftest import BIN

SETTINGS = {
    "fsync": "interval",
    "fsync_interval": 0.05,
    "segment_bytes": 4096,
    "max_bytes": 1 << 20,
    "max_record": 1 << 16,
}


def open_spool(directory: Path, **changes: object) -> tuple[Spool, object]:
    return Spool.open(directory, **{**SETTINGS, **changes})


async def read_n(spool: Spool, n: int, start: Position | None = None) -> list[tuple[Position, bytes]]:
    got: list[tuple[Position, bytes]] = []
    with trio.fail_after(10):
        async for records in spool.read(start or spool.checkpoint):
            got.extend(records)
            if len(got) >= n:
                break
    return got


def bodies(n: int, size: int = 100) -> list[bytes]:
    return [f"event-{i:05d}-".encode().ljust(size, b".") for i in range(n)]


async def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path)
    sent = bodies(200)
    for i in range(0, 200, 7):
        await spool.append(sent[i : i + 7])
    assert len(spool.segments) > 3  # 4 KiB segments: it rotated
    got = await read_n(spool, 200)
    assert [body for _, body in got] == sent
    assert [pos for pos, _ in got] == sorted(pos for pos, _ in got)
    spool.close()


def test_records_are_split_off_in_bulk_up_to_the_first_cut_off_or_damaged_one() -> None:
    sent = bodies(5, 50)
    data = b"".join(encode_record(body) for body in sent)
    size = RECORD_HEADER_SIZE + 50
    at = Position(3, FILE_HEADER_SIZE)
    records, used = split_records(data, at, 1 << 16)
    assert records == [(Position(3, FILE_HEADER_SIZE + size * (i + 1)), body) for i, body in enumerate(sent)]
    assert used == len(data)
    assert split_records(data[:-1], at, 1 << 16)[1] == 4 * size  # the last one cut off: for the next read
    damaged = bytearray(data)
    damaged[2 * size + RECORD_HEADER_SIZE + 7] ^= 0x01  # a flipped bit in the third body
    records, used = split_records(bytes(damaged), at, 1 << 16)
    assert [body for _, body in records] == sent[:2]
    assert used == 2 * size
    assert split_records(data, at, 49)[1] == 0  # a length beyond the limit is damage, not a record


@pytest.mark.parametrize("read_bytes", [333, 1 << 20])  # reads ending inside records; one read for all
async def test_reads_that_cut_records_and_damage_after_start_up_lose_only_the_damaged_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int
) -> None:
    """Reads end anywhere in a record; a record damaged after start-up is skipped, the ones after it read."""
    monkeypatch.setattr(segments, "READ_BYTES", read_bytes)
    spool, _ = open_spool(tmp_path, segment_bytes=1 << 20)
    sent = bodies(40, 100)
    end = await spool.append(sent[:20])
    size = RECORD_HEADER_SIZE + 100
    path = spool.segments[-1].path
    with open(path, "r+b") as f:  # the disk fails under the live segment: record 12's body changes
        f.seek(FILE_HEADER_SIZE + 12 * size + RECORD_HEADER_SIZE + 3)
        f.write(b"#")
    await spool.append(sent[20:])
    got = await read_n(spool, 39)
    assert [body for _, body in got] == sent[:12] + sent[13:]
    assert got[11][0] == Position(end.segment, FILE_HEADER_SIZE + 12 * size)
    assert got[-1][0] == Position(end.segment, FILE_HEADER_SIZE + 40 * size)
    spool.close()


async def test_records_larger_than_a_read_come_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "READ_BYTES", 333)
    spool, _ = open_spool(tmp_path, segment_bytes=1 << 20)
    sent = [body * 40 for body in bodies(6, 50)]  # 2000 bytes each: six reads' worth apiece
    end = await spool.append(sent)
    got = await read_n(spool, 6)
    assert [body for _, body in got] == sent
    assert got[-1][0] == end
    spool.close()


async def test_delivered_segments_are_deleted_and_a_restart_replays_only_the_rest(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path)
    sent = bodies(100)
    for body in sent:
        await spool.append([body])
    got = await read_n(spool, 100)
    files_before = len(list(tmp_path.glob("*.seg")))
    spool.delivered(got[59][0], 60)
    assert len(list(tmp_path.glob("*.seg"))) < files_before
    assert spool.pending_records == 40
    spool.close()

    reopened, report = open_spool(tmp_path)
    assert report.records == 40
    assert [body for _, body in await read_n(reopened, 40)] == sent[60:]
    reopened.close()


async def test_a_torn_tail_is_cut_and_everything_before_it_kept(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, segment_bytes=1 << 20)
    await spool.append(bodies(10))
    spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    with open(segment, "ab") as f:
        f.write(encode_record(b"half-written record")[:15])  # the crash came mid-write

    reopened, report = open_spool(tmp_path)
    assert report.torn_tail_bytes == 15
    assert report.quarantined == []
    assert [body for _, body in await read_n(reopened, 10)] == bodies(10)
    reopened.close()


async def test_a_damaged_segment_is_quarantined_and_its_intact_records_salvaged(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, segment_bytes=1 << 20)
    await spool.append(bodies(30))
    spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    record = len(encode_record(bodies(1)[0]))
    data[FILE_HEADER_SIZE + 10 * record + 20] ^= 0xFF  # inside the 11th record
    segment.write_bytes(bytes(data))

    reopened, report = open_spool(tmp_path)
    assert report.quarantined == [segment.name]
    assert (tmp_path / QUARANTINE / segment.name).exists()
    assert report.salvaged_records == 29
    got = [body for _, body in await read_n(reopened, 29)]
    assert got == bodies(30)[:10] + bodies(30)[11:]
    reopened.close()


async def test_a_segment_with_a_foreign_header_is_quarantined(tmp_path: Path) -> None:
    (tmp_path / f"{1:020d}.seg").write_bytes(b"garbage!" + b"x" * 100)
    spool, report = open_spool(tmp_path)
    assert report.quarantined == [f"{1:020d}.seg"]
    await spool.append([b"new"])
    assert [body for _, body in await read_n(spool, 1)] == [b"new"]
    spool.close()


async def test_always_mode_acks_wait_for_the_group_commit(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, fsync="always")
    position = await spool.append([b"one"])
    with trio.move_on_after(0.3) as waited:
        await spool.wait_durable(position)  # no syncer running: it must not return
    assert waited.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spool.run_syncer)
        positions = []
        for i in range(20):
            positions.append(await spool.append([f"e{i}".encode()]))
        with trio.fail_after(5):
            async with trio.open_nursery() as waiters:
                for p in positions:
                    waiters.start_soon(spool.wait_durable, p)
        nursery.cancel_scope.cancel()
    spool.close()


async def test_a_full_spool_holds_appends_until_delivery_frees_space(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, max_bytes=8192, segment_bytes=2048)
    sent = 0
    while spool.disk_bytes + 2 * 110 <= 8192:  # fill to just under the cap
        await spool.append([bodies(1, 100)[0]])
        sent += 1
    assert not spool.full
    done = trio.Event()

    async def append_more() -> None:
        await spool.append([b"waiting".ljust(200)])
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(append_more)
        await trio.sleep(0.2)
        assert not done.is_set()  # backpressure, not a drop
        assert spool.full
        got = await read_n(spool, sent)
        spool.delivered(got[-1][0], sent)
        with trio.fail_after(5):
            await done.wait()
    spool.close()


def run_hookdb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hookdb"), *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_spool_inspect_and_verify_report_what_is_there(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path / "spool", segment_bytes=1 << 20)
    await spool.append(bodies(25))
    spool.close()
    report = json.loads(run_hookdb("spool", "inspect", "--json", "--state-dir", str(tmp_path)).stdout)
    assert report["pending_records"] == 25
    assert report["segments"][0]["damaged"] == []
    assert report["oldest_pending_age_seconds"] is not None
    assert run_hookdb("spool", "verify", "--state-dir", str(tmp_path)).returncode == 0

    segment = next((tmp_path / "spool").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[FILE_HEADER_SIZE + 30] ^= 0x01
    segment.write_bytes(bytes(data))
    verify = run_hookdb("spool", "verify", "--state-dir", str(tmp_path))
    assert verify.returncode == 1
    assert "DAMAGED" in verify.stdout
    report = json.loads(run_hookdb("spool", "inspect", "--json", "--state-dir", str(tmp_path)).stdout)
    assert report["pending_records"] == 24
    assert len(report["segments"][0]["damaged"]) == 1


@pytest.mark.parametrize("action", ["inspect", "verify"])
def test_spool_commands_on_an_empty_state_dir(tmp_path: Path, action: str) -> None:
    result = run_hookdb("spool", action, "--state-dir", str(tmp_path))
    assert result.returncode == 0
    assert "pending: 0 records" in result.stdout
