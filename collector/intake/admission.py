"""Admission of one frame into the spool: valid envelope, and a tenant the sender may write.

Shared by the socket listener and the outbox drainer, so both apply the same rules; hook JSON POSTed over
HTTP is admitted by :func:`admit_hook` from one parse of its payload.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec
import trio

from hookdb.client.oversize import shrink
from hookdb.client.protocol import Envelope, decode_envelope, read_payload, text_field
from hookdb.client.wire import PROTOCOL_VERSION, ProtocolError, encode_envelope, new_event_id
from hookdb.collector.intake.tenancy import Grant
from hookdb.collector.ops import logs
from hookdb.collector.spool.deadletters import DeadLetter
from hookdb.collector.spool.entry import Peer, encode_entry, from_ns

log = logs.get("hookdb.admission")


class _NoGrant(Grant):
    def resolve(self, claimed: str | None) -> str:
        raise ProtocolError("peer_not_allowed", "this peer may write no tenant")


_NOTHING = _NoGrant("", frozenset())
INTERNAL_ERROR = "internal_error"  # the refusal reason of a frame whose handling failed unexpectedly


class KeptRefusal(ProtocolError):
    """A refused frame that is kept as a dead letter: well-formed, but not the sender's to write."""

    def __init__(self, refusal: ProtocolError, letter: DeadLetter) -> None:
        super().__init__(refusal.reason, refusal.detail)
        self.letter = letter


class Admitted(NamedTuple):
    """What :func:`admit_frames` made of a run of frames."""

    entries: list[bytes]
    """The spool entries of the frames admitted, in order."""
    acks: list[uuid.UUID]
    """The event ids of those that asked for an ack."""
    refusal: ProtocolError | None
    """Why the frame after them was refused (a ``KeptRefusal`` if it is kept); ``None``: all were admitted."""


def admit_frames(
    bodies: list[bytes], peer: Peer | None, grant: Grant | None, received_at_ns: int
) -> Admitted:
    """The spool entries of ``bodies``, admitted in turn up to the first refused, in one call for a read's
    frames (the listener's; the outbox drainer's one record at a time).

    Each entry keeps what was validated here (see ``spool.entry``): delivery does not decode the frame
    again. ``grant`` is what the peer may write; ``None`` when it may write nothing. A frame it may not write
    is refused with a ``KeptRefusal``; one whose admission fails unexpectedly is refused as
    ``internal_error`` and kept too, its exception the refusal's ``__cause__``."""
    entries: list[bytes] = []
    acks: list[uuid.UUID] = []
    resolve = (grant or _NOTHING).resolve
    primary = grant.primary if grant is not None else None  # resolve's answer to no claim or a claim of it
    for body in bodies:
        try:
            envelope, tool_name = decode_envelope(body)
            claimed = envelope.tenant
            if primary is not None and (claimed is None or claimed == primary):
                tenant = primary
            else:
                try:
                    tenant = resolve(claimed)
                except ProtocolError as exc:
                    return Admitted(entries, acks, _kept(exc, envelope, body, peer, received_at_ns))
            entries.append(encode_entry(body, envelope, tool_name, peer, received_at_ns, tenant))
        except ProtocolError as exc:
            return Admitted(entries, acks, exc)
        except Exception as exc:  # the frame made admission fail: it is refused and kept
            refusal = _unforeseen(exc, body, peer, received_at_ns)
            refusal.__cause__ = exc
            return Admitted(entries, acks, refusal)
        if envelope.ack:
            acks.append(envelope.event_id)
    return Admitted(entries, acks, None)


def refused_letter(
    body: bytes, peer: Peer | None, received_at_ns: int, error: str, envelope: Envelope | None = None
) -> DeadLetter:
    """The dead letter that keeps a refused frame, with the envelope's fields when it was decoded."""
    return DeadLetter(
        dead_at=datetime.now(UTC),
        error=error,
        sqlstate=None,
        received_at=from_ns(received_at_ns),
        peer=peer,
        event_id=None if envelope is None else str(envelope.event_id),
        event_type=None if envelope is None else envelope.event_type,
        session_id=None if envelope is None else envelope.session_id,
        envelope=body,
    )


