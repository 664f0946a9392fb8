"""The real Claude Code CLI (npm ``@anthropic-ai/claude-code``) runs a scripted 3-turn session against a local
stand-in for the Messages API (tests/messages_stub.py), with hooks installed by ``hookdb install-hooks``:
every hook event it fires is stored exactly once, the session and its report are projected.

What Claude Code fired is witnessed independently: a second command hook of the user's own (in
``$CLAUDE_CONFIG_DIR/settings.json``, for every event hookdb installs) appends each event's name and
session id to a file.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from messages_stub import REPORT_TEXT, MessagesStub, Turn, bash_write_done, total_usage

from hookdb.collector.admin.install_hooks import INSTALLED_EVENTS
from hookdb.collector.intake.tenancy import token_digest

from conftest import BIN, run_sql, wait_for

PROMPT = (
    "Run the shell command `echo hookdb-real-client`, then write a QA summary to reports/summary.md, "
    "then say done."
)

# What Claude Code 2.1.332 fired for this script when the fixtures were recorded (fixtures/README.md).
RECORDED_EVENTS = Counter(
    {
        "SessionStart": 1,
        "UserPromptSubmit": 1,
        "PreToolUse": 2,
        "PostToolUse": 2,
        "PostToolBatch": 2,
        # MessageDisplay (2 in this run) is not installed by default (classification.OPT_IN_EVENTS).
        "Stop": 1,
        "SessionEnd": 1,
    }
)

# The fixture's cost for the script's usage at claude-sonnet-4-5's list prices, as the CLI computed it.
RECORDED_COST_USD = 0.0643872

HTTP_TOKEN = "claude-code-http-hook-token"

WITNESS = """\
import json, sys
event = json.load(sys.stdin)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps([event["hook_event_name"], event.get("session_id")]) + "\\n")
"""


class Run(NamedTuple):
    """One ``claude -p`` run: its ``--output-format json`` result and the hook events it fired."""

    result: dict[str, Any]
    fired: list[tuple[str, str]]


def install_witness(config_dir: Path, tmp_path: Path) -> Path:
    """The user's own hook for every event hookdb installs; returns the file it appends to."""
    script = tmp_path / "witness.py"
    script.write_text(WITNESS)
    fired = tmp_path / "fired.jsonl"
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(fired))}"
    handler = {"type": "command", "command": command, "timeout": 30}
    hooks = {event: [{"matcher": "*", "hooks": [handler]}] for event in INSTALLED_EVENTS}
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "settings.json").write_text(json.dumps({"hooks": hooks}, indent=2))
    return fired


def install_hooks(project: Path, *extra: str) -> None:
    """``hookdb install-hooks --project``, as a user runs it."""
    subprocess.run(
        [str(BIN / "hookdb"), "install-hooks", "--project", str(project), *extra],
        check=True,
        capture_output=True,
        timeout=60,
    )


def run_claude(claude: Path, tmp_path: Path, project: Path, turns: tuple[Turn, ...], **env: str) -> Run:
    """Run the CLI on ``PROMPT`` in ``project`` against the stand-in, cut off from any network."""
    home = tmp_path / "home"
    fired = install_witness(home / ".claude", tmp_path)
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_BUG_COMMAND": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    }
    with MessagesStub(turns) as stub:
        completed = subprocess.run(
            [
                str(claude),
                "-p",
                PROMPT,
                "--output-format",
                "json",
                "--model",
                "claude-sonnet-4-5",
                "--allowedTools",
                "Bash Write Read",
                "--permission-mode",
                "acceptEdits",
            ],
            cwd=project,
            env={**base_env, "ANTHROPIC_BASE_URL": stub.base_url, **env},
            capture_output=True,
            text=True,
            timeout=180,
        )
        requests = stub.requests
    assert completed.returncode == 0, completed.stderr
    # The CLI asked for nothing but the three turns of the conversation.
    assert [(r.method, r.path.split("?")[0]) for r in requests] == [("POST", "/v1/messages")] * len(turns)
    lines = fired.read_text().splitlines() if fired.exists() else []
    return Run(json.loads(completed.stdout), [tuple(json.loads(line)) for line in lines])


def assert_cli_result(run: Run, turns: tuple[Turn, ...]) -> None:
    """The CLI's own account of the run: the stand-in's scripted usage, priced as in the fixture."""
    result = run.result
    assert (result["is_error"], result["result"], result["num_turns"]) == (False, "done", len(turns))
    usage = total_usage(turns)
    assert {k: result["usage"][k] for k in usage.__slots__} == {k: getattr(usage, k) for k in usage.__slots__}
    assert result["total_cost_usd"] == pytest.approx(RECORDED_COST_USD, abs=1e-9)


def assert_each_fired_event_stored_once(dsn: str, run: Run, source: str | None = None) -> list[Any]:
    """Every event the CLI fired is a row of its session, once; returns the rows (of ``source`` only,
    when telemetry events are stored beside the hooks)."""
    session_id = run.result["session_id"]
    fired = Counter(name for name, _ in run.fired)
    assert fired == RECORDED_EVENTS
    assert {sid for _, sid in run.fired} == {session_id}
    query = "SELECT event_type, session_id, tool_name, source, peer_uid FROM hook_audit_log"
    if source is not None:
        query += f" WHERE source = '{source}'"
    wait_for(lambda: len(run_sql(dsn, query)) >= len(run.fired))
    rows = run_sql(dsn, query)
    assert Counter(r["event_type"] for r in rows) == fired
    assert {r["session_id"] for r in rows} == {session_id}
    assert sorted(r["tool_name"] for r in rows if r["event_type"] == "PreToolUse") == ["Bash", "Write"]
    return rows


