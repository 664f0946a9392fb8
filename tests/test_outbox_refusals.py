"""Records of a client's outbox the collector refuses are kept as dead letters, each with its reason, and
the records around them are stored: the drainer admits by the listener's rules (``admit_frames``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec

from hookdb.client.outbox import OutboxFile
from hookdb.client.wire import encode_envelope, new_event_id

from conftest import count_rows, run_sql, wait_for, wait_for_rows


def _envelope(event_id: str, payload: bytes, tenant: str | None = None) -> bytes:
    return encode_envelope(
        event_id=event_id,
        occurred_at_ns=time.time_ns(),
        source="app",
        event_type="PostToolUse",
        session_id="s",
        tenant=tenant,
        payload=payload,
    )


def test_refused_outbox_records_are_kept_with_their_reasons_and_the_rest_stored(
    start_collector, socket_path: Path, dsn: str
) -> None:
    outbox = socket_path.parent / "outbox"
    good = [new_event_id() for _ in range(2)]
    claimed = new_event_id()
    records = [
        _envelope(good[0], msgspec.json.encode({"tool_name": "Bash"})),
        b"\xc1 not msgpack",
        _envelope(claimed, b"{}", tenant="someone-else"),  # a tenant this peer may not write
        _envelope(new_event_id(), b'{"n": ' + b"7" * 5000 + b"}"),  # an integer no decoder converts
        _envelope(good[1], msgspec.json.encode({"tool_name": "Read"})),
    ]
    written = OutboxFile(str(outbox))
    for record in records:
        written.append(record)
    written.close()

    collector = start_collector()
    assert wait_for_rows(dsn, 2) == 2
    wait_for(lambda: not list(outbox.glob("*.out")), 30)
    stored = sorted(str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log"))
    assert stored == sorted(good)
    rejected = sorted(e["reason"] for e in collector.events("frame.rejected"))
    assert rejected == ["bad_payload", "not_msgpack", "tenant_not_allowed"]
    letters = (collector.log_path.parent / "state" / "deadletter" / "deadletter.jsonl").read_text()
    kept = [json.loads(line) for line in letters.splitlines()]
    assert sorted(k["error"].split(":")[0] for k in kept) == [
        "bad_payload",
        "not_msgpack",
        "tenant_not_allowed",
    ]
    assert [k["event_id"] for k in kept if k["error"].startswith("tenant_not_allowed")] == [claimed]
    assert count_rows(dsn) == 2
