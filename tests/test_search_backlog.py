"""Search documents deferred while delivery is behind (``store/search_backlog.py``): queued in the batch's
transaction, made by an idle writer with the same text as live capture makes, counted by the read API
meanwhile, picked up by the next collector after a stop, and a refused row costing only its documents. Real
collectors, delivery processes, PostgreSQL and ``hookdb api``."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
from test_collector import send_concurrently
from test_data_model import event
from test_faults import scrape
from test_search import TOKENS, WORD, http, search, tool_call

from hookdb.collector import classification as cls
from hookdb.collector.delivery.pipeline import SearchDeferral
from hookdb.collector.store import blobs, search_backlog
from hookdb.collector.store import search as store_search
from hookdb.collector.store.projections import decode_call_fields, payload_decoder, project
from hookdb.collector.store.rows import Row

from conftest import count_rows, migrate, run_sql, wait_for, wait_for_rows

TENANTS = f'tenants.uids={{{os.getuid()} = ["alpha", "beta"]}}'
SEARCHED = sorted(cls.SEARCH_FIELDS)


def frames(now: int) -> list[list[bytes]]:
    """alpha's session (a prompt, a Bash call whose output holds WORD, U+0000 and a large string that is
    stored as a blob, a reply) and beta's (a prompt, a call)."""
    output = {"stdout": f"start {WORD}\x00after nul\n" + "lorem ipsum dolor " * 40_000, "stderr": ""}
    alpha = [
        event("UserPromptSubmit", {"prompt": "Why does the nightly build fail?"}, session="a-1",
              tenant="alpha", at_ns=now),
        *tool_call("a-1", "alpha", "make test", output, now + 10_000_000),
        event("Stop", {"last_assistant_message": "The flux capacitors were unplugged."}, session="a-1",
              tenant="alpha", at_ns=now + 30_000_000),
    ]  # fmt: skip
    beta = [
        event(
            "UserPromptSubmit", {"prompt": "Tune the glockenspiel"}, session="b-1", tenant="beta", at_ns=now
        ),
        *tool_call("b-1", "beta", "make tune", {"stdout": "all notes in tune\n"}, now + 10_000_000),
    ]
    return [alpha, beta]


def expected_parts(per_client: list[list[bytes]]) -> list[tuple[str, str, str, str]]:
    """(tenant, session, kind, text) of every part live capture makes of these frames' events."""
    out = []
    for frames_ in per_client:
        for frame_ in frames_:
            envelope = msgspec.msgpack.decode(frame_[4:])
            payload = json.loads(envelope["payload"])
            kind, name = cls.SEARCH_FIELDS[envelope["event_type"]]
            limit = store_search.TOOL_CHARS if kind.startswith("tool") else store_search.MAX_CHARS
            text = store_search.text(payload.get(name), limit)
            out.append((envelope["tenant"], envelope["session_id"], kind, text))
    return sorted(out)


def stored_parts(dsn: str) -> list[tuple[str, str, str, str]]:
    """(tenant, session, kind, text) of every part of the stored search documents but the reports'."""
    out = []
    for doc in run_sql(dsn, "SELECT * FROM search_docs WHERE kinds <> ARRAY['report']"):
        starts = [0, *(end + 1 for end in doc["ends"][:-1])]
        for kind, start, end in zip(doc["kinds"], starts, doc["ends"], strict=True):
            out.append((doc["tenant_id"], doc["session_id"], kind, doc["body"][start:end]))
    return sorted(out)


def backlog_events(dsn: str) -> int:
    sql = "SELECT coalesce(sum(cardinality(event_ids)), 0)::int AS n FROM search_backlog"
    return run_sql(dsn, sql)[0]["n"]


