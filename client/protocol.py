"""The typed envelope of wire protocol v1 and its validating decoder (see PROTOCOL.md)."""

from __future__ import annotations

import sys
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from hookdb.client.wire import PROTOCOL_VERSION, ProtocolError

# PostgreSQL text cannot hold NUL; a label this long is a bug or an attack, not a name.
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]
# A Label but for U+0000, which decode_envelope looks for itself: running the pattern on every label took
# three quarters of the envelope's decoding.
_Sized = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class Envelope(msgspec.Struct, omit_defaults=True, gc=False):
    """One hook event as it travels from a client to the collector.

    Its labels are Labels once :func:`decode_envelope` has checked them (decoded on its own, an Envelope
    checks only their lengths). Untracked by the GC: its fields are scalars, never a cycle.
    """

    v: int
    event_id: uuid.UUID
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    source: _Sized
    event_type: _Sized
    session_id: _Sized | None
    tenant: _Sized | None
    payload: bytes
    ack: bool = False


class _CheckedEnvelope(Envelope, gc=False):
    """The envelope with every constraint in its type: decoded only to tell why a frame is refused, so that
    the refusal reads as msgspec words it (the first bad field, in the frame's order)."""

    source: Label
    event_type: Label
    session_id: Label | None
    tenant: Label | None


class Reply(msgspec.Struct, omit_defaults=True):
    """The collector's answer to a frame that asked for an ack, or to a frame it refuses."""

    event_id: str | None
    status: str
    """``accepted`` (in the spool, as durable as ``spool.fsync`` makes it) or a refusal reason."""
    detail: str | None = None


class _Version(msgspec.Struct):
    v: int


class PayloadHead(msgspec.Struct, gc=False):
    """The payload fields intake lifts out (into columns, or an HTTP hook's envelope); every other field
    is skipped, not built. Untracked by the GC: decoded JSON holds no cycle."""

    tool_name: Any = None
    hook_event_name: Any = None
    session_id: Any = None


_envelope = msgspec.msgpack.Decoder(Envelope)
_checked_envelope = msgspec.msgpack.Decoder(_CheckedEnvelope)
_reply = msgspec.msgpack.Decoder(Reply)
_version = msgspec.msgpack.Decoder(_Version)
_payload_head = msgspec.json.Decoder(PayloadHead | list | str | int | float | bool | None, float_hook=Decimal)
_decode = msgspec.json.Decoder(float_hook=Decimal).decode  # 1e400 is JSON (and jsonb) too


MAX_PAYLOAD_DEPTH = 256
"""Deepest nesting of arrays and objects a payload may have. PostgreSQL's jsonb takes 10,000 levels and
more, but the collector walks payloads in Python, whose recursion limit (1,000 frames, shared with the
caller's stack) a payload must not reach; real hook inputs nest a few dozen levels at most."""
_SHALLOW = 2 * MAX_PAYLOAD_DEPTH + 1  # JSON nested d deep takes 2d bytes: one this short is not too deep
# An integer of more digits than Python converts (sys.get_int_max_str_digits(), 4300 by default) decodes
# nowhere in the collector: delivery could not project it. Bytes holding such a run of digits (in a string
# or not) have the payload decoded whole, as a deep one is.
_MAX_DIGITS = sys.get_int_max_str_digits()
_DIGITS = frozenset(b"0123456789")
_ZEROED = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * (_MAX_DIGITS + 1)  # a run too long, as it reads once its digits are zeroed


def decode_envelope(body: bytes) -> tuple[Envelope, str | None]:
    """Decode and validate one frame body; return the envelope and the payload's ``tool_name``.

    Raises :class:`ProtocolError` with the reason a collector counts the frame under; no other exception
    escapes, whatever the bytes (a frame nested too deeply for the decoder is refused too).
    """
    try:
        env = _envelope.decode(body)
    except Exception:  # the checked decoder says why, in its words
        return _decode_checked(body)
    session_id, tenant = env.session_id, env.tenant
    if (
        env.v != PROTOCOL_VERSION
        or "\x00" in env.source
        or "\x00" in env.event_type
        or (session_id is not None and "\x00" in session_id)
        or (tenant is not None and "\x00" in tenant)
    ):
        return _decode_checked(body)  # it raises, as decoding the frame checked from the start would
    head = read_payload(env.payload)  # payload_tool_name, inline: this runs for every frame
    tool_name = head.tool_name if head is not None else None
    return env, tool_name if isinstance(tool_name, str) and "\x00" not in tool_name else None


