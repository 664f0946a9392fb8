"""A spool entry: one admitted frame with what intake learned about it (when, from whom, for which tenant).

Pure encoding, no I/O; the spool stores entries as record bodies, delivery turns them into rows.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import NamedTuple


class Peer(NamedTuple):
    """The sending process as the kernel reports it (SO_PEERCRED); clients cannot forge it."""

    pid: int | None  # None when the kernel could not tell (events drained from the outbox)
    uid: int
    gid: int


class Entry(NamedTuple):
    """A spool record's body: when, from whom and for which tenant a frame came, and the frame itself."""

    received_at_ns: int
    peer: Peer | None
    tenant: str
    envelope: bytes


_META = struct.Struct(">qIIIH")  # received_at (ns since the epoch), peer pid, uid, gid, tenant length
_NONE = 0xFFFFFFFF


def encode_entry(envelope: bytes, peer: Peer | None, received_at_ns: int, tenant: str) -> bytes:
    """The spool record body for a frame accepted at ``received_at_ns`` for ``tenant``."""
    pid, uid, gid = peer if peer is not None else (None, _NONE, _NONE)
    name = tenant.encode()
    return _META.pack(received_at_ns, _NONE if pid is None else pid, uid, gid, len(name)) + name + envelope


def decode_entry(body: bytes) -> Entry:
    received_at_ns, pid, uid, gid, length = _META.unpack_from(body)
    peer = None if uid == _NONE else Peer(None if pid == _NONE else pid, uid, gid)
    start = _META.size + length
    return Entry(received_at_ns, peer, body[_META.size : start].decode(), body[start:])


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_ns(ns: int) -> datetime:
    """A time in nanoseconds since the epoch as an aware datetime (microsecond precision, as PostgreSQL)."""
    return EPOCH + timedelta(microseconds=ns // 1000)
