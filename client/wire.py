"""Wire protocol v1: framing and the sender's envelope encoder (see PROTOCOL.md).

Standard library only, and nothing that imports ``typing``, ``re``, ``enum`` or ``socket``: ``hookdb-emit``
runs once per hook event and its start-up time is the agent's waiting time. The typed envelope the
collector decodes with is :class:`hookdb.client.protocol.Envelope`; tests hold the two to the same bytes.
"""

import os
import time

PROTOCOL_VERSION = 1
HEADER_SIZE = 4
# Far above any hook input once large strings go to blobs; a larger event is sent with its largest strings
# replaced by size-and-sha256 markers (``hookdb.client.oversize``), never refused or lost.
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024

# Why a frame is refused: stable labels for metrics, logs and replies.
REJECT_REASONS = (
    "oversize",  # the length prefix announces more than the configured maximum
    "truncated",  # the connection closed in the middle of a frame
    "not_msgpack",  # the frame body is not MessagePack
    "bad_envelope",  # MessagePack, but a field is missing or has the wrong type
    "unsupported_version",  # an envelope of a protocol version this collector does not speak
    "bad_payload",  # the payload is not UTF-8 JSON, or nests too deeply
    "tenant_not_allowed",  # the envelope claims a tenant the sender's uid/gid may not write
    "peer_not_allowed",  # the sender's uid/gid may write no tenant at all
)


class ProtocolError(ValueError):
    """A frame that cannot be accepted; ``reason`` is a stable label for metrics and logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # one of REJECT_REASONS
        self.detail = detail


def frame(body: bytes) -> bytes:
    """Prefix an envelope with its 4-byte big-endian length."""
    return len(body).to_bytes(HEADER_SIZE, "big") + body


class FrameDecoder:
    """Splits a byte stream into frame bodies; pure, no I/O.

    ``receive_data`` buffers bytes, ``next_frame`` hands out complete bodies one at a time, so every
    frame before a bad one is still delivered. A length prefix above ``max_frame_bytes`` is refused
    as soon as it is read: nothing is ever allocated by the announced size.

    Each body is copied once, sliced from the bytes as they were read; bytes that arrive while a frame is
    incomplete are only collected, and joined once the frame is whole (a large frame's reads are not copied
    again on each read).
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = b""
        self._pos = 0  # start of the unconsumed bytes in _buf
        self._more: list[bytes] = []  # bytes received after _buf, not yet joined to it
        self._more_bytes = 0
        self._want = HEADER_SIZE  # bytes from _pos on that the next frame needs, as far as is known

    @property
    def buffered(self) -> int:
        """Bytes held for frames not yet complete."""
        return len(self._buf) - self._pos + self._more_bytes

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the stream."""
        if self._pos == len(self._buf) and not self._more:
            self._buf, self._pos = data, 0
        else:
            self._more.append(data)
            self._more_bytes += len(data)

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or ``None`` until more bytes arrive."""
        buf, start = self._buf, self._pos
        if self._more:
            if len(buf) - start + self._more_bytes < self._want:
                return None
            buf = self._buf = b"".join((buf[start:], *self._more))
            start = self._pos = 0
            self._more, self._more_bytes = [], 0
        if len(buf) - start < HEADER_SIZE:
            self._want = HEADER_SIZE
            return None
        need = int.from_bytes(buf[start : start + HEADER_SIZE], "big")
        if need > self.max_frame_bytes:
            raise ProtocolError(
                "oversize", f"frame of {need} bytes exceeds the maximum of {self.max_frame_bytes}"
            )
        end = start + HEADER_SIZE + need
        if len(buf) < end:
            self._want = HEADER_SIZE + need
            return None
        self._pos, self._want = end, HEADER_SIZE
        return buf[start + HEADER_SIZE : end]

    def next_frames(self) -> list[bytes]:
        """Every complete frame body buffered, in order (``[]`` until more bytes arrive): what calling
        :meth:`next_frame` until ``None`` gives, in one call, so a read of many small frames is split in one
        loop. A length prefix above the maximum is raised by the call after the frames before it.
        """
        body = self.next_frame()  # joins collected reads, raises for a prefix above the maximum
        if body is None:
            return []
        bodies = [body]
        buf, pos, size, limit = self._buf, self._pos, len(self._buf), self.max_frame_bytes
        while size - pos >= HEADER_SIZE:
            need = int.from_bytes(buf[pos : pos + HEADER_SIZE], "big")
            end = pos + HEADER_SIZE + need
            if need > limit:
                break  # raised by the next call, once the frames before it are handled
            if end > size:
                self._want = HEADER_SIZE + need
                break
            bodies.append(buf[pos + HEADER_SIZE : end])
            pos = end
        self._pos = pos
        return bodies

    def end_of_stream(self) -> None:
        """The stream ended; raises if it ended inside a frame."""
        if self.buffered:
            raise ProtocolError("truncated", f"stream ended {self.buffered} bytes into a frame")


