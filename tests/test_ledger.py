"""The usage ledger, live: a session's transcript read as it grows, through real collector processes and a
real PostgreSQL (store/ledger.py)."""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from test_collector import send_concurrently

from hookdb.client.wire import encode_envelope, frame, new_event_id

from conftest import run_sql, wait_for, wait_for_rows

FIXTURE = Path(__file__).parent / "fixtures" / "claude-code-2.1.332" / "session-bash-write.jsonl"
DATA = FIXTURE.read_bytes()
SESSION = "eecfd417-cf44-4be8-9a5e-001868de6639"
REQUESTS = ["req_1c1b81cd74c74190a3d7", "req_4c26c1ad940f4268993a", "req_b922416d167e48c9bf1c"]
TOTAL = Decimal("0.0643872")


def event(event_type: str, payload: dict[str, Any], *, session: str = SESSION) -> bytes:
    body = {"hook_event_name": event_type, "session_id": session, **payload}
    return frame(
        encode_envelope(
            event_id=new_event_id(),
            occurred_at_ns=time.time_ns(),
            source="claude-code",
            event_type=event_type,
            session_id=session,
            tenant=None,
            payload=msgspec.json.encode(body),
        )
    )


def stop(socket_path: Path, transcript: Path, event_type: str = "Stop") -> None:
    send_concurrently(socket_path, [[event(event_type, {"transcript_path": str(transcript)})]])


def ledger(dsn: str) -> list[Any]:
    return run_sql(dsn, "SELECT * FROM usage_ledger ORDER BY at, request_id")


def wait_ledger(dsn: str, count: int) -> list[Any]:
    wait_for(lambda: len(ledger(dsn)) >= count)
    time.sleep(0.3)  # any row too many would have landed by now
    return ledger(dsn)


def session(dsn: str) -> Any:
    return run_sql(dsn, "SELECT * FROM sessions WHERE session_id = $1", SESSION)[0]


