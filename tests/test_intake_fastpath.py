"""Intake's per-read fast path gives exactly what the per-frame way gives (issue 12, part 6).

The listener splits a read's frames in one call (``FrameDecoder.next_frames``), admits them in one call
(``admit_frames``), and encodes each entry's head from a tuple of its fields. Each is compared, for any
input, with the straightforward way: ``next_frame`` until ``None``, each frame decoded, its tenant
resolved and its entry encoded in turn (a frame whose admission raises is refused and kept as the listener
always did), a :class:`Head` encoded.
"""

from __future__ import annotations

import re
import struct
import uuid
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_intake_decoding import bodies as odd_bodies

from hookdb.client import protocol
from hookdb.client.protocol import decode_envelope
from hookdb.client.wire import FrameDecoder, ProtocolError, encode_envelope, frame
from hookdb.collector.intake.admission import KeptRefusal, admit_frames
from hookdb.collector.intake.tenancy import Grant
from hookdb.collector.spool.deadletters import DeadLetter
from hookdb.collector.spool.entry import Head, Peer, encode_entry, from_ns

LIMIT = 200  # the decoders' max_frame_bytes
frame_bodies = st.binary(max_size=40) | st.binary(min_size=LIMIT - 1, max_size=LIMIT + 1)  # some oversize


def _drain_one_by_one(decoder: FrameDecoder) -> tuple[list[bytes], tuple[str, str] | None]:
    got: list[bytes] = []
    try:
        while (body := decoder.next_frame()) is not None:
            got.append(body)
    except ProtocolError as exc:
        return got, (exc.reason, exc.detail)
    return got, None


def _drain_in_runs(decoder: FrameDecoder) -> tuple[list[bytes], tuple[str, str] | None]:
    got: list[bytes] = []
    try:
        while frames := decoder.next_frames():
            got += frames
    except ProtocolError as exc:
        return got, (exc.reason, exc.detail)
    return got, None


@settings(max_examples=500, deadline=None)
@given(
    st.lists(frame_bodies, max_size=8),
    st.binary(max_size=3),  # a torn tail: part of a length prefix
    st.data(),
)
def test_next_frames_gives_every_frame_and_refusal_next_frame_gives(
    bodies: list[bytes], tail: bytes, data: st.DataObject
) -> None:
    stream = b"".join(map(frame, bodies)) + tail
    one, runs = FrameDecoder(LIMIT), FrameDecoder(LIMIT)
    at = 0
    while at < len(stream):
        size = data.draw(st.integers(1, 3 * LIMIT))
        chunk = stream[at : at + size]
        at += size
        one.receive_data(chunk)
        runs.receive_data(chunk)
        expected = _drain_one_by_one(one)
        assert _drain_in_runs(runs) == expected
        assert runs.buffered == one.buffered
        if expected[1] is not None:
            break


def test_a_length_over_the_maximum_after_frames_is_refused_by_the_next_call() -> None:
    decoder = FrameDecoder(LIMIT)
    decoder.receive_data(frame(b"a") + frame(b"b") + (LIMIT + 1).to_bytes(4, "big"))
    assert decoder.next_frames() == [b"a", b"b"]
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frames()
    assert caught.value.reason == "oversize"


class _Failing(Grant):
    """A grant whose lookup of any tenant but its own fails as nothing foresaw: the frame's admission
    raises."""

    def resolve(self, claimed: str | None) -> str:
        if claimed is None or claimed == self.primary:
            return self.primary
        raise RuntimeError(f"no lookup for {claimed!r}")


PEER = Peer(4321, 1000, 1000)
RECEIVED_NS = 1_750_000_000_123_456_789
grants = st.sampled_from(
    [
        None,
        Grant("t1", frozenset({"t1"})),
        Grant("t1", frozenset({"t1", "t2"})),
        _Failing("t1", frozenset({"t1"})),
    ]
)


@st.composite
def good_bodies(draw: st.DrawFn) -> bytes:
    return encode_envelope(
        event_id=str(draw(st.uuids())),
        occurred_at_ns=draw(st.integers(0, 2**62)),
        source="claude-code",
        event_type=draw(st.sampled_from(["PreToolUse", "Stop"])),
        session_id=draw(st.none() | st.just("s1")),
        tenant=draw(st.sampled_from([None, None, "t1", "t2", "t3"])),
        payload=draw(st.sampled_from([b"{}", b'{"tool_name": "Bash", "x": [1, 2]}', b"[1]", b"{bad"])),
        ack=draw(st.booleans()),
    )


def _refusal(exc: ProtocolError) -> tuple[Any, ...]:
    """A refusal's every observable part: the letter it keeps (but when it was written), its cause."""
    letter = exc.letter if isinstance(exc, KeptRefusal) else None
    kept = None if letter is None else msgspec.structs.replace(letter, dead_at=datetime.min)
    cause = exc.__cause__
    return (type(exc), exc.reason, exc.detail, str(exc), kept, type(cause), str(cause) if cause else None)


