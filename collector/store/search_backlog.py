"""Search documents deferred while delivery is behind: queued in the batch's transaction, made when idle.

A batch made while the spool holds more than ``search.defer_backlog_events`` undelivered events writes no
search documents: each tenant's new searchable events are named in one ``search_backlog`` row (ids and
their time span, no text) by :func:`queue`, in the batch's transaction. Indexing their text is about a fifth
of the write path's cost on both sides, so a burst is stored that much sooner; its search follows.

The first writer of each delivery, with no batch waiting, makes them (:func:`index_next`), one row a
transaction: it reads the events
back as stored, their payloads restored as the read side restores them (:func:`originals`, the same as
``hookdb search backfill``), makes the documents the batch would have made (``search.document`` and
``search.documents``: the same keys and chunks) and deletes the row. ``FOR UPDATE SKIP LOCKED`` keeps
writers, delivery processes and collectors apart; a row made twice adds nothing (``ON CONFLICT DO
NOTHING``), and a crash leaves it for the next writer. The row holds no text, so it has no row-level
security: only the writer reads it; ``hookdb_search_pending()`` gives the read API its tenant's count.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import msgspec

from hookdb.collector import classification as cls
from hookdb.collector.api import payloads
from hookdb.collector.store import blobs, search
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row


class Stored(NamedTuple):
    """A stored searchable event read back for its search part (here, and by ``hookdb search backfill``):
    the columns ``search.document`` reads, and JSON of its payload as stored."""

    tenant_id: str
    event_id: uuid.UUID
    occurred_at: datetime
    session_id: str | None
    event_type: str
    payload: bytes | None  # the whole payload's (backfill), or only its searched field's (None: absent)


STORED_COLUMNS = ", ".join(Stored._fields[:-1])  # the columns read as they are: all but the payload
_QUEUE = """
INSERT INTO search_backlog (tenant_id, batch_key, event_ids, first_at, last_at)
VALUES ($1, $2, $3::uuid[], $4, $5)
ON CONFLICT DO NOTHING
"""
# The oldest row no other writer holds, of those queued at least $1 seconds ago (NULL: of all).
_NEXT = """
SELECT tenant_id, batch_key, event_ids, first_at, last_at FROM search_backlog
WHERE $1::float8 IS NULL OR queued_at <= now() - make_interval(secs => $1)
ORDER BY queued_at LIMIT 1 FOR UPDATE SKIP LOCKED
"""
_SET_TENANT = "SELECT set_config('hookdb.tenant', $1, true)"
# The time span prunes the partitions; the primary key finds each event, one lookup an id: as `event_id =
# ANY($2)`, a partition without statistics yet (filled since autovacuum last looked, as in a burst) had the
# planner guess thousands of ids match everything and scan the span by the session index instead (26 µs an
# event against 1.9, measured). OFFSET 0 keeps the lateral query from being flattened into a join it could
# plan the same way. Only the searched field of each payload is read (``search.document`` reads no other):
# PostgreSQL sends, and Python decodes, far less. It comes as the writer's connections take jsonb: its JSON
# as bytes, in the binary format.
_WHEN = (f"WHEN '{event}' THEN payload->'{field}'" for event, (_, field) in sorted(cls.SEARCH_FIELDS.items()))
_FIELD = " ".join(["CASE event_type", *_WHEN, "END"])
_EVENTS = f"""SELECT e.* FROM unnest($2::uuid[]) AS k (id) CROSS JOIN LATERAL (
    SELECT {STORED_COLUMNS}, {_FIELD} FROM hook_audit_log
    WHERE tenant_id = $1 AND event_id = k.id AND occurred_at BETWEEN $3 AND $4
      AND session_id IS NOT NULL AND event_type = ANY($5::text[])
    OFFSET 0) AS e"""
_DONE = "DELETE FROM search_backlog WHERE tenant_id = $1 AND batch_key = $2"
# A large string's beginning is all a part can hold of it (search.FIELD_CHARS): no more is read.
_BLOBS = "SELECT sha256, left(content, $3) FROM payload_blobs WHERE tenant_id = $1 AND sha256 = ANY($2)"
_SEARCHED = sorted(cls.SEARCH_FIELDS)


async def queue(conn: asyncpg.Connection, tenant: str, rows: list[Row]) -> None:
    """Name ``tenant``'s new searchable ``rows`` of a batch in the backlog, in its transaction (its
    ``hookdb.tenant`` set); keyed by the first, so a batch written again adds nothing."""
    times = [row.occurred_at for row in rows]
    await conn.execute(
        _QUEUE, tenant, rows[0].event_id.bytes, [row.event_id for row in rows], min(times), max(times)
    )


class Indexed(NamedTuple):
    """What :func:`index_next` did with one backlog row."""

    tenant: str
    events: int  # the events it named that are still stored
    documents: int  # documents written (not there yet)
    refused: str | None = None  # why PostgreSQL refused them as data: the row is dropped all the same


async def index_next(
    conn: asyncpg.Connection, options: ConnectOptions, older_than: float | None = None
) -> Indexed | None:
    """Make the documents of the oldest backlog row no other writer holds (with ``older_than``: only one
    queued at least that many seconds ago), and delete it, in one transaction; ``None`` when there is none."""
    async with conn.transaction():
        await options.begin(conn)
        queued = await conn.fetchrow(_NEXT, older_than)
        if queued is None:
            return None
        tenant, key, ids, first_at, last_at = queued
        await conn.execute(_SET_TENANT, tenant)
        records = await conn.fetch(_EVENTS, tenant, ids, first_at, last_at, _SEARCHED)
        rows = [tuple.__new__(Stored, r) for r in records]  # no generated __new__'s Python frame
        parts = [
            part
            for row, value in zip(rows, await originals(conn, tenant, rows), strict=True)
            if (part := search.document(row, {cls.SEARCH_FIELDS[row.event_type][1]: value})) is not None
        ]
        written, refused = 0, None
        if parts:
            try:
                async with conn.transaction():  # a savepoint: a refusal costs these documents only
                    written = await search.insert(conn, tenant, search.documents(parts))
            except asyncpg.PostgresError as exc:
                if not (cls.is_data_error(exc) or cls.may_be_row_fault(exc)):
                    raise
                refused = f"{type(exc).__name__}: {exc}"
        await conn.execute(_DONE, tenant, key)
    return Indexed(tenant, len(rows), written, refused)


class _Stored(msgspec.Struct):
    """A payload decoded as stored; ``marked``: it holds blob references or escapes to undo."""

    value: Any
    marked: bool


async def originals(conn: asyncpg.Connection, tenant: str, rows: list[Stored]) -> list[Any]:
    """The payloads (or fields) of stored ``rows`` as live capture saw them: escapes undone, large strings
    put back (their first ``search.FIELD_CHARS``); ``None`` where there is none, or the read side decodes one
    only in part. In the transaction under way, with ``tenant`` set."""
    decoded = [_decode(row) for row in rows]
    found = await _blobs(conn, tenant, decoded)
    return [_original(stored, found) for stored in decoded]


def _decode(row: Stored) -> _Stored | None:
    if row.payload is None:
        return None
    value, problem = payloads.decode(row.payload, row.event_id)
    return None if problem is not None else _Stored(value, blobs.holds_marker(row.payload))


async def _blobs(conn: asyncpg.Connection, tenant: str, decoded: list[_Stored | None]) -> dict[str, str]:
    """The beginnings of the blobs the payloads refer to, by sha256."""
    digests: set[str] = set()
    for stored in decoded:
        if stored is not None and stored.marked:
            blobs.restore(stored.value, lambda digest: digests.add(digest))  # looks up what it refers to
    if not digests:
        return {}
    return dict(await conn.fetch(_BLOBS, tenant, sorted(digests), search.FIELD_CHARS))


def _original(stored: _Stored | None, found: dict[str, str]) -> Any:
    if stored is None:
        return None
    return blobs.restore(stored.value, found.get) if stored.marked else stored.value
