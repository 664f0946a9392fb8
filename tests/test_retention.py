"""``hookdb partitions maintain`` on synthetic months: partitions created ahead, old months detached,
exported to readable files with the right row counts, uploaded and dropped, archives purged at the
horizon; idempotent, and finishing the job after a failed or interrupted run."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hookdb.collector.store import migrate, partitions, rows
from hookdb.collector.store.retention import MARKER, archived_rows

from conftest import BIN, run_sql

NOW = datetime(2025, 11, 15, tzinfo=UTC)
FIRST = -30  # months of synthetic rows: from 30 months before NOW's month up to NOW's month
LIVE_FROM = partitions.month_start(NOW, -6)  # 2025-05
KEPT_FROM = partitions.month_start(NOW, -24)  # 2023-11
ODD_MONTH = partitions.month_start(NOW, -10)  # archived; holds a row of awkward values
ODD_TOOL = 'Bash, "quoted"\nand a second line'
ODD_PAYLOAD = {"command": 'echo "a,b"\r\nexit', "text": "", "nested": {"é": [1, None, "\\"]}}
COLUMNS = list(rows.COLUMNS)


def month(offset: int) -> datetime:
    return partitions.month_start(NOW, offset)


def name(start: datetime) -> str:
    return partitions.partition_name(start)


def months(first: datetime, stop: datetime) -> list[datetime]:
    """The months from ``first`` up to, not including, ``stop``."""
    found = []
    while first < stop:
        found.append(first)
        first = partitions.month_start(first, 1)
    return found


def rows_for(offset: int) -> int:
    return 1 + (-offset) % 3  # 1 to 3 rows, so a count that is off shows


def _db(dsn: str, work: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def insert(dsn: str, start: datetime, count: int) -> None:
    """``count`` events in the month of ``start``, through the parent table (so the default may take them)."""
    records = [
        (
            "acme",
            uuid.uuid4(),
            start + timedelta(days=i, hours=12),
            start + timedelta(days=i, hours=12, seconds=1),
            f"s-{start:%Y%m}" if i % 2 == 0 else None,
            "PreToolUse",
            "Bash",
            "test",
            1000 + i,
            1000,
            None,
            json.dumps({"i": i, "month": f"{start:%Y-%m}"}),
        )
        for i in range(count)
    ]

    async def work(conn: asyncpg.Connection) -> None:
        await conn.copy_records_to_table("hook_audit_log", records=records, columns=COLUMNS)

    _db(dsn, work)


@pytest.fixture
def db(dsn: str) -> str:
    """A migrated database holding 1 to 3 events in each month from 30 months ago to NOW's month, all in
    the default partition (as before a first run), plus one event of awkward values in ODD_MONTH."""
    _db(dsn, migrate.migrate)
    for offset in range(FIRST, 1):
        insert(dsn, month(offset), rows_for(offset))
    run_sql(
        dsn,
        "INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type, "
        "tool_name, source, payload) VALUES ('acme', $1, $2, $2, '', 'PostToolUse', $3, 'test', $4)",
        uuid.uuid4(),
        ODD_MONTH + timedelta(days=3),
        ODD_TOOL,
        json.dumps(ODD_PAYLOAD),
    )
    return dsn


def expected_rows(start: datetime) -> int:
    offset = (start.year * 12 + start.month) - (NOW.year * 12 + NOW.month)
    return rows_for(offset) + (1 if start == ODD_MONTH else 0)


def maintain(
    dsn: str, paths: dict[str, Path], now: datetime = NOW, *extra: str
) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_CONFIG", "HOOKDB_STATE_DIR")
    }
    return subprocess.run(
        [
            str(BIN / "hookdb"),
            "partitions",
            "maintain",
            "--dsn",
            dsn,
            "--config",
            str(paths["config"]),
            "--state-dir",
            str(paths["state"]),
            "--now",
            f"{now:%Y-%m-%d}",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def upload_to(folder: Path) -> str:
    return f'retention.upload_command=["cp", "{{path}}", "{folder}/"]'


def attached_names(dsn: str) -> list[str]:
    return [p.name for p in _db(dsn, partitions.attached)]


def tables(dsn: str) -> set[str]:
    rows = run_sql(
        dsn, "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relname LIKE 'hook_audit_log%'"
    )
    return {r[0] for r in rows}


def rows_in(dsn: str, start: datetime) -> int:
    return run_sql(
        dsn,
        "SELECT count(*) FROM hook_audit_log WHERE occurred_at >= $1 AND occurred_at < $2",
        start,
        partitions.month_start(start, 1),
    )[0][0]


def archive_files(paths: dict[str, Path]) -> dict[str, int]:
    """The archive directory: file name -> rows, read back whole."""
    folder = paths["archive"]
    return {p.name: archived_rows(p) for p in sorted(folder.iterdir())} if folder.exists() else {}


def snapshot(dsn: str, start: datetime) -> list[tuple[Any, ...]]:
    rows = run_sql(
        dsn,
        "SELECT * FROM hook_audit_log WHERE occurred_at >= $1 AND occurred_at < $2 ORDER BY event_id",
        start,
        partitions.month_start(start, 1),
    )
    return [tuple(r) for r in rows]


def restore(dsn: str, path: Path) -> list[tuple[Any, ...]]:
    """Load an archive file back the documented way (COPY ... FROM (FORMAT csv, HEADER))."""
    data = gzip.decompress(path.read_bytes())

    async def work(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
        await conn.execute("CREATE TABLE restored (LIKE hook_audit_log)")
        await conn.copy_to_table("restored", source=io.BytesIO(data), format="csv", header=True)
        rows = await conn.fetch("SELECT * FROM restored ORDER BY event_id")
        await conn.execute("DROP TABLE restored")
        return [tuple(r) for r in rows]

    return _db(dsn, work)


def test_maintain_creates_ahead_archives_old_months_and_drops_past_the_horizon(
    db: str, paths: dict[str, Path]
) -> None:
    odd_before = snapshot(db, ODD_MONTH)
    live_before = {m: rows_in(db, m) for m in months(LIVE_FROM, month(1))}
    # The archive must not depend on how the server prints timestamps.
    database = run_sql(db, "SELECT current_database()")[0][0]
    run_sql(db, f"ALTER DATABASE \"{database}\" SET TimeZone = 'Asia/Kolkata'")
    run_sql(db, f"ALTER DATABASE \"{database}\" SET DateStyle = 'SQL, DMY'")

    result = maintain(db, paths, NOW, "--set", upload_to(paths["up"]))
    assert result.returncode == 0, result.stdout + result.stderr

    live_and_ahead = months(LIVE_FROM, month(4))  # 2025-05 .. 2026-02
    assert attached_names(db) == [name(m) for m in live_and_ahead] + ["hook_audit_log_default"]
    # Past the live window: gone from the parent and from the catalog, not just detached.
    assert tables(db) == {"hook_audit_log", "hook_audit_log_default"} | {name(m) for m in live_and_ahead}
    assert run_sql(db, "SELECT count(*) FROM hook_audit_log_default")[0][0] == 0

    archived = months(KEPT_FROM, LIVE_FROM)  # 2023-11 .. 2025-04: 18 months
    assert archive_files(paths) == {f"{name(m)}.csv.gz": expected_rows(m) for m in archived}
    # Past the purge horizon (2023-05 .. 2023-10): dropped without an archive.
    for m in months(month(FIRST), KEPT_FROM):
        assert f"dropped   {name(m)}" in result.stdout

    for path in paths["archive"].iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
        with gzip.open(path, "rt", newline="") as f:
            assert next(csv.reader(f)) == COLUMNS
        assert (paths["up"] / path.name).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in paths["up"].iterdir()) == sorted(archive_files(paths))

    odd_file = paths["archive"] / f"{name(ODD_MONTH)}.csv.gz"
    assert restore(db, odd_file) == odd_before
    assert (
        f",{ODD_MONTH + timedelta(days=3):%Y-%m-%d} 00:00:00+00,"
        in gzip.decompress(odd_file.read_bytes()).decode()
    )
    assert any(r[6] == ODD_TOOL and json.loads(r[11]) == ODD_PAYLOAD for r in odd_before)

    assert {m: rows_in(db, m) for m in months(LIVE_FROM, month(1))} == live_before
    assert live_before == {m: expected_rows(m) for m in months(LIVE_FROM, month(1))}
    assert "FAILED" not in result.stdout


def test_a_second_run_is_a_no_op(db: str, paths: dict[str, Path]) -> None:
    first = maintain(db, paths, NOW)
    assert first.returncode == 0, first.stdout + first.stderr
    files = {p.name: p.stat().st_mtime_ns for p in paths["archive"].iterdir()}
    catalog = tables(db)

    second = maintain(db, paths, NOW, "--set", upload_to(paths["up"]))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to do" in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in paths["archive"].iterdir()} == files
    assert tables(db) == catalog
    assert list(paths["up"].iterdir()) == []  # nothing left to archive, so nothing uploaded


def test_a_later_run_archives_the_next_months_and_purges_old_archives(
    db: str, paths: dict[str, Path]
) -> None:
    assert maintain(db, paths, NOW).returncode == 0
    later = datetime(2026, 3, 2, tzinfo=UTC)
    result = maintain(db, paths, later)
    assert result.returncode == 0, result.stdout + result.stderr

    live_from, kept_from = (
        partitions.month_start(later, -6),
        partitions.month_start(later, -24),
    )  # 2025-09, 2024-03
    assert attached_names(db) == [name(m) for m in months(live_from, partitions.month_start(later, 4))] + [
        "hook_audit_log_default"
    ]
    # 2025-05 .. 2025-08 joined the archive; 2023-11 .. 2024-02 left it.
    assert archive_files(paths) == {
        f"{name(m)}.csv.gz": expected_rows(m) for m in months(kept_from, month(-2))
    }
    for m in months(KEPT_FROM, kept_from):
        assert f"purged    {paths['archive'] / name(m)}.csv.gz" in result.stdout


def test_failed_upload_keeps_the_month_detached_and_the_next_run_finishes(
    db: str, paths: dict[str, Path]
) -> None:
    failed = maintain(
        db, paths, NOW, "--set", 'retention.upload_command=["sh", "-c", "echo no route; exit 3"]'
    )
    assert failed.returncode == 1
    assert "upload of hook_audit_log_y2025m04.csv.gz failed (exit 3): no route" in failed.stdout
    assert "steps failed" in failed.stderr
    archived = months(KEPT_FROM, LIVE_FROM)
    # The files are there and whole; the months are out of the parent but still in the database, marked.
    assert archive_files(paths) == {f"{name(m)}.csv.gz": expected_rows(m) for m in archived}
    detached = run_sql(
        db,
        "SELECT relname, obj_description(oid, 'pg_class') FROM pg_class "
        "WHERE relkind = 'r' AND NOT relispartition AND relname LIKE 'hook_audit_log_y%'",
    )
    assert {r[0]: r[1] for r in detached} == {name(m): f"{MARKER}{name(m)}.csv.gz" for m in archived}
    assert not set(attached_names(db)) & {name(m) for m in archived}

    # An interrupted export leaves a .partial; a damaged file is exported again; a good one is kept.
    damaged = paths["archive"] / f"{name(archived[0])}.csv.gz"
    damaged.write_bytes(damaged.read_bytes()[:-9])
    stale = paths["archive"] / f"{name(archived[1])}.csv.gz"
    stale.rename(stale.with_name(stale.name + ".partial"))
    kept = {p.name: p.stat().st_mtime_ns for p in paths["archive"].iterdir() if p.name.endswith(".gz")}

    done = maintain(db, paths, NOW, "--set", upload_to(paths["up"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert archive_files(paths) == {f"{name(m)}.csv.gz": expected_rows(m) for m in archived}
    for file_name, mtime in kept.items():
        if file_name != damaged.name:
            assert (paths["archive"] / file_name).stat().st_mtime_ns == mtime, file_name
    assert "found complete from an earlier run" in done.stdout
    assert sorted(p.name for p in paths["up"].iterdir()) == sorted(archive_files(paths))
    assert not tables(db) & {name(m) for m in archived}


def test_late_rows_of_an_archived_month_go_to_a_new_file(db: str, paths: dict[str, Path]) -> None:
    assert maintain(db, paths, NOW).returncode == 0
    first = paths["archive"] / f"{name(ODD_MONTH)}.csv.gz"
    before = first.read_bytes()
    insert(db, ODD_MONTH, 2)  # its partition is gone, so they land in the default partition

    result = maintain(db, paths, NOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert first.read_bytes() == before
    assert archived_rows(paths["archive"] / f"{name(ODD_MONTH)}.2.csv.gz") == 2
    assert run_sql(db, "SELECT count(*) FROM hook_audit_log_default")[0][0] == 0
    assert name(ODD_MONTH) not in tables(db)


def test_tables_hookdb_did_not_detach_are_left_alone(db: str, paths: dict[str, Path]) -> None:
    # A month restored by an operator under its old name, and a partition not cut by months.
    run_sql(db, "CREATE TABLE hook_audit_log_y2020m01 (LIKE hook_audit_log)")
    run_sql(
        db,
        "CREATE TABLE hook_audit_log_odd PARTITION OF hook_audit_log "
        "FOR VALUES FROM ('2030-01-01 00:00+00') TO ('2030-01-02 00:00+00')",
    )
    insert(db, datetime(2031, 6, 1, tzinfo=UTC), 1)  # a clock years ahead: no month is made for it
    result = maintain(db, paths, NOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"hook_audit_log_y2020m01", "hook_audit_log_odd"} <= tables(db)
    assert "hook_audit_log_odd" in attached_names(db)
    assert "left alone hook_audit_log_y2020m01: not attached, and not detached by hookdb" in result.stdout
    assert "left alone rows of 2031-06 in the default partition: beyond the months ahead" in result.stdout
    assert run_sql(db, "SELECT count(*) FROM hook_audit_log_default")[0][0] == 1


def test_a_run_while_another_holds_the_lock_fails_naming_it(db: str, paths: dict[str, Path]) -> None:
    from hookdb.collector.store.retention import LOCK_KEY

    async def work(conn: asyncpg.Connection) -> subprocess.CompletedProcess:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        return await asyncio.to_thread(maintain, db, paths, NOW)

    result = _db(db, work)
    assert result.returncode == 1
    assert "another `hookdb partitions maintain` is running on this database (server pid" in result.stderr
    assert not paths["archive"].exists()


def test_purge_horizon_inside_the_live_window_is_refused(db: str, paths: dict[str, Path]) -> None:
    result = maintain(db, paths, NOW, "--set", "retention.purge_months=3")
    assert result.returncode == 2
    assert "purge_months (3) must be 0 or at least live_months (6)" in result.stderr


def test_partition_bounds_are_read_exactly_whatever_the_session_settings(dsn: str) -> None:
    async def work(conn: asyncpg.Connection) -> list[partitions.Partition]:
        await migrate.migrate(conn)
        await conn.execute("SET TimeZone = 'America/St_Johns'; SET DateStyle = 'SQL, DMY'")
        await partitions.create_month(conn, datetime(2024, 2, 1, tzinfo=UTC))
        return await partitions.attached(conn)

    found = _db(dsn, work)
    assert found == [
        partitions.Partition(
            "hook_audit_log_y2024m02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
        ),
        partitions.Partition("hook_audit_log_default", None, None),
    ]
    assert found[0].month == datetime(2024, 2, 1, tzinfo=UTC)
    assert found[1].month is None


def state(dsn: str, paths: dict[str, Path]) -> dict[str, Any]:
    """Everything a run could change: the catalog of hook_audit_log's tables (kind, attachment, bounds,
    comment), each table's rows, and the archive and upload directories' files."""
    catalog = run_sql(
        dsn,
        "SELECT relname, relkind, relispartition, pg_get_expr(relpartbound, oid) AS bound, "
        "obj_description(oid, 'pg_class') AS comment FROM pg_class "
        "WHERE relname LIKE 'hook_audit_log%' AND relkind IN ('r', 'p') ORDER BY relname",
    )
    counts = {
        r["relname"]: run_sql(dsn, f"SELECT count(*) FROM {r['relname']}")[0][0]
        for r in catalog
        if r["relkind"] == "r"
    }
    files = {
        folder: {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(paths[folder].iterdir())}
        if folder in paths and paths[folder].exists()
        else None
        for folder in ("archive", "up")
    }
    return {"catalog": [tuple(r) for r in catalog], "rows": counts, "files": files}


def steps(output: str, dry_run: bool) -> dict[str, set[str]]:
    """The report's lines by step, verbs taken off, so that a preview and a run compare."""
    verbs = {
        "created": ("would create ", "created "),
        "archived": ("would archive ", "archived "),
        "dropped": ("would drop ", "dropped "),
        "purged": ("would purge ", "purged "),
    }
    found: dict[str, set[str]] = {step: set() for step in verbs}
    for line in output.splitlines():
        for step, (would, did) in verbs.items():
            verb = would if dry_run else did
            if line.startswith(verb):
                words = line.removeprefix(verb).split()
                # "table: N rows, ...": the table and its rows; else the name or path
                found[step].add(" ".join(words[:3]) if step in ("archived", "dropped") else words[0])
    return found


