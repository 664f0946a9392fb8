"""Payloads at the edges: U+0000 in strings and keys, events over the frame limit, JSON nested too deep.

Each is an event an agent really produces (a Read of a binary file, Bash output with NUL, a Read of a
large file, a hostile tool output) and each must land — stored exactly, or with what it lost said — or
be refused with a reason, costing only itself: never a lost event or a dead collector.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookdb.client import oversize
from hookdb.client.emitter import Emitter
from hookdb.client.outbox import OutboxFile
from hookdb.client.protocol import MAX_PAYLOAD_DEPTH, decode_envelope, decode_reply
from hookdb.client.transport import Refused, deliver
from hookdb.client.wire import DEFAULT_MAX_FRAME_BYTES, encode_envelope, frame, new_event_id
from hookdb.collector.store import blobs

from conftest import BIN, migrate, run_sql, wait_for_rows
from fixtures import corpus

EMIT = str(BIN / "hookdb-emit")
MARKERS = sorted(blobs.MARKER_KEYS)

# Text as agents produce it, U+0000 and the store's own marker keys included (lone surrogates are not
# UTF-8, so no JSON payload holds them).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
keys = text | st.sampled_from([*MARKERS, "a\x00b", "\x00", "$hookdb.nul\x00"])
strings = text | st.sampled_from(["\x00", "a\x00\x00b", "x" * 40 + "\x00" + "y" * 40, *MARKERS])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | strings,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=24,
)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _marker_keys(value: Any) -> set[str]:
    """The marker keys used anywhere in a stored value."""
    if isinstance(value, dict):
        return {k for k in value if k in blobs.MARKER_KEYS}.union(*map(_marker_keys, value.values()))
    if isinstance(value, list):
        return set().union(*map(_marker_keys, value))
    return set()


def _stored(value: Any, min_bytes: int = 32) -> tuple[bytes, dict[str, str]]:
    return blobs.extract(msgspec.json.encode(value), min_bytes)


# -- The store's escaping, as pure functions --------------------------------------------------------------


@given(json_values)
def test_every_payload_is_stored_without_u0000_and_restored_exactly(value: Any) -> None:
    stored, found = _stored(value)
    decoded = msgspec.json.decode(stored)
    assert not _holds_nul(decoded)  # jsonb takes it
    assert blobs.restore(decoded, found.get) == value
    assert blobs.extract(msgspec.json.encode(value), 32, value) == (stored, found)  # decoded once, same


@given(json_values)
def test_a_payload_with_nothing_to_escape_is_stored_as_it_came(value: Any) -> None:
    payload = msgspec.json.encode(value)
    stored, found = blobs.extract(payload, 1 << 20)
    if not _holds_nul(value) and not _marker_keys(value):
        assert (stored, found) == (payload, {})


def test_a_payload_that_holds_the_marker_keys_itself_round_trips_unambiguously() -> None:
    value = {
        "$hookdb.nul": ["a", "b"],  # looks like "a\x00b" once stored, unless escaped
        "$hookdb.blob": "0" * 64,
        "$hookdb.keys": [["k", "v"]],
        "plain": {"$hookdb.nul": ["x"]},
    }
    stored, found = _stored(value)
    assert blobs.restore(msgspec.json.decode(stored), found.get) == value
    assert msgspec.json.decode(stored)["plain"] != {"$hookdb.nul": ["x"]}


def test_a_small_payload_spelling_a_marker_key_with_escapes_is_escaped_too() -> None:
    payload = b'{"\\u0024hookdb.nul": ["a", "b"]}'
    stored, _ = blobs.extract(payload, 1 << 20)
    assert blobs.restore(msgspec.json.decode(stored), lambda _: None) == {"$hookdb.nul": ["a", "b"]}


def test_the_walks_do_not_recurse_per_level() -> None:
    # 800 levels: msgspec decodes and encodes them, a walk recursing twice per level would not.
    deep: Any = "bottom\x00" + "x" * 64
    for _ in range(800):
        deep = [deep]
    stored, found = blobs.extract(msgspec.json.encode(deep), 16, deep)
    assert blobs.restore(msgspec.json.decode(stored), found.get) == deep


# -- Shrinking an event over the frame limit --------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(text, text | json_values, max_size=8), st.integers(0, 2000))
def test_shrink_fits_the_budget_and_says_what_it_replaced(value: dict[str, Any], budget: int) -> None:
    payload = json.dumps(value, ensure_ascii=False).encode()
    shrunk = oversize.shrink(payload, budget)
    if len(payload) <= budget:
        assert shrunk == payload
        return
    result = json.loads(shrunk)
    if len(shrunk) > budget:  # nothing smaller than one marker can stand for it
        assert result == oversize.marker(payload)
        return
    _assert_replaced_largest_first(value, result)


def _assert_replaced_largest_first(original: Any, shrunk: Any) -> None:
    kept: list[int] = []
    replaced: list[int] = []

    def walk(old: Any, new: Any) -> None:
        if isinstance(old, str):
            data = old.encode()
            if new == old:
                kept.append(len(data))
            else:
                assert new == oversize.marker(data)
                assert new[oversize.OVERSIZED_KEY] == {
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                replaced.append(len(data))
        elif isinstance(old, dict):
            assert new.keys() == old.keys()
            for key in old:
                walk(old[key], new[key])
        elif isinstance(old, list):
            assert len(new) == len(old)
            for a, b in zip(old, new, strict=True):
                walk(a, b)
        else:
            assert new == old

    if shrunk == oversize.marker(json.dumps(original, ensure_ascii=False).encode()):
        return  # replacing strings was not enough
    walk(original, shrunk)
    assert not kept or not replaced or min(replaced) >= max(kept)


# -- hookdb_payload() in PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
def migrated(dsn: str) -> str:
    migrate(dsn)
    return dsn


def test_hookdb_payload_gives_back_the_exact_value(migrated: str) -> None:
    values = [
        {"a": "x\x00y", "b\x00c": {"\x00": ["\x00", "", "plain"]}, "n": 1.5, "t": True, "z": None},
        {"$hookdb.nul": ["a", "b"], "$hookdb.blob": "f" * 64, "$hookdb.keys": [], "deep": [[["é\x00"]]]},
        {"big": "B" * 100 + "\x00" + "C" * 100, "again": "B" * 100, 'quote\x00"\\': '\\\x00\n\t"ü🙂'},
        ["\x00"],
        "\x00",
        {},
        [],
    ]
    deepest: Any = {"k\x00": "v\x00"}
    for _ in range(MAX_PAYLOAD_DEPTH - 1):
        deepest = [deepest]
    for value in [*values, deepest]:
        assert _through_postgres(migrated, value) == value


def test_numbers_keep_every_digit_when_a_payload_is_rebuilt(migrated: str) -> None:
    payload = b'{"n": 1.00000000000000000000000000001, "big": [1e400, -2E-400, 12345678901234567890123], '
    payload += b'"s": "\\u0000"}'
    assert decode_envelope(_frame(payload)[0])[1] is None  # taken at intake
    stored, found = blobs.extract(payload, 1 << 20)
    assert found == {}
    [row] = run_sql(migrated, "SELECT hookdb_payload('t', $1::text::jsonb)::text", stored.decode())
    assert json.loads(row[0], parse_float=Decimal) == json.loads(payload, parse_float=Decimal)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_hookdb_payload_round_trips_any_payload(migrated: str, value: Any) -> None:
    assert _through_postgres(migrated, value) == value


def _through_postgres(dsn: str, value: Any) -> Any:
    stored, found = _stored(value)
    for digest, content in found.items():
        run_sql(
            dsn,
            "INSERT INTO payload_blobs (tenant_id, sha256, content) VALUES ('t', $1, $2) "
            "ON CONFLICT DO NOTHING",
            digest,
            content,
        )
    [row] = run_sql(dsn, "SELECT hookdb_payload('t', $1::text::jsonb)::text AS payload", stored.decode())
    return json.loads(row["payload"])


# -- Through a real collector ------------------------------------------------------------------------------


def emit(stdin: bytes, socket: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [EMIT, "--timeout", "30", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "HOOKDB_SOCKET": str(socket), **env},
        timeout=120,
        check=False,
    )


def originals(dsn: str) -> list[Any]:
    rows = run_sql(
        dsn, "SELECT hookdb_payload(tenant_id, payload)::text FROM hook_audit_log ORDER BY occurred_at"
    )
    return [json.loads(row[0]) for row in rows]


def test_u0000_in_values_and_keys_lands_and_reads_back_exactly(
    start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector()
    binary_read = {
        **corpus.hook_payloads()["PostToolUse"],
        "tool_name": "Read",
        "tool_input": {"file_path": "/bin/true"},
        "tool_response": {"content": "\x7fELF\x02\x01\x01\x00\x00\x00" + "\x00" * 9000 + "end"},
        "env\x00key": "v",
        "$hookdb.nul": ["looks", "like a marker"],
    }
    bash = {
        **corpus.hook_payloads()["PostToolUse"],
        "tool_name": "Bash",
        "tool_response": {"stdout": "a\x00b"},
    }
    start = {
        **corpus.hook_payloads()["SessionStart"],
        "session_id": "s-nul",
        "cwd": "/w\x00",
        "model": "m\x00",
    }
    for payload in (binary_read, bash, start):
        result = emit(json.dumps(payload).encode(), socket_path)
        assert (result.returncode, result.stderr) == (0, b"")
    assert wait_for_rows(dsn, 3) == 3
    assert originals(dsn) == [binary_read, bash, start]
    rows = run_sql(
        dsn,
        "SELECT tool_name, payload->>'session_id', payload->'tool_input'->>'file_path' FROM hook_audit_log "
        "WHERE payload->>'tool_name' = 'Read' AND payload ? 'tool_response'",
    )
    assert [tuple(row) for row in rows] == [("Read", binary_read["session_id"], "/bin/true")]


def test_the_api_timeline_gives_back_u0000(start_collector, start_api, socket_path: Path, dsn: str) -> None:
    start_collector()
    payload = {"hook_event_name": "PostToolUse", "session_id": "s-nul", "tool_name": "Bash", "out": "a\x00b"}
    assert emit(json.dumps(payload).encode(), socket_path).returncode == 0
    assert wait_for_rows(dsn, 1) == 1
    api = start_api(dsn, {"default": "secret-token"})
    request = urllib.request.Request(
        f"{api.url}/api/sessions/s-nul/events", headers={"Authorization": "Bearer secret-token"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        events = json.load(response)["events"]
    assert [event["payload"] for event in events] == [payload]


def test_a_9_5_mb_read_lands_whole_with_its_blob(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    payload = corpus.large_image_read_payload(size=9_500_000)
    stdin = json.dumps(payload).encode()
    assert len(stdin) > 9_500_000
    result = emit(stdin, socket_path)
    assert (result.returncode, result.stderr) == (0, b"")
    assert wait_for_rows(dsn, 1) == 1
    assert originals(dsn) == [payload]
    assert run_sql(dsn, "SELECT count(*) FROM payload_blobs")[0][0] == 1


def test_a_9_5_mb_read_kept_in_the_outbox_is_drained_not_damaged(
    start_collector, socket_path: Path, dsn: str
) -> None:
    payload = corpus.large_image_read_payload(size=9_500_000)
    result = emit(json.dumps(payload).encode(), socket_path)  # no collector yet
    assert b"event kept in" in result.stderr
    collector = start_collector()
    assert wait_for_rows(dsn, 1) == 1
    assert originals(dsn) == [payload]
    assert not collector.events("outbox.damaged")


def test_an_event_over_the_frame_limit_lands_with_markers(
    start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector()
    huge, large = "h" * (40 << 20), "l" * (30 << 20)
    payload = {
        "hook_event_name": "PostToolUse",
        "session_id": "s-big",
        "tool_name": "Read",
        "a": huge,
        "b": large,
    }
    result = emit(json.dumps(payload).encode(), socket_path)
    assert (result.returncode, result.stderr) == (0, b"")
    with Emitter(str(socket_path), ack=True, timeout=30) as emitter:
        emitter.emit("Custom", {"only": "x" * DEFAULT_MAX_FRAME_BYTES}, session_id="s-big")
        assert (emitter.sent, emitter.outboxed, emitter.lost) == (1, 0, 0)
    assert wait_for_rows(dsn, 2) == 2
    first, second = originals(dsn)
    assert first == {**payload, "a": oversize.marker(huge.encode())}  # the largest string gave way, no more
    assert first["a"][oversize.OVERSIZED_KEY] == {
        "bytes": 40 << 20,
        "sha256": hashlib.sha256(huge.encode()).hexdigest(),
    }
    assert second == {"only": oversize.marker(b"x" * DEFAULT_MAX_FRAME_BYTES)}


def _deep(depth: int) -> bytes:
    return (
        b'{"hook_event_name": "PostToolUse", "session_id": "s-deep", "x": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


def _frame(payload: bytes) -> tuple[bytes, str]:
    event_id = new_event_id()
    body = encode_envelope(
        event_id=event_id,
        occurred_at_ns=time.time_ns(),
        source="test",
        event_type="PostToolUse",
        session_id="s-deep",
        tenant=None,
        payload=payload,
        ack=True,
    )
    return body, event_id


def test_deep_json_is_refused_and_costs_no_one_else(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    for depth in (990, 5000):  # outbox copies of deep events, which a collector reads at every start
        body, _ = _frame(_deep(depth))
        box = OutboxFile(str(outbox))
        box.append(body)
        box.close()
    collector = start_collector("--set", f"outbox.dir={outbox}")
    for depth in (990, 100_000, MAX_PAYLOAD_DEPTH + 1):
        body, event_id = _frame(_deep(depth))
        with pytest.raises(Refused) as refused:
            deliver(str(socket_path), frame(body), event_id, 10)
        assert decode_reply(refused.value.reply).startswith("bad_payload: payload nests deeper than")
    result = emit(_deep(100_000), socket_path)
    assert result.stderr.startswith(b"hookdb-emit: stdin is not a hook event, nothing sent: maximum recur")
    deepest_taken, event_id = _frame(_deep(MAX_PAYLOAD_DEPTH - 1))
    deliver(str(socket_path), frame(deepest_taken), event_id, 10)
    result = emit(json.dumps(corpus.hook_payloads()["Stop"]).encode(), socket_path)
    assert (result.returncode, result.stderr) == (0, b"")
    assert wait_for_rows(dsn, 2) == 2
    assert collector.proc.poll() is None
    assert not list(outbox.glob("*.out"))  # drained: refused, not left to kill the next start
    assert [
        str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log WHERE session_id = 's-deep'")
    ] == [str(uuid.UUID(event_id))]


def _with_number(digits: int, *, quoted: bool = False) -> bytes:
    number = b'"%s"' % (b"9" * digits) if quoted else b"9" * digits
    return b'{"session_id": "s-deep", "tool_name": "Bash", "tool_input": {"n": %s}}' % number


def test_an_integer_too_long_for_python_is_refused_and_costs_no_one_else(
    start_collector, socket_path: Path, dsn: str
) -> None:
    # jsonb stores any number of digits, but delivery decodes payloads in Python, which converts at most
    # sys.get_int_max_str_digits() (4300): one such event taken would stop delivery at every start.
    collector = start_collector()
    body, event_id = _frame(_with_number(4301))
    with pytest.raises(Refused) as refused:
        deliver(str(socket_path), frame(body), event_id, 10)
    reason = decode_reply(refused.value.reply)
    assert reason.startswith("bad_payload: payload is not UTF-8 JSON: Integer value out of range")
    taken = []
    for payload in (_with_number(4300), _with_number(5000, quoted=True)):  # the most digits; digits as text
        body, event_id = _frame(payload)
        deliver(str(socket_path), frame(body), event_id, 10)
        taken.append(event_id)
    assert wait_for_rows(dsn, 2) == 2
    stored = run_sql(dsn, "SELECT event_id, length(payload->'tool_input'->>'n') FROM hook_audit_log")
    assert sorted((str(r[0]), r[1]) for r in stored) == sorted(zip(taken, (4300, 5000), strict=True))
    assert collector.proc.poll() is None


def test_a_spooled_payload_python_cannot_decode_is_stored_as_it_came(dsn: str) -> None:
    # A spool or outbox written before intake refused such payloads: the event is stored, projected as an
    # event without fields, and the batch's other events as usual.
    import trio
    import trio_asyncio

    from hookdb.collector.store.connect import ConnectOptions
    from hookdb.collector.store.rows import Row
    from hookdb.collector.store.sink import PostgresSink

    now = datetime.now(UTC)
    rows = [
        Row("default", uuid.uuid4(), now, now, "s-num", kind, tool, "claude-code", None, None, None, payload)
        for kind, tool, payload in (
            ("PreToolUse", "Bash", _with_number(5000)),
            ("Stop", None, b'{"hook_event_name": "Stop", "session_id": "s-num"}'),
        )
    ]  # fmt: skip

    async def write() -> int:
        async with trio_asyncio.open_loop():
            sink = await PostgresSink.connect(ConnectOptions(dsn=dsn))
            try:
                return await sink.write(rows)
            finally:
                await sink.aclose()

    assert trio.run(write) == 2
    digits = "SELECT length(payload->'tool_input'->>'n') FROM hook_audit_log WHERE tool_name = 'Bash'"
    assert run_sql(dsn, digits)[0][0] == 5000
    assert tuple(run_sql(dsn, "SELECT event_count, status FROM sessions")[0]) == (2, "completed")


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from([b"\\", b"u", b"$", b'"', b"hookdb.", b'"$hookdb.', b"x", b"\\u"]), max_size=12),
    st.integers(1, 60),
)
def test_a_payload_needs_a_rewrite_exactly_when_large_or_holding_a_backslash_u_or_a_marker_key(
    parts: list[bytes], min_bytes: int
) -> None:
    """needs_rewrite looks for each needle's first byte and then from there on: the same answer as looking
    for the whole needles everywhere, wherever and however often the first bytes come before them."""
    payload = b"".join(parts)
    plain = len(payload) >= min_bytes or b"\\u" in payload or b'"$hookdb.' in payload
    assert blobs.needs_rewrite(payload, min_bytes) is plain
