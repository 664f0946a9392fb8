"""Benchmark of the read API (``hookdb api``): session list pages and session details under load.

The issue's target: with 10,000 sessions and 1,000,000 events, list pages of 50 at p95 ≤ 20 ms and a
session detail at p95 ≤ 50 ms, measured by a load generator in a second process.

On one PostgreSQL server (embedded unless ``--dsn``), a fresh database migrated by ``hookdb migrate``,
with the month partitions the data needs, is seeded with ``tests/seed.py`` (COPY as the superuser):
tenant ``acme`` with ``--sessions`` × ``--events`` (default 10,000 × 100 = 1,000,000 events), tenant
``globex`` with 2,000 × 50 interleaved in time (so row-level security has rows to keep out) and one long
session of ``--long-events`` events; then ``VACUUM ANALYZE``. A real ``hookdb api`` process serves it
(``api.pool_size`` as configured, default 8), and this script is the load generator: one client process
per concurrent client (1 and 4 by default), each with one keep-alive HTTP/1.1 connection, requesting
back to back (a closed loop) after a warm-up. Scenarios, ``--requests`` requests each:

* list, first page: ``GET /api/sessions?limit=50``;
* list, keyset walk: following ``next_cursor`` through the whole list (from the first page again at its
  end), each client starting at another depth; and the same walk filtered by status, by model, by both;
* detail: ``GET /api/sessions/{id}`` of random sessions (card, reports, agent states and the first 100
  timeline events, read on four connections sharing one snapshot);
* informational (one client, at most 30 requests): the detail of the long session, and a 500-event
  timeline page of it (``GET /api/sessions/{id}/events?limit=500``), the first and one from the middle (a
  page pairs its tool calls among the events near it: a later page costs what the first does, not more);
* search (one client): ``GET /api/sessions?limit=50&q=…``, a rotation of queries from the most common
  word to one that matches nothing (two words, a phrase, a prompt's word; some with a filter) over search
  documents seeded like the projections write them: one per eight of a session's prompts, replies (Stop),
  tool inputs and outputs (each 16 to 31 words of a 5,000-word vocabulary, the first words far more common
  than the last), as a busy collector's batches hold them, and one per report;
* dashboard (one client, at most 20 requests): ``GET /api/sessions/stats`` over the data's 30 days, what
  the page's overview asks for.

Baselines in the same run, at the same concurrency: the same ``queries.py`` calls straight through
asyncpg on a warm connection as ``hookdb_reader`` with the tenant set, one read-only transaction per
request (the detail's four queries one after another in one repeatable-read transaction); for the
detail also the API's own ``Reader`` (a pool, four connections on one exported snapshot) without HTTP.
The ratio API / SQL is the API's overhead. CPU per request of the API process, of PostgreSQL and of the
clients, and the cores anything else kept busy meanwhile, show where the time went and whether the
machine was quiet. Then the plans: ``EXPLAIN (ANALYZE, BUFFERS)`` as ``hookdb_reader`` with the tenant
set, of the exact statements ``queries.py`` sends: the custom plan, the generic plan when it differs, and
which of the two the server actually ran once the statement was cached, with warnings for work that
grows with the table or the session rather than with the page.

Run: ``.venv/bin/python tests/bench/bench_api.py [--quick] [--sessions N] [--events E] [--requests R]
[--concurrency 1,4] [--only first,detail,...] [--db-set NAME=VALUE] [--pool-size N] [--dsn DSN]
[--json PATH] [--keep NAME]``; about 5 minutes at full size on 2 cores, under a minute with ``--quick``
(``--keep`` seeds once and reuses the database in later runs). Not part of the pytest run (pytest
collects ``test_*.py`` only). Linux only (fork, /proc). PASS/FAIL at the end is informational: the exit
status is 0 unless something failed (an error answer, a wrong page).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import math
import multiprocessing
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import quote, urlencode, urlsplit

import asyncpg
import msgspec

from hookdb.collector.api import queries
from hookdb.collector.api.models import DetailQuery, EventQuery, SessionQuery
from hookdb.collector.api.reader import Reader, _setup
from hookdb.collector.intake.tenancy import token_digest
from hookdb.collector.store import partitions
from hookdb.collector.store.connect import ConnectOptions, quote_ident

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench_spine beside this file, seed in tests/
import seed  # noqa: E402
from bench_spine import (  # noqa: E402
    BIN,
    HookdbProcess,
    _json_safe,
    _progress,
    _terminate,
    fresh_database,
    local_postmaster,
    machine_cpu,
    percentile,
    process_cpu,
    run_asyncio,
    server_info,
    start_server,
    tree_cpu,
)

TENANT = "acme"
OTHER = "globex"
TOKENS = {TENANT: "bench-acme-token", OTHER: "bench-globex-token"}
ROLE = "hookdb_reader"
SET_TENANT = "SELECT set_config('hookdb.tenant', $1, true)"  # as reader.py does it
PAGE = 50
LIST_TARGET_MS = 20.0
DETAIL_TARGET_MS = 50.0
SEARCH_TARGET_MS = 50.0
DASHBOARD_TARGET_MS = 100.0
LONG_PAGE = 500
# Plan warnings: more rows or buffers than this for one page is work that grows with the data.
ROWS_WARN = 1000
BUFFERS_WARN = 1000

# The walks: the whole list, by status (a quarter of the sessions), by model (a third), by both (1/12).
WALKS: dict[str, tuple[tuple[str, str], ...]] = {
    "walk": (),
    "status": (("status", "completed"),),
    "model": (("model", seed.MODELS[0]),),
    "both": (("status", "completed"), ("model", seed.MODELS[1])),
}

SCENARIO_KEYS = (
    "first", "walk", "status", "model", "both", "detail", "long", "long500", "longmid", "search",
    "dashboard",
)  # fmt: skip
VOCABULARY = 5000  # the words of the seeded search documents: word(0) the most common


def word(k: int) -> str:
    """The ``k``-th word of the seeded search documents' vocabulary (as ``_SEARCH_DOCS`` makes it)."""
    return hashlib.md5(str(k).encode()).hexdigest()[:8].translate(str.maketrans("0123456789", "ghijklmnop"))


# The search rotation: from the most common word to none, by frequency; two words, a phrase, a prompt's
# word; some combined with filters.
SEARCHES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("q", word(0)),),
    (("q", word(10)),),
    (("q", word(100)),),
    (("q", word(1000)),),
    (("q", word(VOCABULARY - 1)),),
    (("q", "zzzqqqxxx"),),
    (("q", f"{word(10)} {word(100)}"),),
    (("q", f'"{word(0)} {word(1)}"'),),
    (("q", "summarise"),),
    (("q", word(1000)), ("status", "completed")),
    (("q", word(VOCABULARY - 1)), ("model", seed.MODELS[1])),
    (("q", word(100)), ("status", "failed"), ("model", seed.MODELS[2])),
)

_decode = msgspec.json.decode


# ------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Data:
    """What is seeded: the main tenant, the other tenant, and the other tenant's one long session."""

    main: seed.Seed
    other: seed.Seed
    long: seed.Seed

    @property
    def main_events(self) -> int:
        return self.main.sessions * self.main.events

    def all(self) -> tuple[seed.Seed, ...]:
        return (self.main, self.other, self.long)


def make_data(sessions: int, events: int, other_sessions: int, other_events: int, long_events: int) -> Data:
    # The other tenant's sessions start between the main tenant's, so the two share heap pages and months.
    return Data(
        main=seed.Seed(TENANT, sessions=sessions, events=events),
        other=seed.Seed(OTHER, sessions=other_sessions, events=other_events, prefix="g",
                        start=seed.BASE + timedelta(seconds=30)),
        long=seed.Seed(OTHER, sessions=1, events=long_events, prefix="glong",
                       start=seed.BASE + timedelta(seconds=40)),
    )  # fmt: skip


