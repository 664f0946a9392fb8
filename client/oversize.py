"""Fitting an event into the frame limit: its largest strings give way to markers of their size and sha256.

An event bigger than the collector's frame limit would be refused, and kept nowhere: instead the client
sends it with its largest strings replaced, one after another until it fits, by
``{"$hookdb.oversized": {"bytes": <UTF-8 length>, "sha256": "<hex digest of the UTF-8 bytes>"}}`` (the
digest a blob of the same string gets), so the event is recorded and says what it lost. Standard
library only, and imported only when an event is too big: the normal path of ``hookdb-emit`` never pays.
"""

from __future__ import annotations

import hashlib
import json

OVERSIZED_KEY = "$hookdb.oversized"
# What a marker costs at most in the JSON text: the key, two 64-bit-sized fields and a sha256.
_MARKER_BYTES = len(json.dumps({OVERSIZED_KEY: {"bytes": 2**63, "sha256": "0" * 64}}, separators=(",", ":")))


def marker(data: bytes) -> dict[str, dict[str, object]]:
    """The marker that stands for ``data`` (UTF-8 bytes)."""
    return {OVERSIZED_KEY: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}


def shrink(payload: bytes, budget: int) -> bytes:
    """``payload`` (UTF-8 JSON) in at most ``budget`` bytes, its largest strings replaced by markers.

    A payload that already fits comes back unchanged. When replacing every string is not enough (or the
    payload cannot be parsed), the whole payload becomes one marker.
    """
    if len(payload) <= budget:
        return payload
    try:
        value = json.loads(payload)
        holders = _strings(value)
        size = len(_encode(value))
        # Largest first; a string saves at least its UTF-8 length and quotes, less its marker.
        for _, into, slot, data in sorted(holders, key=lambda h: h[0], reverse=True):
            if size <= budget or len(data) + 2 <= _MARKER_BYTES:  # fits, or no string left that helps
                break
            into[slot] = marker(data)
            size -= len(data) + 2 - _MARKER_BYTES
        shrunk = _encode(value)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to walk
        shrunk = payload
    if len(shrunk) > budget:
        shrunk = _encode(marker(payload))
    return shrunk


def _strings(value: object) -> list[tuple[int, object, object, bytes]]:
    """Every string value as (UTF-8 length, its container, its slot there, its UTF-8 bytes); iterative."""
    found: list[tuple[int, object, object, bytes]] = []
    todo = [value]
    while todo:
        item = todo.pop()
        slots = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for slot, child in slots:
            if isinstance(child, str):
                data = child.encode("utf-8", "surrogatepass")
                found.append((len(data), item, slot, data))
            elif isinstance(child, (dict, list)):
                todo.append(child)
    return found  # a payload that is one bare string has none: it becomes one marker


def _encode(value: object) -> bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which UTF-8 cannot carry: escape it
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