def test_a_burst_defers_its_documents_and_an_idle_writer_makes_the_same_text(
    start_collector: Any, socket_path: Path, dsn: str
) -> None:
    # Deferred from the second undelivered event on; two delivery processes, so the flag crosses to them.
    collector = start_collector("--set", TENANTS, "--set", "search.defer_backlog_events=1",
                                "--set", "database.delivery_processes=2")  # fmt: skip
    per_client = frames(time.time_ns())
    send_concurrently(socket_path, per_client)
    wait_for_rows(dsn, sum(map(len, per_client)))
    wait_for(lambda: stored_parts(dsn) == expected_parts(per_client), timeout=30)
    assert backlog_events(dsn) == 0
    searchable = sum(map(len, per_client))
    wait_for(lambda: scrape(collector, "hookdb_search_deferred_events_total") == searchable)
    wait_for(lambda: scrape(collector, "hookdb_search_indexed_events_total") == searchable)
    assert collector.events("search.deferral_started")
    wait_for(lambda: sum(e["events"] for e in collector.events("search.backlog_indexed")) == searchable)
    # Nothing undelivered: a scrape asks afresh, and deferral ends.
    assert scrape(collector, "hookdb_search_deferring") == 0
    assert collector.events("search.deferral_ended")


def test_health_and_metrics_say_while_the_spool_is_behind(
    start_collector: Any, pg_server: str, socket_path: Path
) -> None:
    unreachable = pg_server.replace("/postgres?", "/no_such_database?")  # nothing drains the spool
    collector = start_collector("--dsn", unreachable, "--set", "search.defer_backlog_events=2", use_dsn=False)
    health = f"http://127.0.0.1:{collector.metrics_port()}/health/db"
    assert httpx.get(health).json()["search_deferred"] is False
    assert scrape(collector, "hookdb_search_deferring") == 0
    send_concurrently(socket_path, [[event("Stop", {}, session=f"s-{i}") for i in range(3)]])
    wait_for(lambda: scrape(collector, "hookdb_search_deferring") == 1)  # 3 undelivered, more than 2
    answer = httpx.get(health)
    assert answer.status_code == 503
    assert answer.json()["search_deferred"] is True
    assert answer.json()["spool"]["pending_records"] == 3
    assert len(collector.events("search.deferral_started")) == 1  # once, however often it is asked


def test_without_deferral_documents_are_written_with_their_batch(
    start_collector: Any, socket_path: Path, dsn: str
) -> None:
    collector = start_collector("--set", TENANTS, "--set", "search.defer_backlog_events=0")
    per_client = frames(time.time_ns())
    send_concurrently(socket_path, per_client)
    wait_for_rows(dsn, sum(map(len, per_client)))
    assert stored_parts(dsn) == expected_parts(per_client)  # in the batch's own transaction: no wait
    assert scrape(collector, "hookdb_search_deferred_events_total") == 0


def defer_stored(dsn: str, sql: Callable[..., Any] = run_sql) -> None:
    """Take the stored events' documents back into search_backlog, one row a tenant, as a collector that
    deferred them and stopped before making them would leave it (``sql``: how to run a statement)."""
    sql(dsn, "DELETE FROM search_docs WHERE kinds <> ARRAY['report']")
    sql(
        dsn,
        "INSERT INTO search_backlog (tenant_id, batch_key, event_ids, first_at, last_at) "
        "SELECT tenant_id, uuid_send(min(event_id::text)::uuid), array_agg(event_id), min(occurred_at), "
        "max(occurred_at) FROM hook_audit_log WHERE event_type = ANY($1) GROUP BY tenant_id",
        SEARCHED,
    )


def left_deferred(
    start_collector: Any, socket_path: Path, dsn: str
) -> tuple[list[list[bytes]], list[tuple[str, str, str, str]]]:
    """The frames stored by a collector that made their documents, stopped, and the documents taken back
    into search_backlog (``defer_stored``); the frames and the parts that were made."""
    first = start_collector("--set", TENANTS, "--set", "search.defer_backlog_events=0")
    per_client = frames(time.time_ns())
    send_concurrently(socket_path, per_client)
    wait_for_rows(dsn, sum(map(len, per_client)))
    assert first.stop() == 0
    made = stored_parts(dsn)
    defer_stored(dsn)
    return per_client, made


