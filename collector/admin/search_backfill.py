"""``hookdb search backfill``: search documents for the events stored before migration 0007 made them.

The collector writes a batch's search documents in its transaction (``store/search.py``); the events a
database held when it was upgraded to 0007 have none. This command makes them, by the same code as live
capture: each stored payload decoded by the read side's decoder, its escapes undone and its large strings
put back from ``payload_blobs`` (``search_backlog.originals``, as for deferred documents), so the text is the
original's;
its part made by ``search.document`` and the parts chunked by ``search.Chunker`` exactly as
``search.documents`` chunks a session's ordered list; the documents written by ``search.insert``
(``ON CONFLICT DO NOTHING``) under the tenant's row-level security.

Which events: those received before version 7's ``schema_migrations.applied_at`` whose type is in
``classification.SEARCH_FIELDS``, with a session id. Tenant by tenant (``--tenant``: one), session by
session in key order, each session's events in ``(occurred_at, event_id)`` order, read in pages by keyset
(``PAGE`` events a round trip, never a session whole): a run makes the same documents with the same keys
as every other, so it is resumable (a second run adds nothing), and it commits every ``WRITE_DOCS``
documents, not in one long transaction. ``--dry-run`` reads and counts the same, and writes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from hookdb.collector import classification as cls
from hookdb.collector.ops import logs
from hookdb.collector.store import search, search_backlog
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.migrate import SchemaError

log = logs.get("hookdb.search_backfill")

SEARCH_VERSION = 7  # the migration that made search_docs
PAGE = 2000  # events read a round trip
WRITE_DOCS = 100  # documents a transaction: at most 3.2 MB of text (search.DOC_CHARS each)

_APPLIED = "SELECT applied_at FROM schema_migrations WHERE version = $1"
# The leaf partitions of hook_audit_log (no row-level security of their own: the tenants are read there).
_PARTITIONS = "SELECT relid::regclass::text FROM pg_partition_tree('hook_audit_log') WHERE isleaf"
_NEXT_TENANT = "SELECT min(tenant_id) FROM {table} WHERE tenant_id > $1"  # one index probe a tenant
_QUALIFY = "tenant_id = $1 AND session_id IS NOT NULL AND event_type = ANY($2::text[]) AND received_at < $3"
_ORDER = "ORDER BY session_id, occurred_at, event_id LIMIT $4"
_SELECT = f"SELECT {search_backlog.STORED_COLUMNS}, payload::text FROM hook_audit_log"
_FIRST_PAGE = f"{_SELECT} WHERE {_QUALIFY} {_ORDER}"
_NEXT_PAGE = f"{_SELECT} WHERE {_QUALIFY} AND (session_id, occurred_at, event_id) > ($5, $6, $7) {_ORDER}"
_MISSING = """
SELECT count(*) FROM unnest($2::text[], $3::bytea[]) AS k (session_id, doc_key)
WHERE NOT EXISTS (SELECT FROM search_docs d
                  WHERE d.tenant_id = $1 AND d.session_id = k.session_id AND d.doc_key = k.doc_key)
