"""The read API's SQL, one function per question. asyncio coroutines on a connection the reader gives,
inside a read-only transaction whose tenant is set: row-level security limits every query to it. Every
query also names its tenant (``tenant_id = $n`` on each table it reads), so a database distributed by
tenant (Citus) routes each one to a single shard (tests/test_api_routing.py checks the plans).

Filters are added only when given (values always as parameters), so each combination gets its own plan
and the keyset condition can bound the index scan.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg
import msgspec
from msgspec import UNSET

from hookdb.collector import classification as cls
from hookdb.collector.api import cursor, payloads
from hookdb.collector.api.models import (
    AgentState,
    AgentUsage,
    ApiRequest,
    BadParameter,
    DayModelUsage,
    DayStats,
    EventPage,
    EventQuery,
    ModelStats,
    QaBucket,
    QaScores,
    Report,
    SessionCard,
    SessionPage,
    SessionQuery,
    Snippet,
    SnippetPart,
    Stats,
    TimelineEvent,
    ToolStats,
    Usage,
    UsageGroupTotals,
    UsageTotals,
)
from hookdb.collector.store import blobs, search, summary
from hookdb.collector.store.usage import SDK_PREFIX

# The last component of cwd (a trailing separator ignored): the project a card names and the filter matches.
PROJECT = r"nullif(substring(rtrim(cwd, '/\') from '[^/\\]*$'), '')"
# A word count a bigint cannot hold (jsonb holds any number: an older writer or a row written directly may
# have left one) is unknown, as a missing one is: one card's meta never fails a page of cards.
BIGINT_MAX = 2**63 - 1
CARD_COLUMNS = f"""
    session_id, status, model, agent_type, cwd, {PROJECT} AS project, source, started_at, updated_at,
    ended_at, status_at, event_count, subagent_count, report_count, cost_usd, cost_source, input_tokens,
    output_tokens, cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens,
    coalesce(models, ARRAY[]::text[]) AS models,
    CASE WHEN jsonb_typeof(meta->'qa_score') = 'number' THEN (meta->>'qa_score')::numeric END AS qa_score,
    CASE WHEN jsonb_typeof(meta->'word_count') = 'number' THEN CASE
        WHEN abs((meta->>'word_count')::numeric) < {BIGINT_MAX} THEN (meta->>'word_count')::numeric::bigint
    END END AS word_count,
    meta->>'end_reason' AS end_reason"""
# Cards of the sessions ``{sessions}`` selects (ordered and limited there, so the lookup runs per card
# only), each with its first prompt, in two probes of the timeline's index: the instant of the first
# UserPromptSubmit (the scan in index order stops there), then the prompts of that instant, the first
# received first as the timeline orders them. (A tie-break in the first probe's ORDER BY would sort, and
# WITH TIES would look past the first prompt for another: either reads the whole session.) A session
# without any prompt is scanned to its end. A prompt stored as a blob (or split around U+0000) is read
# from its first part. The branch comes from that event, when the hook carried one.
_CARDS = """
SELECT c.*, left(CASE jsonb_typeof(p.prompt)
                WHEN 'string' THEN p.prompt #>> '{{}}'
                WHEN 'object' THEN coalesce(
                    (SELECT b.content FROM payload_blobs b
                     WHERE b.tenant_id = {tenant} AND b.sha256 = p.prompt->>'$hookdb.blob'),
                    CASE WHEN jsonb_typeof(p.prompt->'$hookdb.nul'->0) = 'string'
                         THEN p.prompt->'$hookdb.nul'->>0 END)
            END, {scan}) AS prompt,
       p.branch AS git_branch{snippet}
