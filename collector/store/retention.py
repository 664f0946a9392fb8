"""``hookdb partitions maintain``: months created ahead, old months archived to files, archives purged.

One run works for the month of ``now`` (UTC; only its month matters), with the ``[retention]`` settings
``ahead_months`` A, ``live_months`` L and ``purge_months`` P:

1. **Ahead.** The partitions of the current month and the A months after it are created. So is one for
   every earlier live month whose rows sit in the default partition (written before their month
   existed, or late: a wrong clock, an outbox drained long after), taking those rows out of the default.
2. **Archive.** The live window is the current month and the L full months before it: in November with
   L = 6, May to November are live and April and older are archived. Each older monthly partition is
   detached, exported to a file, checked, uploaded (if ``upload_command`` is set) and dropped.
3. **Late rows.** The sender's clock files a row under a month, but never alone decides when it leaves:
   when a month is detached, its rows that arrived after the month (``received_at``, the collector's
   clock) move to the default partition, which also takes rows of months that have no partition (1970).
   There, rows that claim a time before the live window stay live while they arrived within it (an
   event claiming 1970 that arrived today), and are then taken out into a detached table named after
   the month they *arrived* in, archived (``.N`` file) and dropped like one. So a month's archive holds
   no row that arrived after the month, and purging by the name is safe.
4. **Purge.** Archives are kept for the current month and the P full months before it; older archive
   files are deleted, and a month that is already past that horizon when it leaves the live table is
   dropped without being exported: the policy says its data is gone (by both clocks, see 3). P = 0
   keeps archives forever.
5. **Search documents.** The text of a month that leaves the live table must not stay searchable: before
   a detached table is archived or dropped, the event search documents (``search_docs``) made from its
   rows are deleted, each tenant's under its own row-level security (see :func:`_delete_docs`).

The archive of a month is ``<archive_dir>/hook_audit_log_yYYYYmMM.csv.gz`` (mode 0600: it holds every
tenant's events): gzip of CSV exactly as PostgreSQL's ``COPY ... TO (FORMAT csv, HEADER)`` writes it, a
header line of the column names in table order, NULL as an empty unquoted field and the empty string as
``""``, timestamps in ISO format and UTC whatever the server's settings. ``COPY ... FROM (FORMAT csv,
HEADER)`` reads it back losslessly::

    CREATE TABLE restored (LIKE hook_audit_log);
    gzip -dc hook_audit_log_y2025m04.csv.gz | psql -c '\\copy restored FROM STDIN (FORMAT csv, HEADER)'

Restore into a table of your own: rows put back into ``hook_audit_log`` are archived again by the next
run. Rows of an archived month that arrive later are archived to the next free
``hook_audit_log_yYYYYmMM.N.csv.gz`` (N = 2, 3, ...), never over an earlier file; so do not delete
archive files by hand before the purge horizon, their names are what keeps a later batch off them.

A crash at any point is finished by the next run, because every step is atomic or checked again:

- the DETACH commits together with a comment on the table naming its archive file; only tables that
  carry such a comment are ever exported or dropped (a table restored under a month's name is left alone);
- the export goes to ``<file>.partial``, is fsynced, read back whole (gzip CRC, CSV records) and its rows
  counted against the table's and COPY's before it is renamed to its name and the directory fsynced: a
  file under its final name is always complete. A detached table is exported again only if its file is
  missing or unreadable or holds another number of rows;
- the upload runs before the DROP; if it fails the month stays detached (out of queries, in the database)
  and the next run uploads it again, so the command must be safe to repeat (``aws s3 cp`` is);
- the search documents of a detached table are deleted before it is exported, and again (finding none)
  by a run that finishes it after a crash: they are found by the table's rows, which the DROP removes last;
- the DROP comes last.

DETACH is the plain one, not CONCURRENTLY, which PostgreSQL refuses while a default partition exists: it
takes an ACCESS EXCLUSIVE lock on ``hook_audit_log`` for a moment. Every lock the run waits for, it waits
for at most ``LOCK_TIMEOUT``, so that a long query cannot hold the collector's inserts queued behind its
DDL; a month that times out is reported and retried by the next run. Runs are serialised by an advisory
lock: a second run started meanwhile fails at once, naming the first. A step that fails is reported and
the run goes on with the other months; the run then exits non-zero.

``--dry-run`` (:func:`preview`) reports what a run would create, archive (with row counts), drop and
purge, and how many search documents it would delete with each month, finding it out by reading only:
one read-only transaction, no lock taken or waited for, no file written, deleted or uploaded.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg

from hookdb.collector import classification as cls
from hookdb.collector.config import Config
from hookdb.collector.ops import logs
from hookdb.collector.ops.files import fsync_dir
from hookdb.collector.store import connect
from hookdb.collector.store.partitions import (
    NAME_PATTERN,
    PARENT,
    attached,
    create_month,
    default_months,
    ensure_months,
    month_of_name,
    month_start,
    partition_name,
)

log = logs.get("hookdb.retention")

LOCK_KEY = 0x686F6F6B7274  # "hookrt", for pg_try_advisory_lock; migrate uses another key
LOCK_TIMEOUT = "10s"
SUFFIX = ".csv.gz"
PARTIAL = ".partial"
MARKER = "hookdb retention: detached, to be archived as "
_ARCHIVE_FILE = re.compile(rf"({NAME_PATTERN.pattern})(?:\.(\d+))?{re.escape(SUFFIX)}(?:{PARTIAL})?")
_READ_CHUNK = 1 << 20


class RetentionError(RuntimeError):
    """A retention step that could not be done; the message says which and why."""


@dataclass(frozen=True)
class Policy:
    """What to keep where: the ``[retention]`` settings, with the archive directory resolved."""

    archive_dir: Path
    live_months: int = 6
    purge_months: int = 24
    ahead_months: int = 3
    upload_command: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.live_months < 1 or self.ahead_months < 0 or self.purge_months < 0:
            raise ValueError(f"months must be counted from 1 (live) or 0 (ahead, purge): {self}")
        if self.purge_months and self.purge_months < self.live_months:
            raise ValueError(f"purge_months must be 0 or at least live_months: {self}")

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        section = config.retention
        return cls(
            archive_dir=config.archive_dir,
            live_months=section.live_months,
            purge_months=section.purge_months,
            ahead_months=section.ahead_months,
            upload_command=tuple(section.upload_command),
        )

    def live_from(self, now: datetime) -> datetime:
        """The first month of the live window."""
        return month_start(now, -self.live_months)

    def kept_from(self, now: datetime) -> datetime | None:
        """The first month whose archive is kept; None when archives are kept forever."""
        return month_start(now, -self.purge_months) if self.purge_months else None


@dataclass(frozen=True)
class Archived:
    table: str
    path: Path
    rows: int
    exported: bool
    """False when a complete file from an interrupted earlier run was found and kept."""
    uploaded: bool
    docs: int
    """The search documents made from its rows, deleted with it."""


@dataclass(frozen=True)
class Dropped:
    """A month dropped unarchived because it was already past the purge horizon."""

    table: str
    rows: int
    docs: int
    """The search documents made from its rows, deleted with it."""


@dataclass
class Report:
    """What one run did, and what it could not do."""

    month: datetime
    live_from: datetime
    kept_from: datetime | None
    created: list[str] = field(default_factory=list)
    archived: list[Archived] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    purged: list[Path] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dry_run: bool = False
    """A preview: what a run would do; nothing was changed."""

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def changed(self) -> bool:
        return bool(self.created or self.archived or self.dropped or self.purged)

    def fail(self, what: str, exc: BaseException) -> None:
        """Note a failed step and go on with the next; a lost connection ends the run instead."""
        if isinstance(exc, asyncpg.PostgresConnectionError):
            raise exc
        message = f"{what}: {exc}"
        log.error("retention.failed", step=what, error=str(exc), error_type=type(exc).__name__)
        self.failed.append(message)

    def render(self) -> str:
        kept = f"{self.kept_from:%Y-%m}" if self.kept_from else "forever"
        lines = [
            f"partitions maintain for {self.month:%Y-%m}{' (dry run)' if self.dry_run else ''}: "
            f"live from {self.live_from:%Y-%m}, archives kept from {kept}"
        ]
        verb = _WOULD if self.dry_run else _DID
        lines += [f"{verb['created']}{name}" for name in self.created]
        for a in self.archived:
            if self.dry_run:
                how = "to" if a.exported else "already complete from an earlier run:"
                then = ", then upload it" if a.uploaded else ""
            else:
                how = "exported" if a.exported else "found complete from an earlier run,"
                then = ", uploaded" if a.uploaded else ""
            lines.append(
                f"{verb['archived']}{a.table}: {a.rows} rows, {how} {a.path}{then}; {self._docs(a.docs)}"
            )
        lines += [
            f"{verb['dropped']}{d.table}: {d.rows} rows (past the purge horizon: not archived); "
            f"{self._docs(d.docs)}"
            for d in self.dropped
        ]
        lines += [f"{verb['purged']}{path}" for path in self.purged]
        lines += [f"{verb['left alone']}{what}" for what in self.left_alone]
        lines += [f"FAILED    {what}" for what in self.failed]
        if not (self.changed or self.failed):
            lines.append("nothing to do")
        else:
            lines.append(self.summary())
        return "\n".join(lines)

    def _docs(self, count: int) -> str:
        return f"{count} search documents {'to delete' if self.dry_run else 'deleted'}"

    def summary(self) -> str:
        """One line of totals: what the run changed, or would change."""
        rows = sum(a.rows for a in self.archived)
        docs = sum(a.docs for a in self.archived) + sum(d.docs for d in self.dropped)
        if self.dry_run:
            return (
                f"dry run, nothing changed: would create {len(self.created)}, archive {len(self.archived)} "
                f"({rows} rows), drop {len(self.dropped)} unarchived, purge {len(self.purged)} archive "
                f"files, delete {docs} search documents"
            )
        failed = f"; {len(self.failed)} steps failed" if self.failed else ""
        return (
            f"done: created {len(self.created)}, archived {len(self.archived)} ({rows} rows), dropped "
            f"{len(self.dropped)} unarchived, purged {len(self.purged)} archive files, deleted {docs} search "
            f"documents{failed}"
        )


# The first word of each report line, for a run and for a dry run: aligned so that the names line up.
_DID = {
    "created": "created   ",
    "archived": "archived  ",
    "dropped": "dropped   ",
    "purged": "purged    ",
    "left alone": "left alone ",
}
_WOULD = {
    "created": "would create   ",
    "archived": "would archive  ",
    "dropped": "would drop     ",
    "purged": "would purge    ",
    "left alone": "would leave alone ",
}


async def maintain(conn: asyncpg.Connection, policy: Policy, now: datetime) -> Report:
    """Run the whole policy once (see the module docstring); the connection must own ``hook_audit_log``.

    Raises RetentionError only when another run holds the lock; a failed step is in the report.
    """
    if await connect.through_pooler(conn):
        raise RetentionError(
            "the connection goes through a pooler: a run holds a session lock and detaches partitions over "
            "several transactions, which a transaction-mode pooler spreads over other server connections; "
            "give --dsn straight to the server"
        )
    report = Report(month=month_start(now), live_from=policy.live_from(now), kept_from=policy.kept_from(now))
    holder = await _lock(conn)
    if holder is not None:
        raise RetentionError(f"another `hookdb partitions maintain` is running on this database ({holder})")
    try:
        # Bounds every lock wait: a DDL statement queued behind a long query would hold the collector's
        # inserts queued behind itself.
        await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        await _create(conn, policy, now, report)
        await _detach_old(conn, policy, report)
        await _finish_detached(conn, policy, report)
        await _archive_old_default_rows(conn, policy, report)
        _purge_files(policy, report)
    finally:
        if not conn.is_closed():  # else the server has let go of the lock already
            await conn.execute("RESET lock_timeout")
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return report


async def preview(conn: asyncpg.Connection, policy: Policy, now: datetime) -> Report:
    """What :func:`maintain` would do now, as its report (``dry_run``), found by reading only.

    Everything is read in one read-only transaction and no lock is taken: a preview cannot change the
    database or queue the collector's inserts behind it. It follows ``maintain`` step by step, counting
    the rows each step would move; a step can still fail in the real run (a lock timeout, say).
    """
    report = Report(
        month=month_start(now),
        live_from=policy.live_from(now),
        kept_from=policy.kept_from(now),
        dry_run=True,
    )
    async with conn.transaction(readonly=True):
        # Counts must see every row, as the export does.
        await conn.execute("SET LOCAL row_security = off")
        await _preview(conn, policy, now, report)
    return report


async def _exists(conn: asyncpg.Connection, name: str) -> bool:
    return await conn.fetchval("SELECT to_regclass($1)", name) is not None


async def _preview(conn: asyncpg.Connection, policy: Policy, now: datetime, report: Report) -> None:
    in_default = {
        r["month"]: r["n"]
        for r in await conn.fetch(
            "SELECT date_trunc('month', occurred_at, 'UTC') AS month, count(*) AS n "
            f"FROM {PARENT}_default GROUP BY 1"
        )
    }

    def moved(month: datetime) -> str:
        n = in_default.get(month, 0)
        return f" ({n} rows moved out of the default partition)" if n else ""

    # 1. Ahead, and the live months whose rows wait in the default partition (as in _create).
    for offset in range(policy.ahead_months + 1):
        start = month_start(now, offset)
        if not await _exists(conn, partition_name(start)):
            report.created.append(partition_name(start) + moved(start))
    beyond = sorted(m for m in in_default if m > month_start(now, policy.ahead_months))
    if beyond:
        report.left_alone.append(_beyond_note(beyond))
    for month in sorted(m for m in in_default if report.live_from <= m < report.month):
        name = partition_name(month)
        if await _exists(conn, name):
            report.left_alone.append(f"rows of {month:%Y-%m} in the default partition: {name} exists")
        else:
            report.created.append(name + moved(month))

    # 2. Months past the live window, detached (their rows that arrived later go to the default).
    taken: set[str] = set()  # archive names this run would take
    finishing: dict[str, tuple[str, int, int]] = {}  # table -> (archive name, rows it would hold, docs)
    detached: list[tuple[str, datetime]] = []
    for partition in await attached(conn):
        month = partition.month
        if month is None:
            if partition.start is not None:
                report.left_alone.append(f"{partition.name}: not a monthly partition made by hookdb")
            continue
        if month >= report.live_from:
            continue
        file_name = _free_file_name(policy.archive_dir, partition.name, taken)
        taken.add(file_name)
        staying = f"SELECT {_EVENT_KEYS} FROM {partition.name} WHERE received_at < $1"
        finishing[partition.name] = (
            file_name,
            await conn.fetchval(f"SELECT count(*) FROM ({staying}) AS e", month_start(month, 1)),
            await _count_docs(conn, staying, month_start(month, 1)),
        )
        detached.append((partition.name, month))

    # 3. The tables detached by an earlier run, then all of them archived or dropped (_finish_detached).
    for table in await _detached(conn):
        file_name = _marked_file(table["name"], table["comment"] or "")
        if file_name is None:
            report.left_alone.append(f"{table['name']}: not attached, and not detached by hookdb")
            continue
        taken.add(file_name)
        finishing[table["name"]] = (
            file_name,
            await conn.fetchval(f"SELECT count(*) FROM {table['name']}"),
            await _count_docs(conn, f"SELECT {_EVENT_KEYS} FROM {table['name']}"),
        )
    for name in sorted(finishing):
        _preview_finish(policy, report, name, *finishing[name])

    # 4. The default partition's old rows, with those the detached months would move there.
    late = " ".join(
        f"UNION ALL SELECT {_EVENT_KEYS}, received_at FROM {name} WHERE received_at >= ${i + 2}"
        for i, (name, _) in enumerate(detached)
    )
    late_args = [report.live_from, *(month_start(month, 1) for _, month in detached)]
    groups = await conn.fetch(_old_rows_query(late), *late_args)
    fresh = sum(g["n"] for g in groups if not g["old"])
    if fresh:
        report.left_alone.append(_kept_live_note(fresh, report.live_from))
    for group in groups:
        if not group["old"]:
            continue
        arrived = group["month"]
        name = partition_name(arrived)
        if name not in finishing and await _exists(conn, name):
            report.left_alone.append(
                f"rows that arrived in {arrived:%Y-%m} in the default partition: {name} exists"
            )
            continue
        file_name = _free_file_name(policy.archive_dir, name, taken)
        taken.add(file_name)
        n = len(late_args)
        taken_rows = (
            f"SELECT {_EVENT_KEYS} FROM {_default_rows(late)} WHERE occurred_at < $1 AND received_at < $1 "
            f"AND received_at >= ${n + 1} AND received_at < ${n + 2}"
        )
        docs = await _count_docs(conn, taken_rows, *late_args, arrived, month_start(arrived, 1))
        _preview_finish(policy, report, name, file_name, group["n"], docs)

    # 5. Purge: the archive files past the horizon.
    report.purged += _purgeable(policy, report)


def _preview_finish(policy: Policy, report: Report, name: str, file_name: str, rows: int, docs: int) -> None:
    """Note what _finish would do with a detached table of ``rows`` rows keying ``docs`` search documents."""
    month = month_of_name(name)
    if report.kept_from is not None and month is not None and month < report.kept_from:
        report.dropped.append(Dropped(name, rows, docs))
        return
    path = policy.archive_dir / file_name
    complete = _rows_or_none(path) == rows
    report.archived.append(Archived(name, path, rows, not complete, bool(policy.upload_command), docs))


# The columns of an event that key its search document, when it is the document's first part: search.py keys
# a document by its first part's event id and dates it by that event's occurred_at.
_EVENT_KEYS = "tenant_id, session_id, event_id, occurred_at"


def _docs_keyed_by(tenant: str) -> str:
    """The condition on ``d`` (search_docs) and ``e`` (events) that ``e`` is ``d``'s first event, in the
    tenant of parameter ``tenant``. Report documents follow their report, which stays: never matched."""
    return (
        f"d.tenant_id = {tenant} AND e.tenant_id = {tenant} AND d.session_id = e.session_id "
        "AND d.doc_key = uuid_send(e.event_id) AND d.at = e.occurred_at "
        f"AND NOT '{cls.SEARCH_REPORT}' = ANY(d.kinds)"
    )


async def _delete_docs(conn: asyncpg.Connection, rows: str, *args: object) -> int:
    """Delete the search documents whose first event is one of ``rows`` (a query of ``_EVENT_KEYS`` with
    parameters ``args``); how many.

    A document goes with its first event: with the month it is dated in (``at``), or, when that event
    arrived after its month, with the month it arrived in (module docstring, 3), so it stays searchable
    while its event is live. A document straddling a month's end (its batch's first part on the 31st at
    23:59:59, the next a second later) goes with the earlier month, all of it: kept, it would leave that
    month's text searchable after the month is gone; its later parts' events stay in the timeline.

    search_docs forces row-level security, also on the tables' owner that retention connects as, and
    nothing here bypasses it: the tenants are read from ``rows`` (a month's table, which has no policy of
    its own), and each tenant's documents are deleted in a transaction of its own under its
    ``hookdb.tenant``, as the collector writes them.
    """
    tenant = f"${len(args) + 1}"
    deleted = 0
    for (name,) in await conn.fetch(f"SELECT DISTINCT tenant_id FROM ({rows}) AS e", *args):
        async with conn.transaction():
            await conn.execute("SELECT set_config('hookdb.tenant', $1, true)", name)
            status = await conn.execute(
                f"DELETE FROM search_docs d USING ({rows}) AS e WHERE {_docs_keyed_by(tenant)}", *args, name
            )
        deleted += int(status.split()[-1])
    return deleted


async def _count_docs(conn: asyncpg.Connection, rows: str, *args: object) -> int:
    """What :func:`_delete_docs` would delete, counted in a preview's transaction: under row-level security
    for the count (with it off, search_docs' policy would be an error), then off again."""
    tenant = f"${len(args) + 1}"
    counted = 0
    await conn.execute("SET LOCAL row_security = on")
    for (name,) in await conn.fetch(f"SELECT DISTINCT tenant_id FROM ({rows}) AS e", *args):
        await conn.execute("SELECT set_config('hookdb.tenant', $1, true)", name)
        counted += await conn.fetchval(
            f"SELECT count(*) FROM search_docs d, ({rows}) AS e WHERE {_docs_keyed_by(tenant)}", *args, name
        )
    await conn.execute("SET LOCAL row_security = off")
    return counted


async def _lock(conn: asyncpg.Connection) -> str | None:
    """Take the run lock; if another session holds it, describe that session instead."""
    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        return None
    holder = await conn.fetchrow(
        "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted "
        "AND (l.classid::bigint << 32 | l.objid::bigint) = $1",
        LOCK_KEY,
    )
    if holder is None:
        return "its session could not be identified"
    return (
        f"server pid {holder['pid']}, application {holder['application_name'] or '-'}, "
        f"connected {holder['backend_start']:%Y-%m-%d %H:%M:%S %Z}"
    )


async def _create(conn: asyncpg.Connection, policy: Policy, now: datetime, report: Report) -> None:
    try:
        for name in await ensure_months(conn, now, policy.ahead_months):
            log.info("retention.created", partition=name)
            report.created.append(name)
    except asyncpg.PostgresError as exc:
        report.fail("creating the months ahead", exc)
    try:
        in_default = await default_months(conn)
    except asyncpg.PostgresError as exc:
        report.fail("reading the default partition", exc)
        return
    # Rows of months before the live window stay in the default partition until they are old by their
    # arrival too (see _archive_old_default_rows); a live month's rows get their partition.
    stranded = [m for m in in_default if report.live_from <= m < report.month]
    beyond = [m for m in in_default if m > month_start(now, policy.ahead_months)]
    if beyond:
        # A clock years ahead, most likely; such rows are not given months that may never come.
        log.warning("retention.future_rows_in_default", months=[f"{m:%Y-%m}" for m in beyond])
        report.left_alone.append(_beyond_note(beyond))
    for month in stranded:
        name = partition_name(month)
        try:
            if await create_month(conn, month):
                log.info("retention.created_from_default", partition=name)
                report.created.append(f"{name} (rows moved out of the default partition)")
            else:
                # Its detached predecessor is still waiting to be archived; once it is dropped, a later
                # run gives these rows their own partition.
                log.warning("retention.default_rows_wait", partition=name)
                report.left_alone.append(f"rows of {month:%Y-%m} in the default partition: {name} exists")
        except asyncpg.PostgresError as exc:
            report.fail(f"creating {name} for rows in the default partition", exc)


async def _detach_old(conn: asyncpg.Connection, policy: Policy, report: Report) -> None:
    try:
        partitions = await attached(conn)
    except asyncpg.PostgresError as exc:
        report.fail("listing the partitions", exc)
        return
    for partition in partitions:
        month = partition.month
        if month is None:
            if partition.start is not None:
                log.warning("retention.unmanaged_partition", partition=partition.name)
                report.left_alone.append(f"{partition.name}: not a monthly partition made by hookdb")
            continue
        if month >= report.live_from:
            continue
        try:
            file_name = _free_file_name(policy.archive_dir, partition.name)
            async with conn.transaction():
                await conn.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {partition.name}")
                # Rows that arrived after their month are not judged by the time they claim: they go to
                # the default partition (which takes the month now that its partition is detached), to
                # stay live while they are recent and be archived by the month they arrived in. So the
                # archive of a month holds no row that arrived after it, and is purged by its name safely.
                later = await conn.fetchval(
                    f"WITH moved AS (DELETE FROM {partition.name} WHERE received_at >= $1 RETURNING *), "
                    f"kept AS (INSERT INTO {PARENT}_default SELECT * FROM moved RETURNING 1) "
                    "SELECT count(*) FROM kept",
                    month_start(month, 1),
                )
                await conn.execute(f"COMMENT ON TABLE {partition.name} IS '{MARKER}{file_name}'")
            log.info("retention.detached", partition=partition.name, archive=file_name, arrived_later=later)
        except (asyncpg.PostgresError, OSError) as exc:
            report.fail(f"detaching {partition.name}", exc)


async def _finish_detached(conn: asyncpg.Connection, policy: Policy, report: Report) -> None:
    """Archive and drop every table hookdb detached: those of this run and any an earlier run left."""
    try:
        tables = await _detached(conn)
    except asyncpg.PostgresError as exc:
        report.fail("listing the detached months", exc)
        return
    for table in tables:
        await _finish(conn, policy, report, table["name"], table["comment"] or "")


async def _finish(conn: asyncpg.Connection, policy: Policy, report: Report, name: str, comment: str) -> None:
    """Archive and drop one detached table (unarchived past the purge horizon: none of its rows arrived
    after its month)."""
    month = month_of_name(name)
    file_name = _marked_file(name, comment)
    if month is None or file_name is None:
        log.warning("retention.unmarked_table", table=name)
        report.left_alone.append(f"{name}: not attached, and not detached by hookdb")
        return
    try:
        docs = await _delete_docs(conn, f"SELECT {_EVENT_KEYS} FROM {name}")
        log.info("retention.search_docs_deleted", table=name, docs=docs)
        if report.kept_from is not None and month < report.kept_from:
            rows = await conn.fetchval(f"SELECT count(*) FROM {name}")
            await _drop(conn, name)
            log.info("retention.dropped_unarchived", table=name, rows=rows)
            report.dropped.append(Dropped(name, rows, docs))
        else:
            report.archived.append(await _archive(conn, policy, name, month, file_name, docs))
    except (asyncpg.PostgresError, OSError, RetentionError) as exc:
        report.fail(f"archiving {name}", exc)


async def _detached(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The tables named like a month that are not attached (``name``, ``comment``), by name: those
    hookdb detached carry the marker in their comment."""
    return await conn.fetch(
        "SELECT c.relname AS name, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c "
        "WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ $2 "
        "AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = $1::regclass) "
        "ORDER BY c.relname",
        PARENT,
        f"^{NAME_PATTERN.pattern}$",
    )


def _beyond_note(months: list[datetime]) -> str:
    listed = ", ".join(f"{m:%Y-%m}" for m in months)
    return f"rows of {listed} in the default partition: beyond the months ahead"


def _kept_live_note(rows: int, live_from: datetime) -> str:
    return (
        f"{rows} rows in the default partition that claim a time before {live_from:%Y-%m} "
        "but arrived since: kept live until they are as old by their arrival"
    )


def _marked_file(name: str, comment: str) -> str | None:
    """The archive file a table hookdb detached is to be archived as; None for a table it did not detach."""
    file_name = comment.removeprefix(MARKER)
    named = _ARCHIVE_FILE.fullmatch(file_name)
    if month_of_name(name) is None or not comment.startswith(MARKER) or named is None or named[1] != name:
        return None
    return file_name


# The default partition's rows that claim a month before the live window but arrived within it stay live;
# those that arrived before it are archived by the month they arrived in.
def _old_rows_query(also: str = "") -> str:
    """Count the default partition's rows (and ``also``'s, a ``UNION ALL SELECT`` of ``_EVENT_KEYS`` and
    ``received_at`` of rows a preview would move there) that claim a time before ``$1``, by arrival month
    and by whether they also arrived before it."""
    return (
        "SELECT date_trunc('month', received_at, 'UTC') AS month, count(*) AS n, received_at < $1 AS old "
        f"FROM {_default_rows(also)} WHERE occurred_at < $1 GROUP BY 1, 3 ORDER BY 1"
    )


def _default_rows(also: str = "") -> str:
    """The default partition's rows (``_EVENT_KEYS`` and ``received_at``), with ``also``'s, as ``r``."""
    return f"(SELECT {_EVENT_KEYS}, received_at FROM {PARENT}_default {also}) AS r"


async def _archive_old_default_rows(conn: asyncpg.Connection, policy: Policy, report: Report) -> None:
    """Archive the default partition's rows whose claimed time and arrival are both before the live
    window (a sender's clock years behind, an outbox drained very late), under the month of arrival."""
    try:
        groups = await conn.fetch(_old_rows_query(), report.live_from)
    except asyncpg.PostgresError as exc:
        report.fail("reading the default partition", exc)
        return
    fresh = sum(g["n"] for g in groups if not g["old"])
    if fresh:
        log.info("retention.kept_live", rows=fresh, live_from=f"{report.live_from:%Y-%m}")
        report.left_alone.append(_kept_live_note(fresh, report.live_from))
    for group in groups:
        if not group["old"]:
            continue
        arrived = group["month"]
        name = partition_name(arrived)
        try:
            comment = await _take_old_default_rows(conn, policy, name, arrived, report.live_from)
        except (asyncpg.PostgresError, OSError) as exc:
            report.fail(f"taking the default partition's rows that arrived in {arrived:%Y-%m}", exc)
            continue
        if comment is None:  # its month's table is still there: a later run takes these rows
            log.warning("retention.default_rows_wait", partition=name)
            report.left_alone.append(
                f"rows that arrived in {arrived:%Y-%m} in the default partition: {name} exists"
            )
            continue
        log.info("retention.taken_from_default", table=name, rows=group["n"])
        await _finish(conn, policy, report, name, comment)


async def _take_old_default_rows(
    conn: asyncpg.Connection, policy: Policy, name: str, arrived: datetime, live_from: datetime
) -> str | None:
    """Move the old rows that arrived in the month ``arrived`` into a new detached table ``name``, marked
    for its archive, in one transaction; its comment, or None while a table of that name exists."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
        if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
            return None
        comment = MARKER + _free_file_name(policy.archive_dir, name)
        await conn.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        await conn.execute(
            f"WITH moved AS (DELETE FROM {PARENT}_default WHERE occurred_at < $1 AND received_at < $1 "
            f"AND received_at >= $2 AND received_at < $3 RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            live_from,
            arrived,
            month_start(arrived, 1),
        )
        await conn.execute(f"COMMENT ON TABLE {name} IS '{comment}'")
    return comment


async def _archive(
    conn: asyncpg.Connection, policy: Policy, table: str, month: datetime, file_name: str, docs: int
) -> Archived:
    """Export (unless a complete file is there), upload, drop: the life of one detached month."""
    path = policy.archive_dir / file_name
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL row_security = off")
        rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
    found = await asyncio.to_thread(_rows_or_none, path)
    exported = found != rows
    if exported:
        if found is not None or path.exists():
            log.warning("retention.export_redone", table=table, path=str(path), file_rows=found, rows=rows)
        rows = await _export(conn, table, path)
        log.info("retention.exported", table=table, path=str(path), rows=rows)
    else:
        log.info("retention.export_found", table=table, path=str(path), rows=rows)
    if policy.upload_command:
        await _upload(policy.upload_command, path, month)
    await _drop(conn, table)
    log.info("retention.dropped", table=table)
    return Archived(table, path, rows, exported, bool(policy.upload_command), docs)


async def _export(conn: asyncpg.Connection, table: str, path: Path) -> int:
    """Write the table to ``path`` through a checked ``.partial`` file; return its row count."""
    partial = path.with_name(path.name + PARTIAL)
    await asyncio.to_thread(_make_dir, path.parent)
    writer = await asyncio.to_thread(_GzipWriter, partial, path.name.removesuffix(".gz"))
    try:
        # One snapshot for the count and the copy; row_security off makes a policy that would hide
        # rows an error instead of a silently short archive; the file reads the same on any server.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(
                "SET LOCAL row_security = off; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'"
            )
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            status = await conn.copy_from_table(table, output=writer, format="csv", header=True)
        await asyncio.to_thread(writer.finish)
        in_file = await asyncio.to_thread(archived_rows, partial)
    except BaseException:
        await asyncio.to_thread(writer.discard)
        raise
    copied = int(status.split()[-1])
    if not rows == copied == in_file:
        await asyncio.to_thread(writer.discard)
        raise RetentionError(
            f"export of {table} does not add up: {rows} rows in the table, {copied} copied, "
            f"{in_file} in the file"
        )
    await asyncio.to_thread(_publish, partial, path)
    return rows


async def _upload(command: tuple[str, ...], path: Path, month: datetime) -> None:
    fills = {"{path}": str(path), "{name}": path.name, "{month}": f"{month:%Y-%m}"}
    argv = []
    for arg in command:
        for placeholder, value in fills.items():
            arg = arg.replace(placeholder, value)
        argv.append(arg)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise RetentionError(f"upload command {argv[0]!r} could not start: {exc.strerror}") from None
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        tail = " | ".join(output.decode(errors="replace").strip().splitlines()[-3:])
        raise RetentionError(
            f"upload of {path.name} failed (exit {proc.returncode}){': ' + tail if tail else ''}; "
            "the month stays detached until an upload succeeds"
        )
    log.info("retention.uploaded", path=str(path), command=argv[0])


async def _drop(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(f"DROP TABLE {table}")


def _purgeable(policy: Policy, report: Report) -> list[Path]:
    """The archive files (whole or partial) of months before the purge horizon."""
    if report.kept_from is None or not policy.archive_dir.is_dir():
        return []
    found = []
    for path in sorted(policy.archive_dir.iterdir()):
        match = _ARCHIVE_FILE.fullmatch(path.name)
        month = month_of_name(match[1]) if match else None
        if month is not None and month < report.kept_from:
            found.append(path)
    return found


def _purge_files(policy: Policy, report: Report) -> None:
    for path in _purgeable(policy, report):
        try:
            path.unlink()
        except OSError as exc:
            report.fail(f"purging {path}", exc)
            continue
        log.info("retention.purged", path=str(path))
        report.purged.append(path)


def archived_rows(path: Path) -> int:
    """The number of rows in an archive file, read whole: raises if it is not a complete one.

    Counts the line ends outside quotes (COPY quotes every field holding a line end or a quote, and
    doubles the quotes inside), so no field is too large and nothing is parsed; gzip checks its CRC
    and length at the end.
    """
    records = 0
    quoted = False
    last = b""
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            pieces = chunk.split(b'"')
            for index, piece in enumerate(pieces):
                if index:
                    quoted = not quoted
                if not quoted:
                    records += piece.count(b"\n")
            last = chunk[-1:]
    if quoted or last != b"\n":
        raise ValueError(f"{path}: the last record is cut short")
    return records - 1  # the header line


def _rows_or_none(path: Path) -> int | None:
    """The rows of an existing, complete archive file; None when there is none to trust."""
    if not path.exists():
        return None
    try:
        return archived_rows(path)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        log.warning("retention.archive_unreadable", path=str(path), error=str(exc))
        return None


def _free_file_name(folder: Path, table: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """The archive name for a month detached now: the first that no file (whole or partial) has, nor
    ``taken`` (names a preview counts as written)."""
    number = 1
    while True:
        name = f"{table}{SUFFIX}" if number == 1 else f"{table}.{number}{SUFFIX}"
        if name not in taken and not (folder / name).exists() and not (folder / (name + PARTIAL)).exists():
            return name
        number += 1


def _make_dir(folder: Path) -> None:
    # Archives hold every tenant's events, and agent users may share the collector's group.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


class _GzipWriter:
    """A gzip file being written under its temporary name; ``finish`` makes it durable."""

    def __init__(self, path: Path, inner_name: str) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw = os.fdopen(fd, "wb")
        self._gzip = gzip.GzipFile(filename=inner_name, mode="wb", fileobj=self._raw, compresslevel=6)

    def write(self, data: bytes) -> int:
        return self._gzip.write(data)

    def finish(self) -> None:
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

    def discard(self) -> None:
        self._gzip.close()
        self._raw.close()
        self.path.unlink(missing_ok=True)


def _publish(partial: Path, path: Path) -> None:
    """Give a checked file its final name, durably: a crash leaves the old name or the new, never half."""
    os.replace(partial, path)
    fsync_dir(path.parent)