def _months(data: Data) -> list[datetime]:
    """The first instant of every month an event of ``data`` falls in."""
    first = min(s.start for s in data.all())
    last = max(s.started_at(s.sessions - 1) + timedelta(seconds=s.events + 1) for s in data.all())
    months, month = [], partitions.month_start(first)
    while month <= last:
        months.append(month)
        month = partitions.month_start(month, 1)
    return months


def migrate(dsn: str) -> None:
    subprocess.run([str(BIN / "hookdb"), "migrate", "--dsn", dsn], check=True, capture_output=True)


# Every session's first prompt, half a second after its start as in Claude Code, which the cards' titles
# are read from: one more event per session.
_PROMPTS = """
INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type, source,
                            payload)
SELECT tenant_id, gen_random_uuid(), started_at + interval '500 ms', started_at + interval '500 ms',
       session_id, 'UserPromptSubmit', 'claude-code',
       jsonb_build_object('hook_event_name', 'UserPromptSubmit', 'session_id', session_id,
                          'prompt', 'Look into ' || session_id || repeat(' and summarise what you find', 8))
FROM sessions
"""

# Every session's model API requests as the collector's ledger keeps them (store/ledger.py): three of the
# main agent and one of a subagent, a second apart after the start, and the session totals they make.
LEDGER_REQUESTS = 4
_LEDGER = f"""
INSERT INTO usage_ledger (tenant_id, session_id, request_id, agent, agent_type, model, input_tokens,
                          output_tokens, cache_read_tokens, cache_creation_5m_tokens,
                          cache_creation_1h_tokens, cost_usd, cost_source, at, sources)
SELECT tenant_id, session_id, 'req_' || session_id || '_' || n,
       CASE WHEN n = {LEDGER_REQUESTS} THEN 'agent-' || n ELSE 'main' END,
       CASE WHEN n = {LEDGER_REQUESTS} THEN 'Explore' END, model, 1000 * n, 100 * n, 20000, 500, 0,
       cost_usd / {LEDGER_REQUESTS}, 'reported', started_at + n * interval '1 s', '{{transcript}}'
FROM sessions, generate_series(1, {LEDGER_REQUESTS}) n
"""
_LEDGER_TOTALS = """
UPDATE sessions s SET input_tokens = t.i, output_tokens = t.o, cache_read_tokens = t.r,
       cache_creation_5m_tokens = t.w5, cache_creation_1h_tokens = t.w1, cost_source = 'reported',
       models = ARRAY[s.model]
FROM (SELECT tenant_id, session_id, sum(input_tokens) AS i, sum(output_tokens) AS o,
             sum(cache_read_tokens) AS r, sum(cache_creation_5m_tokens) AS w5,
             sum(cache_creation_1h_tokens) AS w1
      FROM usage_ledger GROUP BY 1, 2) t
WHERE s.tenant_id = t.tenant_id AND s.session_id = t.session_id
"""


# The search documents the projections would have written (store/search.py) for the seeded events: each
# session's searchable events in time order, PARTS_PER_DOC to a document (a batch of a busy collector holds
# about that many events of each of its sessions); as parts, a prompt's text; for a tool input, tool output
# or reply, 16 to 31 words of VOCABULARY, word k drawn with probability falling with k (the cube of a uniform
# number), so some words are in most documents and some in a few; and each report's content.
PARTS_PER_DOC = 8
_SEARCH_DOCS = f"""
WITH vocabulary AS (
    SELECT array_agg(translate(left(md5(k::text), 8), '0123456789', 'ghijklmnop') ORDER BY k) AS words
    FROM generate_series(0, {VOCABULARY - 1}) k),
parts AS (
    SELECT e.tenant_id, e.session_id, uuid_send(e.event_id) AS key, e.occurred_at AS at,
           CASE e.event_type WHEN 'PreToolUse' THEN 'tool_input' WHEN 'PostToolUse' THEN 'tool_output'
                             WHEN 'UserPromptSubmit' THEN 'prompt' ELSE 'reply' END AS kind,
           CASE WHEN e.event_type = 'UserPromptSubmit' THEN e.payload->>'prompt'
                ELSE array_to_string(ARRAY(SELECT v.words[1 + floor({VOCABULARY} * random() ^ 3)::int]
                                           FROM generate_series(1, 16 + (hashtext(e.event_id::text) & 15))),
                                     ' ')
           END AS body
    FROM hook_audit_log e, vocabulary v
    WHERE e.event_type IN ('PreToolUse', 'PostToolUse', 'UserPromptSubmit', 'Stop')),
numbered AS (
    SELECT *, (row_number() OVER (PARTITION BY tenant_id, session_id ORDER BY at, key) - 1)
              / {PARTS_PER_DOC} AS doc
    FROM parts WHERE body <> ''),
ended AS (
    SELECT *, sum(length(body) + 1) OVER (PARTITION BY tenant_id, session_id, doc ORDER BY at, key)::int - 1
              AS ends
    FROM numbered)
INSERT INTO search_docs (tenant_id, session_id, doc_key, at, kinds, ends, body)
SELECT tenant_id, session_id, (array_agg(key ORDER BY at, key))[1], min(at), array_agg(kind ORDER BY at, key),
       array_agg(ends ORDER BY at, key), string_agg(body, E'\\n' ORDER BY at, key)
FROM ended GROUP BY tenant_id, session_id, doc
UNION ALL
SELECT tenant_id, session_id, path_key, written_at, ARRAY['report'], ARRAY[length(content)], content
FROM reports
"""


async def _seed(dsn: str, data: Data) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        for month in _months(data):  # as the collector would have: events in their month, not the default
            await partitions.create_month(conn, month)
        started = time.perf_counter()
        for s in data.all():
            await seed.write(conn, s)
        await conn.execute(_PROMPTS)
        await conn.execute(_LEDGER)
        await conn.execute(_LEDGER_TOTALS)
        await conn.execute("SELECT setseed(0.42)")
        await conn.execute(_SEARCH_DOCS)
        seeded = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")  # the steady state autovacuum keeps: statistics, visibility map
        vacuumed = time.perf_counter() - started
        sizes = {
            row["name"]: row["bytes"]
            for row in await conn.fetch(
                "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
                "WHERE c.relname IN ('sessions', 'reports', 'agent_states', 'search_docs', "
                "'search_docs_words_idx') "
                "UNION ALL SELECT 'hook_audit_log', sum(pg_total_relation_size(relid))::bigint "
                "FROM pg_partition_tree('hook_audit_log')"
            )
        }
        counts = {
            f"{table}_rows": await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("sessions", "hook_audit_log", "reports", "usage_ledger", "search_docs")
        }
        return {"seed_seconds": seeded, "vacuum_seconds": vacuumed, "bytes": sizes, **counts}
    finally:
        await conn.close()


async def reader_connection(dsn: str) -> asyncpg.Connection:
    """A connection set up exactly as the API's pool sets up its own: ``SET ROLE``, the jsonb codec."""
    conn = await asyncpg.connect(dsn)
    await _setup(conn)
    await conn.execute(f"SET ROLE {ROLE}")  # the API's reader sets it per transaction (SET LOCAL)
    return conn


@contextlib.asynccontextmanager
async def tenant_transaction(conn: asyncpg.Connection, tenant: str, *, snapshot: bool = False) -> Any:
    """A read-only transaction of ``tenant``, as the reader opens it (repeatable read for a detail)."""
    isolation = "repeatable_read" if snapshot else None
    async with conn.transaction(isolation=isolation, readonly=True):
        await conn.execute(SET_TENANT, tenant)
        yield