FROM ({sessions}) c
LEFT JOIN LATERAL (
    SELECT f.payload->'prompt' AS prompt,
           coalesce(f.payload->>'git_branch', f.payload->>'gitBranch') AS branch
    FROM hook_audit_log f
    WHERE f.tenant_id = {tenant} AND f.session_id = c.session_id AND f.event_type = 'UserPromptSubmit'
      AND f.occurred_at = (SELECT e.occurred_at FROM hook_audit_log e
                           WHERE e.tenant_id = {tenant} AND e.session_id = c.session_id
                             AND e.event_type = 'UserPromptSubmit'
                           ORDER BY e.occurred_at LIMIT 1)
    ORDER BY f.received_at, f.event_id
    LIMIT 1
) p ON true{search}
ORDER BY c.started_at DESC, c.session_id DESC
"""
# A searched session's snippet: its first document (by time) that matches, highlighted around the match in
# the part (one event's text) the match is in. Matches are tested as `(… @@ …) IS TRUE` where a session's
# own documents are probed: that form is not one the GIN index serves, so the probe reads the session's
# documents by the primary key and never builds a bitmap of every document in the tenant that matches.
# ts_headline parses all the text it is given (about 1.5 ms for 4 KB), so it is given a window of at most
# SNIPPET_CHARS of one part, around the first place one of the query's words occurs as typed (a stemmed form
# elsewhere is still marked when it is in the window); where none does (the match is of another form of a
# word), the window starts the first part that matches on its own. Part i begins after part i-1's end and
# the line break after it.
SNIPPET_CHARS = 480
_SNIPPET_COLUMNS = ", h.kind AS snippet_kind, h.snippet"
_SNIPPET = """
LEFT JOIN LATERAL (
    SELECT f.kinds[x.part] AS kind,
           ts_headline({config}, substr(f.body, y.start, least({chars}, f.ends[x.part] + 1 - y.start)),
                       {tsquery}, {options}) AS snippet
    FROM (SELECT d.kinds, d.ends, d.body FROM search_docs d
          WHERE d.tenant_id = {tenant} AND d.session_id = c.session_id AND (d.words @@ {tsquery}) IS TRUE
          ORDER BY d.at, d.doc_key
          LIMIT 1) f
    CROSS JOIN LATERAL (SELECT coalesce(
        (SELECT min(at) FROM unnest({words}::text[]) w, strpos(lower(f.body), w) at WHERE at > 0),
        (SELECT coalesce(f.ends[i - 1] + 2, 1) FROM generate_subscripts(f.ends, 1) i
         WHERE to_tsvector({config}, substr(f.body, coalesce(f.ends[i - 1] + 2, 1),
                                            f.ends[i] + 1 - coalesce(f.ends[i - 1] + 2, 1))) @@ {tsquery}
         ORDER BY i LIMIT 1),
        1) AS at) a
    CROSS JOIN LATERAL (SELECT 1 + count(*)::int AS part FROM unnest(f.ends) e WHERE e < a.at) x
    CROSS JOIN LATERAL (SELECT greatest(coalesce(f.ends[x.part - 1] + 2, 1), a.at - {chars} / 4) AS start) y
) h ON true"""
# Which sessions match, two ways, chosen by the planner's estimate of how many documents match
# (:func:`_matching_documents`): few, and the GIN index finds them all, their sessions a set the
# newest-first scan of sessions_recent_idx is checked against; many (a common word), and each session of
# that scan is probed (OFFSET 0 keeps the probe a probe: without it the planner may hash every match), so a
# page fills after a few sessions. Either answers the same; only the time differs.
RARE_DOCUMENTS = 5000
_RARE = """session_id IN (SELECT d.session_id FROM search_docs d
                   WHERE d.tenant_id = {tenant} AND d.words @@ {tsquery})"""
_COMMON = """EXISTS (SELECT FROM search_docs d
               WHERE d.tenant_id = {tenant} AND d.session_id = sessions.session_id
                 AND (d.words @@ {tsquery}) IS TRUE OFFSET 0)"""
_ESTIMATE = """EXPLAIN (FORMAT JSON)
SELECT FROM search_docs WHERE tenant_id = $1 AND words @@ websearch_to_tsquery($2::regconfig, $3)"""


async def _matching_documents(conn: asyncpg.Connection, tenant: str, q: str) -> float:
    """How many of the tenant's search documents the planner expects ``q`` to match."""
    plan = json.loads(await conn.fetchval(_ESTIMATE, tenant, search.CONFIG, q))
    return float(plan[0]["Plan"]["Plan Rows"])


HEADLINE_OPTIONS = (
    f"StartSel={search.START_MARK}, StopSel={search.END_MARK}, MaxWords=24, MinWords=8, ShortWord=2, "
    'MaxFragments=2, FragmentDelimiter=" … "'
)
TITLE_CHARS = 120
_TITLE_SCAN = 4 * TITLE_CHARS  # enough of a prompt to make a title of, however its whitespace runs

STATS_DAYS = 30


