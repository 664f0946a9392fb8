"""The Citus path: every tenant table can be distributed by ``tenant_id``.

Citus requires the distribution column in every primary key and unique index of a distributed table, and
foreign keys between distributed tables must include it too. ``schema_migrations`` is the one table
without tenants: under Citus it stays a local table on the coordinator. And a statement routes to one
shard when it names one tenant: every statement the collector sends to a tenant table does.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from pg import StoppablePostgres
from test_api import send_concurrently

from hookdb.client.wire import encode_envelope, frame, new_event_id

from conftest import migrate, run_sql, wait_for

LOCAL_TABLES = {"schema_migrations"}


def test_every_key_and_unique_index_includes_tenant_id(dsn: str) -> None:
    migrate(dsn)
    tables = {
        r["relname"]
        for r in run_sql(
            dsn,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
        )
    }
    assert tables - LOCAL_TABLES, "no tenant tables found"
    for table in sorted(tables - LOCAL_TABLES):
        columns = {
            r["attname"]
            for r in run_sql(
                dsn, f"SELECT attname FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0"
            )
        }
        assert "tenant_id" in columns, f"{table} has no tenant_id"
        keys = run_sql(
            dsn,
            "SELECT i.indexrelid::regclass::text AS name, i.indisprimary, "
            "array(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a "
            "      ON a.attrelid = i.indrelid AND a.attnum = k) AS columns "
            "FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique",
            table,
        )
        assert any(k["indisprimary"] for k in keys), f"{table} has no primary key"
        for key in keys:
            assert "tenant_id" in key["columns"], f"{table}: unique index {key['name']} lacks tenant_id"
        for fk in run_sql(
            dsn,
            "SELECT conname, array(SELECT a.attname FROM unnest(conkey) k JOIN pg_attribute a "
            "       ON a.attrelid = conrelid AND a.attnum = k) AS columns "
            "FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'",
            table,
        ):
            assert "tenant_id" in fk["columns"], f"{table}: foreign key {fk['conname']} lacks tenant_id"


# Every table a tenant's rows live in; a statement that reads or writes one must name exactly one tenant.
TENANT_TABLES = re.compile(
    r"\b(hook_audit_log|payload_blobs|sessions|reports|agent_states|usage_ledger|transcript_reads)\b"
)
DDL = re.compile(r"\s*(CREATE|ALTER|DROP|LOCK|COMMENT|GRANT|REVOKE)\b", re.IGNORECASE)
TENANTS = ("tenant_one", "tenant_two")
# log_line_prefix: the application name between @ signs, so the collector's own lines can be told apart.
ENTRY = re.compile(
    r"^@hookdb-collector@ (LOG|DETAIL):  (?:statement|execute [^:]+|[Pp]arameters): ", re.MULTILINE
)
YEAR_2010_NS = 1_262_304_000_000_000_000
TRANSCRIPT = Path(__file__).parent / "fixtures" / "claude-code-2.1.332" / "session-bash-write.jsonl"


class Statement(NamedTuple):
    text: str
    parameters: str  # as the server logged them, "" for none


def statements(log: str) -> list[Statement]:
    """The collector's statements in a server log written with ``log_statement = 'all'``."""
    found: list[Statement] = []
    marks = list(ENTRY.finditer(log))
    for mark, after in zip(marks, [*marks[1:], None], strict=True):
        body = log[mark.end() : after.start() if after else len(log)]
        body = body.split("\n@", 1)[0]  # up to the next line of any other session
        if mark[1] == "LOG":
            found.append(Statement(body.strip(), ""))
        elif found:
            found[-1] = found[-1]._replace(parameters=body.strip())
    return found


def tenant_event(tenant: str, session: str, event_type: str, payload: dict[str, Any], at_ns: int) -> bytes:
    return frame(
        encode_envelope(
            event_id=new_event_id(),
            occurred_at_ns=at_ns,
            source="claude-code",
            event_type=event_type,
            session_id=session,
            tenant=tenant,
            payload=msgspec.json.encode({"hook_event_name": event_type, "session_id": session, **payload}),
        )
    )