async def _page_cursors(
    dsn: str, tenant: str, page_of: Callable[[asyncpg.Connection, str | None], Awaitable[Any]]
) -> list[str | None]:
    """The cursor of every page ``page_of(conn, cursor)`` reads of ``tenant`` (``None`` for the first)."""
    conn = await reader_connection(dsn)
    try:
        cursors: list[str | None] = [None]
        while True:
            async with tenant_transaction(conn, tenant):
                page = await page_of(conn, cursors[-1])
            if page.next_cursor is None:
                return cursors
            cursors.append(page.next_cursor)
    finally:
        await conn.close()


async def _cursors(dsn: str, params: Sequence[tuple[str, str]]) -> list[str | None]:
    """The cursor of every page of the main tenant's list with ``params`` (``None`` for the first)."""
    return await _page_cursors(
        dsn, TENANT, lambda conn, at: queries.list_sessions(conn, TENANT, session_query(params, at))
    )


async def _middle_events_cursor(dsn: str, tenant: str, session_id: str, limit: int) -> str | None:
    """The cursor of the page of ``limit`` events in the middle of the session (``None``: the first)."""
    cursors = await _page_cursors(
        dsn, tenant, lambda conn, at: queries.events(conn, tenant, session_id, event_query(limit, at))
    )
    return cursors[len(cursors) // 2]


def event_query(limit: int, cursor: str | None) -> EventQuery:
    return EventQuery(limit=limit) if cursor is None else EventQuery(limit=limit, cursor=cursor)


def stats_range(params: Sequence[tuple[str, str]]) -> tuple[datetime, datetime]:
    values = dict(params)
    return datetime.fromisoformat(values["from"]), datetime.fromisoformat(values["to"])


def session_query(params: Sequence[tuple[str, str]], cursor: str | None = None) -> SessionQuery:
    """The query the API parses from ``limit=50``, ``params`` and ``cursor``."""
    values: dict[str, Any] = {"limit": PAGE} | ({"cursor": cursor} if cursor else {})  # left out: unset
    for name, value in params:
        if name == "status":
            values.setdefault("status", []).append(value)
        else:
            values[name] = value
    return SessionQuery(**values)


# ------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One kind of request. ``walk``: follow ``next_cursor``; ``detail``: session ids to pick from."""

    key: str
    label: str
    params: tuple[tuple[str, str], ...] = ()
    walk: bool = False
    detail: tuple[str, ...] = ()
    events_page: int = 0  # > 0: GET .../events?limit=N of the detail sessions instead of the detail
    events_cursor: str | None = None  # events_page: the page at this cursor, not the first
    tenant: str = TENANT
    target_ms: float | None = None
    drivers: tuple[str, ...] = ("api", "sql")
    only_concurrency: int | None = None  # run at this concurrency alone
    requests: int | None = None  # fewer than --requests
    starts: tuple[str | None, ...] = (None,)  # walk: cursors the clients start at
    rotate: tuple[tuple[tuple[str, str], ...], ...] = ()  # list: each request the next of these params
    stats: bool = False  # GET /api/sessions/stats with ``params``

    @property
    def is_list(self) -> bool:
        return not self.detail and not self.stats


def dashboard_range(data: Data) -> tuple[tuple[str, str], ...]:
    """The overview's 30 days, as the page asks for them (``to`` now, ``from`` 30 days before: neither on an
    hour), from a little before the first session's start: the summary's partial first and last days and
    hours are read from the log and the calls, as the page's are."""
    start = min(s.start for s in data.all()) - timedelta(hours=7, minutes=13, seconds=27)
    end = start + timedelta(days=queries.STATS_DAYS)
    return (("from", start.isoformat()), ("to", end.isoformat()))


def scenarios(
    data: Data, requests: int, starts: dict[str, list[str | None]], long_middle: str | None
) -> list[Scenario]:
    """What is measured; ``starts``: the page cursors of each walk; ``long_middle``: the cursor of the long
    session's page of LONG_PAGE events in its middle."""
    main = tuple(data.main.session_id(i) for i in range(data.main.sessions))
    long_id = (data.long.session_id(0),)
    few = min(requests, 30)
    out = [
        Scenario("first", "list, first page", target_ms=LIST_TARGET_MS),
        Scenario("walk", "list, keyset walk, all pages", walk=True, target_ms=LIST_TARGET_MS),
        Scenario("status", "list status=completed, walk", WALKS["status"], walk=True,
                 target_ms=LIST_TARGET_MS),
        Scenario("model", f"list model={seed.MODELS[0]}, walk", WALKS["model"], walk=True,
                 target_ms=LIST_TARGET_MS),
        Scenario("both", "list status+model, walk", WALKS["both"], walk=True, target_ms=LIST_TARGET_MS),
        Scenario("detail", "detail, random sessions", detail=main, target_ms=DETAIL_TARGET_MS,
                 drivers=("api", "reader", "sql")),
        Scenario("long", f"detail, {data.long.events:,}-event session", detail=long_id, tenant=OTHER,
                 only_concurrency=1, requests=few),
        Scenario("long500", f"events limit={LONG_PAGE}, same session", detail=long_id, tenant=OTHER,
                 events_page=LONG_PAGE, only_concurrency=1, requests=few),
        Scenario("longmid", f"events limit={LONG_PAGE}, its middle page", detail=long_id, tenant=OTHER,
                 events_page=LONG_PAGE, events_cursor=long_middle, only_concurrency=1, requests=few),
        Scenario("search", f"search, {len(SEARCHES)} queries in turn", rotate=SEARCHES,
                 target_ms=SEARCH_TARGET_MS, only_concurrency=1),
        Scenario("dashboard", "dashboard: stats of 30 days", stats=True, params=dashboard_range(data),
                 target_ms=DASHBOARD_TARGET_MS, only_concurrency=1, requests=min(requests, 20)),
    ]  # fmt: skip
    return [replace(s, starts=tuple(starts[s.key])) if s.walk else s for s in out]


# ------------------------------------------------------------------------------------------ drivers


class Driver(Protocol):
    async def list(self, params: Sequence[tuple[str, str]], cursor: str | None) -> str | None: ...

    async def detail(self, session_id: str) -> None: ...

    async def events(self, session_id: str, limit: int, cursor: str | None) -> None: ...

    async def stats(self, params: Sequence[tuple[str, str]]) -> None: ...

    async def close(self) -> None: ...


class HttpDriver:
    """The API over one keep-alive HTTP/1.1 connection (blocking: nothing else runs in the process)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self._headers = {"Authorization": f"Bearer {token}"}
        self.last_body = b""
        self.retries = 0
        self.last_retry = ""

    def get(self, path: str) -> tuple[int, bytes]:
        """One GET; sent again once on a new connection if the server had closed the kept-alive one
        (as browsers do for an idempotent request; counted in ``retries``, its time in the latency)."""
        for attempt in range(2):
            try:
                self._conn.request("GET", path, headers=self._headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._conn.close()
                if attempt:
                    raise
                self.retries += 1
                self.last_retry = f"{type(exc).__name__}: {exc}"
        raise AssertionError("unreachable")

    def _ok(self, path: str) -> bytes:
        status, body = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return body

    async def list(self, params: Sequence[tuple[str, str]], cursor: str | None) -> str | None:
        items = [("limit", str(PAGE)), *params, *([("cursor", cursor)] if cursor else [])]
        self.last_body = self._ok("/api/sessions?" + urlencode(items))
        return None  # the caller reads next_cursor from last_body after its clock stopped

    async def detail(self, session_id: str) -> None:
        self.last_body = self._ok(f"/api/sessions/{quote(session_id, safe='')}")

    async def events(self, session_id: str, limit: int, cursor: str | None) -> None:
        after = f"&cursor={quote(cursor, safe='')}" if cursor else ""
        self.last_body = self._ok(f"/api/sessions/{quote(session_id, safe='')}/events?limit={limit}{after}")

    async def stats(self, params: Sequence[tuple[str, str]]) -> None:
        self.last_body = self._ok("/api/sessions/stats?" + urlencode(params))

    async def close(self) -> None:
        self._conn.close()


class SqlDriver:
    """The same queries.py calls on one warm connection as hookdb_reader: the floor under the API."""

    def __init__(self, conn: asyncpg.Connection, tenant: str) -> None:
        self._conn, self._tenant = conn, tenant

    async def list(self, params: Sequence[tuple[str, str]], cursor: str | None) -> str | None:
        async with tenant_transaction(self._conn, self._tenant):
            page = await queries.list_sessions(self._conn, self._tenant, session_query(params, cursor))
        return page.next_cursor

    async def detail(self, session_id: str) -> None:
        conn, limit = self._conn, DetailQuery().events_limit
        async with tenant_transaction(conn, self._tenant, snapshot=True):
            tenant = self._tenant
            card = await queries.session_card(conn, tenant, session_id)
            await queries.reports(conn, tenant, session_id)
            await queries.agent_states(conn, tenant, session_id)
            await queries.events(conn, tenant, session_id, EventQuery(limit=limit))
        if card is None:
            raise RuntimeError(f"no session {session_id}")

    async def events(self, session_id: str, limit: int, cursor: str | None) -> None:
        async with tenant_transaction(self._conn, self._tenant, snapshot=True):
            await queries.session_card(self._conn, self._tenant, session_id)
            await queries.events(self._conn, self._tenant, session_id, event_query(limit, cursor))

    async def stats(self, params: Sequence[tuple[str, str]]) -> None:
        start, end = stats_range(params)
        async with tenant_transaction(self._conn, self._tenant):
            await queries.stats(self._conn, self._tenant, start, end)

    async def close(self) -> None:
        await self._conn.close()


class ReaderDriver:
    """The API's own Reader (pool, four connections on one exported snapshot) without HTTP or trio."""

    def __init__(self, reader: Reader, tenant: str) -> None:
        self._reader, self._tenant = reader, tenant

    async def list(self, params: Sequence[tuple[str, str]], cursor: str | None) -> str | None:
        query = session_query(params, cursor)
        tenant = self._tenant
        page = await self._reader._read(tenant, lambda conn: queries.list_sessions(conn, tenant, query))
        return page.next_cursor

    async def detail(self, session_id: str) -> None:
        events = EventQuery(limit=DetailQuery().events_limit)
        card, *_ = await self._reader._read_together(
            self._tenant,
            [
                lambda conn: queries.session_card(conn, self._tenant, session_id),
                lambda conn: queries.reports(conn, self._tenant, session_id),
                lambda conn: queries.agent_states(conn, self._tenant, session_id),
                lambda conn: queries.events(conn, self._tenant, session_id, events),
            ],
        )
        if card is None:
            raise RuntimeError(f"no session {session_id}")

    async def events(self, session_id: str, limit: int, cursor: str | None) -> None:
        query = event_query(limit, cursor)
        await self._reader._read_together(
            self._tenant,
            [
                lambda conn: queries.session_card(conn, self._tenant, session_id),
                lambda conn: queries.events(conn, self._tenant, session_id, query),
            ],
        )

    async def stats(self, params: Sequence[tuple[str, str]]) -> None:
        start, end = stats_range(params)
        await self._reader._read(self._tenant, lambda conn: queries.stats(conn, self._tenant, start, end))

    async def close(self) -> None:
        if self._reader._pool is not None:
            await self._reader._pool.close()


async def open_driver(kind: str, url: str, dsn: str, tenant: str) -> Driver:
    if kind == "api":
        return HttpDriver(url, TOKENS[tenant])
    if kind == "sql":
        return SqlDriver(await reader_connection(dsn), tenant)
    reader = Reader(ConnectOptions(dsn=dsn, role=ROLE, application_name="bench-reader"), pool_size=4)
    await reader._open()  # what Reader.__aenter__ does, minus the trio side
    return ReaderDriver(reader, tenant)


# ------------------------------------------------------------------------------------------ clients


@dataclass(frozen=True)
class Job:
    """What one client process does: ``warmup`` unmeasured requests, then ``requests`` measured ones."""

    kind: str
    scenario: Scenario
    url: str
    dsn: str
    requests: int
    warmup: int
    client: int
    clients: int


async def _client(job: Job, barrier: Barrier) -> dict[str, Any]:
    s = job.scenario
    driver = await open_driver(job.kind, job.url, job.dsn, s.tenant)
    try:
        rng = random.Random(f"{job.kind}/{job.clients}/{job.client}")  # other sessions in each run
        start = s.starts[job.client * len(s.starts) // job.clients] if s.walk else None
        cursor = start
        latencies: list[float] = []
        begun = cpu0 = 0.0
        for i in range(job.warmup + job.requests):
            if i == job.warmup:
                barrier.wait(120)  # nothing else runs in this process: blocking is fine
                begun, cpu0 = time.perf_counter(), time.process_time()
            t0 = time.perf_counter()
            if s.detail and s.events_page:
                await driver.events(rng.choice(s.detail), s.events_page, s.events_cursor)
            elif s.detail:
                await driver.detail(rng.choice(s.detail))
            elif s.stats:
                await driver.stats(s.params)
            elif s.rotate:
                await driver.list(s.rotate[(i + job.client) % len(s.rotate)], None)
            else:
                cursor = await driver.list(s.params, cursor if s.walk else None)
            t1 = time.perf_counter()
            if i >= job.warmup:
                latencies.append((t1 - t0) * 1000)
            if isinstance(driver, HttpDriver) and s.is_list and s.walk:  # after the clock: its parsing
                cursor = _decode(driver.last_body)["next_cursor"]
        return {
            "latencies_ms": latencies,
            "begun": begun,
            "ended": time.perf_counter(),
            "cpu_seconds": time.process_time() - cpu0,
            "retries": driver.retries if isinstance(driver, HttpDriver) else 0,
            "last_retry": driver.last_retry if isinstance(driver, HttpDriver) else "",
        }
    finally:
        await driver.close()


def _client_process(job: Job, barrier: Barrier, results: Queue[tuple[int, Any]]) -> None:
    try:
        results.put((job.client, run_asyncio(_client(job, barrier))))
    except BaseException:
        barrier.abort()
        results.put((job.client, traceback.format_exc()))


@dataclass
class Run:
    """One scenario through one driver at one concurrency: every client's latencies, merged."""

    scenario: str
    label: str
    kind: str
    clients: int
    latencies_ms: list[float]
    seconds: float
    client_cpu_seconds: float
    api_cpu_seconds: float | None
    pg_cpu_seconds: float | None
    other_cpu_seconds: float | None  # everything else the machine ran meanwhile
    target_ms: float | None
    retries: int = 0  # requests sent again after the server closed a kept-alive connection
    last_retry: str = ""
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ms = self.latencies_ms
        n = len(ms)
        api, pg = self.api_cpu_seconds, self.pg_cpu_seconds
        self.stats = {
            "requests": n,
            "mean_ms": statistics.fmean(ms),
            "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99),
            "max_ms": max(ms),
            "requests_per_second": n / self.seconds,
            "client_cpu_ms_per_request": self.client_cpu_seconds * 1000 / n,
            "api_cpu_ms_per_request": math.nan if api is None else api * 1000 / n,
            "pg_cpu_ms_per_request": math.nan if pg is None else pg * 1000 / n,
            "other_cpu_cores": math.nan
            if self.other_cpu_seconds is None
            else self.other_cpu_seconds / self.seconds,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "label": self.label,
            "via": self.kind,
            "clients": self.clients,
            "target_ms": self.target_ms,
            **self.stats,
            "seconds": self.seconds,
            "retries": self.retries,
        }


class Machine:
    """CPU seconds of the API process, of the PostgreSQL server (when it runs on this machine) and of the
    whole machine."""

    def __init__(self, api_pid: int, postmaster: int | None) -> None:
        self.api_pid, self.postmaster = api_pid, postmaster

    def sample(self) -> tuple[float, float | None, float]:
        pg = tree_cpu(self.postmaster) if self.postmaster else None
        return process_cpu(self.api_pid), pg, machine_cpu()[0]


def measure(job: Job, machine: Machine) -> Run:
    """``job.clients`` client processes, released together after their warm-up."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(job.clients + 1)
    results: Queue[tuple[int, Any]] = ctx.Queue()
    share, extra = divmod(job.requests, job.clients)
    procs = [
        ctx.Process(
            target=_client_process,
            args=(replace(job, client=i, requests=share + (i < extra)), barrier, results),
            daemon=True,
        )
        for i in range(job.clients)
    ]
    for p in procs:
        p.start()
    try:
        try:
            barrier.wait(timeout=300)
        except threading.BrokenBarrierError as exc:
            problems = [results.get(timeout=60) for _ in procs]
            raise RuntimeError(f"a client failed before the start: {problems}") from exc
        api0, pg0, busy0 = machine.sample()
        answers = dict(results.get(timeout=600) for _ in procs)
        api1, pg1, busy1 = machine.sample()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    failed = [a for a in answers.values() if isinstance(a, str)]
    if failed:
        raise RuntimeError(f"{job.kind} {job.scenario.key}: a client failed:\n{failed[0]}")
    parts = list(answers.values())
    clients_cpu = sum(a["cpu_seconds"] for a in parts)
    api_cpu = api1 - api0
    pg_cpu = pg1 - pg0 if pg0 is not None and pg1 is not None else None
    return Run(
        scenario=job.scenario.key,
        label=job.scenario.label,
        kind=job.kind,
        clients=job.clients,
        latencies_ms=[ms for a in parts for ms in a["latencies_ms"]],
        seconds=max(a["ended"] for a in parts) - min(a["begun"] for a in parts),
        client_cpu_seconds=clients_cpu,
        api_cpu_seconds=api_cpu if job.kind == "api" else None,
        pg_cpu_seconds=pg_cpu,
        other_cpu_seconds=None
        if pg_cpu is None
        else max(0.0, busy1 - busy0 - api_cpu - pg_cpu - clients_cpu),
        target_ms=job.scenario.target_ms,
        retries=sum(a["retries"] for a in parts),
        last_retry=next((a["last_retry"] for a in parts if a["last_retry"]), ""),
    )


# ---------------------------------------------------------------------------------------------- API


class ApiProcess(HookdbProcess):
    """A ``hookdb api`` process on a free port."""

    ready_event = "api.listening"

    def __init__(self, dsn: str, workdir: Path, pool_size: int | None) -> None:
        config = workdir / "api.toml"
        lines = [f"{json.dumps(t)} = [{json.dumps(token_digest(token))}]" for t, token in TOKENS.items()]
        config.write_text("[api.tokens]\n" + "\n".join(lines) + "\n")
        args = ["--dsn", dsn, "--listen", "127.0.0.1:0", "--config", str(config)]
        if pool_size:
            args += ["--set", f"api.pool_size={pool_size}"]
        super().__init__(["api", *args], workdir / "api.log")


@contextlib.contextmanager
def running_api(dsn: str, workdir: Path, pool_size: int | None) -> Iterator[tuple[ApiProcess, str]]:
    api = ApiProcess(dsn, workdir, pool_size)
    try:
        yield api, str(json.loads(api.wait_ready())["url"])
    finally:
        api.stop()


def check_answers(url: str, data: Data) -> list[str]:
    """What the measured requests rely on, checked once through the API; raises on a wrong answer."""
    main = data.main
    client = HttpDriver(url, TOKENS[TENANT])
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        run_asyncio(client.list((), cursor))
        page = _decode(client.last_body)
        ids += [card["session_id"] for card in page["sessions"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [main.session_id(i) for i in reversed(range(main.sessions))]  # newest first
    if ids != expected:
        raise RuntimeError(f"the walk of {TENANT}'s list gave {len(ids)} sessions, not its {len(expected)}")
    detail_id = main.session_id(main.sessions // 2)
    run_asyncio(client.detail(detail_id))
    detail = _decode(client.last_body)
    timeline = detail["events"]["events"]
    paired = sum(1 for e in timeline if e["duration_ms"] is not None)
    if detail["session"]["session_id"] != detail_id or len(timeline) != min(main.events + 1, 100):
        raise RuntimeError(f"unexpected detail of {detail_id}: {len(timeline)} events")
    unauthorized, _ = HttpDriver(url, "not-a-token").get("/api/sessions")
    theirs = HttpDriver(url, TOKENS[OTHER])
    hidden, _ = theirs.get(f"/api/sessions/{detail_id}")
    run_asyncio(theirs.list((), None))
    first = [card["session_id"] for card in _decode(theirs.last_body)["sessions"]]
    for conn in (client, theirs):
        run_asyncio(conn.close())
    if unauthorized != 401 or hidden != 404 or any(not s.startswith(("g-", "glong-")) for s in first):
        raise RuntimeError(f"tenancy: no token → {unauthorized}, {OTHER} asking for {TENANT}'s → {hidden}")
    return [
        f"{TENANT}'s list walked in {pages} pages of {PAGE}: all {len(ids):,} sessions, newest first, none "
        f"repeated, none of {OTHER}'s",
        f"detail of {detail_id}: {len(timeline)} timeline events, {paired} with a paired tool call duration; "
        f"{OTHER}'s token gets 404 for it and only its own sessions in its list; no token gets 401",
    ]


# ------------------------------------------------------------------------------------------- plans


class Recorder:
    """A connection that notes each statement queries.py sends (and still runs it)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.statements.append((sql, args))
        rows: list[asyncpg.Record] = await self._conn.fetch(sql, *args)
        return rows

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Not noted: the search's estimate (an EXPLAIN without ANALYZE) is planning only."""
        return await self._conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        """Not noted: the stats' SET LOCAL of plan_cache_mode, a setting with nothing to plan."""
        return await self._conn.execute(sql, *args)


async def _statements(
    conn: asyncpg.Connection, tenant: str, work: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> list[tuple[str, tuple[Any, ...]]]:
    recorder = Recorder(conn)
    async with tenant_transaction(conn, tenant):
        await work(cast(asyncpg.Connection, recorder))
    return recorder.statements


def _literal(value: Any) -> str:
    """``value`` as an SQL literal, for ``EXECUTE`` of a prepared statement."""
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, int | float) for v in value):
            return "ARRAY[" + ", ".join(map(str, value)) + "]"  # numbers: the parameter's type decides
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]" if value else "'{}'"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


