"""Opaque keyset cursors: the sort key of the last item of a page, so the next page starts just after it.

A cursor is ``base64url(msgpack([kind, microseconds since the epoch, id]))``. Keyset positions (not
offsets) keep pages stable while rows arrive: nothing is repeated or skipped. A cursor is only a
position: a forged one can point anywhere in the caller's own tenant, and a malformed one is refused.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta

import msgspec

from hookdb.collector.api.models import BadParameter, checked_text

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SESSIONS = 1
EVENTS = 2

_decode = msgspec.msgpack.Decoder(tuple[int, int, str]).decode


def encode(kind: int, at: datetime, key: str) -> str:
    micros = (at - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(msgspec.msgpack.encode((kind, micros, key))).rstrip(b"=").decode()


def decode(kind: int, cursor: str) -> tuple[datetime, str]:
    """The position a cursor of ``kind`` names; :class:`BadParameter` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got, micros, key = _decode(raw)
        at = EPOCH + timedelta(microseconds=micros)
    except (binascii.Error, ValueError, msgspec.DecodeError, OverflowError):
        raise BadParameter("cursor: not a cursor this API gave") from None
    if got != kind:
        raise BadParameter("cursor: belongs to another listing")
    return at, checked_text("cursor", key)
