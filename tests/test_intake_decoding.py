"""Intake's fast paths answer exactly as the plain, fully typed decoding does (issue 12, part 6).

``decode_envelope`` checks labels for U+0000 after decoding instead of by a pattern, skips the UTF-8 check
of ASCII payloads and the bracket count of short ones; the listener encodes acks without ``str(uuid)``; the
frame decoder slices bodies from the reads. Each answer (value, or refusal reason and message) is compared
with what the straightforward way gives, for any bytes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookdb.client.protocol import MAX_PAYLOAD_DEPTH, Label, decode_envelope
from hookdb.client.wire import ACCEPTED, FrameDecoder, ProtocolError, encode_envelope, encode_reply, frame
from hookdb.collector.intake.listener import accepted_frame


class _Typed(msgspec.Struct):
    """The envelope with every constraint in its type: the oracle's decoder."""

    v: int
    event_id: uuid.UUID
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    source: Label
    event_type: Label
    session_id: Label | None
    tenant: Label | None
    payload: bytes
    ack: bool = False


class _V(msgspec.Struct):
    v: int


_head = msgspec.json.Decoder(dict | list | str | int | float | bool | None, float_hook=Decimal)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    return 1 + max(map(_depth, value), default=0) if isinstance(value, list) else 0


def oracle(body: bytes) -> tuple[Any, ...]:
    """What a frame decodes to the plain way: every field typed, the payload decoded whole."""
    try:
        env = msgspec.msgpack.decode(body, type=_Typed)
    except msgspec.ValidationError as exc:
        try:
            v = msgspec.msgpack.decode(body, type=_V).v
        except (msgspec.MsgspecError, RecursionError):
            v = 1
        if v != 1:
            return ("unsupported_version", f"protocol version {v}, expected 1")
        return ("bad_envelope", str(exc))
    except msgspec.DecodeError as exc:
        return ("not_msgpack", str(exc))
    except RecursionError:
        return ("bad_envelope", "the envelope nests too deeply to decode")
    if env.v != 1:
        return ("unsupported_version", f"protocol version {env.v}, expected 1")
    try:
        env.payload.decode()
        value = _head.decode(env.payload)
        too_deep = _depth(value) > MAX_PAYLOAD_DEPTH
    except (UnicodeDecodeError, msgspec.MsgspecError) as exc:
        return ("bad_payload", f"payload is not UTF-8 JSON: {exc}")
    except RecursionError:
        too_deep = True
    if too_deep:
        return ("bad_payload", f"payload nests deeper than {MAX_PAYLOAD_DEPTH} arrays or objects")
    tool = value.get("tool_name") if isinstance(value, dict) else None
    tool = tool if isinstance(tool, str) and "\x00" not in tool else None
    return ("ok", msgspec.structs.astuple(env), tool)


def decoded(body: bytes) -> tuple[Any, ...]:
    try:
        env, tool = decode_envelope(body)
    except ProtocolError as exc:
        return (exc.reason, exc.detail)
    return ("ok", msgspec.structs.astuple(env), tool)


# Labels near every edge: empty, 256 and 257 characters, U+0000 anywhere, not text at all.
_text = st.text(st.sampled_from("a\x00é"), max_size=6)
labels = (
    st.text(min_size=1, max_size=8)
    | _text
    | st.builds(lambda n, c: c * n, st.sampled_from([255, 256, 257]), st.sampled_from(["x", "\x00"]))
    | st.builds(lambda a, b: a + "\x00" + b, st.text(max_size=4), st.text(max_size=4))
    | st.integers(-(2**63), 2**63)
    | st.binary(max_size=4)
)
EDGE_PAYLOADS = [
    b'{"tool_name": "Bash"}',
    b'{"tool_name": "a\\u0000b", "x": [1]}',
    b'{"\xff": 1}',
    b'{"a": {"k": "\xc3"}}',
    b'{"tool_name": "\xc3\xa9"}',
    b"[" * 256 + b"]" * 256,
    b"[" * 257 + b"]" * 257,
    b'{"a":' * 256 + b"1" + b"}" * 256,
    b'{"a":' * 257 + b"1" + b"}" * 257,
    b"[" * 200 + b'{"a":' * 57 + b"1" + b"}" * 57 + b"]" * 200,
    b"[" * 199 + b'{"a":' * 57 + b"1" + b"}" * 57 + b"]" * 199,
    b'{"a": "' + b"[" * 600 + b'"}',
    b"{not json",
    b"1e400",
    b"",
]
payloads = st.sampled_from(EDGE_PAYLOADS) | st.binary(max_size=12)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    fields: dict[str, Any] = {
        "v": draw(st.sampled_from([1, 1, 1, 2, "1"])),
        "event_id": draw(st.sampled_from([str(uuid.uuid4()), uuid.uuid4().hex, "not-a-uuid", 7])),
        "occurred_at": draw(
            st.sampled_from([datetime.now(UTC), datetime(2025, 1, 1), "2025-01-01T00:00:00Z"])
        ),
        "source": draw(labels),
        "event_type": draw(labels),
        "session_id": draw(st.none() | labels),
        "tenant": draw(st.none() | labels),
        "payload": draw(payloads | st.text(max_size=3)),
        "ack": draw(st.sampled_from([False, True, 1])),
    }
    for name in draw(st.sets(st.sampled_from(sorted(fields)), max_size=2)):
        del fields[name]
    order = draw(st.permutations(sorted(fields)))
    body = msgspec.msgpack.encode({name: fields[name] for name in order})
    cut = draw(st.sampled_from([None, None, None, *range(1, 12)]))
    return body if cut is None else body[:-cut]


