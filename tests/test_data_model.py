"""The data model on a real PostgreSQL: tenancy by row-level security, projections of a recorded session,
migrations against schema.sql, the classification tables, and bounded storage for big payloads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from test_collector import send_concurrently

from hookdb.client.wire import encode_envelope, frame, new_event_id
from hookdb.collector import classification
from hookdb.collector.store import projections
from hookdb.collector.store.migrate import migrations

from conftest import run_sql, wait_for, wait_for_rows

SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"
TABLES = ("hook_audit_log", "payload_blobs", "sessions", "reports", "agent_states")


def event(
    event_type: str,
    payload: dict[str, Any],
    *,
    session: str = "s1",
    tenant: str | None = None,
    at_ns: int | None = None,
) -> bytes:
    return frame(
        encode_envelope(
            event_id=new_event_id(),
            occurred_at_ns=at_ns or time.time_ns(),
            source="claude-code",
            event_type=event_type,
            session_id=session,
            tenant=tenant,
            payload=msgspec.json.encode({"hook_event_name": event_type, "session_id": session, **payload}),
        )
    )


async def _as_role(dsn: str, role: str, tenant: str | None, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {role}")
            if tenant is not None:
                await conn.execute("SELECT set_config('hookdb.tenant', $1, true)", tenant)
            return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def as_role(dsn: str, role: str, tenant: str | None, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_as_role(dsn, role, tenant, sql, *args))


def test_tenants_are_isolated_by_row_level_security(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector("--set", f'tenants.uids={{{os.getuid()} = ["alpha", "beta"]}}')
    frames = [event("SessionStart", {"model": "m"}, session=f"{t}-s", tenant=t) for t in ("alpha", "beta")]
    frames += [event("Stop", {}, session=f"{t}-s", tenant=t) for t in ("alpha", "beta")]
    send_concurrently(socket_path, [frames])
    assert wait_for_rows(dsn, 4) == 4
    for table in TABLES:
        everything = as_role(dsn, "hookdb_reader", None, f"SELECT count(*) FROM {table}")[0][0]
        assert everything == 0, f"{table} visible without a tenant"
        alpha = as_role(dsn, "hookdb_reader", "alpha", f"SELECT DISTINCT tenant_id FROM {table}")
        assert {r[0] for r in alpha} <= {"alpha"}
    assert as_role(dsn, "hookdb_reader", "alpha", "SELECT count(*) FROM hook_audit_log")[0][0] == 2
    assert as_role(dsn, "hookdb_reader", "alpha", "SELECT session_id FROM sessions")[0][0] == "alpha-s"

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        as_role(
            dsn,
            "hookdb_writer",
            "alpha",
            "INSERT INTO sessions (tenant_id, session_id, status, started_at, updated_at) "
            "VALUES ('beta', 'forged', 'running', now(), now())",
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        as_role(dsn, "hookdb_reader", "alpha", "DELETE FROM sessions")


def test_a_recorded_session_becomes_sessions_reports_and_agent_states(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    cwd = tmp_path / "project"
    (cwd / "reports").mkdir(parents=True)
    (cwd / "state").mkdir()
    report = cwd / "reports" / "summary-q3.md"
    report_text = "# Q3 summary\n\nRevenue grew 12 percent; churn fell.\n"
    report.write_text(report_text)
    (cwd / "state" / "researcher.json").write_text('{"step": 3, "done": ["a", "b"]}')
    (cwd / "state" / "notes.txt").write_text("not a state file")
    start_collector()
    base = time.time_ns()
    common = {"cwd": str(cwd), "transcript_path": str(tmp_path / "t.jsonl")}
    write_input = {"file_path": str(report), "content": report_text}
    session = [
        event("SessionStart", {**common, "source": "startup", "model": "claude-sonnet-4-5"}, at_ns=base),
        event("UserPromptSubmit", {**common, "prompt": "Write the Q3 summary"}, at_ns=base + 1000),
        event("PreToolUse", {**common, "tool_name": "Write", "tool_input": write_input}, at_ns=base + 2000),
        event(
            "PostToolUse",
            {
                **common,
                "tool_name": "Write",
                "tool_input": write_input,
                "tool_response": {"filePath": str(report), "success": True},
            },
            at_ns=base + 3000,
        ),
        event("SubagentStart", {**common, "agent_id": "a1", "agent_type": "researcher"}, at_ns=base + 4000),
        event("SubagentStop", {**common, "agent_id": "a1", "agent_type": "researcher"}, at_ns=base + 5000),
        event("Stop", {**common, "stop_hook_active": False}, at_ns=base + 6000),
        event("SessionEnd", {**common, "reason": "prompt_input_exit"}, at_ns=base + 7000),
    ]
    send_concurrently(socket_path, [session])
    assert wait_for_rows(dsn, len(session)) == len(session)
    s = wait_for(
        lambda: (r := run_sql(dsn, "SELECT * FROM sessions")) and r[0]["status"] == "ended" and r[0], 30
    )
    assert (s["session_id"], s["model"], s["source"], s["cwd"]) == (
        "s1",
        "claude-sonnet-4-5",
        "startup",
        str(cwd),
    )
    assert (s["event_count"], s["subagent_count"], s["report_count"]) == (8, 1, 1)
    assert s["ended_at"] is not None
    assert s["started_at"] <= s["ended_at"]
    meta = json.loads(s["meta"])
    assert meta["end_reason"] == "prompt_input_exit"
    assert (meta["report_count"], meta["subagent_count"], meta["word_count"]) == (
        1,
        1,
        len(report_text.split()),
    )

    r = run_sql(dsn, "SELECT * FROM reports")[0]
    assert (r["path"], r["report_type"], r["content"]) == (str(report), "summary", report_text)
    assert r["sha256"] == hashlib.sha256(report_text.encode()).hexdigest()
    states = run_sql(dsn, "SELECT agent_id, agent_type, path, content, sha256 FROM agent_states")
    assert [(x["agent_id"], x["agent_type"], Path(x["path"]).name) for x in states] == [
        ("a1", "researcher", "researcher.json")
    ]
    assert states[0]["sha256"] == hashlib.sha256(states[0]["content"].encode()).hexdigest()

    send_concurrently(socket_path, [session])  # redelivered: nothing counts twice
    time.sleep(1.0)
    assert run_sql(dsn, "SELECT event_count, subagent_count FROM sessions")[0][:] == (8, 1)


def test_50_concurrent_first_events_make_one_session(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    frames = [[event("PreToolUse", {"tool_name": "Bash", "i": i}, session="burst")] for i in range(50)]
    send_concurrently(socket_path, frames)  # 50 clients at once, each with a first event of the session
    assert wait_for_rows(dsn, 50) == 50
    wait_for(lambda: run_sql(dsn, "SELECT sum(event_count) FROM sessions")[0][0] == 50, 30)
    assert run_sql(dsn, "SELECT count(*), min(status) FROM sessions")[0][:] == (1, "running")


def test_a_batch_of_old_and_repeated_events_counts_each_new_event_once(
    start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector("--set", "batch.linger_seconds=0.5")
    first = [event("PreToolUse", {"tool_name": "Bash", "i": i}, session="again") for i in range(5)]
    send_concurrently(socket_path, [first])
    assert wait_for_rows(dsn, 5) == 5
    fresh = [event("PreToolUse", {"tool_name": "Read", "i": i}, session="again") for i in range(4)]
    # Redelivered events (already stored) and one new event twice (sent again after a lost ack), one batch.
    send_concurrently(socket_path, [[*first[:3], *fresh, fresh[0]]])
    assert wait_for_rows(dsn, 9) == 9
    wait_for(lambda: run_sql(dsn, "SELECT event_count FROM sessions")[0][0] >= 9, 30)
    time.sleep(1)  # any miscount would have landed by now
    assert run_sql(dsn, "SELECT event_count FROM sessions")[0][0] == 9


def test_files_not_owned_by_the_sender_are_not_read(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
):
    secret = tmp_path / "reports" / "secret.md"
    secret.parent.mkdir()
    secret.write_text("someone else's words")
    os.chown(secret, 12345, 12345)
    start_collector()
    write_input = {"file_path": str(secret)}  # an Edit carries no content: only the disk could give it
    send_concurrently(socket_path, [[event("PostToolUse", {"tool_name": "Edit", "tool_input": write_input})]])
    assert wait_for_rows(dsn, 1) == 1
    time.sleep(0.5)
    assert run_sql(dsn, "SELECT count(*) FROM reports")[0][0] == 0


def catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """The parts of the catalog a schema is made of, in a comparable form."""
    queries = {
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, "
        "is_generated, generation_expression "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "ORDER BY 1, 2",
        "policies": "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies ORDER BY 1, 2",
        "rls": "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') ORDER BY 1",
        "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
        "WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
        "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE NOT tgisinternal ORDER BY 1, 2",
        "types": "SELECT t.typname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_type t "
        "JOIN pg_class c ON c.oid = t.typrelid JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE t.typnamespace = 'public'::regnamespace AND c.relkind = 'c' ORDER BY 1, 2",
        "storage": "SELECT c.relname, a.attname, a.attstorage FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND a.attstorage <> t.typstorage "
        "ORDER BY 1, 2",
        "grants": "SELECT table_name, grantee, privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = 'public' AND grantee LIKE 'hookdb%' ORDER BY 1, 2, 3",
    }
    return {name: [tuple(r) for r in run_sql(dsn, sql)] for name, sql in queries.items()}


def test_migrations_build_exactly_schema_sql(pg_server: str, dsn: str) -> None:
    from conftest import _with_database

    other = "hookdb_schema_" + new_event_id().replace("-", "")[:12]
    run_sql(pg_server, f'CREATE DATABASE "{other}"')
    try:
        fresh = _with_database(pg_server, other)

        async def apply_schema() -> None:
            conn = await asyncpg.connect(fresh)
            try:
                await conn.execute(SCHEMA.read_text())
                for m in migrations():  # schema.sql is the state after all of them
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
            finally:
                await conn.close()

        asyncio.run(apply_schema())
        assert run_hookdb("migrate", "--dsn", dsn).returncode == 0
        assert catalog(dsn) == catalog(fresh)
    finally:
        run_sql(pg_server, f'DROP DATABASE "{other}" WITH (FORCE)')


def run_hookdb(*args: str) -> Any:
    import subprocess

    from conftest import BIN

    return subprocess.run(
        [str(BIN / "hookdb"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_migrate_twice_and_concurrently_is_safe_and_edits_are_refused(dsn: str) -> None:
    import subprocess

    from conftest import BIN

    runs = [
        subprocess.Popen(
            [str(BIN / "hookdb"), "migrate", "--dsn", dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    assert [p.wait(120) for p in runs] == [0, 0, 0]
    assert run_hookdb("migrate", "--dsn", dsn).returncode == 0
    applied = run_sql(dsn, "SELECT version, count(*) FROM schema_migrations GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in applied] == [(m.version, 1) for m in migrations()]

    run_sql(dsn, "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    edited = run_hookdb("migrate", "--dsn", dsn)
    assert edited.returncode != 0
    assert "was changed after it was applied" in edited.stderr

    run_sql(dsn, "UPDATE schema_migrations SET checksum = $1 WHERE version = 1", migrations()[0].checksum)
    run_sql(dsn, "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future.sql', 'x')")
    newer = run_hookdb("migrate", "--dsn", dsn)
    assert newer.returncode != 0
    assert "newer than this hookdb knows" in newer.stderr


def test_the_collector_refuses_a_newer_schema(start_collector, dsn: str) -> None:
    assert run_hookdb("migrate", "--dsn", dsn).returncode == 0
    run_sql(dsn, "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future.sql', 'x')")
    collector = start_collector(wait=False)
    assert collector.proc.wait(60) == 1
    assert "newer than this hookdb knows" in collector.output


def test_classification_and_handlers_stay_in_sync() -> None:
    """The seed's B1: every configured event has a handler, every handler is configured."""
    assert set(classification.HANDLED_EVENTS.values()) == set(projections.HANDLERS)
    assert set(classification.EVENT_STATUS.values()) <= classification.VALID_SESSION_STATUSES
    assert classification.INITIAL_STATUS in classification.VALID_SESSION_STATUSES
    assert {kind for _, kind in classification.REPORT_PATTERNS} <= classification.VALID_REPORT_TYPES
    for event_type in classification.EVENT_STATUS:
        assert classification.HANDLED_EVENTS[event_type] in ("status", "session_start", "session_end")
    assert projections.report_type("/p/reports/q3/summary-1.md") == "summary"
    assert projections.report_type("/p/reports/notes.md") == "report"
    assert projections.report_type("/p/src/reports.md") is None