def _one_by_one(
    bodies: list[bytes], grant: Grant | None
) -> tuple[list[bytes], list[uuid.UUID], tuple[Any, ...] | None]:
    """What the listener did before: each frame admitted in turn; one that raises is refused and kept."""
    entries: list[bytes] = []
    acks: list[uuid.UUID] = []
    for body in bodies:
        try:
            envelope, tool_name = decode_envelope(body)
            try:
                tenant = (grant or _NO_GRANT).resolve(envelope.tenant)
            except ProtocolError as exc:
                return entries, acks, _refused_tenant(exc, body, envelope)
            entries.append(encode_entry(body, envelope, tool_name, PEER, RECEIVED_NS, tenant))
        except ProtocolError as exc:
            return entries, acks, _refusal(exc)
        except Exception as exc:
            return entries, acks, _refused_unforeseen(exc, body)
        if envelope.ack:
            acks.append(envelope.event_id)
    return entries, acks, None


class _NoGrant(Grant):
    """What a peer that may write no tenant has."""

    def resolve(self, claimed: str | None) -> str:
        raise ProtocolError("peer_not_allowed", "this peer may write no tenant")


_NO_GRANT = _NoGrant("", frozenset())


def _refused_tenant(exc: ProtocolError, body: bytes, envelope: protocol.Envelope) -> tuple[Any, ...]:
    """The refusal (and dead letter) of a well-formed frame for a tenant the sender may not write."""
    letter = DeadLetter(
        dead_at=datetime.min,
        error=f"{exc.reason}: {exc.detail}",
        sqlstate=None,
        received_at=from_ns(RECEIVED_NS),
        peer=PEER,
        event_id=str(envelope.event_id),
        event_type=envelope.event_type,
        session_id=envelope.session_id,
        envelope=body,
    )
    return (KeptRefusal, exc.reason, exc.detail, str(exc), letter, type(None), None)


def _refused_unforeseen(exc: Exception, body: bytes) -> tuple[Any, ...]:
    """The refusal (and dead letter) the listener gave a frame whose admission raised ``exc``."""
    detail = f"the collector could not handle this frame: {exc!r}"[:500]
    letter = DeadLetter(
        dead_at=datetime.min,
        error=f"internal_error: {exc!r}"[:1000],
        sqlstate=None,
        received_at=from_ns(RECEIVED_NS),
        peer=PEER,
        event_id=None,
        event_type=None,
        session_id=None,
        envelope=body,
    )
    return (KeptRefusal, "internal_error", detail, f"internal_error: {detail}", letter, type(exc), str(exc))


@settings(max_examples=700, deadline=None)
@given(st.lists(good_bodies() | odd_bodies(), max_size=6), grants)
def test_admit_frames_admits_and_refuses_as_admit_frame_by_frame_did(
    bodies: list[bytes], grant: Grant | None
) -> None:
    entries, acks, refusal = admit_frames(bodies, PEER, grant, RECEIVED_NS)
    assert (entries, acks, None if refusal is None else _refusal(refusal)) == _one_by_one(bodies, grant)


def test_a_frame_whose_admission_fails_unforeseen_is_refused_after_the_frames_before_it() -> None:
    good, claims = (  # the second claims a tenant, so the grant is asked (and fails)
        encode_envelope(
            event_id=str(uuid.uuid4()),
            occurred_at_ns=1,
            source="s",
            event_type="Stop",
            session_id=None,
            tenant=tenant,
            payload=b"{}",
        )
        for tenant in (None, "t2")
    )
    entries, acks, refusal = admit_frames([good, claims, good], PEER, _Failing("t1", frozenset()), 0)
    assert len(entries) == 1
    assert acks == []
    assert isinstance(refusal, KeptRefusal)
    assert refusal.reason == "internal_error"
    assert refusal.letter.envelope == claims
    assert isinstance(refusal.__cause__, RuntimeError)


_head = msgspec.msgpack.Encoder(uuid_format="bytes").encode


@given(good_bodies(), st.none() | st.builds(Peer, st.none() | st.integers(0, 2**31), st.just(0), st.just(0)))
def test_an_entry_s_head_is_the_head_struct_encoded(body: bytes, peer: Peer | None) -> None:
    try:
        envelope, tool_name = decode_envelope(body)
    except ProtocolError:
        return
    start = body.rindex(envelope.payload)
    head = _head(
        Head(
            RECEIVED_NS,
            peer,
            "t1",
            envelope.event_id,
            envelope.occurred_at,
            envelope.source,
            envelope.event_type,
            envelope.session_id,
            tool_name,
            start,
            start + len(envelope.payload),
        )
    )
    expected = struct.pack(">BI", 0x82, len(head)) + head + body
    assert encode_entry(body, envelope, tool_name, peer, RECEIVED_NS, "t1") == expected


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 9000),
    st.sampled_from([0, 1, 4299, 4300, 4301, 4302, 8601, 9000]),
    st.integers(0, 5000),
    st.integers(0, 5000),
)
def test_long_digit_runs_are_found_wherever_they_lie(before: int, run: int, after: int, other: int) -> None:
    # The sampled search gives what reading every byte gives, runs at and across the sampled positions.
    payload = b"1" * other + b'{"a": "' + b"x" * before + b"7" * run + b'"}' + b" " * after
    assert protocol._long_digits(payload) == (re.search(rb"[0-9]{4301}", payload) is not None)