"""


class Summary(msgspec.Struct):
    """What a run read and wrote."""

    applied_at: datetime  # when migration 0007 was applied: the events received before it were read
    dry_run: bool
    tenants: int = 0
    sessions: int = 0
    events: int = 0  # qualifying events read
    undecodable: int = 0  # events whose payload the read side decodes only in part: no part, as live
    documents: int = 0  # documents made
    new: int = 0  # of them, written (with --dry-run: not stored yet)

    def render(self) -> str:
        if not self.events:
            return (
                f"no searchable events were stored before migration 0007 was applied "
                f"({self.applied_at:%Y-%m-%d %H:%M:%S %Z}): nothing to backfill"
            )
        written = "not stored yet (dry run: nothing written)" if self.dry_run else "written"
        lines = [
            ("tenants", f"{self.tenants}"),
            ("sessions", f"{self.sessions}"),
            ("events", f"{self.events} read, received before {self.applied_at:%Y-%m-%d %H:%M:%S %Z}"
                       + (f", {self.undecodable} not decodable" if self.undecodable else "")),
            ("documents", f"{self.documents} made, {self.new} {written}"),
        ]  # fmt: skip
        return "\n".join(f"{name + ':':<12} {value}" for name, value in lines)


async def run(options: ConnectOptions, tenant: str | None, *, dry_run: bool) -> Summary:
    """Make the missing search documents of the events stored before migration 0007 (of ``tenant``, else
    of every tenant); raise ``SchemaError`` for a database below 0007."""
    conn = await options.connect()
    try:
        applied_at = await _applied_at(conn)
        summary = Summary(applied_at, dry_run)
        for name in [tenant] if tenant is not None else await _tenants(conn):
            await _backfill_tenant(conn, options, name, summary)
    finally:
        await conn.close()
    log.info("search_backfill.finished", **msgspec.structs.asdict(summary))
    return summary


async def _applied_at(conn: asyncpg.Connection) -> datetime:
    applied_at = None
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is not None:
        applied_at = await conn.fetchval(_APPLIED, SEARCH_VERSION)
    if applied_at is None:
        raise SchemaError(
            f"the schema lacks migration {SEARCH_VERSION:04d} (search documents): run `hookdb migrate` first"
        )
    return applied_at


async def _tenants(conn: asyncpg.Connection) -> list[str]:
    """Every tenant with events in hook_audit_log, in key order, found by index probes of each partition."""
    found: set[str] = set()
    for (table,) in await conn.fetch(_PARTITIONS):
        sql, last = _NEXT_TENANT.format(table=table), ""
        while (last := await conn.fetchval(sql, last)) is not None:
            found.add(last)
    return sorted(found)


async def _backfill_tenant(
    conn: asyncpg.Connection, options: ConnectOptions, tenant: str, summary: Summary
) -> None:
    """One tenant's sessions, chunked as they are read, their documents written every ``WRITE_DOCS``."""
    before = summary.sessions, summary.events, summary.new
    pending: list[search.Document] = []
    chunker, session = search.Chunker(), None
    async for row, payload in _events(conn, options, tenant, summary.applied_at):
        summary.events += 1
        if row.session_id != session:
            if (last := chunker.close()) is not None:
                pending.append(last)
            session = row.session_id
            summary.sessions += 1
        summary.undecodable += payload is None
        # A JSON array or scalar payload is no part, as in the projections.
        part = search.document(row, payload) if isinstance(payload, dict) else None
        if part is not None and (done := chunker.add(part)) is not None:
            pending.append(done)
        if len(pending) >= WRITE_DOCS:
            await _write(conn, options, tenant, pending, summary)
            pending = []
    if (last := chunker.close()) is not None:
        pending.append(last)
    if pending:
        await _write(conn, options, tenant, pending, summary)
    if summary.events > before[1]:
        summary.tenants += 1
        log.info(
            "search_backfill.tenant_done",
            tenant=tenant,
            sessions=summary.sessions - before[0],
            events=summary.events - before[1],
            new=summary.new - before[2],
            dry_run=summary.dry_run,
        )


async def _events(
    conn: asyncpg.Connection, options: ConnectOptions, tenant: str, applied_at: datetime
) -> AsyncIterator[tuple[search_backlog.Stored, Any]]:
    """The tenant's qualifying events in (session, time, id) order with their original payloads (``None``
    where the read side decodes one only in part), a page a transaction."""
    types = sorted(cls.SEARCH_FIELDS)
    last: search_backlog.Stored | None = None
    while True:
        async with conn.transaction(readonly=True):
            await options.begin(conn, tenant)
            args = (tenant, types, applied_at, PAGE)
            if last is None:
                records = await conn.fetch(_FIRST_PAGE, *args)
            else:
                after = (last.session_id, last.occurred_at, last.event_id)
                records = await conn.fetch(_NEXT_PAGE, *args, *after)
            rows = [search_backlog.Stored(*r[:-1], r[-1].encode()) for r in records]
            originals = await search_backlog.originals(conn, tenant, rows)
        for row, payload in zip(rows, originals, strict=True):
            yield row, payload
        if len(rows) < PAGE:
            return
        last = rows[-1]


async def _write(
    conn: asyncpg.Connection,
    options: ConnectOptions,
    tenant: str,
    docs: list[search.Document],
    summary: Summary,
) -> None:
    """Write ``docs`` in a transaction of their own (with ``--dry-run``, count those not stored yet)."""
    docs.sort(key=lambda d: (d.session_id, d.doc_key))  # key order, as every write of a batch
    summary.documents += len(docs)
    async with conn.transaction(readonly=summary.dry_run):
        await options.begin(conn, tenant)
        if summary.dry_run:
            keys = [d.session_id for d in docs], [d.doc_key for d in docs]
            summary.new += await conn.fetchval(_MISSING, tenant, *keys)
        else:
            summary.new += await search.insert(conn, tenant, docs)