class _Params:
    """Positional parameters for a statement being built: ``add(value)`` gives its ``$n``."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


async def list_sessions(conn: asyncpg.Connection, tenant: str, query: SessionQuery) -> SessionPage:
    """A page of sessions, newest first, after the query's cursor; with ``q``, only the sessions whose
    search documents match it (``websearch_to_tsquery``: words, "phrases", or, -not; never a syntax
    error), each with a snippet of what matched."""
    p = _Params()
    own = p.add(tenant)
    where = [f"tenant_id = {own}"]
    if query.cursor is not UNSET:
        at, session_id = cursor.decode(cursor.SESSIONS, query.cursor)
        t = p.add(at)
        where.append(f"started_at <= {t} AND (started_at < {t} OR session_id < {p.add(session_id)})")
    if query.status:
        where.append(f"status = ANY({p.add(query.status)}::text[])")
    if query.model is not UNSET:
        where.append(f"model = {p.add(query.model)}")
    if query.agent_type is not UNSET:
        where.append(f"agent_type = {p.add(query.agent_type)}")
    if query.started_after is not UNSET:
        where.append(f"started_at >= {p.add(query.started_after)}")
    if query.started_before is not UNSET:
        where.append(f"started_at < {p.add(query.started_before)}")
    if query.project is not UNSET:
        where.append(f"{PROJECT} = {p.add(query.project)}")
    if query.cost_min is not UNSET:
        where.append(f"cost_usd >= {p.add(query.cost_min)}")
    if query.cost_max is not UNSET:
        where.append(f"cost_usd <= {p.add(query.cost_max)}")
    snippet = found = ""
    if query.q is not UNSET:
        config = p.add(search.CONFIG)
        tsquery = f"websearch_to_tsquery({config}::regconfig, {p.add(query.q)})"
        rare = await _matching_documents(conn, tenant, query.q) < RARE_DOCUMENTS
        where.append((_RARE if rare else _COMMON).format(tenant=own, tsquery=tsquery))
        snippet, options = _SNIPPET_COLUMNS, p.add(HEADLINE_OPTIONS)
        typed = [w for w in re.findall(r"\w+", query.q.lower()) if len(w) > 2]  # not "or", not "a" in "and"
        words, chars = p.add(typed), p.add(SNIPPET_CHARS)
        found = _SNIPPET.format(config=f"{config}::regconfig", tsquery=tsquery, tenant=own, options=options,
                                words=words, chars=chars)  # fmt: skip
    sessions = (
        f"SELECT {CARD_COLUMNS} FROM sessions WHERE {' AND '.join(where)} "
        f"ORDER BY started_at DESC, session_id DESC LIMIT {p.add(query.limit + 1)}"
    )
    sql = _CARDS.format(sessions=sessions, scan=p.add(_TITLE_SCAN), tenant=own, snippet=snippet, search=found)
    rows = await conn.fetch(sql, *p.values)
    cards = [_card(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    last = cards[-1] if cards else None
    return SessionPage(
        sessions=cards,
        next_cursor=cursor.encode(cursor.SESSIONS, last.started_at, last.session_id)
        if more and last
        else None,
        search_pending=UNSET if query.q is UNSET else await conn.fetchval("SELECT hookdb_search_pending()"),
    )


async def session_cards(
    conn: asyncpg.Connection, tenant: str, session_ids: Sequence[str]
) -> list[SessionCard]:
    sessions = f"SELECT {CARD_COLUMNS} FROM sessions WHERE tenant_id = $1 AND session_id = ANY($2::text[])"
    sql = _CARDS.format(sessions=sessions, scan="$3", tenant="$1", snippet="", search="")
    rows = await conn.fetch(sql, tenant, session_ids, _TITLE_SCAN)
    return [_card(row) for row in rows]


def _card(row: asyncpg.Record) -> SessionCard:
    fields = dict(row)
    prompt, end = fields.pop("prompt"), fields["ended_at"] or fields["updated_at"]
    if "snippet" in fields:
        kind, marked = fields.pop("snippet_kind"), fields.pop("snippet")
        fields["snippet"] = UNSET if marked is None else Snippet(kind=kind, parts=snippet_parts(marked))
    return SessionCard(
        **fields,
        title=title(prompt) if prompt is not None else None,
        duration_ms=max(0.0, (end - fields["started_at"]) / timedelta(milliseconds=1)),
    )


def snippet_parts(marked: str) -> list[SnippetPart]:
    """ts_headline's answer (matches between START_MARK and END_MARK) as plain text parts, the matched
    ones flagged: the page renders them as text, never as markup."""
    parts: list[SnippetPart] = []
    for i, piece in enumerate(marked.split(search.START_MARK)):
        match, _, rest = piece.partition(search.END_MARK) if i else ("", "", piece)
        if match:
            parts.append(SnippetPart(text=match, match=True))
        if rest:
            parts.append(SnippetPart(text=rest, match=False))
    return parts


def title(prompt: str) -> str | None:
    """A prompt as one line of at most TITLE_CHARS characters, cut at a word when one ends near there."""
    line = " ".join(prompt.split())
    if len(line) <= TITLE_CHARS:
        return line or None
    cut = line[: TITLE_CHARS - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space >= TITLE_CHARS * 2 // 3 else cut).rstrip() + "…"


async def session_card(conn: asyncpg.Connection, tenant: str, session_id: str) -> SessionCard | None:
    cards = await session_cards(conn, tenant, [session_id])
    return cards[0] if cards else None


async def reports(conn: asyncpg.Connection, tenant: str, session_id: str) -> list[Report]:
    rows = await conn.fetch(
        "SELECT path, report_type, content, word_count, written_at, sha256 FROM reports "
        "WHERE tenant_id = $1 AND session_id = $2 ORDER BY written_at, path",
        tenant,
        session_id,
    )
    return [Report(**row) for row in rows]


async def agent_states(conn: asyncpg.Connection, tenant: str, session_id: str) -> list[AgentState]:
    rows = await conn.fetch(
        "SELECT agent_id, agent_type, path, content, updated_at FROM agent_states "
        "WHERE tenant_id = $1 AND session_id = $2 ORDER BY updated_at, agent_id, path",
        tenant,
        session_id,
    )
    return [AgentState(**row) for row in rows]


_TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
)
# The ledger rows a session's figures count (``store.usage.countable``): the Agent SDK's per-model
# summaries only while the session has no per-request row, so nothing is counted twice.
_COUNTED = f"""(NOT starts_with(u.request_id, '{SDK_PREFIX}') OR NOT EXISTS (
    SELECT FROM usage_ledger o WHERE o.tenant_id = {{tenant}} AND o.session_id = u.session_id
                               AND NOT starts_with(o.request_id, '{SDK_PREFIX}')))"""
_REQUESTS = f"""
SELECT request_id, agent, agent_type, model, {", ".join(_TOKEN_KINDS)}, cost_usd, cost_source, at, sources
FROM usage_ledger u WHERE tenant_id = $1 AND session_id = $2 AND {_COUNTED.format(tenant="$1")}
ORDER BY at, request_id
"""


async def requests(conn: asyncpg.Connection, tenant: str, session_id: str) -> list[ApiRequest]:
    """The session's model API requests from the usage ledger, oldest first."""
    return [ApiRequest(**row) for row in await conn.fetch(_REQUESTS, tenant, session_id)]


