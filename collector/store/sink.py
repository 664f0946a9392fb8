"""The PostgreSQL sink: writes a batch, each event exactly once, and its projections, in one transaction.

Per batch, in one transaction: the writer role is taken for that transaction only (``SET LOCAL``); then,
for each tenant in the batch (in a fixed order), ``hookdb.tenant`` is set for the transaction and one
``INSERT … SELECT … FROM unnest($1::uuid[], …) ON CONFLICT DO NOTHING`` writes that tenant's rows, sent
as binary arrays (so row-level security's WITH CHECK guards every row; COPY would bypass it). The
statement answers with how many rows were new, and their ids only when some were already stored. Large
payload strings (see ``blobs``) go the same way into ``payload_blobs``. Nothing is staged: no session
state outlives the transaction, so the write path runs through a transaction-mode pooler. Only the rows
that were new are projected into ``sessions``, ``reports`` and ``agent_states`` (:func:`_project`), and
into search documents, or, for a batch made while delivery is behind, a ``search_backlog`` row that names
them for later (``search_backlog``).

Several sinks may write at once (``database.writers``, or collectors on other hosts): every write that
locks rows another batch may lock too — blobs, sessions, reports, agent states, and the tenants
themselves — is applied in key order, so concurrent writers cannot deadlock.

Each payload is decoded at most once here (:func:`prepare`), for blob extraction and the projections alike;
each tenant's rows are projected once, and again only over the new ones when some were already stored.
An event whose time has no partition (the default one detached or dropped) gets one: the sink creates its
month's partition and writes the batch again.

asyncpg is asyncio; the trio side crosses over once per batch through trio-asyncio.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import msgspec
import trio
import trio_asyncio

from hookdb.collector import classification as cls
from hookdb.collector.ops import logs, metrics
from hookdb.collector.store import blobs, ledger, partitions, search, search_backlog, summary
from hookdb.collector.store.connect import ConnectOptions, assume_role, report_refusal
from hookdb.collector.store.migrate import migrate
from hookdb.collector.store.projections import (
    Projection,
    payload_decoder,
    project,
    read_files,
    sha256_text,
    word_count,
)
from hookdb.collector.store.rows import COLUMNS, Row, since_epoch
from hookdb.collector.store.usage import UsageRecord

log = logs.get("hookdb.sink")

_COLUMN_LIST = ", ".join(COLUMNS)
_SET_TENANT = "SELECT set_config('hookdb.tenant', $1, true)"
_INSERT_BLOBS = (
    "INSERT INTO payload_blobs (tenant_id, sha256, content) "
    "SELECT $1::text, * FROM unnest($2::text[], $3::text[]) ON CONFLICT DO NOTHING"
)
# The tenant's rows as one array of hookdb_event_row (the tenant itself once), their times as microseconds
# since the epoch (asyncpg encodes a datetime at four times an integer's cost; the sum is exact, as
# timestamptz). Most batches hold only new events: they are inserted as they are (_INSERT_NEW_EVENTS), which
# costs PostgreSQL about 2 µs a row less than ON CONFLICT's arbiter check (measured). A batch holding an
# event already stored (sent again after a lost ack, a spool replayed after a crash, or twice in the batch)
# fails on the key, and is written again with _INSERT_EVENTS, which answers the count of new rows, and their
# ids only when some were not new.
_EPOCH, _MICROSECOND = "'1970-01-01 00:00:00+00'::timestamptz", "interval '1 microsecond'"
_INSERT_NEW_EVENTS = f"""
INSERT INTO hook_audit_log ({_COLUMN_LIST})
SELECT $1::text, e.event_id, {_EPOCH} + e.occurred_us * {_MICROSECOND},
       {_EPOCH} + e.received_us * {_MICROSECOND}, e.session_id, e.event_type, e.tool_name, e.source,
       e.peer_pid, e.peer_uid, e.peer_gid, e.payload
