"""An event over ``listener.max_frame_bytes`` (and under the 64 MiB hookdb's clients shrink to) is stored
with its largest strings replaced by markers, as an HTTP hook's body is — from the socket and from the
outbox alike — never refused for its size and lost."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from hookdb.client.emitter import Emitter

from conftest import BIN, run_sql, wait_for_rows

LIMIT = ("--set", "listener.max_frame_bytes=100000")
BLOB = "x" * 200_000
DIGEST = hashlib.sha256(BLOB.encode()).hexdigest()


def stored_payload(dsn: str) -> dict[str, object]:
    [(payload,)] = run_sql(dsn, "SELECT payload FROM hook_audit_log")
    return json.loads(payload)


def test_a_hook_over_the_frame_limit_is_stored_with_a_marker_not_refused(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector(*LIMIT)
    hook = {"hook_event_name": "PostToolUse", "session_id": "s", "tool_name": "Bash", "blob": BLOB, "n": 1}
    result = subprocess.run(
        [str(BIN / "hookdb-emit"), "--source", "claude-code"],
        input=json.dumps(hook).encode(),
        env={**os.environ, "HOOKDB_SOCKET": str(socket_path)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, b"")  # accepted: nothing to say
    assert wait_for_rows(dsn, 1) == 1
    stored = stored_payload(dsn)
    assert stored["blob"] == {"$hookdb.oversized": {"bytes": 200_000, "sha256": DIGEST}}
    assert (stored["n"], stored["tool_name"]) == (1, "Bash")
    [shrunk] = collector.events("frame.shrunk")
    assert shrunk["max"] == 100_000
    assert collector.events("frame.rejected") == []


def test_an_outboxed_event_over_the_frame_limit_is_stored_with_a_marker(
    start_collector, socket_path: Path, dsn: str
) -> None:
    # No collector yet: the event waits in the outbox, written by the client as it is.
    emitter = Emitter(str(socket_path), ack=True, timeout=0.5)
    emitter.emit("PostToolUse", {"tool_name": "Bash", "blob": BLOB}, session_id="s")
    emitter.close()
    assert emitter.outboxed == 1
    collector = start_collector(*LIMIT)
    assert wait_for_rows(dsn, 1) == 1
    assert stored_payload(dsn)["blob"] == {"$hookdb.oversized": {"bytes": 200_000, "sha256": DIGEST}}
    assert collector.events("frame.rejected") == []
