"""A spool entry: one admitted event with everything intake learned about it, so delivery never asks again.

Pure encoding, no I/O; the spool stores entries as record bodies, delivery turns them into rows.

Two formats, told apart by the first byte:

- **v2** (written now): the byte ``0x82``, then an msgpack array of :class:`Entry`'s fields — when, from
  whom, for which tenant, the envelope's validated fields, the payload's ``tool_name`` and the payload.
  Decoding it validates nothing again: intake did.
- **v1** (spools of earlier collectors): a fixed header (received_at in ns since the epoch as a positive
  int64, so its first byte is always below ``0x80``; peer pid, uid, gid; tenant length), the tenant, and
  the frame body as the client sent it. Decoding it decodes and validates that frame, as delivery did.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec

from hookdb.client.protocol import Envelope, decode_envelope
from hookdb.client.wire import ProtocolError, encode_envelope


class Peer(NamedTuple):
    """The sending process as the kernel reports it (SO_PEERCRED); clients cannot forge it."""

    pid: int | None  # None when the kernel could not tell (events drained from the outbox)
    uid: int
    gid: int


class Entry(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A spooled event: intake's decisions (received when, from whom, for which tenant) and the event."""

    received_at_ns: int
    peer: Peer | None
    tenant: str
    event_id: uuid.UUID
    occurred_at: datetime
    source: str
    event_type: str
    session_id: str | None
    tool_name: str | None
    payload: bytes

    @property
    def envelope(self) -> bytes:
        """An envelope equivalent to the one the client sent, for the resolved tenant (for dead letters)."""
        return encode_envelope(
            event_id=str(self.event_id),
            occurred_at_ns=to_ns(self.occurred_at),
            source=self.source,
            event_type=self.event_type,
            session_id=self.session_id,
            tenant=self.tenant,
            payload=self.payload,
        )


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
_V2_MARK = bytes((V2,))
_encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode
_decode_v2 = msgspec.msgpack.Decoder(Entry).decode

_META = struct.Struct(">qIIIH")  # v1: received_at (ns since the epoch), peer pid, uid, gid, tenant length
_NONE = 0xFFFFFFFF


def entry_of(
    envelope: Envelope, tool_name: str | None, peer: Peer | None, received_at_ns: int, tenant: str
) -> Entry:
    """The entry of a validated envelope, accepted at ``received_at_ns`` for ``tenant``."""
    return Entry(
        received_at_ns,
        peer,
        tenant,
        envelope.event_id,
        envelope.occurred_at,
        envelope.source,
        envelope.event_type,
        envelope.session_id,
        tool_name,
        envelope.payload,
    )


def encode_entry(entry: Entry) -> bytes:
    """The spool record body of ``entry`` (v2)."""
    return _V2_MARK + _encode(entry)


def decode_entry(body: bytes) -> Entry:
    """The entry a spool record body holds, of either format; raises :class:`StaleEntry` for an entry this
    collector cannot store (a v1 frame it refuses, or a format it does not know)."""
    if body[:1] == _V2_MARK:
        try:
            return _decode_v2(memoryview(body)[1:])
        except msgspec.MsgspecError as exc:
            raise _unreadable(body, f"unreadable v2 spool entry: {exc}") from None
    if len(body) < _META.size or body[0] >= 0x80:
        raise _unreadable(body, f"spool entry of unknown format {body[:1].hex() or 'empty'}")
    received_at_ns, peer, tenant, envelope = _decode_v1(body)
    try:
        env, tool_name = decode_envelope(envelope)
    except ProtocolError as exc:
        raise StaleEntry(exc, received_at_ns, peer, envelope) from None
    return entry_of(env, tool_name, peer, received_at_ns, tenant)


def _unreadable(body: bytes, detail: str) -> StaleEntry:
    return StaleEntry(ProtocolError("unsupported_version", detail), None, None, body)


def received_at_ns(body: bytes) -> int | None:
    """When the entry in ``body`` was received (None if it cannot tell), without validating its frame."""
    if body[:1] == _V2_MARK:
        try:
            return decode_entry(body).received_at_ns
        except StaleEntry:
            return None
    return _META.unpack_from(body)[0] if len(body) >= _META.size else None


def _decode_v1(body: bytes) -> tuple[int, Peer | None, str, bytes]:
    received_at_ns, pid, uid, gid, length = _META.unpack_from(body)
    peer = None if uid == _NONE else Peer(None if pid == _NONE else pid, uid, gid)
    start = _META.size + length
    return received_at_ns, peer, body[_META.size : start].decode(), body[start:]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def from_ns(ns: int) -> datetime:
    """A time in nanoseconds since the epoch as an aware datetime (microsecond precision, as PostgreSQL)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def to_ns(moment: datetime) -> int:
    """An aware datetime in nanoseconds since the epoch."""
    return (moment - EPOCH) // _MICROSECOND * 1000