def agents(requests: Sequence[ApiRequest]) -> list[AgentUsage]:
    """Each agent's share of a session's requests: the main agent first, then subagents in the order of
    their first request."""
    by_agent: dict[str, AgentUsage] = {}
    for r in sorted(requests, key=lambda r: (r.agent != "main", r.at, r.request_id)):
        a = by_agent.get(r.agent)
        if a is None:
            a = by_agent[r.agent] = AgentUsage(agent=r.agent, agent_type=r.agent_type, **_zero())
        a.requests += 1
        for kind in _TOKEN_KINDS:
            setattr(a, kind, getattr(a, kind) + getattr(r, kind))
            a.tokens += getattr(r, kind)
        if r.cost_usd is None:
            a.unpriced += 1
        else:
            a.cost_usd += r.cost_usd
    return list(by_agent.values())


def _zero() -> dict[str, Any]:
    zero: dict[str, Any] = {"requests": 0, "tokens": 0, "cost_usd": Decimal(0), "unpriced": 0}
    return zero | dict.fromkeys(_TOKEN_KINDS, 0)


# The first start and the first end of each tool_use_id the condition picks, among the session's tool call
# events ($1 the session, $3 the tool call event types, $4 the start's, $5 the tenant).
_FIRST_CALLS = """
SELECT DISTINCT ON (payload->>'tool_use_id', event_type = $4)
       event_id, occurred_at, event_type = $4 AS is_start, payload->>'tool_use_id' AS tool_use_id
FROM hook_audit_log
WHERE tenant_id = $5 AND session_id = $1 AND event_type = ANY($3::text[]) AND {among}
ORDER BY payload->>'tool_use_id', event_type = $4, occurred_at"""
# The page's events, each tool call start or end with its counterpart (same tool_use_id): the first start
# and the first end of every tool_use_id on the page among the session's tool call events within NEAR of
# the page, found once and hash-joined (a per-row lookup would rescan the session for each event of the
# page). Only NEAR, not the whole session: that would make each page cost the session's length, and an
# export pages through it all. Events that occurred at the same instant keep the order they were received
# in (received_at; event_id only makes the order total): the session index bounds the scan by occurred_at
# and an incremental sort does the rest.
_EVENTS = """
WITH page AS (
    SELECT event_id, occurred_at, received_at, event_type, tool_name, payload,
           CASE WHEN event_type = ANY($3::text[]) THEN payload->>'tool_use_id' END AS tool_use_id
    FROM hook_audit_log
    WHERE tenant_id = $5 AND session_id = $1 {after}
    ORDER BY occurred_at, received_at, event_id
    LIMIT $2
), calls AS ({calls}
)
SELECT p.event_id, p.occurred_at, p.event_type, p.tool_name, p.tool_use_id, p.payload,
       p.received_at, o.event_id AS paired_event_id, o.occurred_at AS paired_at
FROM page p
LEFT JOIN calls o ON o.tool_use_id = p.tool_use_id AND o.is_start <> (p.event_type = $4)
ORDER BY p.occurred_at, p.received_at, p.event_id
"""
_NEAR_CALLS = _FIRST_CALLS.format(
    among="""occurred_at BETWEEN (SELECT min(occurred_at) FROM page) - $6::interval
                      AND (SELECT max(occurred_at) FROM page) + $6::interval
      AND payload->>'tool_use_id' IN (SELECT tool_use_id FROM page)"""
)
# The counterparts of the page's calls that have none within NEAR (a subagent's Agent call, a background
# command, a call still running), as the summary knows them: the start and first end of every call not
# complete in one batch is a tool_calls row (store/summary.py), so each is found by its time in the session
# index, not by a scan. Asked for by (tool_use_id, whether the start is wanted); ``at`` is NULL for a side
# the call does not have (yet), ``event_id`` NULL too when the event at that time is gone (retention): then
# the session is scanned for it, as for a call without a row (complete in one batch, or stored otherwise).
_SUMMARY_CALLS = """
SELECT u.tool_use_id, u.is_start, w.at, e.event_id
FROM unnest($2::text[], $6::bool[]) AS u (tool_use_id, is_start)
CROSS JOIN LATERAL (  -- a lookup per call, LIMIT keeping it one: never a join over the session's calls
    SELECT CASE WHEN u.is_start THEN c.started_at ELSE c.ended_at END AS at FROM tool_calls c
    WHERE c.tenant_id = $5 AND c.session_id = $1 AND c.tool_use_id = u.tool_use_id
    LIMIT 1
) w
LEFT JOIN LATERAL (
    SELECT event_id FROM hook_audit_log
    WHERE tenant_id = $5 AND session_id = $1 AND occurred_at = w.at AND event_type = ANY($3::text[])
      AND (event_type = $4) = u.is_start AND payload->>'tool_use_id' = u.tool_use_id
    ORDER BY received_at, event_id
    LIMIT 1
) e ON true
"""
# The counterparts of those the summary cannot tell ($2): in the whole session, which costs a scan of the
# session's tool call events.
_FAR_CALLS = _FIRST_CALLS.format(among="payload->>'tool_use_id' = ANY($2::text[])")
# Tool calls last seconds to minutes (Claude Code's Bash allows ten), so nearly every counterpart is near.
NEAR = timedelta(minutes=10)
_HASH_JOINS = "SET LOCAL enable_nestloop = off"
_TOOL_CALL_EVENTS = sorted({cls.TOOL_CALL_START, *cls.TOOL_CALL_END})


