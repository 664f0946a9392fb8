"""The typed envelope of wire protocol v1 and its validating decoder (see PROTOCOL.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from hookdb.client.wire import PROTOCOL_VERSION, ProtocolError

# PostgreSQL text cannot hold NUL; a label this long is a bug or an attack, not a name.
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]


class Envelope(msgspec.Struct, omit_defaults=True):
    """One hook event as it travels from a client to the collector."""

    v: int
    event_id: uuid.UUID
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    source: Label
    event_type: Label
    session_id: Label | None
    tenant: Label | None
    payload: bytes
    ack: bool = False


class Reply(msgspec.Struct, omit_defaults=True):
    """The collector's answer to a frame that asked for an ack, or to a frame it refuses."""

    event_id: str | None
    status: str
    """``accepted`` (in the spool, as durable as ``spool.fsync`` makes it) or a refusal reason."""
    detail: str | None = None


class _Version(msgspec.Struct):
    v: int


class _PayloadHead(msgspec.Struct):
    """The one payload field lifted into a column; every other field is skipped, not built."""

    tool_name: Any = None


_envelope = msgspec.msgpack.Decoder(Envelope)
_reply = msgspec.msgpack.Decoder(Reply)
_version = msgspec.msgpack.Decoder(_Version)
_payload_head = msgspec.json.Decoder(_PayloadHead | list | str | int | float | bool | None)


def decode_envelope(body: bytes) -> tuple[Envelope, str | None]:
    """Decode and validate one frame body; return the envelope and the payload's ``tool_name``.

    Raises :class:`ProtocolError` with the reason a collector counts the frame under.
    """
    try:
        env = _envelope.decode(body)
    except msgspec.ValidationError as exc:
        try:
            v = _version.decode(body).v
        except msgspec.MsgspecError:
            v = PROTOCOL_VERSION
        if v != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_version", f"protocol version {v}, expected {PROTOCOL_VERSION}"
            ) from None
        raise ProtocolError("bad_envelope", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("not_msgpack", str(exc)) from None
    if env.v != PROTOCOL_VERSION:
        raise ProtocolError("unsupported_version", f"protocol version {env.v}, expected {PROTOCOL_VERSION}")
    return env, payload_tool_name(env.payload)


def payload_tool_name(payload: bytes) -> str | None:
    """Validate that ``payload`` is JSON that jsonb can store, and return its ``tool_name``, if any."""
    try:
        payload.decode()
        head = _payload_head.decode(payload)
    except (UnicodeDecodeError, msgspec.MsgspecError) as exc:
        raise ProtocolError("bad_payload", f"payload is not UTF-8 JSON: {exc}") from None
    if b"\\u0000" in payload and _holds_nul(msgspec.json.decode(payload)):
        raise ProtocolError("bad_payload", "payload holds the character U+0000, which jsonb cannot store")
    if isinstance(head, _PayloadHead) and isinstance(head.tool_name, str):
        return head.tool_name
    return None


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def decode_reply(body: bytes) -> str:
    """A reply as one readable line: its status, and its detail when there is one."""
    try:
        reply = _reply.decode(body)
    except msgspec.MsgspecError:
        return f"unreadable reply {body[:64]!r}"
    return f"{reply.status}: {reply.detail}" if reply.detail else reply.status
