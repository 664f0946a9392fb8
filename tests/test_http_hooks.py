"""Claude Code's native HTTP hooks: POSTed events land like socket events, with a bearer token per tenant."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import BIN, count_rows, run_sql, wait_for, wait_for_rows
from fixtures import corpus

TOKEN = "s3cret-token-for-acme"


def token_digest(token: str) -> str:
    result = subprocess.run(
        [str(BIN / "hookdb"), "hash-token"],
        input=token,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def post(
    port: int, body: bytes, token: str | None = TOKEN, path: str = "/v1/hooks/claude-code"
) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def start_with_http(start_collector, *extra: str):
    collector = start_collector(
        "--set",
        "http_hooks.enabled=true",
        "--set",
        "http_hooks.listen=127.0.0.1:0",
        "--set",
        f'http_hooks.tokens={{acme = ["{token_digest(TOKEN)}"]}}',
        *extra,
    )
    return collector, collector.events("http_hooks.listening")[0]["port"]


def test_every_corpus_payload_posted_lands_as_a_row(start_collector, dsn: str) -> None:
    _, port = start_with_http(start_collector)
    payloads = corpus.hook_payloads()
    for event in corpus.HOOK_EVENTS:
        assert post(port, corpus.raw_hook_payload(event))[:2] == (200, b"{}")  # {}: no effect on the agent
    assert wait_for_rows(dsn, len(payloads)) == len(payloads)
    rows = run_sql(
        dsn, "SELECT event_type, session_id, tool_name, tenant_id, source, peer_uid FROM hook_audit_log"
    )
    assert {r["event_type"] for r in rows} == set(corpus.HOOK_EVENTS)
    assert {(r["tenant_id"], r["source"], r["peer_uid"]) for r in rows} == {("acme", "claude-code", None)}
    by_type = {r["event_type"]: r for r in rows}
    for event, payload in payloads.items():
        assert by_type[event]["tool_name"] == payload.get("tool_name")


def test_wrong_or_missing_token_is_401_and_stores_nothing(start_collector, dsn: str) -> None:
    _, port = start_with_http(start_collector)
    body = corpus.raw_hook_payload("Stop")
    assert post(port, body, token=None)[0] == 401
    assert post(port, body, token="not-the-token")[0] == 401
    assert post(port, body, token="")[0] == 401
    assert post(port, body, path="/v1/nope")[0] == 404
    assert post(port, b"[1, 2]")[0] == 400
    assert post(port, body)[0] == 200  # the one good request
    assert wait_for_rows(dsn, 1) == 1


def test_a_body_over_the_frame_limit_is_stored_with_markers_and_one_over_the_body_limit_is_413(
    start_collector, dsn: str
) -> None:
    _, port = start_with_http(
        start_collector,
        "--set",
        "listener.max_frame_bytes=100000",
        "--set",
        "http_hooks.max_body_bytes=400000",
    )
    blob = "x" * 200_000
    big = json.dumps({"hook_event_name": "PostToolUse", "session_id": "s", "blob": blob, "n": 1}).encode()
    assert post(port, big)[0] == 200  # recorded, not dropped: the string gives way to a marker
    huge = json.dumps({"hook_event_name": "PostToolUse", "session_id": "s", "blob": "x" * 500_000}).encode()
    assert post(port, huge)[0] == 413
    assert post(port, corpus.raw_hook_payload("Stop"))[0] == 200
    assert wait_for_rows(dsn, 2) == 2
    [(payload,)] = run_sql(dsn, "SELECT payload FROM hook_audit_log WHERE event_type = 'PostToolUse'")
    stored = json.loads(payload)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    assert stored["blob"] == {"$hookdb.oversized": {"bytes": 200_000, "sha256": digest}}
    assert (stored["n"], stored["session_id"]) == (1, "s")
    assert count_rows(dsn) == 2


def test_a_full_spool_answers_503_with_retry_after(start_collector, pg_server: str, tmp_path: Path) -> None:
    unreachable = pg_server.replace("/postgres?", "/no_such_database?")  # nothing drains the spool
    collector, port = start_with_http(
        start_collector,
        "--dsn",
        unreachable,
        "--set",
        "spool.max_bytes=60000",
        "--set",
        "spool.segment_bytes=20000",
    )
    body = json.dumps({"hook_event_name": "PostToolUse", "session_id": "s", "pad": "y" * 5000}).encode()
    answers = []
    for _ in range(40):
        answers.append(post(port, body))
        if answers[-1][0] == 503:
            break
    assert answers[0][0] == 200
    assert answers[-1][0] == 503
    assert answers[-1][2]["retry-after"] == "5"
    assert collector.proc.poll() is None


def test_an_http_hooks_transcript_is_read_as_the_configured_owners_and_only_then(
    start_collector, dsn: str, tmp_path: Path
) -> None:
    """TCP tells no sender: a tenant's HTTP hooks have their transcripts read only as the files of the user
    ``http_hooks.transcript_owners`` names (the owner check as for a socket's sender)."""
    from test_ledger import DATA, REQUESTS, SESSION, TOTAL

    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    me = pwd.getpwuid(os.getuid()).pw_name
    stop = json.dumps(
        {"hook_event_name": "Stop", "session_id": SESSION, "transcript_path": str(transcript)}
    ).encode()
    # Without an owner: the event is stored, its transcript not read.
    collector, port = start_with_http(start_collector)
    assert post(port, stop)[0] == 200
    assert wait_for_rows(dsn, 1) == 1
    time.sleep(1)
    assert run_sql(dsn, "SELECT count(*) FROM usage_ledger")[0][0] == 0
    assert collector.stop() == 0
    # Owned by someone else than the owner named: not read either.
    other = "nobody" if me != "nobody" else "root"
    owners = f'http_hooks.transcript_owners={{acme = "{other}"}}'
    collector, port = start_with_http(start_collector, "--set", owners)
    assert post(port, stop)[0] == 200
    assert wait_for_rows(dsn, 2) == 2
    time.sleep(1)
    assert run_sql(dsn, "SELECT count(*) FROM usage_ledger")[0][0] == 0
    assert collector.stop() == 0
    # The owner named, by name: read, its requests and cost the session's.
    _, port = start_with_http(start_collector, "--set", f'http_hooks.transcript_owners={{acme = "{me}"}}')
    assert post(port, stop)[0] == 200
    wait_for(lambda: run_sql(dsn, "SELECT count(*) FROM usage_ledger")[0][0] == 3)
    rows = run_sql(dsn, "SELECT tenant_id, request_id, cost_usd FROM usage_ledger ORDER BY at, request_id")
    assert [(r["tenant_id"], r["request_id"]) for r in rows] == [("acme", r) for r in REQUESTS]
    cost = run_sql(dsn, "SELECT cost_usd FROM sessions WHERE tenant_id = 'acme' AND session_id = $1", SESSION)
    assert cost[0][0] == TOTAL


def test_a_transcript_owner_who_does_not_exist_is_a_clear_configuration_error(start_collector) -> None:
    collector = start_collector(
        "--set", 'http_hooks.transcript_owners={acme = "no-such-user-here"}', wait=False
    )
    assert collector.proc.wait(30) != 0
    assert "http_hooks.transcript_owners: no user named 'no-such-user-here'" in collector.output
    assert "Traceback" not in collector.output