def assert_session_and_report(dsn: str, run: Run, project: Path) -> None:
    session_id = run.result["session_id"]
    session = wait_for(
        lambda: run_sql(
            dsn,
            "SELECT status, ended_at, cwd, report_count, meta->>'qa_score' AS qa FROM sessions"
            " WHERE session_id = $1 AND ended_at IS NOT NULL",
            session_id,
        )
    )[0]
    assert (session["status"], session["cwd"], session["report_count"], session["qa"]) == (
        "ended",
        str(project),
        1,
        "91",
    )
    [report] = run_sql(
        dsn, "SELECT path, report_type, content FROM reports WHERE session_id = $1", session_id
    )
    assert (report["path"], report["report_type"], report["content"]) == (
        str(project / "reports" / "summary.md"),
        "summary",
        REPORT_TEXT,
    )


def telemetry(port: int) -> dict[str, str]:
    """Claude Code's OpenTelemetry export to the collector's OTLP receiver on ``port``."""
    return {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {HTTP_TOKEN}",
        "OTEL_LOGS_EXPORT_INTERVAL": "500",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }


def assert_session_cost(dsn: str, run: Run) -> None:
    """The session's row says what the CLI itself reported: model, tokens by kind and cost. Polled until it
    does (or 30 s pass): the last request's usage may arrive after the first, as OpenTelemetry exports every
    500 ms."""
    session_id = run.result["session_id"]
    usage = run.result["usage"]
    expected = (
        "claude-sonnet-4-5",
        round(run.result["total_cost_usd"], 9),
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    )
    query = (
        "SELECT left(model, 17), round(cost_usd, 9)::float8, input_tokens, output_tokens, cache_read_tokens,"
        " cache_creation_5m_tokens + cache_creation_1h_tokens FROM sessions WHERE session_id = $1"
    )
    deadline = time.monotonic() + 30
    while (seen := [tuple(r) for r in run_sql(dsn, query, session_id)]) != [expected]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen == [expected]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    return directory


def test_command_hooks_store_every_event_of_a_real_session_once(
    claude_cli: Path, start_collector, dsn: str, tmp_path: Path, project: Path
) -> None:
    start_collector()
    install_hooks(project)
    turns = bash_write_done(str(project))
    run = run_claude(claude_cli, tmp_path, project, turns, HOOKDB_SOCKET=str(tmp_path / "hookdb.sock"))
    assert_cli_result(run, turns)
    rows = assert_each_fired_event_stored_once(dsn, run)
    assert {(r["source"], r["peer_uid"]) for r in rows} == {("claude-code", os.getuid())}
    assert_session_and_report(dsn, run, project)
    assert_session_cost(dsn, run)  # from the transcript the Stop named


def test_http_hooks_store_every_event_of_a_real_session_once(
    claude_cli: Path, start_collector, dsn: str, tmp_path: Path, project: Path
) -> None:
    collector = start_collector(
        "--set",
        "http_hooks.enabled=true",
        "--set",
        "http_hooks.listen=127.0.0.1:0",
        "--set",
        f'http_hooks.tokens={{default = ["{token_digest(HTTP_TOKEN)}"]}}',
        "--set",
        "otlp.enabled=true",
        "--set",
        "otlp.listen=127.0.0.1:0",
    )
    port = collector.events("http_hooks.listening")[0]["port"]
    install_hooks(project, "--http", "--url", f"http://127.0.0.1:{port}/v1/hooks/claude-code")
    turns = bash_write_done(str(project))
    run = run_claude(
        claude_cli,
        tmp_path,
        project,
        turns,
        HOOKDB_SOCKET=str(tmp_path / "hookdb.sock"),
        HOOKDB_HOOK_TOKEN=HTTP_TOKEN,
        # HTTP hooks carry no uid, so their transcripts are not read: the cost comes by OpenTelemetry.
        **telemetry(collector.events("otlp.listening")[0]["port"]),
    )
    assert_cli_result(run, turns)
    assert_session_cost(dsn, run)
    rows = assert_each_fired_event_stored_once(dsn, run, source="claude-code")
    # SessionStart came through its command hook (the socket knows the sender's uid), the rest over HTTP.
    via_socket = Counter(r["event_type"] for r in rows if r["peer_uid"] is not None)
    assert via_socket == Counter({"SessionStart": 1})
    assert_session_and_report(dsn, run, project)


def test_otlp_alone_gives_the_session_its_model_tokens_and_cost(
    claude_cli: Path, start_collector, dsn: str, tmp_path: Path, project: Path
) -> None:
    """No hooks at all: Claude Code's own OpenTelemetry export is enough to know what the session cost."""
    collector = start_collector(
        "--set",
        "otlp.enabled=true",
        "--set",
        "otlp.listen=127.0.0.1:0",
        "--set",
        f'http_hooks.tokens={{default = ["{token_digest(HTTP_TOKEN)}"]}}',
    )
    port = collector.events("otlp.listening")[0]["port"]
    turns = bash_write_done(str(project))
    run = run_claude(
        claude_cli,
        tmp_path,
        project,
        turns,
        **telemetry(port),
    )
    assert_cli_result(run, turns)
    assert_session_cost(dsn, run)
    sources = {r["source"] for r in run_sql(dsn, "SELECT DISTINCT source FROM hook_audit_log")}
    assert sources == {"claude-code-otel"}
