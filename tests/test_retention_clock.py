"""Retention does not trust the sender's clock: ``hookdb partitions maintain`` never drops a row that
arrived recently because of the time it claims, and never drops a row without archiving it unless the row
is past the purge horizon by its arrival too. Real PostgreSQL, real ``hookdb partitions maintain --now``.
"""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_retention import COLUMNS, NOW, _db, maintain, month, name, state, steps

from hookdb.collector.store import migrate

from conftest import run_sql

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def insert(dsn: str, occurred: datetime, received: datetime, count: int = 1) -> list[uuid.UUID]:
    """``count`` events claiming ``occurred``, received by the collector at ``received``; their ids."""
    ids = [uuid.uuid4() for _ in range(count)]
    records = [
        ("acme", i, occurred, received, "s1", "PreToolUse", "Bash", "test", 1000, 1000, None, '{"a": 1}')
        for i in ids
    ]

    async def work(conn: Any) -> None:
        await conn.copy_records_to_table("hook_audit_log", records=records, columns=COLUMNS)

    _db(dsn, work)
    return ids


def live(dsn: str, ids: list[uuid.UUID]) -> int:
    return run_sql(dsn, "SELECT count(*) FROM hook_audit_log WHERE event_id = ANY($1::uuid[])", ids)[0][0]


def archived(paths: dict[str, Path]) -> dict[str, set[str]]:
    """Archive file name -> the event ids in it."""
    found: dict[str, set[str]] = {}
    for path in sorted(paths["archive"].iterdir()) if paths["archive"].exists() else []:
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()[1:]
        found[path.name] = {line.split(",")[1] for line in lines}
    return found


def in_archives(paths: dict[str, Path], ids: list[uuid.UUID]) -> dict[str, int]:
    wanted = {str(i) for i in ids}
    return {file: len(wanted & got) for file, got in archived(paths).items() if wanted & got}


def run(dsn: str, paths: dict[str, Path], now: datetime) -> str:
    """A real run, after a dry run that must change nothing and announce exactly what the run does."""
    before = state(dsn, paths)
    preview = maintain(dsn, paths, now, "--dry-run")
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert state(dsn, paths) == before
    result = maintain(dsn, paths, now)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout
    assert steps(preview.stdout, dry_run=True) == steps(result.stdout, dry_run=False)
    return result.stdout


@pytest.fixture
def db(dsn: str) -> str:
    _db(dsn, migrate.migrate)
    return dsn


def test_rows_that_arrived_today_claiming_1970_or_30_months_ago_are_kept_then_archived(
    db: str, paths: dict[str, Path]
) -> None:
    today = NOW + timedelta(hours=3)
    odd = insert(db, EPOCH, today, 2) + insert(db, month(-30) + timedelta(days=2), today, 3)
    old = insert(db, month(-30) + timedelta(days=1), month(-30) + timedelta(days=1, seconds=1), 2)

    out = run(db, paths, NOW)
    assert live(db, odd) == 5, out  # live, whatever they claim
    assert live(db, old) == 0  # past the purge horizon by both times: dropped, as the policy says
    assert f"dropped   {name(month(-30))}" in out
    assert in_archives(paths, odd) == {}
    assert run(db, paths, NOW + timedelta(days=1)).count("kept live") == 1  # a second run: still kept

    # Seven months on, they are older than the live window by their arrival too: archived under the month
    # they arrived in (its partition's own file came first), not dropped, though the months they claim
    # are past the purge horizon.
    out = run(db, paths, NOW + timedelta(days=7 * 31))
    assert live(db, odd) == 0
    file = f"{name(month(0))}.2.csv.gz"
    assert in_archives(paths, odd) == {file: 5}, out
    assert run_sql(db, "SELECT count(*) FROM hook_audit_log_default")[0][0] == 0

    # That archive is purged by the month they arrived in, not by the months they claim.
    run(db, paths, NOW + timedelta(days=20 * 31))
    assert in_archives(paths, odd) == {file: 5}
    run(db, paths, NOW + timedelta(days=25 * 31))
    assert in_archives(paths, odd) == {}


def test_a_month_leaving_the_live_window_keeps_its_rows_that_arrived_late(
    db: str, paths: dict[str, Path]
) -> None:
    then = month(-3) + timedelta(days=4)
    on_time = insert(db, then, then + timedelta(seconds=1), 3)
    run(db, paths, NOW)  # the month gets its partition: all live
    late = insert(db, then, month(4) + timedelta(days=1))  # drained from an outbox four months later
    assert live(db, on_time + late) == 4

    # The month leaves the live window (live from month(-2)): its rows are archived, the late one stays.
    out = run(db, paths, month(4) + timedelta(days=2))
    assert live(db, late) == 1, out
    assert live(db, on_time) == 0
    assert in_archives(paths, on_time) == {f"{name(month(-3))}.csv.gz": 3}
    assert in_archives(paths, late) == {}

    # Once it is as old by its arrival, it is archived under the month it arrived in.
    run(db, paths, month(11) + timedelta(days=2))
    assert live(db, late) == 0
    assert in_archives(paths, late) == {f"{name(month(4))}.2.csv.gz": 1}  # month(4)'s own file came first
    assert in_archives(paths, on_time) == {f"{name(month(-3))}.csv.gz": 3}


def test_a_row_past_the_horizon_by_its_claim_but_not_by_its_arrival_is_archived(
    db: str, paths: dict[str, Path]
) -> None:
    # Arrived ten months before NOW (archived, not live), claiming 1970: the archive keeps it.
    arrived = month(-10) + timedelta(days=5)
    ids = insert(db, EPOCH + timedelta(days=3), arrived, 2)
    out = run(db, paths, NOW)
    assert live(db, ids) == 0
    assert in_archives(paths, ids) == {f"{name(month(-10))}.csv.gz": 2}, out
    assert "dropped   " not in out


def test_a_month_past_the_horizon_archives_its_rows_that_arrived_since(
    db: str, paths: dict[str, Path]
) -> None:
    run(db, paths, NOW)  # partitions up to month(3)
    on_time = insert(db, month(1) + timedelta(days=1), month(1) + timedelta(days=1, seconds=1), 2)
    late = insert(db, month(1) + timedelta(days=2), month(20))  # arrived 19 months late
    # No run for over two years: month(1) is past the purge horizon (month(4)) when it leaves the live
    # table; the rows that arrived in it go as the policy says, the late one is archived by its arrival.
    out = run(db, paths, month(28) + timedelta(days=1))
    assert live(db, on_time + late) == 0
    assert f"dropped   {name(month(1))}" in out
    assert in_archives(paths, on_time + late) == {f"{name(month(20))}.csv.gz": 1}, out
