"""Every query the read API sends names its tenant (``tenant_id = $n`` on every table it reads, besides
row-level security), so under Citus, distributed by ``tenant_id``, each one routes to a single shard.

A private PostgreSQL logs every statement (``log_statement = 'all'``, as JSON lines) while a real ``hookdb
api`` answers list (filtered, paged, searched), detail, timeline, export, stats, usage and stream requests;
then each statement that reads a tenant table is planned again (``EXPLAIN (GENERIC_PLAN)``, as a superuser
so row-level security adds nothing) and every scan of a tenant table must be bounded by a tenant
condition of its own, explicit or implied by the query's equalities.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import seed
from test_api import TOKENS, all_pages, client, write_seed

from conftest import migrate, run_sql, wait_for

TENANT_CONDITION = re.compile(r"\btenant_id = (\$\d+|'[^']*'::text)")
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan", "Tid Range Scan"}


@pytest.fixture
def logging_pg(private_pg: Any) -> Any:
    """The private server, restarted to write its log as JSON lines into ``jsonlog/`` of its data
    directory."""
    for setting in ("logging_collector = on", "log_destination = 'jsonlog'", "log_directory = 'jsonlog'"):
        run_sql(private_pg.dsn, f"ALTER SYSTEM SET {setting}")
    private_pg.stop()
    private_pg.start()
    return private_pg


def logged_statements(server: Any, application: str) -> list[str]:
    """The statements ``application`` sent (simple and extended protocol), as the server logged them."""
    found = []
    for path in sorted(Path(server.server.pgdata, "jsonlog").glob("*.json")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("application_name") != application:
                continue
            message = entry.get("message", "")
            match = re.match(r"(?:statement|execute [^:]*): (.*)", message, re.S)
            if match:
                found.append(match.group(1))
    return found


def scans(plan: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every scan of a relation in ``plan`` with the conditions that bound it (a bitmap heap scan's include
    those of its index scans)."""
    stack = [plan]
    while stack:
        node = stack.pop()
        children = node.get("Plans", [])
        stack.extend(children)
        if node["Node Type"] in SCANS:
            conditions = [node.get(key, "") for key in ("Index Cond", "Filter", "Recheck Cond", "TID Cond")]
            below = list(children)
            while below:
                child = below.pop()
                conditions.append(child.get("Index Cond", ""))
                below.extend(child.get("Plans", []))
            yield node, " ".join(conditions)


_EXPLAIN_FUNCTION = """
CREATE FUNCTION pg_temp.generic_plan(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    plan text;
BEGIN
    EXECUTE 'EXPLAIN (GENERIC_PLAN, FORMAT JSON) ' || statement INTO plan;
    RETURN plan;
END
$$
"""


async def _unrouted(dsn: str, statements: list[str], tables: set[str]) -> tuple[list[str], set[str]]:
    conn = await asyncpg.connect(dsn)
    problems: list[str] = []
    scanned: set[str] = set()
    try:
        # Through plpgsql's EXECUTE, so the statement's $n stay parameters of a generic plan.
        await conn.execute(_EXPLAIN_FUNCTION)
        for sql in statements:
            if not re.match(r"\s*(SELECT|WITH)\b", sql, re.I) or not any(t in sql for t in tables):
                continue  # BEGIN, SET LOCAL ROLE, set_config, snapshots, the catalog checks: no tenant table
            [plan] = json.loads(await conn.fetchval("SELECT pg_temp.generic_plan($1)", sql))
            for node, conditions in scans(plan["Plan"]):
                relation = node.get("Relation Name", "")
                if relation not in tables:
                    continue
                scanned.add(relation)
                if not TENANT_CONDITION.search(conditions):
                    problems.append(
                        f"{relation} scanned without a tenant condition ({conditions!r}) in:\n{sql}"
                    )
    finally:
        await conn.close()
    return problems, scanned


def test_every_api_query_names_its_tenant(logging_pg: Any, start_api: Any) -> None:
    dsn = logging_pg.dsn
    if run_sql(dsn, "SELECT current_setting('server_version_num')::int AS v")[0]["v"] < 160000:
        pytest.skip("EXPLAIN (GENERIC_PLAN) needs PostgreSQL 16")
    migrate(dsn)
    write_seed(dsn, seed.Seed("acme", 60), seed.Seed("beta", 10))
    run_sql(
        dsn,
        "INSERT INTO search_docs (tenant_id, session_id, doc_key, at, kinds, ends, body) "
        "SELECT tenant_id, session_id, sha256(convert_to(session_id, 'UTF8')), started_at, '{prompt}', "
        "ARRAY[length('polish the ' || session_id)], 'polish the ' || session_id FROM sessions",
    )
    run_sql(
        dsn,
        "INSERT INTO usage_ledger (tenant_id, session_id, request_id, agent, model, input_tokens, "
        "output_tokens, cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cost_usd, "
        "cost_source, at, sources) SELECT tenant_id, session_id, 'r1', 'main', model, 10, 1, 0, 0, 0, 0.01, "
        "'reported', started_at, '{transcript}' FROM sessions",
    )
    run_sql(dsn, "ALTER ROLE CURRENT_USER SET log_statement = 'all'")
    api = start_api(dsn, TOKENS)
    session = "s-000007"
    since = (seed.BASE - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with client(api) as http:
        lists = [
            {"limit": 7},
            {"limit": 7, "status": ["completed", "failed"], "model": seed.MODELS[0]},
            {"limit": 5, "agent_type": "main", "project": "3", "cost_min": "0.01", "cost_max": "1"},
            {"limit": 9, "started_after": since, "started_before": "2100-01-01T00:00:00Z"},
            {"limit": 9, "q": "polish"},
            {"limit": 4, "q": "polish", "status": "completed", "model": seed.MODELS[1]},
        ]
        for params in lists:
            all_pages(http, **params)
        for path in [
            f"/api/sessions/{session}",
            f"/api/sessions/{session}/export?format=json",
            f"/api/sessions/{session}/export?format=md",
            f"/api/sessions/stats?from={since}",
            *(f"/api/usage?group={group}&from={since}" for group in ("day", "model", "project", "agent")),
        ]:
            assert http.get(path).status_code == 200, path
        all_pages(http, f"/api/sessions/{session}/events", limit=3)
        with http.stream("GET", "/api/sessions/stream") as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            run_sql(
                dsn,
                "UPDATE sessions SET status = 'ended' WHERE tenant_id = 'acme' AND session_id = $1",
                session,
            )
            deadline = time.monotonic() + 20
            while not next(lines).startswith("event: session"):
                assert time.monotonic() < deadline
    run_sql(dsn, "ALTER ROLE CURRENT_USER RESET log_statement")

    tables = {
        r["relname"]
        for r in run_sql(
            dsn,
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attname = 'tenant_id'",
        )
    }  # with every partition of hook_audit_log
    # The feed's card lookup is the last statement sent: once it is logged, all are.
    wait_for(lambda: any("session_id = ANY" in s for s in logged_statements(logging_pg, "hookdb-api")))
    statements = sorted(set(logged_statements(logging_pg, "hookdb-api")))
    problems, scanned = asyncio.run(_unrouted(dsn, statements, tables))
    assert not problems, "\n\n".join(problems)
    assert {"sessions", "search_docs", "reports", "agent_states", "usage_ledger", "payload_blobs"} <= scanned
    assert any(t.startswith("hook_audit_log_") for t in scanned)
