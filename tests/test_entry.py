"""Spool entries: the v2 format round-trips, and spools written by earlier collectors (v1) still replay."""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookdb.client.protocol import decode_envelope
from hookdb.client.records import SPOOL_FILE, encode_record
from hookdb.client.wire import encode_envelope, new_event_id
from hookdb.collector.spool.entry import (
    Peer,
    StaleEntry,
    decode_entry,
    encode_entry,
    from_ns,
    received_at_ns,
)
from hookdb.collector.spool.segments import segment_name
from hookdb.collector.store.rows import entry_row, event_row

from conftest import run_sql, wait_for, wait_for_rows

_V1_META = struct.Struct(">qIIIH")
_NONE = 0xFFFFFFFF


def encode_v1(envelope: bytes, peer: Peer | None, received_ns: int, tenant: str) -> bytes:
    """An entry exactly as collectors before v2 wrote it: header, tenant, the frame body as sent."""
    pid, uid, gid = peer if peer is not None else (None, _NONE, _NONE)
    name = tenant.encode()
    return _V1_META.pack(received_ns, _NONE if pid is None else pid, uid, gid, len(name)) + name + envelope


labels = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40
)
u32 = st.integers(0, 0xFFFFFFFE)
peers = st.none() | st.builds(Peer, st.none() | u32, u32, u32)
moments = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | labels,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(labels, inner, max_size=4),
    max_leaves=12,
)
received = st.integers(0, 2**63 - 1)


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[bytes, dict]:
    fields = {
        "event_id": str(draw(st.uuids())),
        "occurred_at_ns": draw(st.integers(0, 2**62)),  # nanoseconds: the entry keeps the frame as sent
        "source": draw(labels),
        "event_type": draw(labels),
        "session_id": draw(st.none() | labels),
        "tenant": draw(st.none() | labels),
        "payload": msgspec.json.encode(draw(json_values)),
        "ack": draw(st.booleans()),
    }
    return encode_envelope(**fields), fields


@given(envelopes(), peers, received, labels)
def test_a_v2_entry_round_trips_what_intake_validated(
    sent: tuple[bytes, dict], peer: Peer | None, received_ns: int, tenant: str
) -> None:
    body, fields = sent
    envelope, tool_name = decode_envelope(body)
    encoded = encode_entry(body, envelope, tool_name, peer, received_ns, tenant)
    assert encoded[0] >= 0x80  # never mistaken for a v1 entry
    entry = decode_entry(encoded)
    head = entry.head
    assert (head.received_at_ns, head.peer, head.tenant, head.tool_name) == (
        received_ns,
        peer,
        tenant,
        tool_name,
    )
    assert (head.event_id, head.occurred_at, head.source, head.event_type, head.session_id) == (
        envelope.event_id,
        envelope.occurred_at,
        envelope.source,
        envelope.event_type,
        envelope.session_id,
    )
    assert entry.payload == fields["payload"]
    assert entry.envelope == body  # the frame as sent, for a dead letter
    assert received_at_ns(encoded) == received_ns
    # The row is the one the frame itself gives, whichever way it is built.
    assert entry_row(entry) == event_row(body, peer, from_ns(received_ns), tenant)


@given(envelopes(), peers, received, labels)
def test_a_v1_entry_of_an_earlier_collector_still_decodes(
    sent: tuple[bytes, dict], peer: Peer | None, received_ns: int, tenant: str
) -> None:
    body, _ = sent
    old = encode_v1(body, peer, received_ns, tenant)
    assert old[0] < 0x80
    entry = decode_entry(old)
    assert (entry.head.received_at_ns, entry.head.peer, entry.head.tenant) == (received_ns, peer, tenant)
    assert entry.envelope == body
    assert received_at_ns(old) == received_ns
    assert entry_row(entry) == event_row(body, peer, from_ns(received_ns), tenant)


def test_a_v1_entry_this_collector_refuses_is_kept_whole_for_the_dead_letters() -> None:
    body = msgspec.msgpack.encode({"v": 1, "event_id": "not a uuid"})
    peer = Peer(12, 1000, 1000)
    with pytest.raises(StaleEntry) as refused:
        decode_entry(encode_v1(body, peer, 123, "acme"))
    stale = refused.value
    assert (stale.reason, stale.received_at_ns, stale.peer, stale.envelope) == (
        "bad_envelope",
        123,
        peer,
        body,
    )


@pytest.mark.parametrize("body", [b"\x83anything", b"\x82\xc1", b"", b"\x00\x01"])
def test_an_entry_of_no_known_format_is_kept_not_a_crash(body: bytes) -> None:
    with pytest.raises(StaleEntry) as refused:
        decode_entry(body)
    assert refused.value.envelope == body
    assert refused.value.received_at_ns is None
    assert received_at_ns(body) is None


