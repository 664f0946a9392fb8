"""Delivery faults that are neither bad data nor an outage: a row PostgreSQL refuses outside classes 22/23
(isolated and dead-lettered, everyone else delivered), an event with no partition for its time (the
partition is created, nothing dead-lettered), and the writer's role taken per transaction.

Real PostgreSQL, real collector processes and sockets; the sink test drives ``PostgresSink`` in-process.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio_asyncio

from hookdb.client.wire import encode_envelope, frame, new_event_id
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row
from hookdb.collector.store.sink import PostgresSink

from conftest import Collector, run_sql, wait_for, wait_for_rows

TENANTS = ("alpha", "beta")


def event(
    event_id: str,
    tenant: str,
    *,
    session: str = "s",
    event_type: str = "Notification",
    occurred_at_ns: int | None = None,
    payload: bytes = b"{}",
) -> bytes:
    return frame(
        encode_envelope(
            event_id=event_id,
            occurred_at_ns=time.time_ns() if occurred_at_ns is None else occurred_at_ns,
            source="app",
            event_type=event_type,
            session_id=session,
            tenant=tenant,
            payload=payload,
        )
    )


def send(path: Path, frames: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b"".join(frames))


def stored(dsn: str) -> dict[str, str]:
    """event id → tenant of every stored event."""
    return {str(r[0]): r[1] for r in run_sql(dsn, "SELECT event_id, tenant_id FROM hook_audit_log")}


def dead_letters(state: Path) -> list[dict]:
    path = state / "deadletter" / "deadletter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(collector: Collector) -> None:
    if collector.proc.poll() is not None:
        pytest.fail(f"collector exited with {collector.proc.returncode}:\n{collector.output[-5000:]}")


def start(start_collector) -> Collector:  # type: ignore[no-untyped-def]
    return start_collector(
        "--set",
        f'tenants.uids={{{os.getuid()} = ["alpha", "beta"]}}',
        "--set",
        "batch.linger_seconds=0.5",
    )


def refuse_session_with(dsn: str, session: str, sqlstate: str) -> None:
    """A trigger that refuses one session's events with ``sqlstate``: the same error at every attempt."""
    run_sql(
        dsn,
        f"""
        CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.session_id = '{session}' THEN
                RAISE EXCEPTION 'refused for the test' USING ERRCODE = '{sqlstate}';
            END IF;
            RETURN NEW;
        END $$""",
    )
    run_sql(
        dsn,
        "CREATE TRIGGER refuse_one BEFORE INSERT ON hook_audit_log "
        "FOR EACH ROW EXECUTE FUNCTION refuse_one()",
    )


@pytest.mark.parametrize("sqlstate", ["54000", "P0001"])
def test_a_row_refused_outside_22_23_is_dead_lettered_and_every_other_event_of_every_tenant_lands(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path, sqlstate: str
) -> None:
    collector = start(start_collector)
    refuse_session_with(dsn, "refused", sqlstate)
    ids = {tenant: [new_event_id() for _ in range(30)] for tenant in TENANTS}
    bad = ids["alpha"][11]
    frames = [
        event(i, tenant, session="refused" if i == bad else f"s-{tenant}")
        for pair in zip(*(ids[t] for t in TENANTS), strict=True)
        for i, tenant in zip(pair, TENANTS, strict=True)
    ]
    send(socket_path, frames)  # one burst: one batch holding both tenants

    assert wait_for_rows(dsn, 59, timeout=30) == 59
    rows = stored(dsn)
    assert set(rows) == {i for t in TENANTS for i in ids[t]} - {bad}
    assert sorted(rows.values()).count("beta") == 30
    wait_for(lambda: dead_letters(tmp_path / "state"), 10)
    letters = dead_letters(tmp_path / "state")
    assert [(letter["event_id"], letter["sqlstate"]) for letter in letters] == [(bad, sqlstate)]
    alive(collector)

    # Delivery goes on: the breaker is not left open by a row's fault.
    later = [new_event_id() for _ in range(5)]
    send(socket_path, [event(i, "beta") for i in later])
    assert wait_for_rows(dsn, 64, timeout=30) == 64
    assert set(later) <= set(stored(dsn))
    assert not [e for e in collector.events("breaker.transition") if e["to_state"] == "open"]