def _wanted(row: asyncpg.Record) -> tuple[str, bool]:
    """What pairs a page's call event: its tool_use_id, and whether that is a start (it is an end)."""
    return row["tool_use_id"], row["event_type"] != cls.TOOL_CALL_START


class _Paired(NamedTuple):
    """A page event's counterpart: the other end of its tool call."""

    event_id: uuid.UUID | None
    occurred_at: datetime | None


async def events(conn: asyncpg.Connection, tenant: str, session_id: str, query: EventQuery) -> EventPage:
    """A page of a session's timeline, oldest first, tool calls paired with their durations."""
    args: list[Any] = [session_id, query.limit + 1, _TOOL_CALL_EVENTS, cls.TOOL_CALL_START, tenant, NEAR]
    after = ""
    if query.cursor is not UNSET:
        at, key = cursor.decode(cursor.EVENTS, query.cursor)
        args += [at, *_event_key(key)]
        after = "AND occurred_at >= $7 AND (occurred_at, received_at, event_id) > ($7, $8, $9)"
    # The page is paired with the session's calls by hashing, whatever the statistics say: a partition not
    # analyzed yet (a new day's, in its first minute; rows loaded in bulk) is estimated at a row, and the
    # nested loop PostgreSQL then picks reads every call's tool_use_id again for each event of the page —
    # a second per page of a session of 8,000 calls, where hashing takes 12 ms. For this transaction only.
    await conn.execute(_HASH_JOINS)
    rows = await conn.fetch(_EVENTS.format(after=after, calls=_NEAR_CALLS), *args)
    far = await _far_calls(conn, tenant, session_id, rows[: query.limit])
    timeline = [_timeline_event(row, far) for row in rows[: query.limit]]
    last = rows[query.limit - 1] if len(rows) > query.limit else None
    return EventPage(
        events=timeline,
        next_cursor=cursor.encode(
            cursor.EVENTS,
            last["occurred_at"],
            f"{(last['received_at'] - cursor.EPOCH) // timedelta(microseconds=1)}:{last['event_id']}",
        )
        if last
        else None,
    )


async def _far_calls(
    conn: asyncpg.Connection, tenant: str, session_id: str, rows: Sequence[asyncpg.Record]
) -> dict[tuple[str, bool], _Paired]:
    """The counterparts, by (tool_use_id, is_start), of the page's calls left unpaired within NEAR."""
    wanted = sorted(
        {_wanted(r) for r in rows if r["tool_use_id"] is not None and r["paired_event_id"] is None}
    )
    if not wanted:
        return {}
    ids, starts = [w[0] for w in wanted], [w[1] for w in wanted]
    known = {
        (r["tool_use_id"], r["is_start"]): r
        for r in await conn.fetch(
            _SUMMARY_CALLS, session_id, ids, _TOOL_CALL_EVENTS, cls.TOOL_CALL_START, tenant, starts
        )
    }
    found: dict[tuple[str, bool], _Paired] = {}
    untold: set[str] = set()
    for key in wanted:
        side = known.get(key)
        if side is None or (side["at"] is not None and side["event_id"] is None):
            untold.add(key[0])
        elif side["at"] is not None:
            found[key] = _Paired(side["event_id"], side["at"])
    if untold:
        scanned = await conn.fetch(
            _FAR_CALLS, session_id, sorted(untold), _TOOL_CALL_EVENTS, cls.TOOL_CALL_START, tenant
        )
        found |= {
            (r["tool_use_id"], r["is_start"]): _Paired(r["event_id"], r["occurred_at"]) for r in scanned
        }
    return found


def _timeline_event(row: asyncpg.Record, far: dict[tuple[str, bool], _Paired]) -> TimelineEvent:
    event_id = str(row["event_id"])
    payload, unrendered = _payload(row["payload"], event_id)
    paired = _Paired(row["paired_event_id"], row["paired_at"])
    if paired.event_id is None and row["tool_use_id"] is not None:
        paired = far.get(_wanted(row), paired)
    return TimelineEvent(
        event_id=event_id,
        occurred_at=row["occurred_at"],
        event_type=row["event_type"],
        tool_name=row["tool_name"],
        tool_use_id=row["tool_use_id"],
        duration_ms=_millis(row["occurred_at"], paired.occurred_at),
        paired_event_id=str(paired.event_id) if paired.event_id else None,
        payload=payload,
        payload_unrendered=UNSET if unrendered is None else unrendered,
    )


def _payload(stored: msgspec.Raw, event_id: str) -> tuple[msgspec.Raw, str | None]:
    """A payload as the hook sent it, except that large strings stay blob references (see
    ``payloads.restored``); a payload without U+0000 or marker keys passes as it is, never decoded."""
    text = bytes(memoryview(stored))
    if b'"' + blobs.NUL_KEY.encode() + b'"' not in text and b'"' + blobs.KEYS_KEY.encode() + b'"' not in text:
        return stored, None
    restored, unrendered = payloads.restored(text, event_id)
    return (stored if unrendered else msgspec.Raw(restored)), unrendered