def storage(dsn: str) -> int:
    sql = (
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
        "AND (c.relname LIKE 'hook_audit_log%' OR c.relname = 'payload_blobs')"
    )
    run_sql(dsn, "CHECKPOINT")
    return int(run_sql(dsn, sql)[0][0])


def test_a_repeated_big_field_is_stored_once(start_collector, socket_path: Path, dsn: str) -> None:
    big = base64.b64encode(os.urandom(375_000)).decode()  # 500 KB that no compression can shrink
    start_collector()

    def send(n: int, first: int) -> None:
        frames = [
            event("PostToolUse", {"tool_name": "Read", "i": i, "tool_response": {"file": {"base64": big}}})
            for i in range(first, first + n)
        ]
        send_concurrently(socket_path, [frames])

    empty = storage(dsn) if run_sql(dsn, "SELECT to_regclass('payload_blobs')")[0][0] else 0
    send(1, 0)
    wait_for_rows(dsn, 1)
    one = storage(dsn) - empty
    send(99, 1)
    wait_for_rows(dsn, 100)
    hundred = storage(dsn) - empty
    print(f"\nstorage: 1 event {one} bytes, 100 events {hundred} bytes ({hundred / one:.2f}x)")
    assert hundred < 3 * one
    restored = run_sql(
        dsn, "SELECT hookdb_payload(tenant_id, payload) #>> '{tool_response,file,base64}' FROM hook_audit_log"
    )
    assert {r[0] for r in restored} == {big}
