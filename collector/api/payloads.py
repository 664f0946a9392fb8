"""A stored payload decoded in Python, whatever jsonb holds: every read path that decodes one does it here.

jsonb takes JSON that msgspec refuses, and the database may hold it (an older collector, a backfill or a
row written directly): integers of more digits than ``sys.get_int_max_str_digits()`` (jsonb writes
``1e400`` as its 401 digits, ``1e5000`` as 5001), and nesting deeper than msgspec decodes (about 990
levels, less the caller's own; jsonb takes thousands). Such a payload is decoded by ``json`` with every
number kept (the long integers as :class:`~decimal.Decimal`, which encode as their digits); one nested
too deep for that is decoded member by member, two levels down, each member too deep standing as an
``{"$hookdb.unrendered": why}`` object, and :attr:`Decoded.problem` says so. One payload's oddness
costs only its own rendering, logged once per payload decoded so, never a page, an export or the feed.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from hookdb.collector.ops import logs
from hookdb.collector.store import blobs

log = logs.get("hookdb.api.payloads")

UNRENDERED_KEY = "$hookdb.unrendered"  # never stored: stands, in an answer, for a part not decoded
TOO_DEEP = "nested deeper than the API decodes"
LEVELS = 2  # how far down a payload too deep is decoded member by member (tool_input's fields are at 2)

# A JSON string, or one of the characters that give a value's structure (anything else is inside a value).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')


class Decoded(NamedTuple):
    """A stored payload as Python values (numbers that are not int as Decimal, every digit kept);
    ``problem`` says what of it could not be decoded (``None``: all of it)."""

    value: Any
    problem: str | None


def decode(stored: bytes, event_id: object) -> Decoded:
    """``stored`` (a payload's JSON as jsonb writes it) decoded as far as it can be; ``event_id`` (a UUID or
    its text) is made text only for a log line, which few payloads need."""
    try:
        return Decoded(blobs.decode(stored), None)
    except RecursionError:
        pass
    except msgspec.ValidationError:  # a number msgspec cannot hold: json can, unless it is too deep too
        try:
            value = _exact(stored)
        except RecursionError:
            pass
        else:
            why = "an integer too long for msgspec"
            log.info("api.payload_decoded_exactly", event_id=str(event_id), why=why)
            return Decoded(value, None)
    value = _members(stored, LEVELS)
    log.warning("api.payload_partly_decoded", event_id=str(event_id), why=TOO_DEEP, size=len(stored))
    return Decoded(value, TOO_DEEP)


def restored(stored: bytes, event_id: str) -> tuple[bytes, str | None]:
    """The JSON of a payload as the hook sent it, but for large strings (blob references stay): U+0000
    and marker keys, escaped to fit jsonb (``store/blobs``), put back. A payload too deep for that comes
    as stored, with why (the second item; ``None`` when restored)."""
    decoded = decode(stored, event_id)
    if decoded.problem is None:
        try:
            return blobs.encode(blobs.restore(decoded.value, lambda _digest: None)), None
        except RecursionError:
            log.warning("api.payload_partly_decoded", event_id=event_id, why=TOO_DEEP, size=len(stored))
    return stored, f"{TOO_DEEP}: shown as stored, its U+0000 and marker keys still escaped"


def _exact(text: bytes) -> Any:
    """JSON with every number kept: integers too long for ``int()`` and every float as Decimal."""
    return json.loads(text, parse_int=_integer, parse_float=Decimal)


def _integer(digits: str) -> int | Decimal:
    try:
        return int(digits)
    except ValueError:  # more digits than sys.get_int_max_str_digits(): a Decimal has no such limit
        return Decimal(digits)


def _members(text: bytes, levels: int) -> Any:
    """A value too deep to decode whole: an object's members decoded one by one (``levels`` down, each too
    deep itself decoded so again), anything else, or past ``levels``, an ``UNRENDERED_KEY`` object."""
    spans = _spans(text) if levels > 0 else None
    if spans is None:
        return {UNRENDERED_KEY: TOO_DEEP}
    value: dict[str, Any] = {}
    for key, member in spans:
        try:
            value[json.loads(key)] = _any(member)
        except RecursionError:
            value[json.loads(key)] = _members(member, levels - 1)
    return value


def _any(text: bytes) -> Any:
    try:
        return blobs.decode(text)
    except msgspec.ValidationError:
        return _exact(text)


def _spans(text: bytes) -> list[tuple[bytes, bytes]] | None:
    """The key and value texts of each member of the JSON object ``text``, found without recursing (only
    strings and structural characters are read); ``None`` if ``text`` is not an object."""
    if not text.lstrip().startswith(b"{"):
        return None
    spans: list[tuple[bytes, bytes]] = []
    depth, key, start = 0, b"", 0
    for token in _TOKEN.finditer(text):
        char = token.group()[:1]
        if char in (b"{", b"["):
            depth += 1
        elif char in (b"}", b"]"):
            depth -= 1
            if depth == 0 and key:
                spans.append((key, text[start : token.start()].strip()))
        elif depth != 1:
            continue
        elif char == b",":
            spans.append((key, text[start : token.start()].strip()))
            key = b""
        elif char == b":":
            start = token.end()
        elif not key:
            key = token.group()
    return spans