def _event_key(key: str) -> tuple[datetime, str]:
    """The received_at and event_id a timeline cursor's key (``"<µs since the epoch>:<uuid>"``) holds."""
    micros, _, event_id = key.partition(":")
    try:
        return cursor.EPOCH + timedelta(microseconds=int(micros)), str(uuid.UUID(event_id))
    except (ValueError, OverflowError):
        raise BadParameter("cursor: not a cursor this API gave") from None


def _millis(at: datetime, other: datetime | None) -> float | None:
    return None if other is None else abs((other - at) / timedelta(milliseconds=1))


_STATS_SESSIONS = """
SELECT status, model, count(*)::bigint AS sessions, coalesce(sum(cost_usd), 0) AS cost_usd
FROM sessions WHERE tenant_id = $3 AND started_at >= $1 AND started_at < $2
GROUP BY status, model
"""
_STATS_QA = """
SELECT least(greatest(width_bucket(score, $3::numeric[]), 1), cardinality($3::numeric[]) - 1) AS bucket,
       count(*)::bigint AS sessions, sum(score) AS total
FROM (SELECT (meta->>'qa_score')::numeric AS score FROM sessions
      WHERE tenant_id = $4 AND started_at >= $1 AND started_at < $2
        AND jsonb_typeof(meta->'qa_score') = 'number') s
GROUP BY bucket
"""
_STATS_SESSIONS_PER_DAY = """
SELECT (started_at AT TIME ZONE 'UTC')::date AS day, status, count(*)::bigint AS n
FROM sessions WHERE tenant_id = $3 AND started_at >= $1 AND started_at < $2 GROUP BY day, status
"""
# Events per UTC day: whole hours from the summary (event_hours), the partial first and last hours from
# the log (its BRIN index on occurred_at), so any [from, to) is answered exactly.
_STATS_EVENTS_PER_DAY = """
SELECT day, sum(n)::bigint AS n FROM (
    SELECT (hour AT TIME ZONE 'UTC')::date AS day, sum(events) AS n
    FROM event_hours WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 GROUP BY 1
    UNION ALL
    SELECT (occurred_at AT TIME ZONE 'UTC')::date, count(*)
    FROM hook_audit_log
    WHERE tenant_id = $1
      AND (occurred_at >= $4 AND occurred_at < $5 OR occurred_at >= $6 AND occurred_at < $7)
    GROUP BY 1
) e GROUP BY day
"""


class _Split(NamedTuple):
    """[start, end) as the whole units of a summary within it and the partial ones at each side."""

    whole: tuple[datetime, datetime]
    first: tuple[datetime, datetime]
    last: tuple[datetime, datetime]


def _split(start: datetime, end: datetime, unit: timedelta) -> _Split:
    """Split [start, end) at the UTC ``unit`` (an hour or a day) boundaries inside it."""
    floor = cursor.EPOCH + (end - cursor.EPOCH) // unit * unit
    ceil = cursor.EPOCH - (cursor.EPOCH - start) // unit * unit
    if ceil >= floor:
        return _Split((start, start), (start, end), (end, end))
    return _Split((ceil, floor), (start, ceil), (floor, end))


# Ledger requests made in [$1, $2) (the (tenant_id, at) index bounds the scan), summed by {key}; the
# project is that of the request's session (its primary key), a subagent's requests are grouped by its
# type (its id names one session's subagent only).
_USAGE = f"""
SELECT {{key}} AS key, count(*)::bigint AS requests,
       {", ".join(f"coalesce(sum(u.{k}), 0)::bigint AS {k}" for k in _TOKEN_KINDS)},
       coalesce(sum(u.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE u.cost_usd IS NULL)::bigint AS unpriced
FROM usage_ledger u {{join}}
WHERE u.tenant_id = $3 AND u.at >= $1 AND u.at < $2 AND {_COUNTED.format(tenant="$3")}
GROUP BY 1
"""
_PROJECT_JOIN = "LEFT JOIN sessions s ON s.tenant_id = u.tenant_id AND s.session_id = u.session_id"
_DAY = "(u.at AT TIME ZONE 'UTC')::date"  # a date groups by hash, cheaper than its text
_GROUP_KEYS = {
    "day": (_DAY, ""),
    "model": ("u.model", ""),
    "project": (PROJECT.replace("cwd", "s.cwd"), _PROJECT_JOIN),
    "agent": ("CASE WHEN u.agent = 'main' THEN 'main' ELSE coalesce(u.agent_type, u.agent) END", ""),
}