def test_a_stopped_collector_s_backlog_is_counted_by_the_api_and_made_by_the_next(
    start_collector: Any, socket_path: Path, dsn: str, start_api: Any
) -> None:
    per_client, made = left_deferred(start_collector, socket_path, dsn)
    api = start_api(dsn, TOKENS)
    with http(api) as client:
        page = client.get("/api/sessions", params={"q": WORD}).json()
        assert page["sessions"] == []
        assert page["search_pending"] == len(per_client[0])
        assert "search_pending" not in client.get("/api/sessions").json()  # only a search says it
    with http(api, "beta") as client:
        page = client.get("/api/sessions", params={"q": "tune"}).json()
        assert page["search_pending"] == len(per_client[1])

    start_collector("--set", TENANTS)
    wait_for(lambda: backlog_events(dsn) == 0, timeout=30)
    assert stored_parts(dsn) == made
    [found] = search(api, WORD)
    assert found["session_id"] == "a-1"
    assert found["snippet"]["kind"] == "tool_output"
    with http(api) as client:
        assert client.get("/api/sessions", params={"q": WORD}).json()["search_pending"] == 0


def test_documents_postgresql_refuses_cost_only_their_row(
    start_collector: Any, socket_path: Path, dsn: str
) -> None:
    per_client, made = left_deferred(start_collector, socket_path, dsn)
    # A trigger that refuses alpha's documents (P0001: a row may cause it, like 54000).
    run_sql(dsn, f"""
        CREATE FUNCTION refuse_word() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.body LIKE '%{WORD}%' THEN RAISE EXCEPTION 'no {WORD} here'; END IF;
            RETURN NEW;
        END $$""")  # fmt: skip
    run_sql(
        dsn, "CREATE TRIGGER refuse BEFORE INSERT ON search_docs FOR EACH ROW EXECUTE FUNCTION refuse_word()"
    )
    collector = start_collector("--set", TENANTS)
    wait_for(lambda: backlog_events(dsn) == 0, timeout=30)
    assert stored_parts(dsn) == [part for part in made if part[0] == "beta"]
    [refused] = collector.events("search.backlog_refused")
    assert refused["tenant"] == "alpha"
    assert WORD in refused["error"]
    wait_for(lambda: scrape(collector, "hookdb_search_backlog_refused_total") == 1)  # in the next report
    # Delivery goes on: the breaker never saw the refusal.
    send_concurrently(socket_path, [[event("Stop", {}, session="a-2", tenant="beta")]])
    wait_for_rows(dsn, sum(map(len, per_client)) + 1)
    assert collector.proc.poll() is None
    assert not collector.events("breaker.transition")


def test_deferral_starts_above_its_threshold_and_ends_at_half_of_it() -> None:
    pending = [0]
    defer = SearchDeferral(10, lambda: pending[0])
    seen = []
    for pending[0] in (0, 10, 11, 30, 11, 6, 5, 4, 10, 11):
        seen.append(defer())
    assert seen == [False, False, True, True, True, True, False, False, False, True]
    never = SearchDeferral(0, lambda: 10**9)
    assert never() is False


def _row(event_type: str, session: str | None = "s") -> Row:
    return Row("t", uuid.uuid4(), datetime.now(UTC), datetime.now(UTC), session, event_type, "Bash",
               "claude-code", None, None, None, b"{}")  # fmt: skip


def test_deferring_lists_the_searchable_rows_and_still_reads_what_the_summary_needs() -> None:
    rows = [_row("UserPromptSubmit"), _row("PreToolUse"), _row("Notification"), _row("PostToolUse", None)]
    payloads = [{"prompt": "hello"}, {"tool_use_id": "toolu-1", "tool_input": {"command": "ls"}}, None, None]
    deferred = project(rows, payloads, defer_search=True)
    assert deferred.search == []
    assert deferred.deferred == rows[:2]  # an event of no session makes no part
    assert list(deferred.calls.starts) == [("s", "toolu-1")]  # the summary's calls as without deferral
    inline = project(rows, payloads)
    assert [p.kind for p in inline.search] == ["prompt", "tool_input"]
    assert inline.deferred == []
    assert inline.calls.starts.keys() == deferred.calls.starts.keys()
    # A prompt's payload is still read (its status); a tool call's fields too (the summary's tool_use_id).
    assert payload_decoder(rows[0], defer_search=True) is blobs.decode
    assert payload_decoder(rows[1], defer_search=True) is decode_call_fields
    assert payload_decoder(rows[1]) is blobs.decode  # its search document, when not deferred
    assert payload_decoder(rows[2], defer_search=True) is None