def new_event_id() -> str:
    """A random UUIDv7 (RFC 9562) in canonical text form: ids sort by creation time."""
    ms = time.time_ns() // 1_000_000
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _str(value: str) -> bytes:
    data = value.encode()
    n = len(data)
    if n < 32:
        return bytes((0xA0 | n,)) + data
    if n < 0x100:
        return b"\xd9" + bytes((n,)) + data
    if n < 0x10000:
        return b"\xda" + n.to_bytes(2, "big") + data
    return b"\xdb" + n.to_bytes(4, "big") + data


def _bin(data: bytes) -> bytes:
    n = len(data)
    if n < 0x100:
        return b"\xc4" + bytes((n,)) + data
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big") + data
    return b"\xc6" + n.to_bytes(4, "big") + data


def _timestamp(ns: int) -> bytes:
    """MessagePack's timestamp extension (type -1), as msgspec decodes it into an aware datetime."""
    sec, nsec = divmod(ns, 1_000_000_000)
    if nsec == 0 and 0 <= sec < 1 << 32:
        return b"\xd6\xff" + sec.to_bytes(4, "big")
    if 0 <= sec < 1 << 34:
        return b"\xd7\xff" + ((nsec << 34) | sec).to_bytes(8, "big")
    return b"\xc7\x0c\xff" + nsec.to_bytes(4, "big") + sec.to_bytes(8, "big", signed=True)


def _opt_str(value: str | None) -> bytes:
    return b"\xc0" if value is None else _str(value)


def encode_envelope(
    *,
    event_id: str,
    occurred_at_ns: int,
    source: str,
    event_type: str,
    session_id: str | None,
    tenant: str | None,
    payload: bytes,
    ack: bool = False,
) -> bytes:
    """Encode an envelope as msgspec encodes :class:`~hookdb.client.protocol.Envelope`.

    ``payload`` is the hook input as UTF-8 JSON bytes, sent exactly as received. With ``ack`` the
    collector answers the frame with a reply (see :func:`encode_reply`) once it is spooled.
    """
    return b"".join(
        (
            b"\x89" if ack else b"\x88",  # a map of 9 or 8 entries
            b"\xa1v",
            bytes((PROTOCOL_VERSION,)),
            b"\xa8event_id",
            _str(event_id),
            b"\xaboccurred_at",
            _timestamp(occurred_at_ns),
            b"\xa6source",
            _str(source),
            b"\xaaevent_type",
            _str(event_type),
            b"\xaasession_id",
            _opt_str(session_id),
            b"\xa6tenant",
            _opt_str(tenant),
            b"\xa7payload",
            _bin(payload),
            b"\xa3ack\xc3" if ack else b"",
        )
    )


ACCEPTED = "accepted"
BUSY = "busy"  # the reply to a connection refused before any frame is read: the sender's uid holds too many


def encode_reply(event_id: str | None, status: str) -> bytes:
    """A reply frame's body as msgspec encodes :class:`~hookdb.client.protocol.Reply` without ``detail``.

    A client that asked for an ack compares the reply it gets with ``encode_reply(its_id, ACCEPTED)``:
    equal means spooled; anything else is a refusal (decode it to learn why).
    """
    return b"\x82\xa8event_id" + _opt_str(event_id) + b"\xa6status" + _str(status)
