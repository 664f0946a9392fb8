"""The usage ledger in the store: transcripts read as they grow, OTLP usage events, and session totals.

Two steps, as the sink runs the other projections:

- :func:`read` (before the transaction, trio side): for each event that names a transcript
  (``classification.TRANSCRIPT_EVENTS``), read what is new in it and in its subagents' transcripts since
  the last read, off the trio thread, with the owner check and limits of report files; and take the usage
  of Claude Code's OTLP ``api_request`` events and the per-model summaries of the Agent SDK's result
  (``classification.USAGE_EVENTS``, :func:`sdk_usage_of`).
- :func:`apply` (in the batch's transaction, per tenant): merge the records with the ledger's rows by the
  rules of ``usage.merge`` (reported beats computed; a request two sources saw is one row), keep each
  transcript's read offset in ``transcript_reads``, and recompute the touched sessions' totals — without
  the SDK's summaries of a session that has per-request rows (``usage.countable``: never counted twice).

Where each transcript was read is kept here between batches (the tail state, with the requests it has
seen; a bounded number of transcripts, least recently read dropped first) and durably, line-aligned, in
``transcript_reads``, loaded once per tenant after a restart. The durable offset decides: a read is kept as
complete only when it started at or before it (or from the start of the file); a read that started later
(the batch before it was rolled back) is written all the same, since the ledger's merge makes writing a
request again harmless, and the next read starts again from the durable offset. A transcript this process
has no position for (its tenant's first batch after a restart, or one another delivery process read last)
is read from its start and, if it has a durable offset, read again from there in the transaction: what was
read before and changed in place since does not count twice.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import trio

from hookdb.collector import classification as cls
from hookdb.collector import prices
from hookdb.collector.intake import otlp
from hookdb.collector.ops import logs, metrics
from hookdb.collector.store import blobs, usage
from hookdb.collector.store.rows import Row
from hookdb.collector.store.transcripts import (
    CostState,
    Count,
    FileIdentity,
    TailState,
    TranscriptTail,
    subagent_of,
)

log = logs.get("hookdb.ledger")

MAX_KEY = 256
"""The longest session or request id the ledger keys on, as for every other label."""

_price_table: prices.PriceTable = prices.PRICES
_owners: dict[str, int] = {}  # tenant → whose transcripts its events without a sender name
# (tenant, session, path) → how far this collector has read that transcript.
_tails: dict[tuple[str, str, str], TailState] = {}
# Tenants whose durable read positions this process has loaded into _tails.
_loaded: set[str] = set()


def use_prices(table: prices.PriceTable) -> None:
    """Price the requests no source reported a cost for with ``table`` (the config's ``[prices]``)."""
    global _price_table
    _price_table = table


def use_transcript_owners(owners: dict[str, int]) -> None:
    """Read the transcripts a tenant's events name without a kernel-reported sender (HTTP hooks) as the
    files of ``owners[tenant]`` (``http_hooks.transcript_owners``, resolved to uids)."""
    global _owners
    _owners = owners


class _Target(msgspec.Struct, frozen=True):
    tenant: str
    session: str
    path: str
    owner: int
    agent_type: str | None
    main: bool


@dataclass
class TranscriptRead:
    """What one read of one transcript found."""

    target: _Target
    identity: FileIdentity
    start: int
    """The line-aligned offset the read started from (0 when the file was read from its beginning)."""
    state: TailState
    """The tail state after the read."""
    records: list[usage.UsageRecord]
    fresh: bool
    """Read from the start for want of a position in this process (after a restart, or when another
    delivery process read it last)."""

    @property
    def tenant(self) -> str:
        return self.target.tenant

    @property
    def session(self) -> str:
        return self.target.session

    @property
    def path(self) -> str:
        return self.target.path

    @property
    def main(self) -> bool:
        """The session's own transcript (not a subagent's): its ``cost-state`` is the session's."""
        return self.target.main

    @property
    def end(self) -> int:
        """The line-aligned offset the next read starts from."""
        return self.state.offset - len(self.state.partial)


@dataclass
class Usage:
    """One tenant's usage in a batch, ready for :func:`apply`."""

    reads: list[TranscriptRead] = field(default_factory=list)
    records: list[usage.UsageRecord] = field(default_factory=list)
    """Usage of the batch's OTLP events."""
    ended: set[tuple[str, str]] = field(default_factory=set)
    """Sessions that ended (SessionEnd): their read positions need not be kept after this batch."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value and "\x00" not in value else None


# The event types :func:`read` looks at (by their source too, for usage events).
_READ_EVENTS = cls.TRANSCRIPT_EVENTS | {event_type for _, event_type in cls.USAGE_EVENTS}


async def read(rows: Sequence[Row], payloads: Sequence[Any]) -> Usage:
    """The usage one tenant's rows of a batch give: their transcripts' new requests and their OTLP usage.

    ``payloads`` are the rows' payloads where the sink decoded them (else ``None``); a row this needs and
    the sink did not decode is decoded here, once.
    """
    found = Usage()
    targets: dict[str, _Target] = {}
    for row, payload in zip(rows, payloads, strict=True):
        if row.event_type not in _READ_EVENTS:
            continue  # most events: one lookup
        transcript = row.event_type in cls.TRANSCRIPT_EVENTS
        if row.session_id is None or not (transcript or (row.source, row.event_type) in cls.USAGE_EVENTS):
            continue
        if payload is None:
            try:
                payload = blobs.decode(row.payload)
            except blobs.UNDECODABLE:
                continue  # logged by the sink, which stores it as it came
        if not isinstance(payload, dict):
            continue
        if row.event_type == cls.SESSION_END_EVENT:
            found.ended.add((row.tenant_id, row.session_id))
        if (row.source, row.event_type) == cls.SDK_RESULT_EVENT:
            found.records += sdk_usage_of(
                row.tenant_id, row.session_id, row.occurred_at, payload, _price_table
            )
            continue
        if not transcript:
            event = otlp.OtelEvent(
                event_id=row.event_id,
                occurred_at=row.occurred_at,
                event_type=row.event_type,
                session_id=row.session_id,
                payload=payload,
            )
            record = otlp.usage_of(event, row.tenant_id, _price_table)
            if record is not None:
                found.records.append(record)
            continue
        owner = row.peer_uid if row.peer_uid is not None else _owners.get(row.tenant_id)
        if owner is None:
            continue  # no kernel-reported sender (HTTP hooks) and no owner configured: nobody's files
        for key, main in (("transcript_path", True), ("agent_transcript_path", False)):
            path = _text(payload.get(key))
            if path and os.path.isabs(path) and path not in targets:
                agent_type = None if main else _text(payload.get("agent_type"))
                targets[path] = _Target(row.tenant_id, row.session_id, path, owner, agent_type, main)
    # The file work in two worker-thread calls a batch, not two a session: a hop costs more than a stat.
    if not targets:
        return found
    mains = [target for target in targets.values() if target.main]
    subagents = await trio.to_thread.run_sync(lambda: [_subagent_transcripts(t.path) for t in mains])
    for target, paths in zip(mains, subagents, strict=True):
        for path in paths:
            targets.setdefault(path, _Target(target.tenant, target.session, path, target.owner, None, False))
    jobs = [(t, _tails.get((t.tenant, t.session, t.path))) for t in targets.values()]
    jobs = [(target, _copy(state) if state else None) for target, state in jobs]
    found.reads += await trio.to_thread.run_sync(_read_all, jobs)
    return found


def _read_all(jobs: list[tuple[_Target, TailState | None]]) -> list[TranscriptRead]:
    """:func:`_read_one` for each target (in a worker thread)."""
    reads = []
    for target, state in jobs:
        try:
            done = _read_one(target, state)
        except Exception:  # a transcript that cannot be read costs its usage only, never the batch
            log.exception("transcript.read_failed", path=target.path)
            continue
        if done is not None:
            reads.append(done)
    return reads


class _SdkCacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: Count | None = None
    ephemeral_1h_input_tokens: Count | None = None


class _SdkUsage(msgspec.Struct):
    """The ``usage`` of a ``ResultMessage`` (the API's usage block, summed over the session)."""

    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_input_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None
    cache_creation: _SdkCacheCreation | None = None


class _SdkModelUsage(msgspec.Struct, rename="camel"):
    """One model's entry in a ``ResultMessage``'s ``model_usage`` (Claude Code's ``modelUsage``)."""

    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_input_tokens: Count = 0
    cache_creation_input_tokens: Count = 0
    cost_usd: float | None = msgspec.field(default=None, name="costUSD")


class _SdkResult(msgspec.Struct):
    total_cost_usd: float | None = None
    usage: _SdkUsage | None = None
    model_usage: dict[str, _SdkModelUsage] | None = None


def sdk_usage_of(
    tenant: str, session: str, at: datetime, payload: dict[str, Any], price_table: prices.PriceTable
) -> list[usage.UsageRecord]:
    """The Agent SDK's summary records of a ``ResultMessage``: one per model of ``model_usage``
    (request id ``sdk:<model>``, its ``costUSD`` reported), else one ``sdk:*`` of ``usage`` and
    ``total_cost_usd`` when the SDK names no model; none from a result of another shape (logged). A model
    without a reported cost is priced from the table only while its summed prompt tokens stay under the
    long-context tier (then every request in it did); above, its cost is ``unknown``."""
    try:
        result = msgspec.convert(payload, _SdkResult)
    except msgspec.ValidationError as exc:
        log.warning("ledger.sdk_result_unreadable", session_id=session, error=str(exc))
        return []

    def record(model: str | None, tokens: prices.Tokens, cost: float | None) -> usage.UsageRecord:
        found = usage.observe(
            tenant=tenant,
            session=session,
            request_id=usage.sdk_request_id(model),
            source="sdk",
            at=at,
            model=model,
            tokens=tokens,
            reported_cost_usd=cost,
            price_table=price_table,
        )
        price = prices.price_of(model, prices=price_table, at=at) if model and cost is None else None
        above = price and price.long_context_above
        if above and tokens.input + tokens.cache_read + tokens.cache_write_5m + tokens.cache_write_1h > above:
            # Summed over requests: which of them passed the long-context tier is unknown, so their cost is.
            return msgspec.structs.replace(found, cost_usd=None, cost_source="unknown")
        return found

    if result.model_usage:
        return [
            record(
                model,
                prices.Tokens(
                    m.input_tokens, m.output_tokens, m.cache_read_input_tokens, m.cache_creation_input_tokens
                ),
                m.cost_usd,
            )
            for model, m in sorted(result.model_usage.items())
        ]
    u = result.usage
    if u is None and result.total_cost_usd is None:
        return []
    u = u or _SdkUsage()
    breakdown = u.cache_creation or _SdkCacheCreation()
    five_m, one_h = prices.split_cache_creation(
        u.cache_creation_input_tokens,
        breakdown.ephemeral_5m_input_tokens,
        breakdown.ephemeral_1h_input_tokens,
    )
    tokens = prices.Tokens(u.input_tokens, u.output_tokens, u.cache_read_input_tokens or 0, five_m, one_h)
    return [record(None, tokens, result.total_cost_usd)]


def _copy(state: TailState) -> TailState:
    """A state to read on: the cached one stays as it is until a transaction has stored the read."""
    return msgspec.structs.replace(state, partial=bytearray(state.partial), seen=dict(state.seen))


def _subagent_transcripts(transcript: str) -> list[str]:
    """``<dir>/<session>.jsonl`` → its subagents' ``<dir>/<session>/subagents/agent-*.jsonl``."""
    base = Path(transcript)
    folder = base.with_suffix("") / "subagents"
    try:
        found = sorted(str(p) for p in folder.glob("agent-*.jsonl"))
    except OSError:
        return []
    return found[: cls.MAX_SUBAGENT_TRANSCRIPTS]


def _read_one(target: _Target, state: TailState | None) -> TranscriptRead | None:
    """Read what is new in one transcript, if it is a regular file the sender owns (in a worker thread)."""
    try:
        fd = os.open(target.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (
            stat.S_ISREG(st.st_mode) and st.st_uid == target.owner and st.st_size <= cls.MAX_TRANSCRIPT_BYTES
        ):
            return None
        agent = subagent_of(target.path) if not target.main else None
        tail = TranscriptTail(
            tenant=target.tenant,
            session=target.session,
            agent=agent or usage.MAIN,
            agent_type=target.agent_type,
            price_table=_price_table,
            state=state,
        )
        identity = FileIdentity(st.st_dev, st.st_ino)
        offset = tail.resume(identity, st.st_size)
        start = offset - len(tail.state.partial)
        records: list[usage.UsageRecord] = []
        while offset < st.st_size:
            data = os.pread(fd, min(cls.TRANSCRIPT_CHUNK_BYTES, st.st_size - offset), offset)
            if not data:
                break
            records += tail.feed(data, offset).records
            offset += len(data)
    except OSError:
        return None
    finally:
        os.close(fd)
    return TranscriptRead(target, identity, start, tail.state, records, fresh=state is None)


# -- In the transaction ---------------------------------------------------------------------------------

_RECENT_READS = """
SELECT session_id, path, device, inode, read_offset FROM transcript_reads WHERE tenant_id = $1
ORDER BY read_at DESC LIMIT $2
"""
_LOCK_READ = """
SELECT device, inode, read_offset FROM transcript_reads
WHERE tenant_id = $1 AND session_id = $2 AND path_key = hookdb_text_key($3) FOR UPDATE
"""
_STORE_READ = """
INSERT INTO transcript_reads AS t (
    tenant_id, session_id, path, device, inode, read_offset, cost_state, read_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (tenant_id, session_id, path_key) DO UPDATE SET
    device = EXCLUDED.device, inode = EXCLUDED.inode, read_offset = EXCLUDED.read_offset,
    cost_state = coalesce(EXCLUDED.cost_state, t.cost_state), read_at = EXCLUDED.read_at
"""
_LEDGER_COLUMNS = (
    "tenant_id, session_id, request_id, agent, agent_type, model, input_tokens, output_tokens, "
    "cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cost_usd, cost_source, at, "
    "sources, alt"
)
_EXISTING = f"""
SELECT {_LEDGER_COLUMNS} FROM usage_ledger
WHERE tenant_id = $1 AND (session_id, request_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))
ORDER BY session_id, request_id  -- locked in key order, as every writer does: no deadlock between hosts
FOR UPDATE
"""
_UPSERT = f"""
INSERT INTO usage_ledger ({_LEDGER_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (tenant_id, session_id, request_id) DO UPDATE SET
    agent = EXCLUDED.agent, agent_type = EXCLUDED.agent_type, model = EXCLUDED.model,
    input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
    cache_read_tokens = EXCLUDED.cache_read_tokens,
    cache_creation_5m_tokens = EXCLUDED.cache_creation_5m_tokens,
    cache_creation_1h_tokens = EXCLUDED.cache_creation_1h_tokens, cost_usd = EXCLUDED.cost_usd,
    cost_source = EXCLUDED.cost_source, at = EXCLUDED.at, sources = EXCLUDED.sources, alt = EXCLUDED.alt
"""
# The totals of usage.totals, in SQL: sums, the weakest cost source, the models, and the main model (most
# tokens among the main agent's requests, else among all; the name breaks a tie), over the rows
# usage.countable counts: the SDK's summaries ($3 the prefix of their request ids) only while the session
# has no per-request row.
_TOTALS = """
WITH rows AS (
    SELECT * FROM usage_ledger WHERE tenant_id = $1 AND session_id = $2),
counted AS (
    SELECT * FROM rows
    WHERE NOT starts_with(request_id, $3)
       OR NOT EXISTS (SELECT FROM rows WHERE NOT starts_with(request_id, $3)))
UPDATE sessions s SET
    input_tokens = t.input_tokens, output_tokens = t.output_tokens, cache_read_tokens = t.cache_read_tokens,
    cache_creation_5m_tokens = t.cache_creation_5m_tokens,
    cache_creation_1h_tokens = t.cache_creation_1h_tokens,
    cost_usd = coalesce(t.cost_usd, s.cost_usd), cost_source = t.cost_source, models = t.models,
    model = coalesce(t.main_model, s.model)
FROM (
    SELECT sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
           sum(cache_read_tokens)::bigint AS cache_read_tokens,
           sum(cache_creation_5m_tokens)::bigint AS cache_creation_5m_tokens,
           sum(cache_creation_1h_tokens)::bigint AS cache_creation_1h_tokens,
           sum(cost_usd) AS cost_usd,
           (ARRAY['unknown', 'computed', 'reported'])[min(CASE cost_source WHEN 'unknown' THEN 1
                                                     WHEN 'computed' THEN 2 ELSE 3 END)] AS cost_source,
           coalesce(array_agg(DISTINCT model COLLATE "C") FILTER (WHERE model IS NOT NULL), '{}') AS models,
           (SELECT m.model FROM counted m
            WHERE m.model IS NOT NULL
              AND (m.agent = 'main' OR NOT EXISTS (SELECT FROM counted x WHERE x.agent = 'main'))
            GROUP BY m.model
            ORDER BY sum(m.input_tokens + m.output_tokens + m.cache_read_tokens + m.cache_creation_5m_tokens
                         + m.cache_creation_1h_tokens) DESC, m.model COLLATE "C"
            LIMIT 1) AS main_model
    FROM counted
    HAVING count(*) > 0) t
WHERE s.tenant_id = $1 AND s.session_id = $2
"""
_COST_STATE = """
UPDATE sessions SET meta = meta || jsonb_build_object('cost_state', $3::jsonb)
WHERE tenant_id = $1 AND session_id = $2
"""
_alts = msgspec.json.Decoder(tuple[usage.Alt, ...])
_encode = msgspec.json.Encoder(decimal_format="number").encode


async def apply(conn: asyncpg.Connection, found: Usage | None) -> list[usage.UsageRecord]:
    """Write one tenant's usage (``hookdb.tenant`` set): ledger rows, transcript offsets, session totals;
    return the requests new to the ledger, for :func:`count` once the transaction has committed.

    In a savepoint: usage PostgreSQL refuses as data costs that usage only (logged), never the events of
    the batch; the offsets it would have kept stay where they were, so the next read tries again.
    """
    if found is None or not (found.reads or found.records):
        return []
    try:
        async with conn.transaction():
            return await _apply(conn, found)
    except asyncpg.PostgresError as exc:
        if not cls.is_data_error(exc):
            raise
        log.warning("ledger.refused", error=str(exc), sqlstate=exc.sqlstate)
        return []


async def _apply(conn: asyncpg.Connection, found: Usage) -> list[usage.UsageRecord]:
    await _load(conn, (found.reads or found.records)[0].tenant)
    records = list(found.records)
    cost_states: dict[tuple[str, str], CostState] = {}
    for read in found.reads:
        done, kept = await _store_read(conn, read)
        records += done.records
        if kept and done.main and done.state.cost_state is not None:
            cost_states[(done.tenant, done.session)] = done.state.cost_state
    merged = usage.ledger(r for r in records if _storable(r))
    recorded: list[usage.UsageRecord] = []
    if merged:
        tenant = next(iter(merged))[0]
        keys = list(merged)
        existing = await conn.fetch(_EXISTING, tenant, [k[1] for k in keys], [k[2] for k in keys])
        changed = []
        for row in existing:
            stored = _record(row)
            new = usage.merge(stored, merged[stored.key])
            if new != stored:
                changed.append(new)
            del merged[stored.key]
        changed += merged.values()
        changed.sort(key=lambda r: r.key)  # written in key order too (new rows lock their key as they go in)
        if changed:
            await conn.executemany(_UPSERT, [_row(r) for r in changed])
        recorded = list(merged.values())  # requests new to the ledger
        touched = {(r.tenant, r.session) for r in changed}
        for tenant, session in sorted(touched):
            await conn.execute(_TOTALS, tenant, session, usage.SDK_PREFIX)
    for (tenant, session), cost_state in cost_states.items():
        await conn.execute(_COST_STATE, tenant, session, _encode(cost_state))
    _forget(found.ended)
    return recorded


async def _load(conn: asyncpg.Connection, tenant: str) -> None:
    """Once per tenant and process: the durable read positions of its recently read transcripts, so that
    after a restart only the transcripts of this first batch are read from their start again."""
    if tenant in _loaded:
        return
    for row in reversed(await conn.fetch(_RECENT_READS, tenant, cls.MAX_TRANSCRIPT_TAILS)):
        key = (tenant, row["session_id"], row["path"])
        if key not in _tails:
            identity = FileIdentity(int(row["device"]), int(row["inode"]))
            _remember(key, TailState(identity=identity, offset=row["read_offset"]))
    _loaded.add(tenant)


async def _store_read(conn: asyncpg.Connection, done: TranscriptRead) -> tuple[TranscriptRead, bool]:
    """Keep how far ``done`` read if it leaves nothing unread behind. Return the read whose requests count
    (``done``, or the file read again from its durable offset when ``done`` read it from the start for want
    of a position here) and whether its position was kept."""
    key = (done.tenant, done.session, done.path)
    stored = await conn.fetchrow(_LOCK_READ, done.tenant, done.session, done.path)
    same_file = stored is not None and (int(stored["device"]), int(stored["inode"])) == done.identity
    if done.fresh and same_file and stored["read_offset"] > 0:
        # Another process (or this one before a restart) read it that far: what it read may have been
        # changed in place since, so only what follows counts. Rare: in the lock, off the event loop.
        resumed = TailState(identity=done.identity, offset=stored["read_offset"])
        again = await asyncio.to_thread(_read_all, [(done.target, resumed)])
        if again and again[0].identity == done.identity:
            done = again[0]
    # Another process read further and committed first: its position (and cost-state) stand, and this
    # read's requests are merged all the same (writing a request again is harmless).
    overtaken = same_file and done.start > 0 and done.end < stored["read_offset"]
    if not overtaken and (done.start == 0 or (same_file and done.start <= stored["read_offset"])):
        cost_state = None if done.state.cost_state is None else _encode(done.state.cost_state)
        await conn.execute(
            _STORE_READ,
            done.tenant,
            done.session,
            done.path,
            Decimal(done.identity.device),
            Decimal(done.identity.inode),
            done.end,
            cost_state,
            datetime.now(UTC),
        )
        _remember(key, done.state)
        return done, True
    if not overtaken:  # a gap between the durable offset and where this read began: read again from there
        durable = stored and stored["read_offset"]
        log.info("transcript.reread", path=done.path, durable=durable, start=done.start)
    if stored is None:
        _tails.pop(key, None)
    else:
        identity = FileIdentity(int(stored["device"]), int(stored["inode"]))
        _remember(key, TailState(identity=identity, offset=stored["read_offset"]))
    return done, False


def _remember(key: tuple[str, str, str], state: TailState) -> None:
    """Keep ``state`` as the most recently read, dropping the least recently read beyond the limit."""
    _tails.pop(key, None)
    _tails[key] = state
    while len(_tails) > cls.MAX_TRANSCRIPT_TAILS:
        del _tails[next(iter(_tails))]


def _forget(ended: set[tuple[str, str]]) -> None:
    """Drop the read positions of sessions that ended: a session resumed later is read from the start."""
    for key in [k for k in _tails if k[:2] in ended]:
        del _tails[key]


_KINDS = ("input", "output", "cache_read", "cache_creation_5m", "cache_creation_1h")


def count(recorded: Sequence[usage.UsageRecord]) -> None:
    """Add requests a committed transaction recorded first to the Prometheus counters (no tenant label):
    after the commit, so a batch written again after a failure counts them once."""
    for r in recorded:
        model, source = (r.model or "unknown")[:64], "+".join(sorted(r.sources))
        for kind in _KINDS:
            tokens = getattr(r, f"{kind}_tokens")
            if tokens:
                metrics.usage_tokens.labels(model, kind, source).inc(tokens)
        if r.cost_usd is not None:
            metrics.usage_cost.labels(model, source).inc(float(r.cost_usd))


def _storable(record: usage.UsageRecord) -> bool:
    """Whether the ledger can key and hold a record: ids within the label limit, no U+0000 in a text."""
    texts = (record.session, record.request_id, record.agent, record.agent_type or "", record.model or "")
    return (
        len(record.session) <= MAX_KEY
        and len(record.request_id) <= MAX_KEY
        and not any("\x00" in t for t in texts)
    )


def _row(r: usage.UsageRecord) -> tuple[Any, ...]:
    return (
        r.tenant,
        r.session,
        r.request_id,
        r.agent,
        r.agent_type,
        r.model,
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_creation_5m_tokens,
        r.cache_creation_1h_tokens,
        r.cost_usd,
        r.cost_source,
        r.at,
        sorted(r.sources),
        _encode(r.alt),  # JSON text: the sink's jsonb codec takes and gives bytes
    )


def _record(row: asyncpg.Record) -> usage.UsageRecord:
    return usage.UsageRecord(
        tenant=row["tenant_id"],
        session=row["session_id"],
        request_id=row["request_id"],
        agent=row["agent"],
        agent_type=row["agent_type"],
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cache_read_tokens=row["cache_read_tokens"],
        cache_creation_5m_tokens=row["cache_creation_5m_tokens"],
        cache_creation_1h_tokens=row["cache_creation_1h_tokens"],
        cost_usd=row["cost_usd"],
        cost_source=row["cost_source"],
        at=row["at"],
        sources=frozenset(row["sources"]),
        alt=_alts.decode(row["alt"]),
    )