# The stats' three groupings of the same requests in one scan of the ledger: (day, model), model and
# project; GROUPING() tells a row's set (a bit for each expression it is not grouped by).
_STATS_USAGE = f"""
SELECT GROUPING({_DAY}, u.model, {_GROUP_KEYS["project"][0]}) AS grouping_set, {_DAY} AS day,
       u.model AS model, {_GROUP_KEYS["project"][0]} AS project, count(*)::bigint AS requests,
       {", ".join(f"coalesce(sum(u.{k}), 0)::bigint AS {k}" for k in _TOKEN_KINDS)},
       coalesce(sum(u.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE u.cost_usd IS NULL)::bigint AS unpriced
FROM usage_ledger u {_PROJECT_JOIN}
WHERE u.tenant_id = $3 AND u.at >= $1 AND u.at < $2 AND {_COUNTED.format(tenant="$3")}
GROUP BY GROUPING SETS (({_DAY}, u.model), (u.model), ({_GROUP_KEYS["project"][0]}))
"""
_DAY_MODEL_SET, _MODEL_SET, _PROJECT_SET = 0b001, 0b101, 0b110


async def _usage_rows(
    conn: asyncpg.Connection,
    tenant: str,
    start: datetime,
    end: datetime,
    key: str,
) -> list[asyncpg.Record]:
    expression, join = _GROUP_KEYS[key]
    return await conn.fetch(_USAGE.format(key=expression, join=join), start, end, tenant)


def _key(row: asyncpg.Record, column: str = "key") -> str | None:
    """A group's key as the API writes it: a day as YYYY-MM-DD."""
    key = row[column]
    return key.isoformat() if isinstance(key, date) else key


def _totals(row: asyncpg.Record) -> dict[str, Any]:
    fields = {k: row[k] for k in ("requests", "cost_usd", "unpriced", *_TOKEN_KINDS)}
    return {**fields, "tokens": sum(row[k] for k in _TOKEN_KINDS)}


def _ranked(rows: Sequence[asyncpg.Record], by_key: bool = False, key: str = "key") -> list[UsageGroupTotals]:
    groups = [UsageGroupTotals(key=_key(row, key), **_totals(row)) for row in rows]
    if by_key:
        return sorted(groups, key=lambda g: g.key or "")
    return sorted(groups, key=lambda g: (-g.cost_usd, -g.tokens, g.key or ""))


def _sum(groups: Sequence[UsageTotals]) -> UsageTotals:
    total = UsageTotals(**_zero())
    for g in groups:
        for name in ("requests", "tokens", "cost_usd", "unpriced", *_TOKEN_KINDS):
            setattr(total, name, getattr(total, name) + getattr(g, name))
    return total


async def usage(conn: asyncpg.Connection, tenant: str, group: str, start: datetime, end: datetime) -> Usage:
    """Cost and tokens of the ledger requests made in [start, end), grouped by day, model, project or
    agent."""
    groups = _ranked(await _usage_rows(conn, tenant, start, end, group), by_key=group == "day")
    return Usage(group=group, from_=start, to=end, total=_sum(groups), groups=groups)


# Tool calls of the sessions started in [from, to), per tool and duration bucket (hookdb_duration_bucket;
# OPEN_BUCKET: not ended): the whole days from the summary (tool_call_days), the sessions of the partial
# first and last days through their calls (tool_calls) and their counts of the calls complete in one batch
# (tool_call_sessions). A call is its first start and its first end.
_TOOLS = f"""
SELECT tool_name, bucket, sum(calls)::bigint AS calls, sum(failures)::bigint AS failures,
       min(min_ms) AS min_ms, max(max_ms) AS max_ms
FROM (
    SELECT tool_name, bucket, calls, failures, min_ms, max_ms
    FROM tool_call_days WHERE tenant_id = $1 AND day >= $2 AND day < $3
    UNION ALL
    SELECT coalesce(c.tool_name, ''), coalesce(hookdb_duration_bucket(m.ms), {summary.OPEN_BUCKET}::smallint),
           1, (c.failed AND c.ended_at IS NOT NULL)::int, m.ms, m.ms
    FROM sessions s
    JOIN tool_calls c ON c.tenant_id = $1 AND c.session_id = s.session_id,
         LATERAL (SELECT abs(extract(epoch FROM c.ended_at - c.started_at) * 1000)::double precision
                  AS ms) m
    WHERE s.tenant_id = $1 AND c.started_at IS NOT NULL
      AND (s.started_at >= $4 AND s.started_at < $5 OR s.started_at >= $6 AND s.started_at < $7)
    UNION ALL
    SELECT a.tool_name, a.bucket, a.calls, a.failures, a.min_ms, a.max_ms
    FROM sessions s
    JOIN tool_call_sessions a ON a.tenant_id = $1 AND a.session_id = s.session_id
    WHERE s.tenant_id = $1
      AND (s.started_at >= $4 AND s.started_at < $5 OR s.started_at >= $6 AND s.started_at < $7)
) b
GROUP BY tool_name, bucket
"""


class _Bucket(NamedTuple):
    """Ended calls of one duration bucket: how many, and the least and greatest duration among them."""

    calls: int
    min_ms: float
    max_ms: float


def _percentile(buckets: Sequence[_Bucket], q: float) -> float | None:
    """percentile_cont(q) of the durations, each bucket's taken as spread evenly from its least to its
    greatest: exact when each bucket holds one duration or at most two calls, else within the bucket (9%)."""
    n = sum(b.calls for b in buckets)
    if not n:
        return None
    rank = q * (n - 1)
    low = int(rank)
    a, b = _nth(buckets, low), _nth(buckets, min(low + 1, n - 1))
    return a + (b - a) * (rank - low)


