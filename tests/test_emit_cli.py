"""``hookdb-emit``, run as Claude Code runs it: a process per event, the hook JSON on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, run_sql, wait_for_rows
from fixtures import corpus

EMIT = str(BIN / "hookdb-emit")


def emit(stdin: bytes, socket: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HOOKDB_SOCKET": str(socket)}
    return subprocess.run([EMIT, *args], input=stdin, capture_output=True, env=env, timeout=10, check=False)


def test_every_hook_event_of_the_reference_lands_as_one_row(
    start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector()
    payloads = corpus.hook_payloads()
    for event in corpus.HOOK_EVENTS:
        result = emit(corpus.raw_hook_payload(event), socket_path)
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert wait_for_rows(dsn, len(payloads)) == len(payloads)
    rows = run_sql(dsn, "SELECT event_type, session_id, tool_name, source, payload::text FROM hook_audit_log")
    by_type = {row["event_type"]: row for row in rows}
    assert set(by_type) == set(corpus.HOOK_EVENTS)
    for event, payload in payloads.items():
        row = by_type[event]
        assert row["session_id"] == payload["session_id"]
        assert row["tool_name"] == payload.get("tool_name")
        assert row["source"] == "claude-code"
        assert json.loads(row["payload"]) == payload


def test_large_payloads_arrive_whole(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    payloads = [corpus.large_edit_payload(), corpus.large_image_read_payload()]
    for payload in payloads:
        assert emit(json.dumps(payload).encode(), socket_path).returncode == 0
    assert wait_for_rows(dsn, 2) == 2
    stored = [
        json.loads(r[0])
        for r in run_sql(
            dsn, "SELECT hookdb_payload(tenant_id, payload)::text FROM hook_audit_log ORDER BY tool_name"
        )
    ]
    assert stored == sorted(payloads, key=lambda p: p["tool_name"])


def test_collector_down_exits_0_quickly_with_one_line_on_stderr(socket_path: Path) -> None:
    started = time.monotonic()
    result = emit(corpus.raw_hook_payload("PreToolUse"), socket_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert result.stdout == b""
    assert elapsed < 1.0
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert str(socket_path) in lines[0]


@pytest.mark.parametrize(
    "stdin", [b"", b"not json at all", b'{"unterminated": ', b"[1, 2]", b"\xff\xfe", b"{} {}"]
)
def test_garbage_on_stdin_exits_0_and_says_so_on_stderr(
    stdin: bytes, start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector()
    result = emit(stdin, socket_path)
    assert (result.returncode, result.stdout) == (0, b"")
    assert len(result.stderr.decode().splitlines()) == 1
    assert "nothing sent" in result.stderr.decode()
    # the collector is unharmed: the next good event lands
    assert emit(corpus.raw_hook_payload("Stop"), socket_path).returncode == 0
    assert wait_for_rows(dsn, 1) == 1


def test_options_choose_source_and_tenant(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector("--set", f'tenants.uids={{{os.getuid()} = ["default", "acme"]}}')
    result = emit(corpus.raw_hook_payload("Stop"), socket_path, "--source", "agent-sdk", "--tenant=acme")
    assert result.stderr == b""
    wait_for_rows(dsn, 1)
    assert run_sql(dsn, "SELECT source, tenant_id FROM hook_audit_log")[0][:] == ("agent-sdk", "acme")


def test_a_refused_event_is_reported_not_outboxed(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()  # this uid may write the default tenant only
    result = emit(corpus.raw_hook_payload("Stop"), socket_path, "--tenant", "someone-else")
    assert (result.returncode, result.stdout) == (0, b"")
    assert b"refused the event: tenant_not_allowed" in result.stderr
    assert not list((socket_path.parent / "outbox").glob("*.out"))


def test_a_hook_without_event_name_is_still_recorded(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    assert emit(b'{"note": "no hook_event_name here"}', socket_path).returncode == 0
    wait_for_rows(dsn, 1)
    assert run_sql(dsn, "SELECT event_type, session_id FROM hook_audit_log")[0][:] == ("Unknown", None)


def test_an_acked_event_loads_only_the_modules_of_its_path(start_collector, socket_path: Path) -> None:
    """Start-up is the agent's waiting time: a module more on this path (``json``, ``typing``, ``socket``,
    ``msgspec``, ``importlib.metadata``) is a regression, whatever it costs on this machine."""
    start_collector()
    env = {**os.environ, "HOOKDB_SOCKET": str(socket_path)}

    def imported(*args: str) -> set[str]:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", *args],
            input=corpus.raw_hook_payload("PreToolUse"),
            capture_output=True,
            env=env,
            timeout=10,
            check=True,
        )
        lines = result.stderr.decode().splitlines()
        assert not [line for line in lines if not line.startswith("import time:")]  # nothing went wrong
        return {line.rpartition("|")[2].strip() for line in lines[1:]}

    assert imported(EMIT) - imported("-c", "pass") == {
        "hookdb",
        "hookdb.client",
        "hookdb.client.emit_cli",
        "hookdb.client.paths",
        "hookdb.client.transport",
        "hookdb.client.wire",
        "_socket",
        "_json",
    }