FROM unnest($2::hookdb_event_row[]) AS e"""
_INSERT_EVENTS = f"""
WITH new AS ({_INSERT_NEW_EVENTS}
    ON CONFLICT DO NOTHING
    RETURNING event_id)
SELECT count(*)::int AS inserted, CASE WHEN count(*) < $3 THEN array_agg(event_id) END AS ids FROM new
"""
# All of a tenant's session changes in one statement, one array per column, in key order.
_UPSERT_SESSION = """
INSERT INTO sessions AS s (
    tenant_id, session_id, status, status_at, model, agent_type, cwd, transcript_path, source,
    started_at, updated_at, ended_at, event_count, subagent_count, cost_usd, meta,
    model_at, agent_type_at, source_at, cost_usd_at, meta_at)
SELECT t, id, coalesce(st, 'running'), st_at, m, at, c, tp, src, sa, ua, ea, ec, sc, cost, meta,
       m_at, at_at, src_at, cost_at, meta_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::int[],
            $14::int[], $15::numeric[], $16::jsonb[], $17::timestamptz[], $18::timestamptz[],
            $19::timestamptz[], $20::timestamptz[], $21::jsonb[])
     WITH ORDINALITY AS u (t, id, st, st_at, m, at, c, tp, src, sa, ua, ea, ec, sc, cost, meta,
                           m_at, at_at, src_at, cost_at, meta_at, n)
