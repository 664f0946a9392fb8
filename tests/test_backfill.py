"""``hookdb backfill``: Claude Code transcripts and session directories into PostgreSQL, run as a process.

Against a real PostgreSQL (a fresh database per test) and, for ``--socket``, a real collector. Until
``hookdb`` has the subcommand, the tests run ``python -m hookdb.collector.backfill_cli``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, run_sql, wait_for, wait_for_rows
from fixtures import corpus

EXPECTED_EVENTS = {
    "SessionStart": 1,
    "UserPromptSubmit": 2,
    "PreToolUse": 8,
    "PostToolUse": 7,
    "PostToolUseFailure": 1,
    "SubagentStart": 1,
    "SubagentStop": 1,
    "Stop": 2,
    "Result": 1,
    "SessionEnd": 1,
}
EXPECTED_TOTAL = sum(EXPECTED_EVENTS.values())  # 25
MODEL = "claude-sonnet-4-5-20250929"


def backfill(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``hookdb backfill ARGS`` in a process of its own; stdout and stderr captured."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_SOCKET", "HOOKDB_CONFIG")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hookdb"), "backfill", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def summary(done: subprocess.CompletedProcess[str], name: str) -> str:
    """One line of the summary, e.g. ``summary(done, "events") == "25 read, 25 new rows"``."""
    found = re.search(rf"^{name}:\s+(.*)$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    return found.group(1)


@pytest.fixture
def transcripts(tmp_path: Path) -> Path:
    """A copy of the fixture transcripts (the session and its subagent) in a projects-like directory."""
    root = tmp_path / "projects" / "-home-dev-proj"
    shutil.copytree(corpus.transcript_path().parent, root)
    return tmp_path / "projects"


def fixture_lines() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in (corpus.transcript_path(), corpus.subagent_transcript_path())
        for line in path.read_text().splitlines()
    ]


def expected_usage() -> dict[str, int]:
    """Token usage summed once per message id: a message split over several lines repeats its usage."""
    by_message = {
        line["message"]["id"]: line["message"]["usage"]
        for line in fixture_lines()
        if line.get("type") == "assistant"
    }
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    return {k: sum(u[k] for u in by_message.values()) for k in keys}


def events(dsn: str) -> list[dict[str, Any]]:
    rows = run_sql(
        dsn,
        "SELECT event_id, event_type, tool_name, source, occurred_at, session_id, peer_uid, payload "
        "FROM hook_audit_log ORDER BY occurred_at, event_type",
    )
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


def session_row(dsn: str, session_id: str = corpus.SESSION_ID) -> dict[str, Any]:
    rows = run_sql(dsn, "SELECT * FROM sessions WHERE session_id = $1", session_id)
    assert len(rows) == 1
    return dict(rows[0])


def test_the_fixture_transcript_becomes_its_session_and_hook_events(transcripts: Path, dsn: str) -> None:
    done = backfill("claude-code", str(transcripts), "--dsn", dsn)

    assert summary(done, "files") == "2 of 2"
    assert summary(done, "sessions") == "1 read, 0 skipped (already captured live)"
    assert summary(done, "events") == f"{EXPECTED_TOTAL} read, {EXPECTED_TOTAL} new rows"
    assert summary(done, "malformed") == "0 lines"
    assert done.stderr == ""

    rows = events(dsn)
    assert Counter(r["event_type"] for r in rows) == EXPECTED_EVENTS
    assert {r["source"] for r in rows} == {"backfill"}
    assert {r["session_id"] for r in rows} == {corpus.SESSION_ID}
    assert {r["peer_uid"] for r in rows} == {os.getuid()}  # the backfill is the sender, as over a socket

    # Every tool use is paired with its result by id; the result names the tool and carries its input.
    pre = {r["payload"]["tool_use_id"]: r for r in rows if r["event_type"] == "PreToolUse"}
    post = {
        r["payload"]["tool_use_id"]: r
        for r in rows
        if r["event_type"] in ("PostToolUse", "PostToolUseFailure")
    }
    assert set(pre) == set(post)
    for tool_use_id, result in post.items():
        assert result["tool_name"] == pre[tool_use_id]["tool_name"]
        assert result["payload"]["tool_input"] == pre[tool_use_id]["payload"]["tool_input"]
        assert result["occurred_at"] > pre[tool_use_id]["occurred_at"]
    failure = next(r for r in rows if r["event_type"] == "PostToolUseFailure")
    assert failure["tool_name"] == "Bash"
    assert failure["payload"]["error"].startswith("Exit code 1")
    bash = post["toolu_01Hq7XkP3mVbN2rTcW8yLd4E"]["payload"]
    assert bash["tool_response"]["stdout"].startswith("4813 data/sales_q3.csv")
    assert bash["duration_ms"] == 640

    # The subagent's events carry its id and the type its Agent call asked for.
    agent_rows = [r for r in rows if "agent_id" in r["payload"]]
    kinds = ("SubagentStart", "PreToolUse", "PostToolUse", "SubagentStop")
    assert Counter(r["event_type"] for r in agent_rows) == dict.fromkeys(kinds, 1)
    assert {(r["payload"]["agent_id"], r["payload"]["agent_type"]) for r in agent_rows} == {
        (corpus.AGENT_ID, "Explore")
    }
    stop = next(r for r in agent_rows if r["event_type"] == "SubagentStop")["payload"]
    assert stop["agent_transcript_path"].endswith(f"subagents/agent-{corpus.AGENT_ID}.jsonl")
    assert stop["last_assistant_message"].startswith("Found 2 stores")

    prompts = [r["payload"]["prompt"] for r in rows if r["event_type"] == "UserPromptSubmit"]
    assert prompts[0].endswith("café ✓")
    assert prompts[1].startswith("Thanks!")

    lines = [line for line in fixture_lines() if "timestamp" in line and not line.get("isSidechain")]
    first, last = (datetime.fromisoformat(lines[i]["timestamp"]) for i in (0, -1))
    session = session_row(dsn)
    assert session["status"] == "ended"
    assert session["model"] == MODEL
    assert session["source"] == "backfill"
    assert session["cwd"] == corpus.CWD
    assert session["transcript_path"] == str(transcripts / "-home-dev-proj" / f"{corpus.SESSION_ID}.jsonl")
    assert session["event_count"] == EXPECTED_TOTAL
    assert session["subagent_count"] == 1
    assert (session["started_at"], session["ended_at"]) == (first, last)
    meta = json.loads(session["meta"])
    assert meta["usage"] == expected_usage()
    assert meta["end_reason"] == "backfill"
    assert meta["duration_ms"] == (last - first) // timedelta(milliseconds=1)


def test_the_fixture_report_is_stored_as_it_was_after_the_last_edit(transcripts: Path, dsn: str) -> None:
    backfill("claude-code", str(transcripts), "--dsn", dsn)
    rows = run_sql(dsn, "SELECT path, content FROM reports")
    assert [r["path"] for r in rows] == ["/home/dev/proj/reports/analysis.md"]
    assert "## Top 3 regions" in rows[0]["content"]


def test_a_second_run_adds_nothing(transcripts: Path, dsn: str) -> None:
    backfill("claude-code", str(transcripts), "--dsn", dsn)
    before = events(dsn)

    again = backfill("claude-code", str(transcripts), "--dsn", dsn)

    assert summary(again, "events") == f"{EXPECTED_TOTAL} read, 0 new rows"
    assert events(dsn) == before
    assert session_row(dsn)["event_count"] == EXPECTED_TOTAL


def test_a_broken_line_is_reported_with_its_place_and_the_rest_is_imported(
    transcripts: Path, dsn: str
) -> None:
    path = transcripts / "-home-dev-proj" / f"{corpus.SESSION_ID}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert '"tool_result"' in lines[7]  # line 8: the result of the Read
    lines[7] = lines[7][: len(lines[7]) // 2] + "\n"  # cut in the middle, as by a crash mid-write
    path.write_text("".join(lines))

    done = backfill("claude-code", str(transcripts), "--dsn", dsn)

    assert summary(done, "malformed") == "1 lines"
    assert re.fullmatch(rf"{re.escape(str(path))}:8: not JSON: .+\n", done.stderr), done.stderr
    rows = events(dsn)
    assert len(rows) == EXPECTED_TOTAL - 1
    counts = Counter(r["event_type"] for r in rows)
    assert counts["PostToolUse"] == EXPECTED_EVENTS["PostToolUse"] - 1
    assert counts["SessionEnd"] == 1  # the lines after the broken one are all there
    read = next(r for r in rows if r["event_type"] == "PreToolUse" and r["tool_name"] == "Read")
    assert read["payload"]["tool_use_id"] == "toolu_01Vb3Kq8nWzR5tYhLm2cXe7P"
    assert session_row(dsn)["event_count"] == EXPECTED_TOTAL - 1


def test_a_session_captured_live_is_skipped_and_the_others_are_imported(
    transcripts: Path, dsn: str, start_collector: Any, socket_path: Path
) -> None:
    start_collector()
    live = {"hook_event_name": "SessionStart", "session_id": corpus.SESSION_ID, "source": "startup"}
    emitted = subprocess.run(
        [str(BIN / "hookdb-emit"), "--socket", str(socket_path), "--timeout", "10"],
        input=json.dumps(live),
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert emitted.returncode == 0, emitted.stderr
    wait_for_rows(dsn, 1)
    # A second session: the same conversation under another session id.
    other = "0e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6"
    project = transcripts / "-home-dev-proj"
    shutil.copy(project / f"{corpus.SESSION_ID}.jsonl", project / f"{other}.jsonl")

    done = backfill("claude-code", str(transcripts), "--dsn", dsn)

    assert summary(done, "sessions") == "1 read, 1 skipped (already captured live)"
    assert summary(done, "files") == "3 of 3"
    by_session = Counter(
        (r["session_id"], r["source"]) for r in run_sql(dsn, "SELECT session_id, source FROM hook_audit_log")
    )
    assert by_session == {(corpus.SESSION_ID, "claude-code"): 1, (other, "backfill"): 21}
    assert session_row(dsn)["event_count"] == 1
    assert session_row(dsn, other)["event_count"] == 21  # no subagent: its transcript is the other session's


def test_through_a_running_collector_the_same_rows_land(
    transcripts: Path, dsn: str, start_collector: Any, socket_path: Path
) -> None:
    start_collector()

    done = backfill("claude-code", str(transcripts), "--socket", str(socket_path))

    assert summary(done, "events") == f"{EXPECTED_TOTAL} sent, {EXPECTED_TOTAL} acknowledged by the collector"
    assert "detected only with --dsn" in summary(done, "sessions")
    assert wait_for_rows(dsn, EXPECTED_TOTAL) == EXPECTED_TOTAL
    rows = events(dsn)
    assert Counter(r["event_type"] for r in rows) == EXPECTED_EVENTS
    assert {r["source"] for r in rows} == {"backfill"}
    assert {r["peer_uid"] for r in rows} == {os.getuid()}  # the collector saw who sent them

    # The same ids and times as the direct mode: writing directly afterwards adds nothing. (The session
    # now has backfill events only, so it is not taken for a live one.)
    direct = backfill("claude-code", str(transcripts), "--dsn", dsn)
    assert summary(direct, "events") == f"{EXPECTED_TOTAL} read, 0 new rows"
    session = session_row(dsn)
    assert (session["status"], session["model"], session["event_count"], session["subagent_count"]) == (
        "ended",
        MODEL,
        EXPECTED_TOTAL,
        1,
    )
    assert json.loads(session["meta"])["usage"] == expected_usage()
    # The collector's ledger step read the transcripts the events name, the backfill's uid being theirs.
    requests = {line["requestId"] for line in fixture_lines() if "requestId" in line}
    assert {r["request_id"] for r in ledger_of(dsn, "default")} == requests
    assert session["cost_usd"] is not None


def test_a_refusal_by_the_collector_stops_the_run_loudly(
    transcripts: Path, dsn: str, start_collector: Any, socket_path: Path
) -> None:
    start_collector()

    done = backfill(
        "claude-code", str(transcripts), "--socket", str(socket_path), "--tenant", "not-mine", check=False
    )

    assert done.returncode == 1
    # The first event sent names its place in the transcript and the collector's reason.
    assert "the collector refused UserPromptSubmit" in done.stderr
    assert f"{corpus.SESSION_ID}.jsonl:2: tenant_not_allowed" in done.stderr
    assert summary(done, "events").endswith("0 acknowledged by the collector")


def _write(path: Path, text: str, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_session_directories_bring_their_reports_and_state_files(tmp_path: Path, dsn: str) -> None:
    seed = tmp_path / "sessions"
    base = 1_767_225_600  # 2026-01-01T00:00:00Z
    a, b = seed / "research-2026-01-01", seed / "research-2026-01-02"
    _write(a / "reports" / "summary-q3.md", "# Summary\n\nRevenue grew, café ✓.\n", base + 10)
    _write(a / "reports" / "regions" / "analysis-north.md", "# North\n\nUp 6.2%.\n", base + 20)
    _write(a / "state" / "progress.json", '{"step": 3}', base + 30)
    _write(a / "state" / "sections" / "intro.json", '{"done": true}', base + 40)
    _write(a / "notes.json", "{}", base + 5)  # no state glob matches it
    _write(b / "reports" / "plan.md", "# Plan\n", base + 86_400)
    _write(b / "state" / "progress.json", '{"step": 1}', base + 86_500)

    done = backfill("sessions", str(seed), "--dsn", dsn)

    assert summary(done, "directories") == "2 of 2"
    assert summary(done, "sessions") == "2 read, 0 skipped (already captured live)"
    assert summary(done, "events") == "9 read, 9 new rows"  # a: start, 2 reports, state, end; b: 4
    assert f"{a / 'notes.json'}: not a state file" in done.stderr

    session = session_row(dsn, a.name)
    assert session["status"] == "ended"
    assert session["source"] == "backfill"
    assert session["cwd"] == str(a)
    assert session["started_at"].timestamp() == base + 5
    assert session["ended_at"].timestamp() == base + 40
    assert session["report_count"] == 2
    reports = run_sql(
        dsn, "SELECT session_id, path, report_type, content, written_at FROM reports ORDER BY path"
    )
    assert [(r["session_id"], r["path"], r["report_type"]) for r in reports] == [
        (a.name, str(a / "reports" / "regions" / "analysis-north.md"), "analysis"),
        (a.name, str(a / "reports" / "summary-q3.md"), "summary"),
        (b.name, str(b / "reports" / "plan.md"), "plan"),
    ]
    assert reports[1]["content"] == "# Summary\n\nRevenue grew, café ✓.\n"
    assert reports[1]["written_at"].timestamp() == base + 10
    states = run_sql(
        dsn, "SELECT session_id, agent_id, agent_type, path, content FROM agent_states ORDER BY 1, 4"
    )
    assert [(s["session_id"], s["agent_id"], s["agent_type"], s["path"]) for s in states] == [
        (a.name, "section-writer", "section-writer", str(a / "state" / "progress.json")),
        (a.name, "section-writer", "section-writer", str(a / "state" / "sections" / "intro.json")),
        (b.name, "main", None, str(b / "state" / "progress.json")),
    ]
    assert states[0]["content"] == '{"step": 3}'

    again = backfill("sessions", str(seed), "--dsn", dsn)
    assert summary(again, "events") == "9 read, 0 new rows"
    assert run_sql(dsn, "SELECT count(*) FROM hook_audit_log")[0][0] == 9


# -- The mapper on its own: what real transcripts hold besides the fixture's happy path ----------------


def _line(n: int, kind: str, content: Any = None, **extra: Any) -> bytes:
    line: dict[str, Any] = {"type": kind, "uuid": f"00000000-0000-4000-8000-{n:012d}", "cwd": "/w"}
    line["timestamp"] = f"2026-03-14T09:00:{n:02d}.000Z"
    if content is not None:
        line["message"] = {"role": "assistant" if kind == "assistant" else "user", "content": content}
    line.update(extra)
    return json.dumps(line).encode() + b"\n"


def _assistant(n: int, message_id: str, content: list[Any], output_tokens: int, **extra: Any) -> bytes:
    raw = json.loads(_line(n, "assistant", content, **extra))
    raw["message"].update(
        id=message_id, model=extra.pop("model", MODEL), usage={"output_tokens": output_tokens}
    )
    return json.dumps(raw).encode() + b"\n"


def test_the_mapper_handles_what_real_transcripts_hold() -> None:
    from hookdb.collector.admin.backfill import SessionMapper, Tally

    bash = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "sleep 99"}}
    sidechain_use = {"type": "tool_use", "id": "toolu_2", "name": "Grep", "input": {"pattern": "x"}}
    lines = [
        b'{"type":"summary","summary":"Earlier work","leafUuid":"x"}\n',
        b'{"type":"file-history-snapshot","messageId":"m","snapshot":{}}\n',
        _line(3, "user", "first prompt", promptId="p1", permissionMode="plan"),
        _assistant(4, "msg_a", [{"type": "text", "text": "Let me run it."}], 10),
        _assistant(5, "msg_a", [bash], 12),  # the same message, streamed on: its usage counts once
        _line(
            6,
            "user",
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": "[Request interrupted by user for tool use]",
                }
            ],
        ),
        _line(7, "user", "[Request interrupted by user]"),
        _line(8, "system", subtype="compact_boundary", compactMetadata={"trigger": "auto", "preTokens": 9}),
        _line(9, "user", "This session is being continued...", isCompactSummary=True),
        _line(10, "user", "second prompt with a NUL \u0000 inside", promptId="p2"),
        _assistant(11, "msg_b", [sidechain_use], 5, isSidechain=True),
        b'{"type":"user","uuid":"00000000-0000-4000-8000-000000000012","message":{"content":"no time"}}\n',
        b"[1, 2]\n",
        _line(14, "user", [{"type": "tool_result", "tool_use_id": "toolu_unknown", "content": "ok"}]),
        _assistant(
            15,
            "msg_c",
            [{"type": "text", "text": "API Error: 529"}],
            0,
            isApiErrorMessage=True,
            error="overloaded",
            model="<synthetic>",
        ),
        b"\n",
    ]
    tally = Tally()
    mapper = SessionMapper("s-1", "/t/s-1.jsonl", tally)
    out = [e for n, raw in enumerate(lines, 1) for e in mapper.feed(raw, "/t/s-1.jsonl", n)] + mapper.finish()
    payloads = [json.loads(e.payload) for e in out]

    assert [(e.event_type, e.line) for e in out] == [
        ("UserPromptSubmit", 3),
        ("SessionStart", 3),  # once the model is known (line 4), with the first line's place and time
        ("PreToolUse", 5),
        ("PostToolUseFailure", 6),
        ("PreCompact", 8),
        ("Stop", 5),  # the first turn ends when the next prompt comes
        ("UserPromptSubmit", 10),
        ("SubagentStart", 11),
        ("PreToolUse", 11),
        ("PostToolUse", 14),
        ("SubagentStop", 11),
        ("StopFailure", 15),
        ("Result", 15),
        ("SessionEnd", 15),
    ]
    start = payloads[1]
    assert (start["source"], start["model"], start["session_title"]) == ("backfill", MODEL, "Earlier work")
    assert out[1].occurred_at_ns == out[0].occurred_at_ns
    failure = payloads[3]
    assert (failure["tool_name"], failure["is_interrupt"], failure["prompt_id"]) == ("Bash", True, "p1")
    assert payloads[3]["permission_mode"] == "plan"
    assert payloads[4]["trigger"] == "auto"
    assert payloads[5]["last_assistant_message"] == "Let me run it."
    assert payloads[6]["prompt"] == "second prompt with a NUL \u0000 inside"  # stored losslessly
    assert (payloads[8]["agent_id"], payloads[8]["tool_name"]) == ("sidechain", "Grep")
    assert "tool_name" not in payloads[9]
    assert (payloads[11]["error"], payloads[11]["last_assistant_message"]) == ("overloaded", "API Error: 529")
    assert payloads[12]["usage"]["output_tokens"] == 12 + 5 + 0
    assert payloads[12]["model"] == MODEL  # Claude Code's own "<synthetic>" messages name no model
    assert payloads[13]["reason"] == "backfill"
    assert tally.unpaired == 1
    assert tally.problems == [
        "/t/s-1.jsonl:12: no valid timestamp: None",
        "/t/s-1.jsonl:13: not a JSON object",
    ]

    again = SessionMapper("s-1", "/t/s-1.jsonl", Tally())
    repeat = [
        e for n, raw in enumerate(lines, 1) for e in again.feed(raw, "/t/s-1.jsonl", n)
    ] + again.finish()
    assert [e.event_id for e in repeat] == [e.event_id for e in out]
    other = SessionMapper("s-2", "/t/s-2.jsonl", Tally())
    ids = {e.event_id for n, raw in enumerate(lines, 1) for e in other.feed(raw, "/t/s-2.jsonl", n)}
    assert ids.isdisjoint(e.event_id for e in out)  # a resumed session keeps its copy of shared lines


def test_subagent_transcripts_are_found_in_both_layouts(tmp_path: Path) -> None:
    from hookdb.collector.admin.backfill import Tally, find_transcripts

    project = tmp_path / "-w"
    (project / "s-1" / "subagents").mkdir(parents=True)
    (project / "s-1.jsonl").write_text(_line(1, "user", "hi").decode())
    (project / "s-1" / "subagents" / "agent-new.jsonl").write_text(_line(2, "user", "task").decode())
    (project / "agent-old.jsonl").write_text(json.dumps({"sessionId": "s-1", "type": "user"}) + "\n")
    (project / "agent-lost.jsonl").write_text('{"type":"user"}\n')
    tally = Tally()

    found = find_transcripts(tmp_path, tally)

    assert [(s.session_id, s.main.name, [p.name for p in s.subagents]) for s in found] == [
        ("s-1", "s-1.jsonl", ["agent-old.jsonl", "agent-new.jsonl"])
    ]
    assert tally.files_total == 3
    assert tally.problems == [f"{project / 'agent-lost.jsonl'}: a subagent transcript that names no session"]


# -- The usage ledger --------------------------------------------------------------------------------------

LEDGER_COLUMNS = (
    "session_id, request_id, agent, agent_type, model, input_tokens, output_tokens, cache_read_tokens, "
    "cache_creation_5m_tokens, cache_creation_1h_tokens, cost_usd, cost_source, at, sources, alt"
)
TOTAL_COLUMNS = (
    "input_tokens, output_tokens, cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, "
    "cost_usd, cost_source, models, model, meta->'cost_state' AS cost_state"
)


def ledger_of(dsn: str, tenant: str) -> list[dict[str, Any]]:
    sql = f"SELECT {LEDGER_COLUMNS} FROM usage_ledger WHERE tenant_id = $1 ORDER BY at, request_id"
    return [dict(r) for r in run_sql(dsn, sql, tenant)]


def totals_of(dsn: str, tenant: str, session_id: str) -> dict[str, Any]:
    sql = f"SELECT {TOTAL_COLUMNS} FROM sessions WHERE tenant_id = $1 AND session_id = $2"
    return dict(run_sql(dsn, sql, tenant, session_id)[0])


def live_stop(socket_path: Path, session_id: str, transcript: Path, subagent: Path | None = None) -> None:
    """What Claude Code sends live at the session's end: its subagent's stop, then its own."""
    from test_collector import send_concurrently
    from test_ledger import event

    frames = []
    if subagent is not None:
        payload = {
            "agent_id": corpus.AGENT_ID,
            "agent_type": "Explore",
            "agent_transcript_path": str(subagent),
        }
        frames.append(event("SubagentStop", payload, session=session_id))
    frames.append(event("Stop", {"transcript_path": str(transcript)}, session=session_id))
    send_concurrently(socket_path, [frames])


def test_backfill_puts_claude_codes_three_requests_and_its_cost_in_the_ledger(
    tmp_path: Path, dsn: str
) -> None:
    from test_ledger import DATA, REQUESTS, SESSION, TOTAL

    (tmp_path / f"{SESSION}.jsonl").write_bytes(DATA)

    backfill("claude-code", str(tmp_path), "--dsn", dsn)

    rows = ledger_of(dsn, "default")
    assert [r["request_id"] for r in rows] == REQUESTS
    assert {(r["agent"], r["cost_source"], tuple(r["sources"])) for r in rows} == {
        ("main", "computed", ("transcript",))
    }
    totals = totals_of(dsn, "default", SESSION)
    assert totals["cost_usd"] == sum(r["cost_usd"] for r in rows) == TOTAL
    kinds = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_5m_tokens")
    assert [totals[k] for k in kinds] == [2450, 251, 23924, 12292]  # Claude Code's own JSON output
    assert (totals["model"], totals["models"]) == ("claude-sonnet-4-5", ["claude-sonnet-4-5"])
    assert json.loads(totals["cost_state"])["totalCostUSD"] == float(TOTAL)
    reads = run_sql(dsn, "SELECT read_offset FROM transcript_reads")
    assert [r["read_offset"] for r in reads] == [len(DATA)]

    again = backfill("claude-code", str(tmp_path), "--dsn", dsn)

    assert summary(again, "events").endswith(" 0 new rows")
    assert ledger_of(dsn, "default") == rows
    assert totals_of(dsn, "default", SESSION) == totals


@pytest.mark.parametrize("fixture", ["claude-code-2.1.332", "transcript"])
def test_backfilled_and_live_sessions_have_the_same_ledger_and_totals(
    fixture: str, tmp_path: Path, dsn: str, start_collector: Any, socket_path: Path
) -> None:
    from test_ledger import DATA, SESSION

    if fixture == "transcript":  # with a subagent
        shutil.copytree(corpus.transcript_path().parent, tmp_path / "projects")
        session_id = corpus.SESSION_ID
        transcript = tmp_path / "projects" / f"{session_id}.jsonl"
        subagent = tmp_path / "projects" / session_id / "subagents" / f"agent-{corpus.AGENT_ID}.jsonl"
    else:
        session_id, subagent = SESSION, None
        transcript = tmp_path / "projects" / f"{session_id}.jsonl"
        transcript.parent.mkdir()
        transcript.write_bytes(DATA)
    start_collector()
    live_stop(socket_path, session_id, transcript, subagent)
    wait_for_rows(dsn, 2 if subagent else 1)
    wait_for(lambda: ledger_of(dsn, "default") and totals_of(dsn, "default", session_id)["cost_usd"])

    backfill("claude-code", str(tmp_path / "projects"), "--dsn", dsn, "--tenant", "history")

    live, history = ledger_of(dsn, "default"), ledger_of(dsn, "history")
    if subagent:
        requests = {line["requestId"] for line in fixture_lines() if "requestId" in line}
        assert {r["request_id"] for r in live} == requests
        assert {(r["agent"], r["agent_type"]) for r in live} == {("main", None), (corpus.AGENT_ID, "Explore")}
    else:
        assert len(live) == 3
    assert history == live
    assert totals_of(dsn, "history", session_id) == totals_of(dsn, "default", session_id)


def test_a_transcript_of_another_uid_is_imported_without_its_usage_and_said_so(
    transcripts: Path, dsn: str
) -> None:
    path = transcripts / "-home-dev-proj" / f"{corpus.SESSION_ID}.jsonl"
    os.chown(path, 12345, 12345)  # someone else's: as for a live sender, the ledger does not read it

    done = backfill("claude-code", str(transcripts), "--dsn", dsn)

    assert summary(done, "events") == f"{EXPECTED_TOTAL} read, {EXPECTED_TOTAL} new rows"
    assert f"{path}: owned by uid 12345: its events are imported, its usage is not" in done.stderr
    assert summary(done, "usage") == "not read from 1 transcript another uid owns"
    assert {r["agent"] for r in ledger_of(dsn, "default")} == {corpus.AGENT_ID}  # the subagent's is ours