def _nth(buckets: Sequence[_Bucket], i: int) -> float:
    for b in buckets:
        if i < b.calls:
            return b.min_ms if b.calls == 1 else b.min_ms + (b.max_ms - b.min_ms) * i / (b.calls - 1)
        i -= b.calls
    raise AssertionError("rank beyond the calls")


async def tools(conn: asyncpg.Connection, tenant: str, start: datetime, end: datetime) -> list[ToolStats]:
    """Tool calls of the sessions started in [start, end) by tool; p50/p95 are estimated from the duration
    buckets (see :func:`_percentile`)."""
    days = _split(start, end, timedelta(days=1))
    whole = (at.astimezone(UTC).date() for at in days.whole)
    rows = await conn.fetch(_TOOLS, tenant, *whole, *days.first, *days.last)
    by_tool: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_tool.setdefault(row["tool_name"], []).append(row)
    out = []
    for tool, parts in by_tool.items():
        ended = [
            _Bucket(r["calls"], r["min_ms"], r["max_ms"])
            for r in sorted(parts, key=lambda r: r["bucket"])
            if r["bucket"] != summary.OPEN_BUCKET and r["calls"]
        ]
        calls, failures = sum(r["calls"] for r in parts), sum(r["failures"] for r in parts)
        if not calls:
            continue
        done = sum(b.calls for b in ended)
        out.append(
            ToolStats(
                tool=tool or None,
                calls=calls,
                failures=failures,
                failure_rate=failures / done if done else 0.0,
                p50_ms=_percentile(ended, 0.5),
                p95_ms=_percentile(ended, 0.95),
            )
        )
    return sorted(out, key=lambda t: (-t.calls, t.tool is None, t.tool or ""))


async def stats(conn: asyncpg.Connection, tenant: str, start: datetime, end: datetime) -> Stats:
    """Sessions started in [start, end) by status and model, their cost and QA scores; sessions and
    events per UTC day (events by when they occurred)."""
    # Planned for this range's values each time: a generic plan cannot know that the partial hours read
    # from the log are short (it scans the tenant's events) nor how many ledger rows the range holds.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    by_status: dict[str, int] = {}
    by_model: dict[str | None, ModelStats] = {}
    for row in await conn.fetch(_STATS_SESSIONS, start, end, tenant):
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["sessions"]
        model = by_model.setdefault(
            row["model"], ModelStats(model=row["model"], sessions=0, cost_usd=Decimal(0))
        )
        model.sessions += row["sessions"]
        model.cost_usd += row["cost_usd"]
    edges = cls.QA_SCORE_BUCKETS
    qa = {row["bucket"]: row for row in await conn.fetch(_STATS_QA, start, end, list(edges), tenant)}
    scored = sum(row["sessions"] for row in qa.values())
    days: dict[str, DayStats] = {}

    def day(name: str) -> DayStats:
        return days.setdefault(
            name, DayStats(day=name, sessions=0, events=0, by_status={}, tokens=0, cost_usd=Decimal(0))
        )

    for row in await conn.fetch(_STATS_SESSIONS_PER_DAY, start, end, tenant):
        d = day(row["day"].isoformat())
        d.sessions += row["n"]
        d.by_status[row["status"]] = row["n"]
    hours = _split(start, end, timedelta(hours=1))
    for row in await conn.fetch(_STATS_EVENTS_PER_DAY, tenant, *hours.whole, *hours.first, *hours.last):
        day(row["day"].isoformat()).events = row["n"]
    usage_sets: dict[int, list[asyncpg.Record]] = {_DAY_MODEL_SET: [], _MODEL_SET: [], _PROJECT_SET: []}
    for row in await conn.fetch(_STATS_USAGE, start, end, tenant):
        usage_sets[row["grouping_set"]].append(row)
    by_day_model = [
        DayModelUsage(day=row["day"].isoformat(), model=row["model"], **_totals(row))
        for row in usage_sets[_DAY_MODEL_SET]
    ]
    by_day_model.sort(key=lambda u: (u.day, u.model or ""))
    for u in by_day_model:
        d = day(u.day)
        d.tokens += u.tokens
        d.cost_usd += u.cost_usd
    for d in days.values():
        d.by_status = dict(sorted(d.by_status.items()))
    usage_by_model = _ranked(usage_sets[_MODEL_SET], key="model")
    models = sorted(by_model.values(), key=lambda m: (-m.sessions, m.model or ""))
    return Stats(
        from_=start,
        to=end,
        sessions=sum(by_status.values()),
        events=sum(d.events for d in days.values()),
        by_status=dict(sorted(by_status.items())),
        cost_usd=sum((m.cost_usd for m in models), start=Decimal(0)),
        qa_scores=QaScores(
            count=scored,
            mean=sum(row["total"] for row in qa.values()) / scored if scored else None,
            buckets=[
                QaBucket(min=low, max=high, count=qa[i]["sessions"] if i in qa else 0)
                for i, (low, high) in enumerate(itertools.pairwise(edges), 1)
            ],
        ),
        models=models,
        per_day=[days[d] for d in sorted(days)],
        usage=_sum(usage_by_model),
        usage_by_day_model=by_day_model,
        usage_by_model=usage_by_model,
        usage_by_project=_ranked(usage_sets[_PROJECT_SET], key="project"),
        tools=await tools(conn, tenant, start, end),
    )