ORDER BY n  -- the arrays' order, which is the key order: concurrent writers lock sessions alike
ON CONFLICT (tenant_id, session_id) DO UPDATE SET
    status = CASE WHEN EXCLUDED.status_at IS NOT NULL
                       AND (s.status_at IS NULL OR EXCLUDED.status_at >= s.status_at)
                  THEN EXCLUDED.status ELSE s.status END,
    status_at = greatest(s.status_at, EXCLUDED.status_at),
    -- model, agent_type, source and cost_usd: the value of the latest event that set one, by its time
    -- (*_at), not of the batch committed last: two collectors' batches merge alike in either order.
    model = CASE WHEN EXCLUDED.model_at >= s.model_at OR s.model_at IS NULL
                 THEN coalesce(EXCLUDED.model, s.model) ELSE s.model END,
    model_at = greatest(s.model_at, EXCLUDED.model_at),
    agent_type = CASE WHEN EXCLUDED.agent_type_at >= s.agent_type_at OR s.agent_type_at IS NULL
                      THEN coalesce(EXCLUDED.agent_type, s.agent_type) ELSE s.agent_type END,
    agent_type_at = greatest(s.agent_type_at, EXCLUDED.agent_type_at),
    cwd = coalesce(s.cwd, EXCLUDED.cwd),
    transcript_path = coalesce(s.transcript_path, EXCLUDED.transcript_path),
    source = CASE WHEN EXCLUDED.source_at >= s.source_at OR s.source_at IS NULL
                  THEN coalesce(EXCLUDED.source, s.source) ELSE s.source END,
    source_at = greatest(s.source_at, EXCLUDED.source_at),
    started_at = least(s.started_at, EXCLUDED.started_at),
    updated_at = greatest(s.updated_at, EXCLUDED.updated_at),
    ended_at = greatest(s.ended_at, EXCLUDED.ended_at),  -- the later end, whichever host's batch came last
    event_count = s.event_count + EXCLUDED.event_count,
    subagent_count = s.subagent_count + EXCLUDED.subagent_count,
    cost_usd = CASE WHEN EXCLUDED.cost_usd_at >= s.cost_usd_at OR s.cost_usd_at IS NULL
                    THEN coalesce(EXCLUDED.cost_usd, s.cost_usd) ELSE s.cost_usd END,
    cost_usd_at = greatest(s.cost_usd_at, EXCLUDED.cost_usd_at),
    -- meta: each key the latest event's that set it, by meta_at (a key without a time is replaced)
    meta = CASE WHEN EXCLUDED.meta = '{}' THEN s.meta ELSE s.meta || coalesce(
        (SELECT jsonb_object_agg(k.key, k.value) FROM jsonb_each(EXCLUDED.meta) k
         WHERE NOT (s.meta_at ? k.key AND EXCLUDED.meta_at ? k.key)
            OR (EXCLUDED.meta_at ->> k.key)::timestamptz >= (s.meta_at ->> k.key)::timestamptz), '{}') END,
    meta_at = CASE WHEN EXCLUDED.meta_at = '{}' THEN s.meta_at ELSE s.meta_at || coalesce(
        (SELECT jsonb_object_agg(k.key, k.value) FROM jsonb_each(EXCLUDED.meta_at) k
         WHERE NOT s.meta_at ? k.key
            OR (k.value #>> '{}')::timestamptz >= (s.meta_at ->> k.key)::timestamptz), '{}') END
RETURNING session_id, started_at  -- for the summary: a tool call's day is its session's start day
"""
_UPSERT_REPORT = """
INSERT INTO reports AS r (
    tenant_id, session_id, path, report_type, content, sha256, word_count, written_at, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tenant_id, session_id, path_key) DO UPDATE SET
    report_type = EXCLUDED.report_type, content = EXCLUDED.content, sha256 = EXCLUDED.sha256,
    word_count = EXCLUDED.word_count, written_at = EXCLUDED.written_at, event_id = EXCLUDED.event_id
    WHERE EXCLUDED.written_at >= r.written_at
RETURNING encode(sha256(convert_to(content, 'UTF8')), 'hex') = sha256 AS verified
"""
_UPSERT_STATE = """
INSERT INTO agent_states AS a (tenant_id, session_id, agent_id, path, agent_type, content, sha256, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (tenant_id, session_id, state_key) DO UPDATE SET
    agent_type = coalesce(EXCLUDED.agent_type, a.agent_type), content = EXCLUDED.content,
    sha256 = EXCLUDED.sha256, updated_at = EXCLUDED.updated_at
    WHERE EXCLUDED.updated_at >= a.updated_at
"""
# Keeps report_count and the QA score true, and at session end enriches meta with what the session produced.
_SUMMARIZE_SESSION = """
UPDATE sessions s SET
    report_count = r.reports,
    meta = s.meta
           || CASE WHEN q.score IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('qa_score', q.score) END
           || CASE WHEN $3 THEN jsonb_build_object('report_count', r.reports, 'word_count', r.words,
                                                   'subagent_count', s.subagent_count)
              ELSE '{}'::jsonb END
FROM (SELECT count(*)::int AS reports, coalesce(sum(word_count), 0)::int AS words
      FROM reports WHERE tenant_id = $1 AND session_id = $2) r
LEFT JOIN LATERAL (
    SELECT substring(c.content FROM $4)::numeric AS score
    FROM (SELECT content, written_at AS at FROM reports WHERE tenant_id = $1 AND session_id = $2
          UNION ALL
          SELECT content, updated_at FROM agent_states WHERE tenant_id = $1 AND session_id = $2) c
    WHERE c.content ~ $4
    ORDER BY c.at DESC
    LIMIT 1) q ON true
WHERE s.tenant_id = $1 AND s.session_id = $2
"""


@dataclass
class TenantRows:
    """One tenant's rows of a batch, as the projections see them (payloads not slimmed)."""

    rows: list[Row] = field(default_factory=list)
    payloads: list[Any] = field(default_factory=list)  # decoded where the projections read them, else None
    projection: Projection = field(default_factory=Projection)  # of all the rows, its files read
    events: list[tuple[Any, ...]] = field(default_factory=list)  # the slimmed rows as hookdb_event_row
    blobs: list[tuple[str, str]] = field(default_factory=list)  # (sha256, content), in sha256 order
    defer_search: bool = False  # its search documents are made later (search_backlog)

    def projection_of(self, new: set[object]) -> Projection:
        """What the rows whose event ids are ``new`` change: each new event once."""
        if len(new) == len(self.rows):
            return self.projection
        rows, payloads = [], []
        for row, payload in zip(self.rows, self.payloads, strict=True):
            if row.event_id in new:
                new.discard(row.event_id)  # a batch can hold an event twice (sent again after a lost ack)
                rows.append(row)
                payloads.append(payload)
        return project(rows, payloads, defer_search=self.defer_search)


@dataclass
class Prepared:
    """A batch ready for its transaction: slimmed rows, blobs, and each tenant's projection."""

    rows: list[Row]
    blobs: list[tuple[str, str, str]]
    tenants: dict[str, TenantRows]
    inserted: int = 0
    unverified_reports: int = 0
    deferred: int = 0  # new searchable events whose documents were queued (search_backlog)
    recorded: list[UsageRecord] = field(default_factory=list)  # requests new to the ledger, to count


# jsonb's binary format: a version byte, then the JSON text. Builtin callables (no Python frame): the
# encoder runs for every payload of every batch.
_jsonb_encode = b"\x01".__add__
_jsonb_decode = operator.itemgetter(slice(1, None))


async def _open(options: ConnectOptions) -> tuple[asyncpg.Connection, list[str]]:
    conn = await options.connect()
    try:
        applied = await migrate(conn)
        await partitions.ensure_months(conn, datetime.now(UTC))
        # In a transaction: through a transaction pooler, the type lookup's two round trips must not land
        # on two server connections. The role is checked once here, then taken per transaction.
        async with conn.transaction():
            await conn.set_type_codec(
                "jsonb", schema="pg_catalog", encoder=_jsonb_encode, decoder=_jsonb_decode, format="binary"
            )
            await assume_role(conn, options.role, "database.role", local=True)
    except BaseException as exc:
        conn.terminate()
        report_refusal(exc, options.application_name)
        raise
    return conn, applied


class _NotAllNew(Exception):
    """The batch holds an event already stored (or one twice): it must be written with ON CONFLICT."""


async def _write(
    conn: asyncpg.Connection, batch: Prepared, options: ConnectOptions, all_new: bool
) -> Prepared:
    """Write ``batch`` in one transaction; with ``all_new``, as rows none of which is stored yet (raises
    ``_NotAllNew``, the transaction rolled back, when one is)."""
    batch.inserted = batch.unverified_reports = batch.deferred = 0  # a retried batch counts afresh
    batch.recorded = []
    tenants = sorted(batch.tenants.items())  # in key order, as every lock below: no deadlock between writers
    if not tenants:
        return batch
    async with conn.transaction():
        await options.begin(conn, tenants[0][0])  # role, timeout and the first tenant: one round trip
        for index, (tenant, part) in enumerate(tenants):
            if index:
                await conn.execute(_SET_TENANT, tenant)
            if part.blobs:
                digests, contents = zip(*part.blobs, strict=True)
                await conn.execute(_INSERT_BLOBS, tenant, digests, contents)
            if all_new:
                try:
                    await conn.execute(_INSERT_NEW_EVENTS, tenant, part.events)
                except asyncpg.UniqueViolationError:  # the table's one unique key: (tenant, event id, time)
                    raise _NotAllNew from None
                inserted, ids = len(part.rows), None
            else:
                inserted, ids = await conn.fetchrow(_INSERT_EVENTS, tenant, part.events, len(part.rows))
            batch.inserted += inserted
            if inserted:
                changes = part.projection if ids is None else part.projection_of(set(ids))
                projected = await _project(conn, changes, part.projection)
                batch.unverified_reports += projected.unverified_reports
                batch.deferred += len(changes.deferred)
                batch.recorded += projected.recorded
                await summary.write(conn, tenant, changes.hours, changes.calls, projected.started)
    return batch


# Read from pg_class by name, not with to_regclass: that looks in the backend's catalog cache, which an
# advisory lock does not refresh, so a writer that waited for another's CREATE would not see its table.
_PARTITION_OF = """
SELECT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = c.oid AND inhparent = $2::regclass) AS attached
FROM pg_class c
WHERE c.relname = $1 AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = $2::regclass)
"""


async def _add_partitions(conn: asyncpg.Connection, rows: Sequence[Row]) -> list[str]:
    """Create partitions for the rows' months, which have none and no default partition to fall into; the
    default partition itself for a month that cannot have its own (its name taken by a detached table, or
    beyond the calendar). Outside the write transaction, so as the login that owns the schema."""
    parent = partitions.PARENT
    created = []
    fallback = False
    for start in sorted({partitions.month_start(row.occurred_at) for row in rows}):
        name = partitions.partition_name(start)
        try:
            end = partitions.month_start(start, 1)
        except ValueError:  # December of the year 9999
            fallback = True
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
            found = await conn.fetchrow(_PARTITION_OF, name, parent)
            if found is not None:
                # Attached: this month has its partition. Detached: never fill it behind the operator's back.
                fallback = fallback or not found["attached"]
                continue
            await conn.execute(
                f"CREATE TABLE {name} PARTITION OF {parent} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        created.append(name)
    default = f"{parent}_default"
    if fallback:
        async with conn.transaction():  # under the lock like a month's: two writers create it once
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", default)
            if await conn.fetchrow(_PARTITION_OF, default, parent) is None:
                await conn.execute(f"CREATE TABLE {default} PARTITION OF {parent} DEFAULT")
                created.append(default)
    return created


class Projected(NamedTuple):
    """What applying one tenant's projection found: reports that did not read back with their hash, the
    requests new to the usage ledger, and each session's start as stored now (for the summary)."""

    unverified_reports: int
    recorded: list[UsageRecord]
    started: dict[str, datetime]


async def _project(conn: asyncpg.Connection, changes: Projection, files: Projection) -> Projected:
    """Apply one tenant's projection: what no other batch writes first (reports and agent states are
    keyed by path), then the rows every batch of a session shares — its session row, the ledger's totals
    — so a concurrent writer waits on their locks only for the end of this transaction."""
    unverified = 0
    for key, write in sorted(changes.reports.items()):
        content = files.reports[key].content if key in files.reports else None
        if content is None:
            continue  # neither readable nor carried by the event
        digest = sha256_text(content)
        verified = await conn.fetchval(
            _UPSERT_REPORT,
            write.tenant_id,
            write.session_id,
            write.path,
            write.report_type,
            content,
            digest,
            word_count(content),
            write.written_at,
            write.event_id,
        )
        unverified += verified is False
    states = {(s.tenant_id, s.session_id, s.agent_id, s.at): s for s in files.states}
    for item in sorted(changes.states, key=lambda s: (s.tenant_id, s.session_id, s.agent_id, s.at)):
        read = states.get((item.tenant_id, item.session_id, item.agent_id, item.at))
        for path, content in sorted((read.files if read else {}).items()):
            await conn.execute(
                _UPSERT_STATE,
                item.tenant_id,
                item.session_id,
                item.agent_id,
                path,
                item.agent_type,
                content,
                sha256_text(content),
                item.at,
            )
    await search.write(conn, changes)  # after the reports: their documents are made from them
    if changes.deferred:
        await search_backlog.queue(conn, changes.deferred[0].tenant_id, changes.deferred)
    started: dict[str, datetime] = {}  # each session's start, as stored: the summary's day of its calls
    if changes.sessions:
        rows = [
            (
                c.tenant_id,
                c.session_id,
                c.status,
                c.status_at,
                c.model,
                c.agent_type,
                c.cwd,
                c.transcript_path,
                c.source,
                c.started_at,
                c.updated_at,
                c.ended_at,
                c.event_count,
                c.subagent_count,
                c.cost_usd,
                _meta(c.meta),
                c.model_at,
                c.agent_type_at,
                c.source_at,
                c.cost_usd_at,
                _encode_times(c.meta_at),
            )
            for _, c in sorted(changes.sessions.items())
        ]
        for session in await conn.fetch(_UPSERT_SESSION, *zip(*rows, strict=True)):
            started[session["session_id"]] = session["started_at"]
    touched = (
        {(w.tenant_id, w.session_id) for w in changes.reports.values()}
        | {(s.tenant_id, s.session_id) for s in changes.states}
        | changes.ended
    )
    for tenant, session in sorted(touched):
        await conn.execute(
            _SUMMARIZE_SESSION, tenant, session, (tenant, session) in changes.ended, cls.QA_SCORE_PATTERN
        )
    return Projected(unverified, await ledger.apply(conn, files.usage), started)


_encode_times = msgspec.json.Encoder().encode  # key → RFC 3339 time, as the SQL above compares them


def _meta(meta: dict[str, Any]) -> bytes:
    """A session's meta as jsonb takes it: values copied from payloads may hold U+0000, escaped as in
    payloads."""
    data = blobs.encode(meta)
    return blobs.extract(data, 1 << 62)[0] if b"\\u0000" in data else data


_MICRO = timedelta(microseconds=1)


def event_values(rows: Sequence[Row]) -> list[tuple[Any, ...]]:
    """One tenant's rows (at least one) as ``_INSERT_NEW_EVENTS`` takes them: without the tenant, which is
    sent once, and their times as microseconds since the epoch."""
    columns = list(zip(*rows, strict=True))  # C-level transpositions: no Python frame per row
    occurred, received = since_epoch(columns[2], _MICRO), since_epoch(columns[3], _MICRO)
    return list(zip(columns[1], occurred, received, *columns[4:], strict=True))


# Rows prepared between checkpoints: a writer's transaction waits for its next statement while the
# collector prepares the next batch, so its statements are sent in between, not after the whole batch.
_CHUNK = 256


async def prepare(rows: Sequence[Row], blob_min_bytes: int, defer_search: bool = False) -> Prepared:
    """Move large payload strings into blobs, project each tenant's rows and read the files the projections
    need (trio side). Each payload is decoded at most once, and only when blobs or projections need it.
    ``defer_search``: the batch's search documents are queued, not made (``search_backlog``)."""
    slim: list[Row] = []
    found: dict[tuple[str, str], str] = {}
    tenants: dict[str, TenantRows] = {}
    slims: dict[str, list[Row]] = {}
    for index, row in enumerate(rows):
        if index and not index % _CHUNK:
            await trio.lowlevel.checkpoint()
        tenant = row.tenant_id
        part = tenants.get(tenant)
        if part is None:
            part = tenants[tenant] = TenantRows(defer_search=defer_search)
            slims[tenant] = []
        decoder = read = payload_decoder(row, defer_search)
        rewrite = blobs.needs_rewrite(row.payload, blob_min_bytes)
        if rewrite:
            decoder = blobs.decode  # extract() rewrites the payload from its whole value
        decoded = None
        if decoder is not None:
            try:
                decoded = decoder(row.payload)
            except blobs.UNDECODABLE as exc:  # stored as it came, projected as an event without fields
                log.warning("payload.undecodable", event_id=str(row.event_id), error=str(exc))
                decoded, rewrite = {}, False
        part.rows.append(row)
        part.payloads.append(None if read is None else decoded)
        if rewrite:
            payload, extracted = blobs.extract(row.payload, blob_min_bytes, decoded)
            if payload is not row.payload:  # blobs taken out, or U+0000 and marker keys escaped
                row = row._replace(payload=payload)
                for digest, text in extracted.items():
                    found[(tenant, digest)] = text
        slim.append(row)
        slims[tenant].append(row)
    for (tenant, digest), text in sorted(found.items()):  # in key order: see the module's docstring
        tenants[tenant].blobs.append((digest, text))
    for tenant, part in tenants.items():
        part.events = event_values(slims[tenant])
        for start in range(0, len(part.rows), _CHUNK):
            await trio.lowlevel.checkpoint()
            rows_, payloads_ = part.rows[start : start + _CHUNK], part.payloads[start : start + _CHUNK]
            project(rows_, payloads_, part.projection, defer_search)
        if part.projection.reports or part.projection.states:
            await read_files(part.projection)
        part.projection.usage = await ledger.read(part.rows, part.payloads)
    return Prepared(slim, [(t, d, text) for (t, d), text in found.items()], tenants)


class Unpreparable(Exception):
    """Preparing these rows failed in the collector's own code (a bug, or an input nothing foresaw): like
    rows PostgreSQL refuses as data, the batch is split until the rows at fault stand alone and are
    dead-lettered, so one event cannot stop delivery at every start."""


class PostgresSink:
    """One connection that writes batches; call from trio inside ``trio_asyncio.open_loop()``."""

    def __init__(self, conn: asyncpg.Connection, options: ConnectOptions, *, applied: list[str]) -> None:
        self._conn = conn
        self._options = options
        self.applied_migrations = applied
        # Whether the next batch is tried as all new: not after one that was not (a replay comes in runs),
        # again after one that was.
        self._all_new = True

    @classmethod
    async def connect(cls, options: ConnectOptions) -> PostgresSink:
        """Connect, migrate the schema, create this month's partitions, and check the writer role."""
        conn, applied = await trio_asyncio.aio_as_trio(_open)(options)
        return cls(conn, options, applied=applied)

    async def write(self, rows: Sequence[Row]) -> int:
        """Write one batch and its projections in one transaction; return how many rows were new."""
        try:
            prepared = await prepare(rows, self._options.blob_min_bytes)
        except Exception as exc:
            raise Unpreparable(f"{type(exc).__name__}: {exc}") from exc
        return await self.write_prepared(prepared)

    async def write_prepared(self, batch: Prepared) -> int:
        """Write a batch :func:`prepare` made ready (so its preparation can overlap the previous write)."""
        try:
            done = await self._write(batch)
        except asyncpg.PostgresError as exc:
            if not cls.is_missing_partition(exc):
                report_refusal(exc, self._options.application_name)  # a pooler nobody told us of
                raise
            created = await trio_asyncio.aio_as_trio(_add_partitions)(self._conn, batch.rows)
            log.warning("partition.created", partitions=created, reason=str(exc))
            done = await self._write(batch)
        ledger.count(done.recorded)
        if done.deferred:
            metrics.search_deferred.inc(done.deferred)
        if done.unverified_reports:
            metrics.report_hash_mismatches.inc(done.unverified_reports)
            log.error("report.hash_mismatch", reports=done.unverified_reports)
        return done.inserted

    async def _write(self, batch: Prepared) -> Prepared:
        write = trio_asyncio.aio_as_trio(_write)
        if self._all_new:
            try:
                return await write(self._conn, batch, self._options, True)
            except _NotAllNew:
                self._all_new = False
        done = await write(self._conn, batch, self._options, False)
        self._all_new = done.inserted == len(batch.rows)
        return done

    async def index_search(self, older_than: float | None = None) -> search_backlog.Indexed | None:
        """Make the documents of one ``search_backlog`` row, with ``older_than`` one queued at least that
        many seconds ago (``None``: none is left)."""
        index = trio_asyncio.aio_as_trio(search_backlog.index_next)
        return await index(self._conn, self._options, older_than)

    async def ping(self) -> None:
        """Check that the server still answers."""
        await trio_asyncio.aio_as_trio(self._conn.execute)("SELECT 1")  # one message, even through a pooler

    def terminate(self) -> None:
        """Drop the connection at once: after a failure its state is unknown."""
        self._conn.terminate()

    async def aclose(self) -> None:
        if not self._conn.is_closed():
            await trio_asyncio.aio_as_trio(self._conn.close)(timeout=5)