def _kept(
    refusal: ProtocolError, envelope: Envelope, body: bytes, peer: Peer | None, received_at_ns: int
) -> KeptRefusal:
    """The refusal of a well-formed frame the sender may not write, with the dead letter that keeps it."""
    error = f"{refusal.reason}: {refusal.detail}"
    return KeptRefusal(refusal, refused_letter(body, peer, received_at_ns, error, envelope))


def _unforeseen(exc: Exception, body: bytes, peer: Peer | None, received_at_ns: int) -> KeptRefusal:
    """The refusal of a frame whose admission raised ``exc``, with the dead letter that keeps it."""
    refusal = ProtocolError(INTERNAL_ERROR, f"the collector could not handle this frame: {exc!r}"[:500])
    error = f"{INTERNAL_ERROR}: {exc!r}"[:1000]
    return KeptRefusal(refusal, refused_letter(body, peer, received_at_ns, error))


def admit_hook(payload: bytes, source: str, tenant: str, received_at_ns: int) -> bytes:
    """The spool entry of hook JSON POSTed over HTTP for ``tenant``: its payload parsed once for the
    fields the envelope needs, and no envelope decoded back (the frame is built only to be kept)."""
    head = read_payload(payload)
    if head is None:
        raise ProtocolError("bad_payload", "the body is not a JSON object")
    return built_entry(
        tenant=tenant,
        event_id=uuid.UUID(new_event_id()),
        occurred_at_ns=received_at_ns,
        source=source,
        event_type=_label("hook_event_name", head.hook_event_name) or "Unknown",
        session_id=_label("session_id", head.session_id),
        tool_name=text_field(head.tool_name),
        payload=payload,
        received_at_ns=received_at_ns,
    )


def built_entry(
    *,
    tenant: str,
    event_id: uuid.UUID,
    occurred_at_ns: int,
    source: str,
    event_type: str,
    session_id: str | None,
    tool_name: str | None,
    payload: bytes,
    received_at_ns: int,
) -> bytes:
    """The spool entry of an event intake built itself from fields it already checked (HTTP hooks, OTLP):
    the frame a client would have sent, kept for the dead letters, and its head, with nothing decoded back."""
    occurred_at_ns -= (
        occurred_at_ns % 1000
    )  # whole microseconds, as PostgreSQL keeps them: frame and head agree
    frame = encode_envelope(
        event_id=str(event_id),
        occurred_at_ns=occurred_at_ns,
        source=source,
        event_type=event_type,
        session_id=session_id,
        tenant=None,
        payload=payload,
    )
    envelope = Envelope(
        v=PROTOCOL_VERSION,
        event_id=event_id,
        occurred_at=from_ns(occurred_at_ns),
        source=source,
        event_type=event_type,
        session_id=session_id,
        tenant=None,
        payload=payload,
    )
    return encode_entry(frame, envelope, tool_name, None, received_at_ns, tenant)


def _label(name: str, value: object) -> str | None:
    """A hook field that becomes a label (``protocol.Label``): ``None`` when absent or not a string."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > 256 or "\x00" in value:
        raise ProtocolError("bad_envelope", f"{name} must be 1 to 256 characters without U+0000")
    return value


async def fit(body: bytes, max_bytes: int) -> bytes:
    """``body``, or the same event with its payload's largest strings replaced by markers of their size and
    sha256 when the frame is over ``max_bytes`` (``listener.max_frame_bytes``), as an HTTP hook's body too
    large is: a client's event is stored, never refused for its size. A frame that does not decode is left
    to admission, which refuses it."""
    if len(body) <= max_bytes:
        return body
    try:
        envelope, _ = decode_envelope(body)
    except ProtocolError:
        return body
    budget = max_bytes - (len(body) - len(envelope.payload))
    payload = await trio.to_thread.run_sync(shrink, envelope.payload, budget)
    log.warning("frame.shrunk", event_id=str(envelope.event_id), bytes=len(body), max=max_bytes)
    return msgspec.msgpack.encode(msgspec.structs.replace(envelope, payload=payload))