def test_a_partition_without_statistics_is_read_back_by_each_event_s_key(dsn: str) -> None:
    """A burst fills a partition faster than autovacuum analyzes it: the events a backlog row names are
    still found by the primary key, one lookup each, not by scanning their time span by the session index
    (the planner's choice for `event_id = ANY(…)` there; 26 µs an event against 1.9)."""
    migrate(dsn)
    run_sql(
        dsn, "CREATE TABLE burst PARTITION OF hook_audit_log FOR VALUES FROM ('2031-01-01') TO ('2031-02-01')"
    )
    run_sql(dsn, "ALTER TABLE burst SET (autovacuum_enabled = off)")
    run_sql(
        dsn,
        "INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type,"
        " source, payload)"
        " SELECT 'alpha', gen_random_uuid(), '2031-01-01'::timestamptz + i * interval '1 ms', now(),"
        " 's-' || i % 50, 'PreToolUse', 'claude-code', jsonb_build_object('tool_input', i) "
        " FROM generate_series(1, 50000) i",
    )
    # a batch's events, interleaved in time with seven other clients' streams
    ids, first, last = run_sql(
        dsn,
        "SELECT array_agg(event_id), min(occurred_at), max(occurred_at) FROM burst"
        " WHERE (payload->>'tool_input')::int % 8 = 0 AND (payload->>'tool_input')::int <= 16000",
    )[0]
    assert len(ids) == 2000
    assert run_sql(dsn, "SELECT reltuples < 0 AS never FROM pg_class WHERE relname = 'burst'")[0]["never"]
    plan = "\n".join(
        r[0] for r in run_sql(dsn, "EXPLAIN " + search_backlog._EVENTS, "alpha", ids, first, last, SEARCHED)
    )
    scans = re.findall(r"Scan using (\S+)", plan)
    assert scans == ["burst_pkey"], plan
    assert "Nested Loop" in plan, plan


# Every insert into the audit log waits a moment: delivery stays behind while events keep coming.
SLOW_WRITES = [
    "CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM pg_sleep(0.15); RETURN NULL; END $$",
    "CREATE TRIGGER slow_write AFTER INSERT ON hook_audit_log"
    " FOR EACH STATEMENT EXECUTE FUNCTION slow_write()",
]


def test_under_a_sustained_load_deferred_documents_come_within_their_bound(
    start_collector: Any, socket_path: Path, dsn: str
) -> None:
    migrate(dsn)
    for sql in SLOW_WRITES:
        run_sql(dsn, sql)
    collector = start_collector(
        "--set", "search.defer_backlog_events=20", "--set", "search.defer_max_seconds=1",
        "--set", "batch.max_events=20", "--set", "database.delivery_processes=1",
    )  # fmt: skip
    now = time.time_ns()
    prompts = [
        event("UserPromptSubmit", {"prompt": f"prompt {i}"}, session=f"s-{i % 4}", at_ns=now + i * 1000)
        for i in range(1200)
    ]  # 60 batches of at least 0.15 s: delivery is behind for 9 s
    send_concurrently(socket_path, [prompts])

    def parts() -> int:
        return run_sql(dsn, "SELECT coalesce(sum(cardinality(kinds)), 0)::int AS n FROM search_docs")[0]["n"]

    # Documents are made while delivery is still behind, once the first deferred ones are a second old
    # (before: only once it had caught up).
    wait_for(lambda: parts() > 0 and scrape(collector, "hookdb_search_deferring") == 1, timeout=8)
    assert len(collector.events("search.backlog_overdue")) == 1
    wait_for(lambda: parts() == 1200 and backlog_events(dsn) == 0, timeout=60)
    assert count_rows(dsn) == 1200