def _shape(plan: list[str]) -> list[str]:
    """A plan's nodes without figures, to compare two plans of one statement."""
    nodes = [line for line in plan if "(cost=" in line]
    return [re.sub(r"\s*\(cost=.*", "", line).strip() for line in nodes]


def _warnings(node: dict[str, Any], out: list[str]) -> None:
    """What in a JSON plan does work that grows with the table or the session rather than with the page."""
    loops = node.get("Actual Loops", 1)
    kind, relation = node["Node Type"], node.get("Relation Name", "")
    rows = node.get("Actual Rows", 0) * loops
    removed = (node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Join Filter", 0)) * loops
    if kind == "Seq Scan" and rows + removed > ROWS_WARN:
        out.append(f"sequential scan of {relation} reading {rows + removed:,.0f} rows")
    if kind in ("Sort", "Incremental Sort") and rows > ROWS_WARN:
        out.append(f"sort of {rows:,.0f} rows")
    if removed > ROWS_WARN:
        where = f" of {relation}" if relation else ""
        out.append(
            f"{kind}{where}: {removed:,.0f} rows read and dropped by a filter"
            + (f" over {loops:,} loops" if loops > 1 else "")
        )
    for child in node.get("Plans", []):
        _warnings(child, out)


async def _explain(conn: asyncpg.Connection, sql: str, *args: Any) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of ``sql``: its text, times, buffers and warnings."""
    text = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)]
    doc = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args))[0]
    warnings: list[str] = []
    _warnings(doc["Plan"], warnings)
    buffers = doc["Plan"].get("Shared Hit Blocks", 0) + doc["Plan"].get("Shared Read Blocks", 0)
    if buffers > BUFFERS_WARN:
        warnings.append(f"{buffers:,} buffers touched")
    return {
        "plan": text,
        "execution_ms": doc["Execution Time"],
        "planning_ms": doc["Planning Time"],
        "buffers": buffers,
        "warnings": warnings,
    }


async def _explain_one(
    conn: asyncpg.Connection, tenant: str, sql: str, args: tuple[Any, ...]
) -> dict[str, Any]:
    """The custom plan (the parameters' values known, as on a first run), the generic plan (which a
    cached prepared statement switches to when it looks no dearer, plan_cache_mode = auto), and which of
    the two the server used on the last of 10 runs through asyncpg's statement cache, as the API runs it."""
    async with tenant_transaction(conn, tenant):
        await conn.fetch(sql, *args)  # warm
        custom = await _explain(conn, sql, *args)
    async with tenant_transaction(conn, tenant):
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE bench_generic AS {sql}")
        try:
            generic = await _explain(conn, f"EXECUTE bench_generic({', '.join(map(_literal, args))})")
        finally:
            await conn.execute("DEALLOCATE bench_generic")
    async with tenant_transaction(conn, tenant):
        before = await _plans_used(conn, sql)
        for _ in range(9):
            await conn.fetch(sql, *args)
        middle = await _plans_used(conn, sql)
        await conn.fetch(sql, *args)
        after = await _plans_used(conn, sql)
    last = "generic" if after[0] > middle[0] else "custom"
    return {
        "sql": " ".join(sql.split()),
        "args": [str(a) for a in args],
        **custom,
        "generic": generic,
        "generic_same_shape": _shape(generic["plan"]) == _shape(custom["plan"]),
        "in_use": {
            "last_run": last,
            "generic_runs": after[0] - before[0],
            "custom_runs": after[1] - before[1],
        },
    }


async def _plans_used(conn: asyncpg.Connection, sql: str) -> tuple[int, int]:
    """(generic, custom) plans the server has used for ``sql`` as a prepared statement on ``conn``."""
    row = await conn.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", sql
    )
    return (row["generic_plans"], row["custom_plans"]) if row else (0, 0)


