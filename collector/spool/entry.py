"""A spool entry: one admitted frame with everything intake learned about it, so delivery never asks again.

Pure encoding, no I/O; the spool stores entries as record bodies, delivery turns them into rows.

Two formats, told apart by the first byte:

- **v2** (written now): the byte ``0x82``, the length of the head (4 bytes, big-endian), the head — an
  msgpack array of :class:`Head`'s fields: when, from whom, for which tenant, the envelope's validated
  fields, the payload's ``tool_name`` and where the payload lies in the frame — then the frame body as the
  client sent it. Decoding it validates nothing again (intake did) and slices the payload out of the
  frame; the frame stays whole for a dead letter.
- **v1** (spools of earlier collectors): a fixed header (received_at in ns since the epoch as a positive
  int64, so its first byte is always below ``0x80``; peer pid, uid, gid; tenant length), the tenant, and
  the frame body. Decoding it decodes and validates that frame, as delivery did before.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec

from hookdb.client.protocol import Envelope, decode_envelope
from hookdb.client.wire import ProtocolError


class Peer(NamedTuple):
    """The sending process as the kernel reports it (SO_PEERCRED); clients cannot forge it."""

    pid: int | None  # None when the kernel could not tell (events drained from the outbox)
    uid: int
    gid: int


class Head(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """What intake learned about a frame: when, from whom and for which tenant it came, and its fields."""

    received_at_ns: int
    peer: tuple[int | None, int, int] | None  # a Peer's fields: decoded as a plain tuple, a third faster
    tenant: str
    event_id: uuid.UUID
    occurred_at: datetime
    source: str
    event_type: str
    session_id: str | None
    tool_name: str | None
    payload_start: int  # the payload's bytes in the frame body: [payload_start, payload_end)
    payload_end: int


class Entry(NamedTuple):
    """A decoded spool entry: its head, its payload, and (lazily) the frame it came in."""

    head: Head
    payload: bytes
    body: bytes  # the record body, which holds the frame from frame_start on
    frame_start: int

    @property
    def envelope(self) -> bytes:
        """The frame body exactly as the client sent it (for a dead letter)."""
        return self.body[self.frame_start :]


class StaleEntry(ProtocolError):
    """A spooled entry this collector cannot store: a v1 entry whose frame it refuses (spooled by a collector
    that accepted it), or an entry of a format it does not know. Kept as a dead letter with its bytes."""

    def __init__(
        self, refusal: ProtocolError, received_at_ns: int | None, peer: Peer | None, envelope: bytes
    ) -> None:
        super().__init__(refusal.reason, refusal.detail)
        self.received_at_ns = received_at_ns  # None when the entry is unreadable
        self.peer = peer
        self.envelope = envelope


V2 = 0x82
_V2 = struct.Struct(">BI")  # the format byte, the head's length (tool_name has no length limit)
_encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode
_decode_head = msgspec.msgpack.Decoder(Head).decode
_new_entry = tuple.__new__  # an Entry without its generated __new__'s Python frame: one per event delivered

_META = struct.Struct(">qIIIH")  # v1: received_at (ns since the epoch), peer pid, uid, gid, tenant length
_NONE = 0xFFFFFFFF


def encode_entry(
    frame: bytes,
    envelope: Envelope,
    tool_name: str | None,
    peer: Peer | None,
    received_at_ns: int,
    tenant: str,
) -> bytes:
    """The spool record body (v2) of ``frame``, decoded and validated as ``envelope``, accepted at
    ``received_at_ns`` for ``tenant``."""
    payload = envelope.payload
    # Last in the frame as encode_envelope puts it (the usual case, tested inline), else found.
    start = len(frame) - len(payload) if frame.endswith(payload) else _payload_start(frame, payload)
    head = _encode(  # Head's fields as a tuple: the same msgpack array, without building a Head
        (
            received_at_ns,
            peer,
            tenant,
            envelope.event_id,
            envelope.occurred_at,
            envelope.source,
            envelope.event_type,
            envelope.session_id,
            tool_name,
            start,
            start + len(payload),
        )
    )
    return b"".join((_V2.pack(V2, len(head)), head, frame))


_ACK = b"\xa3ack\xc3"  # what follows the payload in a frame that asks for an ack


def _payload_start(frame: bytes, payload: bytes) -> int:
    """Where ``payload`` lies in ``frame``: msgpack keeps bytes verbatim, so it is there as it is.

    Encoders of the envelope (``encode_envelope``, msgspec's) put it last, or just before ``ack``: two
    comparisons at the end. Anywhere else, any place holding the same bytes would do.
    """
    for end in (len(frame), len(frame) - len(_ACK)):
        if frame.endswith(payload, 0, end):
            return end - len(payload)
    return frame.rfind(payload)


def decode_entry(body: bytes) -> Entry:
    """The entry a spool record body holds, of either format; raises :class:`StaleEntry` for an entry this
    collector cannot store (a v1 frame it refuses, or a format it does not know)."""
    if body and body[0] == V2 and len(body) >= _V2.size:
        frame_start = _V2.size + _V2.unpack_from(body)[1]
        try:
            head = _decode_head(body[_V2.size : frame_start])  # a copy of the head is cheaper than a view
        except msgspec.MsgspecError as exc:
            raise _unreadable(body, f"unreadable v2 spool entry: {exc}") from None
        payload = body[frame_start + head.payload_start : frame_start + head.payload_end]
        return _new_entry(Entry, (head, payload, body, frame_start))
    if len(body) < _META.size or body[0] >= 0x80:
        raise _unreadable(body, f"spool entry of unknown format {body[:1].hex() or 'empty'}")
    received_at_ns, peer, tenant, frame_start = _decode_v1(body)
    try:
        env, tool_name = decode_envelope(body[frame_start:])
    except ProtocolError as exc:
        raise StaleEntry(exc, received_at_ns, peer, body[frame_start:]) from None
    head = Head(
        received_at_ns,
        peer,
        tenant,
        env.event_id,
        env.occurred_at,
        env.source,
        env.event_type,
        env.session_id,
        tool_name,
        -1,  # not needed: the payload is decoded already
        -1,
    )
    return Entry(head, env.payload, body, frame_start)


def _unreadable(body: bytes, detail: str) -> StaleEntry:
    return StaleEntry(ProtocolError("unsupported_version", detail), None, None, body)


def received_at_ns(body: bytes) -> int | None:
    """When the entry in ``body`` was received (None if it cannot tell), without validating its frame."""
    if body[:1] == b"\x82":
        try:
            return decode_entry(body).head.received_at_ns
        except StaleEntry:
            return None
    return _META.unpack_from(body)[0] if len(body) >= _META.size else None


def _decode_v1(body: bytes) -> tuple[int, Peer | None, str, int]:
    received_at_ns, pid, uid, gid, length = _META.unpack_from(body)
    peer = None if uid == _NONE else Peer(None if pid == _NONE else pid, uid, gid)
    start = _META.size + length
    return received_at_ns, peer, body[_META.size : start].decode(), start


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_ns(ns: int) -> datetime:
    """A time in nanoseconds since the epoch as an aware datetime (microsecond precision, as PostgreSQL)."""
    return EPOCH + timedelta(0, 0, ns // 1000)  # positional: twice as fast, and this runs for every event