@settings(max_examples=1500, deadline=None)
@given(bodies())
def test_every_frame_is_decoded_or_refused_exactly_as_the_typed_decoding_does(body: bytes) -> None:
    assert decoded(body) == oracle(body)


@given(st.binary(max_size=64))
def test_random_bytes_are_refused_exactly_as_the_typed_decoding_does(body: bytes) -> None:
    assert decoded(body) == oracle(body)


def _envelope(payload: bytes, **changes: Any) -> bytes:
    fields = dict(
        event_id=str(uuid.uuid4()),
        occurred_at_ns=1_700_000_000_000_000_000,
        source="claude-code",
        event_type="PreToolUse",
        session_id="s",
        tenant=None,
        payload=payload,
    )
    return encode_envelope(**{**fields, **changes})


@pytest.mark.parametrize("payload", EDGE_PAYLOADS)
def test_payloads_at_every_edge_are_decoded_or_refused_as_the_typed_decoding_does(payload: bytes) -> None:
    body = _envelope(payload)
    assert decoded(body) == oracle(body)


@given(st.binary(max_size=6), st.booleans(), st.sampled_from([0, 1, 255, 256, 1200]))
def test_a_payload_decoded_whole_to_be_walked_is_refused_as_before(raw: bytes, key: bool, depth: int) -> None:
    """Long and with many brackets, it is decoded whole (which checks its UTF-8) rather than checked apart."""
    text = b'"' + raw.replace(b'"', b"").replace(b"\\", b"") + b'"'
    value = b"{" + text + b": 1}" if key else text
    body = _envelope(b'{"pad": "' + b"[" * 300 + b'", "v": ' + b"[" * depth + value + b"]" * depth + b"}")
    assert decoded(body) == oracle(body)


@pytest.mark.parametrize("payload", [b'{"\xff": 1}', b'{"a": {"\xed\xa0\x80": 1}}', b'{"a": ["\xc3"]}'])
def test_invalid_utf8_where_the_json_decoder_does_not_look_is_refused(payload: bytes) -> None:
    """msgspec skips the fields it does not build without checking their UTF-8 (keys included)."""
    with pytest.raises(ProtocolError) as caught:
        decode_envelope(_envelope(payload))
    assert (caught.value.reason, caught.value.detail) == oracle(_envelope(payload))


@pytest.mark.parametrize("field", ["source", "event_type", "session_id", "tenant"])
def test_u0000_in_any_label_is_refused_with_the_pattern_s_words(field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_envelope(_envelope(b"{}", **{field: "a\x00b"}))
    assert caught.value.reason == "bad_envelope"
    assert caught.value.detail == f"Expected `str` matching regex '^[^\\\\x00]+$' - at `$.{field}`"


@given(st.uuids())
def test_an_ack_is_the_reply_encode_reply_makes(event_id: uuid.UUID) -> None:
    assert accepted_frame(event_id) == frame(encode_reply(str(event_id), ACCEPTED))


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=6), st.data())
def test_frames_come_whole_through_reads_of_any_size(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(map(frame, bodies))
    decoder = FrameDecoder()
    got: list[bytes] = []
    at = 0
    while at < len(stream):
        size = data.draw(st.integers(1, 700))
        decoder.receive_data(stream[at : at + size])
        at += size
        while (body := decoder.next_frame()) is not None:
            got.append(body)
        assert decoder.buffered == len(stream[: min(at, len(stream))]) - sum(len(b) + 4 for b in got)
    decoder.end_of_stream()
    assert got == bodies


def test_an_oversize_length_is_refused_once_its_last_byte_arrives_after_a_partial_read() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(frame(b"x" * 50)[:30])
    assert decoder.next_frame() is None
    decoder.receive_data(frame(b"x" * 50)[30:] + b"\x00")
    assert decoder.next_frame() == b"x" * 50
    for byte in (b"\x00", b"\x00"):
        decoder.receive_data(byte)
        assert decoder.next_frame() is None
    decoder.receive_data(b"\xff")
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.reason == "oversize"