async def _explain_all(
    dsn: str, data: Data, cursors: dict[str, list[str | None]], long_middle: str | None
) -> list[dict[str, Any]]:
    conn = await reader_connection(dsn)
    try:
        deep = cursors["walk"][len(cursors["walk"]) * 3 // 4]
        both = cursors["both"][len(cursors["both"]) * 3 // 4]
        lists: list[tuple[str, SessionQuery]] = [
            ("list: first page", session_query(())),
            (f"list: a deep page (cursor of page {len(cursors['walk']) * 3 // 4 + 1})",
             session_query((), deep)),
            ("list: filtered first page, status=completed", session_query(WALKS["status"])),
            (f"list: filtered deep page, status=completed&model={seed.MODELS[1]}",
             session_query(WALKS["both"], both)),
            ("search: the most common word", session_query(SEARCHES[0])),
            ("search: a rare word", session_query(SEARCHES[4])),
            ("search: no match", session_query(SEARCHES[5])),
        ]  # fmt: skip
        work: list[tuple[str, str, Callable[[asyncpg.Connection], Awaitable[Any]]]] = [
            (label, TENANT, lambda c, q=q: queries.list_sessions(c, TENANT, q)) for label, q in lists
        ]
        session_id = data.main.session_id(data.main.sessions // 3)
        events = EventQuery(limit=DetailQuery().events_limit)
        long_id = data.long.session_id(0)
        work += [
            (f"detail 1/4: card ({session_id})", TENANT,
             lambda c: queries.session_card(c, TENANT, session_id)),
            ("detail 2/4: reports", TENANT, lambda c: queries.reports(c, TENANT, session_id)),
            ("detail 3/4: agent states", TENANT, lambda c: queries.agent_states(c, TENANT, session_id)),
            ("detail 4/4: timeline, first 100 events, tool calls paired", TENANT,
             lambda c: queries.events(c, TENANT, session_id, events)),
            (f"long session timeline, first 100 of {data.long.events:,} events ({OTHER})", OTHER,
             lambda c: queries.events(c, OTHER, long_id, events)),
            (f"long session timeline, limit={LONG_PAGE} ({OTHER})", OTHER,
             lambda c: queries.events(c, OTHER, long_id, EventQuery(limit=LONG_PAGE))),
            (f"long session timeline, limit={LONG_PAGE}, its middle page ({OTHER})", OTHER,
             lambda c: queries.events(c, OTHER, long_id, event_query(LONG_PAGE, long_middle))),
            ("dashboard stats, 30 days", TENANT,
             lambda c: queries.stats(c, TENANT, *stats_range(dashboard_range(data)))),
        ]  # fmt: skip
        plans = []
        for label, tenant, run in work:
            for sql, args in await _statements(conn, tenant, run):
                plans.append(
                    {"label": label, "tenant": tenant, **await _explain_one(conn, tenant, sql, args)}
                )
        return plans
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------ report


def _num(value: float, width: int = 7) -> str:
    """A figure right-aligned in ``width``: one decimal below 100, none above; ``-`` if not measured."""
    if math.isnan(value):
        return f"{'-':>{width}}"
    return f"{value:>{width}.1f}" if value < 100 else f"{value:>{width}.0f}"


RUN_COLUMNS = (
    f"{'scenario':<38}{'via':<7}{'conc':>4}{'reqs':>6}{'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}{'req/s':>7}"
    f" |{'api':>5}{'pg':>5}{'cli':>5}{'oth':>5} |{'p50×':>6}{'p95×':>6}"
)


def render_runs(runs: list[Run]) -> list[str]:
    base = {(r.scenario, r.clients): r for r in runs if r.kind == "sql"}
    lines = [
        "latency in ms per request (client clock: request sent → whole body read), requests/s of the run;",
        "CPU ms per request: api = the hookdb api process, pg = PostgreSQL (all backends), cli = the client",
        "processes; oth = cores busy with anything else on the machine meanwhile; p50×, p95× = ratio to sql",
        RUN_COLUMNS,
    ]
    last = ""
    for r in runs:
        s = r.stats
        label = r.label if r.label != last else ""
        last = r.label
        floor = base.get((r.scenario, r.clients))
        ratio = ""
        if r.kind != "sql" and floor is not None:
            ratio = _num(s["p50_ms"] / floor.stats["p50_ms"], 6) + _num(
                s["p95_ms"] / floor.stats["p95_ms"], 6
            )
        lines.append(
            f"{label:<38}{r.kind:<7}{r.clients:>4}{s['requests']:>6}"
            + "".join(_num(s[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "requests_per_second"))
            + " |"
            + "".join(
                _num(s[k], 5)
                for k in ("api_cpu_ms_per_request", "pg_cpu_ms_per_request", "client_cpu_ms_per_request")
            )
            + _num(s["other_cpu_cores"], 5)
            + " |"
            + ratio
        )
    lines += [
        f'  note: {r.retries} request(s) of "{r.label}" via {r.kind} with {r.clients} client(s), warm-up '
        f"included, sent again after the server closed a kept-alive connection ({r.last_retry})"
        for r in runs
        if r.retries
    ]
    return lines


def render_plans(plans: list[dict[str, Any]]) -> list[str]:
    lines = [
        "query plans: EXPLAIN (ANALYZE, BUFFERS) as hookdb_reader with the tenant set, of the statements "
        "queries.py sends (warm);",
        'the custom plan (parameter values known) and, if its nodes differ, the generic plan; "in use": '
        "what the server ran on",
        "the last of 10 runs through asyncpg's statement cache (a prepared statement, as in the API)",
    ]
    for p in plans:
        generic, used = p["generic"], p["in_use"]
        lines += [
            "",
            f"-- {p['label']}: {p['execution_ms']:.2f} ms executing, {p['planning_ms']:.2f} ms planning, "
            f"{p['buffers']:,} buffers",
            f"   args: {', '.join(a if len(a) < 60 else a[:57] + '...' for a in p['args'])}",
            *("   " + line for line in p["plan"]),
        ]
        in_use = (
            f"in use: the {used['last_run']} plan "
            f"({used['custom_runs']} custom, {used['generic_runs']} generic of 10 runs)"
        )
        if p["generic_same_shape"]:
            lines.append(f"   generic plan: the same nodes, {generic['execution_ms']:.2f} ms; {in_use}")
        else:
            lines += [
                f"   generic plan DIFFERS: {generic['execution_ms']:.2f} ms executing, "
                f"{generic['buffers']:,} buffers; {in_use}",
                *("   | " + line for line in generic["plan"]),
            ]
        lines += [f"   WARNING (custom plan): {w}" for w in p["warnings"]]
        if used["last_run"] == "generic" or not p["generic_same_shape"]:
            lines += [f"   WARNING (generic plan): {w}" for w in generic["warnings"]]
    return lines


def per_event(data: dict[str, Any], relation: str) -> float:
    return float(data["bytes"][relation] / data["hook_audit_log_rows"])


def render(res: dict[str, Any], runs: list[Run]) -> str:
    env, data = res["environment"], res["data"]
    pg = env["postgres"]
    mb = {k: v / 1e6 for k, v in data["bytes"].items()}
    lines = [
        "hookdb read API benchmark",
        f"  PostgreSQL {pg['server_version']}, {env['server']}: shared_buffers={pg['shared_buffers']}, "
        f"work_mem={pg['work_mem']}, random_page_cost={pg['random_page_cost']}, jit={pg['jit']}, "
        f"plan_cache_mode={pg['plan_cache_mode']}"
        + (f" (--db-set {' '.join(env['db_set'])})" if env["db_set"] else ""),
        f"  {env['cpus']} CPUs, 1-min load average at start {env['load_average_at_start']:.2f}; "
        f"Python {env['python']}; api.pool_size={env['pool_size']}; warm-up {env['warmup']} requests "
        "per client before each run",
        f"  {TENANT}: {data['sessions']:,} sessions × {data['events']} events = {data['main_events']:,} "
        f"events; {OTHER}: {data['other_sessions']:,} × {data['other_events']} + one session of "
        f"{data['long_events']:,}; all tables: {data['sessions_rows']:,} sessions, "
        f"{data['hook_audit_log_rows']:,} events, {data['reports_rows']:,} reports",
        f"  hook_audit_log {mb['hook_audit_log']:.0f} MB, sessions {mb['sessions']:.1f} MB, reports "
        f"{mb['reports']:.1f} MB; seeded in {data['seed_seconds']:.0f} s, VACUUM ANALYZE "
        f"{data['vacuum_seconds']:.0f} s",
        f"  search: {data['search_docs_rows']:,} documents, {mb['search_docs']:.0f} MB in all, "
        f"{per_event(data, 'search_docs'):.0f} bytes per event; its GIN index "
        f"{mb['search_docs_words_idx']:.0f} MB, {per_event(data, 'search_docs_words_idx'):.0f} bytes per "
        "event",
        "",
        "checks",
        *("  " + c for c in res["checks"]),
        "",
        *render_runs(runs),
        "  via: api = hookdb api over HTTP; reader = the API's Reader in-process (no HTTP, no trio); "
        "sql = queries.py on one warm connection, one transaction, the detail's queries one after another",
        "",
        *render_plans(res["plans"]),
        "",
        *render_summary(res["summary"]),
    ]
    return "\n".join(lines)


def summarize(runs: list[Run], plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target and concurrency: the worst API p95 of its scenarios against the target."""
    out = []
    kinds = (
        (LIST_TARGET_MS, "list pages of 50", {"first", "walk", "status", "model", "both"}),
        (DETAIL_TARGET_MS, "session detail", {"detail"}),
        (SEARCH_TARGET_MS, "search", {"search"}),
        (DASHBOARD_TARGET_MS, "dashboard stats", {"dashboard"}),
    )
    for target, what, keys in kinds:
        for clients in sorted({r.clients for r in runs}):
            mine = [r for r in runs if r.kind == "api" and r.scenario in keys and r.clients == clients]
            if not mine:
                continue
            worst = max(mine, key=lambda r: r.stats["p95_ms"])
            out.append(
                {
                    "what": what,
                    "clients": clients,
                    "target_p95_ms": target,
                    "p95_ms": worst.stats["p95_ms"],
                    "worst_scenario": worst.label,
                    "p99_ms": worst.stats["p99_ms"],
                    "requests_per_second": worst.stats["requests_per_second"],
                    "pass": worst.stats["p95_ms"] <= target,
                }
            )
    warned = [
        p["label"]
        for p in plans
        if p["warnings"] or (p["in_use"]["last_run"] == "generic" and p["generic"]["warnings"])
    ]
    out.append({"what": "plans with warnings", "labels": warned, "pass": not warned})
    return out


def render_summary(summary: list[dict[str, Any]]) -> list[str]:
    lines = [
        "summary: API p95 against the issue's targets (informational; the worst scenario of each kind)",
        f"  {'':<20}{'clients':>8}{'p95 ms':>8}{'target':>8}{'p99 ms':>8}{'req/s':>7}"
        "  result  worst scenario",
    ]
    for s in summary:
        if "labels" in s:
            lines.append(
                f"  plans: {len(s['labels'])} with warnings"
                + (f" ({'; '.join(s['labels'])})" if s["labels"] else "")
            )
            continue
        lines.append(
            f"  {s['what']:<20}{s['clients']:>8}{s['p95_ms']:>8.1f}{s['target_p95_ms']:>8.0f}"
            f"{s['p99_ms']:>8.1f}"
            f"{s['requests_per_second']:>7.0f}  {'PASS' if s['pass'] else 'FAIL':<6}  {s['worst_scenario']}"
        )
    return lines


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, help="sessions of tenant acme (default 10000)")
    parser.add_argument("--events", type=int, help="events per acme session (default 100)")
    parser.add_argument("--other-sessions", type=int, help="sessions of tenant globex (default 2000)")
    parser.add_argument("--other-events", type=int, help="events per globex session (default 50)")
    parser.add_argument("--long-events", type=int, help="events of globex's long session (default 5000)")
    parser.add_argument("--requests", type=int, help="measured requests per scenario and run (default 1000)")
    parser.add_argument(
        "--concurrency", default="1,4", help="client processes, comma-separated (default 1,4)"
    )
    parser.add_argument(
        "--pool-size", type=int, help="api.pool_size for hookdb api (default: its default, 8)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument(
        "--db-set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="ALTER DATABASE ... SET NAME = VALUE before the API starts (repeatable), to try a setting, "
        "e.g. plan_cache_mode=force_custom_plan",
    )
    parser.add_argument("--only", metavar="KEYS", help=f"run only these scenarios: {','.join(SCENARIO_KEYS)}")
    parser.add_argument(
        "--dsn", help="postgresql:// URI of a role that may create databases; default: embedded"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--keep",
        metavar="NAME",
        help="seed database hookdb_bench_api_NAME once and keep it for the next runs (needs --dsn)",
    )
    args = parser.parse_args(argv)
    if args.keep and (not args.dsn or not re.fullmatch(r"[a-z0-9_]+", args.keep)):
        parser.error("--keep NAME: needs --dsn (the embedded server is temporary), NAME of a-z, 0-9 and _")
    defaults = (
        {"sessions": 600, "events": 20, "other_sessions": 100, "other_events": 10, "long_events": 300,
         "requests": 100}
        if args.quick
        else {"sessions": 10_000, "events": 100, "other_sessions": 2000, "other_events": 50,
              "long_events": 5000, "requests": 1000}
    )  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for item in args.db_set:
        if not re.fullmatch(r"[a-z_][a-z0-9_.]*=.+", item):
            parser.error(f"--db-set {item!r}: NAME=VALUE")
    args.only = args.only.split(",") if args.only else list(SCENARIO_KEYS)
    if set(args.only) - set(SCENARIO_KEYS):
        parser.error(f"--only: choose from {','.join(SCENARIO_KEYS)}")
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",")})
    except ValueError:
        parser.error("--concurrency: comma-separated numbers")
    if min(args.concurrency) < 1 or args.requests < max(args.concurrency):
        parser.error("need at least one client, and at least one request per client")
    if (
        args.sessions < 2 * PAGE
        or min(args.events, args.other_sessions, args.other_events, args.long_events) < 2
    ):
        parser.error(f"need at least {2 * PAGE} sessions and two events per session")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    data = make_data(args.sessions, args.events, args.other_sessions, args.other_events, args.long_events)
    warmup = min(50, max(5, args.requests // 20))
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hookdb-bench-api-")))
        _progress("starting PostgreSQL")
        admin_dsn, server = start_server(args.dsn, workdir, stack)
        if args.keep:
            dsn, seeded = kept_database(admin_dsn, args.keep, data)
        else:
            dsn = stack.enter_context(fresh_database(admin_dsn, "api", schema=False))
            migrate(dsn)
            _progress(f"seeding {sum(s.sessions * s.events for s in data.all()):,} events")
            seeded = run_asyncio(_seed(dsn, data))
        for item in args.db_set:
            name, _, value = item.partition("=")
            database = quote_ident(urlsplit(dsn).path.lstrip("/"))
            run_asyncio(_execute(dsn, f"ALTER DATABASE {database} SET {name} = {_literal(value)}"))
        info = server_info(admin_dsn)
        info.update(run_asyncio(_settings(dsn, ("work_mem", "random_page_cost", "jit", "plan_cache_mode"))))
        _progress("collecting page cursors")
        cursors = {key: run_asyncio(_cursors(dsn, params)) for key, params in WALKS.items()}
        long_middle = run_asyncio(_middle_events_cursor(dsn, OTHER, data.long.session_id(0), LONG_PAGE))
        api, url = stack.enter_context(running_api(dsn, workdir, args.pool_size))
        machine = Machine(api.proc.pid, run_asyncio(_postmaster(dsn)))
        _progress(f"hookdb api at {url}; checking its answers")
        checks = check_answers(url, data)
        for s in scenarios(data, args.requests, cursors, long_middle):
            if s.key not in args.only:
                continue
            levels = [s.only_concurrency] if s.only_concurrency else args.concurrency
            for clients in levels:
                for kind in s.drivers:
                    _progress(f"{s.label}: {kind}, {clients} client(s)")
                    job = Job(kind, s, url, dsn, s.requests or args.requests, warmup, 0, clients)
                    try:
                        runs.append(measure(job, machine))
                    except Exception:
                        print(f"hookdb api's log, the end:\n{api.output[-3000:]}", file=sys.stderr)
                        raise
                    api.check_alive()
        _progress("EXPLAIN")
        plans = run_asyncio(_explain_all(dsn, data, cursors, long_middle))
        api.check_alive()
    res: dict[str, Any] = {
        "environment": {
            "server": server,
            "postgres": info,
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
            "python": sys.version.split()[0],
            "pool_size": args.pool_size or 8,
            "db_set": args.db_set,
            "warmup": warmup,
        },
        "data": {
            "sessions": args.sessions,
            "events": args.events,
            "main_events": data.main_events,
            "other_sessions": args.other_sessions,
            "other_events": args.other_events,
            "long_events": args.long_events,
            **seeded,
        },
        "checks": checks,
        "runs": [r.summary() for r in runs],
        "plans": plans,
        "summary": summarize(runs, plans),
    }
    print(render(res, runs))
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(res), indent=2, default=str) + "\n")
    return 0


def kept_database(admin_dsn: str, name: str, data: Data) -> tuple[str, dict[str, Any]]:
    """The database ``hookdb_bench_api_<name>``, seeded with ``data`` once and kept for the next runs (its
    table ``bench_seeded`` holds what was seeded and how long it took); migrated to this hookdb each run."""
    database = f"hookdb_bench_api_{name}"
    dsn = urlsplit(admin_dsn)._replace(path=f"/{database}").geturl()
    wanted = repr(data)
    if run_asyncio(_fetchval(admin_dsn, "SELECT count(*) FROM pg_database WHERE datname = $1", database)):
        migrate(dsn)
        found = run_asyncio(_fetchval(dsn, "SELECT result FROM bench_seeded WHERE data = $1", wanted))
        if found is None:
            raise SystemExit(f"--keep {name}: {database} holds other data; drop it or choose another name")
        _progress(f"reusing {database}")
        return dsn, json.loads(found)
    run_asyncio(_execute(admin_dsn, f"CREATE DATABASE {quote_ident(database)}"))
    migrate(dsn)
    _progress(f"seeding {sum(s.sessions * s.events for s in data.all()):,} events into {database} (kept)")
    seeded = run_asyncio(_seed(dsn, data))
    run_asyncio(_execute(dsn, "CREATE TABLE bench_seeded (data text PRIMARY KEY, result text NOT NULL)"))
    run_asyncio(
        _fetchval(dsn, "INSERT INTO bench_seeded VALUES ($1, $2) RETURNING 1", wanted, json.dumps(seeded))
    )
    return dsn, seeded


async def _fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _settings(dsn: str, names: Sequence[str]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: str(await conn.fetchval(f"SHOW {name}")) for name in names}
    finally:
        await conn.close()


async def _postmaster(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        return local_postmaster(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
