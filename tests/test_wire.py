"""Wire protocol v1: the sender's encoder, framing, and the collector's validating decoder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookdb.client.protocol import MAX_PAYLOAD_DEPTH, Envelope, Reply, decode_envelope
from hookdb.client.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_SIZE,
    FrameDecoder,
    ProtocolError,
    encode_envelope,
    encode_reply,
    frame,
    new_event_id,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
storable_text = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
labels = st.text(storable_text, min_size=1, max_size=256)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(storable_text),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(storable_text, max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Whole microseconds (datetime's resolution) from year 881 to 6325: every MessagePack timestamp form.
instants_ns = st.integers(-(2**35), 2**37).flatmap(
    lambda sec: st.sampled_from([0, 1000, 999_999_000]).map(lambda frac: sec * 1_000_000_000 + frac)
) | st.integers(-(2**35) * 10**6, 2**37 * 10**6).map(lambda us: us * 1000)


@st.composite
def envelope_fields(draw: st.DrawFn) -> dict:
    return {
        "event_id": str(draw(st.uuids())),
        "occurred_at_ns": draw(instants_ns),
        "source": draw(labels),
        "event_type": draw(labels),
        "session_id": draw(st.none() | labels),
        "tenant": draw(st.none() | labels),
        "payload": msgspec.json.encode(draw(json_values)),
        "ack": draw(st.booleans()),
    }


def typed(fields: dict) -> Envelope:
    return Envelope(
        v=1,
        event_id=uuid.UUID(fields["event_id"]),
        occurred_at=EPOCH + timedelta(microseconds=fields["occurred_at_ns"] // 1000),
        source=fields["source"],
        event_type=fields["event_type"],
        session_id=fields["session_id"],
        tenant=fields["tenant"],
        payload=fields["payload"],
        ack=fields.get("ack", False),
    )


@given(envelope_fields())
def test_fast_encoder_writes_exactly_what_msgspec_writes(fields: dict) -> None:
    assert encode_envelope(**fields) == msgspec.msgpack.encode(typed(fields))


@given(
    st.none() | st.uuids().map(str), st.sampled_from(["accepted", "oversize", "bad_payload", "spool_full"])
)
def test_fast_reply_encoder_writes_exactly_what_msgspec_writes(event_id: str | None, status: str) -> None:
    assert encode_reply(event_id, status) == msgspec.msgpack.encode(Reply(event_id, status))


@given(st.lists(envelope_fields(), min_size=1, max_size=5), st.data())
def test_envelopes_survive_framing_split_at_random_points(batch: list[dict], data: st.DataObject) -> None:
    stream = b"".join(frame(encode_envelope(**fields)) for fields in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.receive_data(stream[start:end])
        while (body := decoder.next_frame()) is not None:
            received.append(decode_envelope(body)[0])
    decoder.end_of_stream()
    assert received == [typed(fields) for fields in batch]


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_random_bytes_never_crash_the_decoder(stream: bytes, chunk: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    body_reasons, stream_reasons = set(), set()
    try:
        for i in range(0, len(stream), chunk):
            decoder.receive_data(stream[i : i + chunk])
            while (body := decoder.next_frame()) is not None:
                try:
                    decode_envelope(body)
                except ProtocolError as exc:
                    body_reasons.add(exc.reason)
        decoder.end_of_stream()
    except ProtocolError as exc:
        stream_reasons.add(exc.reason)
    assert body_reasons <= {"not_msgpack", "bad_envelope", "unsupported_version", "bad_payload"}
    assert stream_reasons <= {"oversize", "truncated"}


def test_huge_length_prefix_is_refused_before_its_body_arrives() -> None:
    decoder = FrameDecoder()
    decoder.receive_data((2**32 - 1).to_bytes(HEADER_SIZE, "big") + b"x")
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.reason == "oversize"
    assert str(DEFAULT_MAX_FRAME_BYTES) in caught.value.detail


def test_frames_before_a_bad_one_are_delivered() -> None:
    good = frame(b"first")
    decoder = FrameDecoder(max_frame_bytes=10)
    decoder.receive_data(good + (11).to_bytes(HEADER_SIZE, "big"))
    assert decoder.next_frame() == b"first"
    with pytest.raises(ProtocolError, match="oversize"):
        decoder.next_frame()


def test_stream_ending_inside_a_frame_is_truncated() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(b"abcdef")[:-2])
    assert decoder.next_frame() is None
    with pytest.raises(ProtocolError) as caught:
        decoder.end_of_stream()
    assert caught.value.reason == "truncated"


def _fields(**changes: object) -> dict:
    fields = {
        "event_id": new_event_id(),
        "occurred_at_ns": 1_764_000_000_000_000_000,
        "source": "app",
        "event_type": "PreToolUse",
        "session_id": "s1",
        "tenant": None,
        "payload": b'{"tool_name": "Bash"}',
    }
    fields.update(changes)
    return fields


def test_decoder_lifts_tool_name_from_the_payload() -> None:
    env, tool_name = decode_envelope(encode_envelope(**_fields()))
    assert tool_name == "Bash"
    assert env.payload == b'{"tool_name": "Bash"}'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "not_msgpack"),
        (msgspec.msgpack.encode({"v": 1}), "bad_envelope"),
        (msgspec.msgpack.encode([1, 2, 3]), "bad_envelope"),
        (msgspec.msgpack.encode({**msgspec.to_builtins(typed(_fields())), "v": 2}), "unsupported_version"),
        (msgspec.msgpack.encode({"v": 7, "something": "else"}), "unsupported_version"),
        (encode_envelope(**_fields(event_id="not-a-uuid")), "bad_envelope"),
        (encode_envelope(**_fields(event_type="")), "bad_envelope"),
        (encode_envelope(**_fields(session_id="a\x00b")), "bad_envelope"),
        (encode_envelope(**_fields(payload=b"{not json")), "bad_payload"),
        (encode_envelope(**_fields(payload=b'{"a": "\xff"}')), "bad_payload"),
        (encode_envelope(**_fields(payload=b"[" * 257 + b"]" * 257)), "bad_payload"),
        (encode_envelope(**_fields(payload=b"[" * 990 + b"]" * 990)), "bad_payload"),
        (encode_envelope(**_fields(payload=b"[" * 100_000 + b"]" * 100_000)), "bad_payload"),
        (encode_envelope(**_fields(payload=b'{"a": NaN}')), "bad_payload"),
    ],
)
def test_bad_frames_are_refused_with_their_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_envelope(body)
    assert caught.value.reason == reason


def test_deep_msgpack_is_refused_not_raised() -> None:
    body = encode_envelope(**_fields())
    deep = b"\x89" + body[1:] + b"\xa1x" + b"\x91" * 100_000 + b"\xc0"  # a 9th key, nested 100,000 deep
    with pytest.raises(ProtocolError) as caught:
        decode_envelope(deep)
    assert caught.value.reason == "bad_envelope"


def test_payloads_nested_up_to_the_limit_are_accepted() -> None:
    deepest = b"[" * MAX_PAYLOAD_DEPTH + b"]" * MAX_PAYLOAD_DEPTH
    assert decode_envelope(encode_envelope(**_fields(payload=deepest)))[1] is None
    brackets = b'{"tool_name": "Read", "content": "' + b"[{" * 5000 + b'"}'  # deep only in text
    assert decode_envelope(encode_envelope(**_fields(payload=brackets)))[1] == "Read"


def test_u0000_in_a_payload_is_accepted_but_kept_out_of_the_tool_name_column() -> None:
    _, tool_name = decode_envelope(
        encode_envelope(**_fields(payload=b'{"tool_name": "R", "a": "x\\u0000y"}'))
    )
    assert tool_name == "R"
    _, tool_name = decode_envelope(encode_envelope(**_fields(payload=b'{"tool_name": "R\\u0000"}')))
    assert tool_name is None


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    _, tool_name = decode_envelope(
        encode_envelope(**_fields(payload=b'{"tool_name": "x", "a": "\\\\u0000"}'))
    )
    assert tool_name == "x"


def test_a_naive_timestamp_is_refused() -> None:
    naive = msgspec.to_builtins(typed(_fields()))
    naive["occurred_at"] = "2026-01-01T00:00:00"
    with pytest.raises(ProtocolError, match="bad_envelope"):
        decode_envelope(msgspec.msgpack.encode(naive))


def test_event_ids_are_uuid7_and_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(1000)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(ids)) == 1000
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)