def _decode_checked(body: bytes) -> tuple[Envelope, str | None]:
    """:func:`decode_envelope` of a frame the fast decoder refused, or whose labels hold U+0000: decoded
    with every constraint in the type, so the refusal names the first bad field as msgspec does."""
    try:
        env = _checked_envelope.decode(body)
    except msgspec.ValidationError as exc:
        try:
            v = _version.decode(body).v
        except (msgspec.MsgspecError, RecursionError):
            v = PROTOCOL_VERSION
        if v != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_version", f"protocol version {v}, expected {PROTOCOL_VERSION}"
            ) from None
        raise ProtocolError("bad_envelope", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("not_msgpack", str(exc)) from None
    except RecursionError:
        raise ProtocolError("bad_envelope", "the envelope nests too deeply to decode") from None
    except Exception as exc:  # whatever the decoder raises costs only this frame
        raise ProtocolError("bad_envelope", f"undecodable envelope: {exc!r}") from None
    if env.v != PROTOCOL_VERSION:
        raise ProtocolError("unsupported_version", f"protocol version {env.v}, expected {PROTOCOL_VERSION}")
    return env, payload_tool_name(env.payload)


def payload_tool_name(payload: bytes) -> str | None:
    """Validate that ``payload`` is JSON the collector can store, and return its ``tool_name``, if any."""
    head = read_payload(payload)
    return text_field(head.tool_name) if head is not None else None


def read_payload(payload: bytes) -> PayloadHead | None:
    """Validate that ``payload`` is JSON the collector can store; its head when it is an object.

    Strings (and keys) may hold U+0000: the store keeps them losslessly (see ``collector/store/blobs``).
    A payload nested deeper than :data:`MAX_PAYLOAD_DEPTH` is refused.
    """
    try:
        try:
            head = _payload_head.decode(payload)
            # A payload of _SHALLOW bytes or fewer cannot be too deep. The brackets of a longer one bound its
            # depth without a parse: only a payload with many (or with a long run of digits) is decoded whole.
            deep = len(payload) > _SHALLOW and _brackets(payload) > MAX_PAYLOAD_DEPTH
            walked = deep or _long_digits(payload)
            too_deep = walked and _depth(_decode(payload)) > MAX_PAYLOAD_DEPTH
        except Exception:
            payload.decode()  # whatever else is wrong with it, a payload that is not UTF-8 is refused as such
            raise
        # The head decoder checks the UTF-8 of the strings it builds, not of those it skips (keys and values
        # of other fields); decoding a payload whole checks all. An ASCII payload needs no check either.
        if not walked and not payload.isascii():
            payload.decode()
    except RecursionError:
        too_deep = True
    except (UnicodeDecodeError, msgspec.MsgspecError) as exc:
        raise ProtocolError("bad_payload", f"payload is not UTF-8 JSON: {exc}") from None
    except Exception as exc:  # whatever the decoder raises costs only this frame
        raise ProtocolError("bad_payload", f"undecodable payload: {exc!r}") from None
    if too_deep:
        raise ProtocolError("bad_payload", f"payload nests deeper than {MAX_PAYLOAD_DEPTH} arrays or objects")
    return head if isinstance(head, PayloadHead) else None


def text_field(value: object) -> str | None:
    """A payload field fit for a text column: a string without U+0000 (the payload keeps any other)."""
    return value if isinstance(value, str) and "\x00" not in value else None


def _brackets(payload: bytes) -> int:
    """An upper bound of the payload's depth that costs no parse: its opening brackets, strings included,
    each kind counted up to one above the limit (enough to tell whether it is passed).

    ``replace`` finds them with ``memchr`` and stops at its count, where ``count`` compares every byte: a few
    times faster on real payloads (brackets are rare in them), and never slower.
    """
    cap = MAX_PAYLOAD_DEPTH + 1
    return 2 * len(payload) - len(payload.replace(b"[", b"", cap)) - len(payload.replace(b"{", b"", cap))


def _long_digits(payload: bytes) -> bool:
    """Whether ``payload`` holds a run of more than ``_MAX_DIGITS`` digits. Such a run covers a byte at a
    multiple of ``_MAX_DIGITS``: only the windows around the digits there are searched, a few per 100 KB of
    source text (a regular expression would read every byte, 25 times slower)."""
    if not _MAX_DIGITS:
        return False  # no limit
    for at in range(_MAX_DIGITS, len(payload), _MAX_DIGITS):
        if payload[at] in _DIGITS:
            window = payload[max(0, at - _MAX_DIGITS) : at + _MAX_DIGITS + 1]
            if _LONG_RUN in window.translate(_ZEROED):
                return True
    return False


def _depth(value: object) -> int:
    """How deeply arrays and objects nest in a decoded JSON value; iterative, so any depth is measured."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def decode_reply(body: bytes) -> str:
    """A reply as one readable line: its status, and its detail when there is one."""
    try:
        reply = _reply.decode(body)
    except msgspec.MsgspecError:
        return f"unreadable reply {body[:64]!r}"
    return f"{reply.status}: {reply.detail}" if reply.detail else reply.status