def test_dry_run_changes_nothing_and_foretells_the_run(db: str, paths: dict[str, Path]) -> None:
    assert maintain(db, paths, NOW).returncode == 0
    insert(db, ODD_MONTH, 2)  # late rows of an archived month: to the next free file
    later = datetime(2026, 3, 2, tzinfo=UTC)
    before = state(db, paths)

    preview = maintain(db, paths, later, "--dry-run", "--set", upload_to(paths["up"]))
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert state(db, paths) == before
    assert "(dry run)" in preview.stdout
    assert "dry run, nothing changed: would create" in preview.stdout
    assert f"would archive  {name(month(-6))}: {expected_rows(month(-6))} rows, to " in preview.stdout
    assert (
        f"would archive  {name(ODD_MONTH)}: 2 rows, to {paths['archive']}/{name(ODD_MONTH)}.2.csv.gz, "
        "then upload it"
    ) in preview.stdout
    assert f"would purge    {paths['archive'] / name(KEPT_FROM)}.csv.gz" in preview.stdout

    run = maintain(db, paths, later, "--set", upload_to(paths["up"]))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "done: created 4, archived 5" in run.stdout
    assert steps(preview.stdout, dry_run=True) == steps(run.stdout, dry_run=False)
    assert all(steps(run.stdout, dry_run=False)[s] for s in ("created", "archived", "purged"))


def test_dry_run_on_a_first_run_counts_the_rows_it_would_archive_and_drop(
    db: str, paths: dict[str, Path]
) -> None:
    before = state(db, paths)
    preview = maintain(db, paths, NOW, "--dry-run")
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert state(db, paths) == before
    assert not paths["archive"].exists()
    run = maintain(db, paths, NOW)
    assert run.returncode == 0, run.stdout + run.stderr
    assert steps(preview.stdout, dry_run=True) == steps(run.stdout, dry_run=False)
    archived = months(KEPT_FROM, LIVE_FROM)
    assert steps(preview.stdout, dry_run=True)["archived"] == {
        f"{name(m)}: {expected_rows(m)} rows," for m in archived
    }
    assert steps(preview.stdout, dry_run=True)["dropped"] == {
        f"{name(m)}: {expected_rows(m)} rows" for m in months(month(FIRST), KEPT_FROM)
    }
    second = maintain(db, paths, NOW, "--dry-run")
    assert "nothing to do" in second.stdout