def test_every_statement_the_collector_sends_names_a_single_tenant(
    private_pg: StoppablePostgres, start_collector: Any, socket_path: Path, tmp_path: Path
) -> None:
    """Under Citus each would route to the one shard of its tenant: batches of two tenants interleaved,
    with every projection (sessions, reports, agent states, blobs, the usage ledger, a partition made)."""
    dsn = private_pg.dsn
    migrate(dsn)
    for setting in ("log_statement = 'all'", "log_line_prefix = '@%a@ '", "log_parameter_max_length = -1"):
        run_sql(dsn, f"ALTER SYSTEM SET {setting}")
    run_sql(dsn, "SELECT pg_reload_conf()")
    uid = os.getuid()
    collector = start_collector(
        "--dsn", dsn, "--set", f'tenants.uids={{"{uid}" = {list(TENANTS)!r}}}'.replace("'", '"'),
        "--set", "batch.linger_seconds=0.2", use_dsn=False,
    )  # fmt: skip
    frames = []
    now = time.time_ns()
    for n, tenant in enumerate(TENANTS):
        work = tmp_path / tenant
        (work / "reports").mkdir(parents=True)
        (work / "state").mkdir()
        report = work / "reports" / "summary.md"
        report.write_text("# Summary\n\nQA score: 90\n")
        (work / "state" / "agent.json").write_text('{"qa_score": 80}')
        transcript = work / "transcript.jsonl"
        shutil.copy(TRANSCRIPT, transcript)
        common = {"cwd": str(work), "transcript_path": str(transcript)}
        write = {
            "tool_name": "Write",
            "tool_input": {"file_path": str(report), "content": report.read_text()},
        }
        for session in (f"s{n}a", f"s{n}b"):
            frames += [
                tenant_event(tenant, session, "SessionStart", {**common, "model": "claude-opus-4-5"}, now),
                tenant_event(tenant, session, "PostToolUse", {**common, **write}, now + 1000),
                tenant_event(tenant, session, "PostToolUse", {"big": "x" * 9000}, now + 2000),
                tenant_event(
                    tenant, session, "SubagentStart", {"agent_id": "a1", "agent_type": "x"}, now + 3000
                ),
                tenant_event(tenant, session, "SubagentStop", {**common, "agent_id": "a1"}, now + 4000),
                tenant_event(tenant, session, "Stop", common, now + 5000),
                tenant_event(tenant, session, "SessionEnd", {**common, "reason": "exit"}, now + 6000),
                tenant_event(
                    tenant, session, "Notification", {}, 1_262_304_000_000_000_000
                ),  # 2010: no partition
            ]
    random.Random(0).shuffle(frames)  # the tenants' events interleaved in every batch
    send_concurrently(socket_path, [frames])
    wait_for(lambda: run_sql(dsn, "SELECT count(*) FROM hook_audit_log")[0][0] == len(frames), 30)
    wait_for(lambda: run_sql(dsn, "SELECT count(*) FROM usage_ledger")[0][0] > 0, 30)
    assert collector.stop() == 0
    checked: dict[str, set[str]] = {}
    log = private_pg.server.log.read_text()
    (tmp_path / "server.log").write_text(log)  # kept for a failure's diagnosis
    for statement in statements(log):
        tables = set(TENANT_TABLES.findall(statement.text))
        if not tables or DDL.match(statement.text):
            continue
        named = {t for t in TENANTS if f"'{t}'" in statement.parameters or f"{t}," in statement.parameters}
        named |= {t for t in TENANTS if f",{t}" in statement.parameters or f"{{{t}}}" in statement.parameters}
        assert "tenant_id" in statement.text, f"not keyed by tenant: {statement.text[:300]}"
        assert len(named) == 1, f"{sorted(named)} in {statement.text[:300]} / {statement.parameters[:300]}"
        for table in tables:
            checked.setdefault(table, set()).update(named)
    # Every tenant table the write path touches was seen, for both tenants.
    expected = {"hook_audit_log", "payload_blobs", "sessions", "reports", "usage_ledger", "transcript_reads"}
    assert {t for t, named in checked.items() if named == set(TENANTS)} >= expected, checked