def test_a_payload_that_also_appears_earlier_in_the_frame_is_sliced_right() -> None:
    for payload in (b"1", b'"s"', b"{}", b'"app"'):
        body = encode_envelope(
            event_id="11111111-1111-4111-8111-111111111111",
            occurred_at_ns=1_000_000_000,
            source="app",
            event_type="s",
            session_id="1",
            tenant=None,
            payload=payload,
            ack=True,
        )
        envelope, tool_name = decode_envelope(body)
        assert decode_entry(encode_entry(body, envelope, tool_name, None, 5, "t")).payload == payload


def test_a_spool_written_by_an_earlier_collector_is_delivered_by_this_one(
    start_collector, dsn: str, tmp_path: Path
) -> None:
    # The spool as a v1 collector left it (stopped before delivering), then v2 entries after an upgrade.
    peer = Peer(4242, os.getuid(), os.getgid())
    ids = [new_event_id() for _ in range(40)]
    refused = msgspec.msgpack.encode({"v": 1, "event_id": "from an older, laxer collector"})
    bodies = [
        encode_envelope(
            event_id=i,
            occurred_at_ns=time.time_ns(),
            source="app",
            event_type="Stop",
            session_id="s",
            tenant=None,
            payload=b'{"n": %d}' % n,
        )
        for n, i in enumerate(ids)
    ]
    records = [encode_v1(b, peer, time.time_ns(), "default") for b in bodies[:30]]
    records.append(encode_v1(refused, peer, time.time_ns(), "default"))
    for b in bodies[30:]:
        envelope, tool_name = decode_envelope(b)
        records.append(encode_entry(b, envelope, tool_name, peer, time.time_ns(), "default"))
    spool = tmp_path / "state" / "spool"
    spool.mkdir(parents=True)
    (spool / segment_name(1)).write_bytes(SPOOL_FILE + b"".join(encode_record(r) for r in records))

    start_collector()
    assert wait_for_rows(dsn, 40) == 40
    stored = run_sql(dsn, "SELECT event_id, peer_pid, payload->>'n' FROM hook_audit_log ORDER BY 3::int")
    assert {str(r[0]) for r in stored} == set(ids)
    assert {r[1] for r in stored} == {4242}
    letters_file = tmp_path / "state" / "deadletter" / "deadletter.jsonl"
    wait_for(letters_file.exists, 10)
    letters = letters_file.read_text().splitlines()
    assert len(letters) == 1
    assert base64.b64decode(json.loads(letters[0])["envelope"]) == refused


def test_a_tool_name_of_any_length_fits_the_head() -> None:
    payload = msgspec.json.encode({"tool_name": "t" * 100_000})
    body = encode_envelope(
        event_id=new_event_id(),
        occurred_at_ns=time.time_ns(),
        source="app",
        event_type="PreToolUse",
        session_id="s",
        tenant=None,
        payload=payload,
    )
    envelope, tool_name = decode_envelope(body)
    entry = decode_entry(encode_entry(body, envelope, tool_name, None, 1, "t"))
    assert entry.head.tool_name == "t" * 100_000
    assert entry.payload == payload


def test_an_http_hook_is_admitted_from_one_parse_and_gives_the_row_its_frame_gives(monkeypatch) -> None:
    from hookdb.collector.intake import admission

    payload = json.dumps(
        {"hook_event_name": "PostToolUse", "session_id": "s/1", "tool_name": "Bash", "x": [1.5, "é"]}
    ).encode()

    def no_second_decode(body: bytes) -> None:
        raise AssertionError("the HTTP hook path decoded its own envelope again")

    monkeypatch.setattr(admission, "decode_envelope", no_second_decode)
    received_ns = time.time_ns()
    entry = decode_entry(admission.admit_hook(payload, "claude-code", "acme", received_ns))
    head = entry.head
    assert (head.tenant, head.source, head.event_type, head.session_id, head.tool_name) == (
        "acme",
        "claude-code",
        "PostToolUse",
        "s/1",
        "Bash",
    )
    assert entry.payload == payload
    assert entry_row(entry) == event_row(entry.envelope, None, from_ns(received_ns), "acme")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[1, 2]", "bad_payload"),
        (b"{", "bad_payload"),
        (b'{"session_id": "' + b"s" * 300 + b'"}', "bad_envelope"),
    ],
)
def test_an_http_hook_that_cannot_be_stored_is_refused_with_its_reason(payload: bytes, reason: str) -> None:
    from hookdb.client.wire import ProtocolError
    from hookdb.collector.intake.admission import admit_hook

    with pytest.raises(ProtocolError) as refused:
        admit_hook(payload, "claude-code", "acme", time.time_ns())
    assert refused.value.reason == reason
