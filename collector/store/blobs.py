"""How a payload is kept in ``jsonb``: large strings stored once by content, U+0000 kept losslessly.

Strings of ``min_bytes`` or more leave the payload for ``payload_blobs`` (keyed by tenant and sha256)
and a ``{"$hookdb.blob": "<sha256>"}`` object takes their place: a file that 100 events carry is
stored once. ``jsonb`` cannot hold U+0000, so a string holding it becomes ``{"$hookdb.nul": [parts]}``
(the parts, each a string or a blob reference, joined by U+0000), and the entries of an object whose
key holds U+0000 or is one of these marker keys move into ``"$hookdb.keys": [[key, value], ...]``
(the key a string or a ``$hookdb.nul`` object): a marker key in a stored payload is always a marker.
``hookdb_payload(tenant, payload)`` in SQL (and :func:`restore` here) undoes all three, so every
event is reconstructed exactly; every other field stays queryable with the jsonb operators.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

BLOB_KEY = "$hookdb.blob"
NUL_KEY = "$hookdb.nul"
KEYS_KEY = "$hookdb.keys"
MARKER_KEYS = frozenset((BLOB_KEY, NUL_KEY, KEYS_KEY))

# Numbers as Decimal, so a payload rebuilt here keeps every digit (and 1e400) as jsonb does.
decode = msgspec.json.Decoder(float_hook=Decimal).decode
# What ``decode`` raises for JSON that jsonb stores but Python cannot hold (an integer of more digits than
# sys.get_int_max_str_digits()): intake refuses such payloads, a spool written before it did may hold one.
UNDECODABLE = (msgspec.ValidationError, ValueError, RecursionError)
encode = msgspec.json.Encoder(decimal_format="number").encode


# The first bytes of the needles below, as ints: ``in`` and ``find`` then run a plain memchr, where a bytes
# needle, even of one byte, costs five times as much on a small payload (measured).
_BACKSLASH, _DOLLAR = ord("\\"), ord("$")


def needs_rewrite(payload: bytes, min_bytes: int) -> bool:
    """Whether :func:`extract` may change ``payload``: it is large, or may hold U+0000 or a marker key."""
    # A payload whose bytes hold neither a backslash-u nor '"$hookdb.' has no U+0000 and no marker key (a
    # key spelled with \u escapes has a backslash-u), so a small one is stored as it came, unparsed. Each
    # test looks for the needle's first byte, then for the needle only from there on.
    if len(payload) >= min_bytes:
        return True
    if _BACKSLASH in payload and payload.find(b"\\u", payload.find(_BACKSLASH)) >= 0:
        return True
    return holds_marker(payload)


def holds_marker(data: bytes) -> bool:
    """Whether JSON ``data`` may hold a marker key (a stored payload: blob references or escapes to undo)."""
    return _DOLLAR in data and data.find(b'"$hookdb.', max(data.find(_DOLLAR) - 1, 0)) >= 0


def extract(payload: bytes, min_bytes: int, decoded: Any = None) -> tuple[bytes, dict[str, str]]:
    """The payload as stored: large strings replaced by blob references, U+0000 and marker keys escaped.

    Returns the stored JSON and the blobs by sha256. ``decoded`` is the payload already decoded by the
    caller with :func:`decode` (``None``: decoded here when needed), so a payload is parsed once on its
    way. A payload that needs nothing comes back as the same bytes.
    """
    if not needs_rewrite(payload, min_bytes):
        return payload, {}
    value = decode(payload) if decoded is None else decoded
    blobs: dict[str, str] = {}
    changed = False

    def blob(text: str) -> Any:
        if len(text) < min_bytes:
            return text
        digest = hashlib.sha256(text.encode()).hexdigest()
        blobs[digest] = text
        return {BLOB_KEY: digest}

    def string(text: str) -> Any:
        nonlocal changed
        if "\x00" not in text:
            return blob(text)
        changed = True
        return {NUL_KEY: [blob(part) for part in text.split("\x00")]}

    # Rebuilt with an explicit stack, not recursion: no payload depth can exhaust the Python stack.
    root: list[Any] = [None]
    todo: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (value, container, slot it goes in)
    while todo:
        item, into, slot = todo.pop()
        if isinstance(item, str):
            into[slot] = string(item)
        elif isinstance(item, dict):
            obj: dict[str, Any] = {}
            pairs: list[list[Any]] = []
            for key, child in item.items():
                if key in MARKER_KEYS or "\x00" in key:
                    changed = True
                    pair = [{NUL_KEY: key.split("\x00")} if "\x00" in key else key, None]
                    pairs.append(pair)
                    todo.append((child, pair, 1))
                else:
                    obj[key] = None
                    todo.append((child, obj, key))
            if pairs:
                obj[KEYS_KEY] = pairs
            into[slot] = obj
        elif isinstance(item, list):
            arr: list[Any] = [None] * len(item)
            todo.extend((child, arr, i) for i, child in enumerate(item))
            into[slot] = arr
        else:
            into[slot] = item
    if not blobs and not changed:
        return payload, {}
    return encode(root[0]), blobs


def restore(value: Any, lookup: Callable[[str], str | None]) -> Any:
    """The original payload of a decoded stored one: blobs put back, U+0000 and marker keys unescaped.

    ``lookup`` finds a blob by sha256; a reference whose blob is unknown stays as it is (a ``lookup``
    that always answers ``None`` undoes only the escapes, as the read API does).
    """

    def text(item: Any) -> Any:
        """A string, a blob reference or a ``$hookdb.nul`` object as the string it stands for."""
        if isinstance(item, dict) and len(item) == 1:
            if isinstance(item.get(BLOB_KEY), str):
                found = lookup(item[BLOB_KEY])
                return item if found is None else found
            parts = item.get(NUL_KEY)
            if isinstance(parts, list):
                joined = [text(part) for part in parts]
                if all(isinstance(part, str) for part in joined):
                    return "\x00".join(joined)
        return item

    root: list[Any] = [None]
    todo: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while todo:
        item, into, slot = todo.pop()
        if isinstance(item, dict):
            found = text(item)
            if found is not item:
                into[slot] = found
                continue
            obj: dict[Any, Any] = {}
            for key, child in item.items():
                if key == KEYS_KEY and isinstance(child, list):
                    for pair in child:
                        name = text(pair[0]) if isinstance(pair, list) and len(pair) == 2 else None
                        if isinstance(name, str):
                            obj[name] = None
                            todo.append((pair[1], obj, name))
                    continue
                obj[key] = None
                todo.append((child, obj, key))
            into[slot] = obj
        elif isinstance(item, list):
            arr: list[Any] = [None] * len(item)
            todo.extend((child, arr, i) for i, child in enumerate(item))
            into[slot] = arr
        else:
            into[slot] = item
    return root[0]