def test_a_report_path_too_long_for_its_key_costs_only_its_own_event(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    # 3,000 characters overflow a btree key (54000 on reports_pkey) unless the schema hashes or caps keys:
    # either way the event is stored or dead-lettered, never retried forever, and the others land.
    collector = start(start_collector)
    path = "/w/reports/" + secrets.token_hex(1500) + ".md"  # incompressible: index tuples are compressed
    long_report = new_event_id()
    write = {"tool_name": "Write", "tool_input": {"file_path": path, "content": "QA score: 90"}}
    others = [new_event_id() for _ in range(20)]
    frames = [event(i, "beta") for i in others[:10]]
    frames.append(event(long_report, "alpha", event_type="PostToolUse", payload=json.dumps(write).encode()))
    frames += [event(i, "alpha") for i in others[10:]]
    send(socket_path, frames)

    def settled() -> bool:
        alive(collector)
        rows, letters = stored(dsn), dead_letters(tmp_path / "state")
        return set(others) <= set(rows) and (long_report in rows or bool(letters))

    wait_for(settled, 30)
    rows, letters = stored(dsn), dead_letters(tmp_path / "state")
    assert len(rows) + len(letters) == 21  # nothing lost, nothing twice
    assert all(letter["event_id"] == long_report for letter in letters)


@pytest.mark.parametrize("default", ["detached", "dropped"])
def test_an_event_whose_month_has_no_partition_lands_once_the_collector_creates_one(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path, default: str
) -> None:
    collector = start(start_collector)
    run_sql(dsn, "ALTER TABLE hook_audit_log DETACH PARTITION hook_audit_log_default")
    if default == "dropped":
        run_sql(dsn, "DROP TABLE hook_audit_log_default")
    future = datetime(2031, 5, 15, 12, tzinfo=UTC)
    later = new_event_id()
    now = [new_event_id() for _ in range(10)]
    frames = [event(i, "alpha") for i in now[:5]]
    frames.append(event(later, "beta", occurred_at_ns=int(future.timestamp()) * 10**9))
    frames += [event(i, "alpha") for i in now[5:]]
    send(socket_path, frames)

    assert wait_for_rows(dsn, 11, timeout=30) == 11
    assert set(stored(dsn)) == {*now, later}
    assert dead_letters(tmp_path / "state") == []
    where = run_sql(
        dsn, "SELECT tableoid::regclass::text FROM hook_audit_log WHERE event_id = $1", uuid.UUID(later)
    )
    assert where[0][0] == "hook_audit_log_y2031m05"
    # This month's partition was there all along: no default partition made up for it.
    gone = run_sql(dsn, "SELECT to_regclass('hook_audit_log_default') IS NULL")[0][0]
    assert gone is (default == "dropped")
    assert collector.events("partition.created")
    alive(collector)


def test_the_sink_takes_its_role_per_transaction_and_leaves_the_session_as_it_was(dsn: str) -> None:
    # A transaction pooler hands the server session to other clients between transactions: a role set
    # with SET ROLE would stay with it. Inside the write RLS applies as hookdb_writer; after it, nothing.
    now = datetime.now(UTC)
    rows = [
        Row(tenant, uuid.uuid4(), now, now, "s", "Stop", None, "app", None, None, None, b"{}")
        for tenant in TENANTS
    ]

    async def write() -> tuple[int, str, str]:
        async with trio_asyncio.open_loop():
            sink = await PostgresSink.connect(ConnectOptions(dsn=dsn, application_name="test-sink"))
            try:
                await trio_asyncio.aio_as_trio(sink._conn.execute)(
                    """
                    CREATE TABLE seen_as (who text, role_setting text);
                    GRANT INSERT ON seen_as TO hookdb_writer;
                    CREATE FUNCTION note_role() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        INSERT INTO seen_as VALUES (current_user, current_setting('role'));
                        RETURN NEW;
                    END $$;
                    CREATE TRIGGER note_role BEFORE INSERT ON hook_audit_log
                        FOR EACH ROW EXECUTE FUNCTION note_role();
                    """
                )
                inserted = await sink.write(rows)
                after = await trio_asyncio.aio_as_trio(sink._conn.fetchrow)(
                    "SELECT current_user::text AS who, current_setting('role') AS role_setting"
                )
                return inserted, after["who"], after["role_setting"]
            finally:
                await sink.aclose()

    inserted, who, role_setting = trio.run(write)
    assert inserted == 2
    assert (who, role_setting) != ("hookdb_writer", "hookdb_writer")  # the session is the login's again
    assert role_setting == "none"
    assert [tuple(r) for r in run_sql(dsn, "SELECT who, role_setting FROM seen_as")] == [
        ("hookdb_writer", "hookdb_writer")
    ] * 2
    assert {r[0] for r in run_sql(dsn, "SELECT tenant_id FROM hook_audit_log")} == set(TENANTS)