def test_a_stop_puts_the_transcripts_three_requests_and_claude_codes_cost_in_the_ledger(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    start_collector()
    stop(socket_path, transcript)
    rows = wait_ledger(dsn, 3)
    assert [r["request_id"] for r in rows] == REQUESTS
    assert {(r["agent"], r["cost_source"], tuple(r["sources"])) for r in rows} == {
        ("main", "computed", ("transcript",))
    }
    assert sum(r["cost_usd"] for r in rows) == TOTAL
    s = session(dsn)
    assert s["cost_usd"] == TOTAL
    assert s["cost_source"] == "computed"
    tokens = (s["input_tokens"], s["output_tokens"], s["cache_read_tokens"], s["cache_creation_5m_tokens"])
    assert tokens == (2450, 251, 23924, 12292)  # Claude Code's own JSON output for the run
    assert s["cache_creation_1h_tokens"] == 0
    assert s["models"] == ["claude-sonnet-4-5"]
    assert s["model"] == "claude-sonnet-4-5"
    assert Decimal(str(json.loads(s["meta"])["cost_state"]["totalCostUSD"])) == TOTAL
    read = run_sql(dsn, "SELECT read_offset FROM transcript_reads")
    assert [r["read_offset"] for r in read] == [len(DATA)]


def test_a_transcript_growing_between_stops_adds_only_its_new_requests(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    cut = DATA.index(REQUESTS[2].encode())
    cut = DATA.rindex(b"\n", 0, cut) + 1  # before the third request's first line
    transcript.write_bytes(DATA[:cut] + DATA[cut : cut + 40])  # and a line torn mid-write
    start_collector()
    stop(socket_path, transcript)
    assert [r["request_id"] for r in wait_ledger(dsn, 2)] == REQUESTS[:2]
    assert run_sql(dsn, "SELECT read_offset FROM transcript_reads")[0][0] == cut  # line-aligned
    first = session(dsn)["cost_usd"]
    with transcript.open("ab") as f:
        f.write(DATA[cut + 40 :])
    stop(socket_path, transcript)
    wait_for(lambda: len(ledger(dsn)) == 3)
    stop(socket_path, transcript, "SessionEnd")  # nothing new: nothing changes
    wait_for(lambda: session(dsn)["status"] == "ended")
    rows = ledger(dsn)
    assert [r["request_id"] for r in rows] == REQUESTS
    assert first < session(dsn)["cost_usd"] == sum(r["cost_usd"] for r in rows) == TOTAL


def test_a_truncated_and_rewritten_transcript_does_not_double_count(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    start_collector()
    stop(socket_path, transcript)
    wait_ledger(dsn, 3)
    lines = [line for line in DATA.splitlines(keepends=True) if REQUESTS[0].encode() in line]
    extra = json.loads(lines[0])
    extra["requestId"], extra["message"]["id"] = "req_after_rewrite", "msg_after_rewrite"
    transcript.write_bytes(b"".join(lines) + json.dumps(extra).encode() + b"\n")  # shorter: truncated
    stop(socket_path, transcript, "PreCompact")
    rows = wait_ledger(dsn, 4)
    assert sorted(r["request_id"] for r in rows) == sorted([*REQUESTS, "req_after_rewrite"])
    s = session(dsn)
    assert s["cost_usd"] == sum(r["cost_usd"] for r in rows) > TOTAL
    assert s["input_tokens"] == sum(r["input_tokens"] for r in rows)


def test_subagent_transcripts_give_the_subagents_requests(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    line = json.loads(next(x for x in DATA.splitlines() if REQUESTS[0].encode() in x))
    line["requestId"], line["message"]["id"] = "req_sub", "msg_sub"
    line.pop("agentId", None)
    sub = tmp_path / SESSION / "subagents" / "agent-a1b2.jsonl"
    sub.parent.mkdir(parents=True)
    sub.write_bytes(json.dumps(line).encode() + b"\n")
    start_collector()
    stop(socket_path, transcript)
    rows = wait_ledger(dsn, 4)
    agents = {r["request_id"]: r["agent"] for r in rows}
    assert agents == {**dict.fromkeys(REQUESTS, "main"), "req_sub": "a1b2"}
    assert session(dsn)["model"] == "claude-sonnet-4-5"


def test_a_transcript_the_sender_does_not_own_is_not_read(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    os.chown(transcript, 12345, 12345)  # someone else's; the sender is this test's uid
    start_collector()
    stop(socket_path, transcript)
    assert wait_for_rows(dsn, 1) == 1
    wait_for(lambda: session(dsn)["status"] == "completed")
    time.sleep(0.5)
    assert ledger(dsn) == []
    assert session(dsn)["cost_usd"] is None
    assert session(dsn)["input_tokens"] is None
    assert run_sql(dsn, "SELECT count(*) FROM transcript_reads")[0][0] == 0


def test_after_a_restart_reading_resumes_at_the_durable_offset(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    cut = DATA.rindex(b"\n", 0, DATA.index(REQUESTS[2].encode())) + 1
    transcript.write_bytes(DATA[:cut])
    collector = start_collector()
    stop(socket_path, transcript)
    wait_ledger(dsn, 2)
    assert collector.stop() == 0
    # What was read is changed in place: read again from the start, it would be a fourth request.
    transcript.write_bytes(DATA[:cut].replace(REQUESTS[0].encode(), b"req_" + b"X" * 20) + DATA[cut:])
    start_collector()
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"")
    send_concurrently(socket_path, [[event("Stop", {"transcript_path": str(other)}, session="other")]])
    wait_for(lambda: run_sql(dsn, "SELECT count(*) FROM transcript_reads")[0][0] == 2)
    stop(socket_path, transcript)
    rows = wait_ledger(dsn, 3)
    assert [r["request_id"] for r in rows] == REQUESTS
    assert session(dsn)["cost_usd"] == TOTAL


def test_price_overrides_price_the_requests_and_an_unknown_model_costs_unknown(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    unknown = json.loads(next(x for x in DATA.splitlines() if REQUESTS[0].encode() in x))
    unknown["requestId"], unknown["message"]["id"] = "req_unknown", "msg_unknown"
    unknown["message"]["model"] = "claude-nobody-knows-1"
    transcript.write_bytes(DATA + json.dumps(unknown).encode() + b"\n")
    start_collector("--set", 'prices.overrides={"claude-sonnet-4-5" = {output = 1000}}')
    stop(socket_path, transcript)
    rows = {r["request_id"]: r for r in wait_ledger(dsn, 4)}
    assert (rows["req_unknown"]["cost_usd"], rows["req_unknown"]["cost_source"]) == (None, "unknown")
    known = [rows[r] for r in REQUESTS]
    assert {r["cost_source"] for r in known} == {"computed"}
    # 251 output tokens at $1000 instead of $15 per million.
    assert sum(r["cost_usd"] for r in known) == TOTAL + Decimal(251) * (1000 - 15) / 1_000_000
    s = session(dsn)
    assert (s["cost_usd"], s["cost_source"]) == (sum(r["cost_usd"] for r in known), "unknown")
    assert s["models"] == ["claude-nobody-knows-1", "claude-sonnet-4-5"]


def test_a_bad_price_override_is_a_clear_configuration_error(start_collector) -> None:
    collector = start_collector("--set", 'prices.overrides={"claude-new" = {input = 1}}', wait=False)
    assert collector.proc.wait(30) != 0
    assert "claude-new" in collector.output
    assert "Traceback" not in collector.output


def test_usage_postgresql_refuses_costs_that_usage_only_never_the_event(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    line = json.loads(next(x for x in DATA.splitlines() if REQUESTS[0].encode() in x))
    line["message"]["usage"]["input_tokens"] = 2**63 + 1  # a count, but not one bigint holds
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(json.dumps(line).encode() + b"\n")
    collector = start_collector()
    stop(socket_path, transcript)
    assert wait_for_rows(dsn, 1) == 1
    wait_for(lambda: collector.events("ledger.refused"))
    assert session(dsn)["status"] == "completed"
    assert ledger(dsn) == []


def test_the_ledger_and_read_offsets_are_guarded_by_row_level_security(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    from test_data_model import as_role

    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    start_collector()
    stop(socket_path, transcript)
    wait_ledger(dsn, 3)
    for table, rows in (("usage_ledger", 3), ("transcript_reads", 1)):
        assert as_role(dsn, "hookdb_reader", None, f"SELECT count(*) FROM {table}")[0][0] == 0
        assert as_role(dsn, "hookdb_reader", "other", f"SELECT count(*) FROM {table}")[0][0] == 0
        assert as_role(dsn, "hookdb_reader", "default", f"SELECT count(*) FROM {table}")[0][0] == rows


def test_an_sdk_result_of_another_shape_gives_no_usage_and_a_model_less_one_gives_sdk_star() -> None:
    from datetime import UTC, datetime

    from hookdb.collector import prices
    from hookdb.collector.store import ledger as store_ledger

    at = datetime(2026, 1, 1, tzinfo=UTC)

    def of(payload: dict[str, Any]) -> list[Any]:
        return store_ledger.sdk_usage_of("t", "s", at, payload, prices.PRICES)

    assert of({"model_usage": {"claude-sonnet-4-5": {"inputTokens": -1}}}) == []  # not a count
    assert of({"subtype": "success"}) == []  # nothing about usage
    (star,) = of({"total_cost_usd": 0.5, "usage": {"input_tokens": 7, "cache_creation_input_tokens": 3}})
    assert (star.request_id, star.model, star.cost_usd, star.cost_source) == (
        "sdk:*",
        None,
        Decimal("0.5"),
        "reported",
    )
    assert (star.input_tokens, star.cache_creation_5m_tokens, star.sources) == (7, 3, frozenset({"sdk"}))
    # Without a reported cost a summary is priced only when no request in it can have passed the
    # long-context tier (200K prompt tokens): below that, base rates are exact; above, it is unknown.
    (priced,) = of({"model_usage": {"claude-sonnet-4-5": {"inputTokens": 200_000}}})
    assert (priced.request_id, priced.cost_usd, priced.cost_source) == (
        "sdk:claude-sonnet-4-5",
        Decimal("0.6"),
        "computed",
    )
    (long,) = of({"model_usage": {"claude-sonnet-4-5": {"inputTokens": 200_001}}})
    assert (long.cost_usd, long.cost_source) == (None, "unknown")
