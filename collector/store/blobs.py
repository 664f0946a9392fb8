"""Content-addressed storage of large payload strings: a file that 100 events carry is stored once.

Strings of ``min_bytes`` or more leave the payload for ``payload_blobs`` (keyed by tenant and sha256)
and a ``{"$hookdb.blob": "<sha256>"}`` object takes their place; ``hookdb_payload(tenant, payload)`` in
SQL (and :func:`restore` here) puts them back, so every event can be reconstructed exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

BLOB_KEY = "$hookdb.blob"
_MARKER = b'"' + BLOB_KEY.encode() + b'"'


def extract(payload: bytes, min_bytes: int, decoded: Any = None) -> tuple[bytes, dict[str, str]]:
    """The payload with its large strings replaced by blob references, and the blobs by sha256.

    ``decoded`` is the payload already decoded by the caller (``None``: decoded here when needed), so a
    payload is parsed once on its way. A payload that already contains the marker key is left whole, so
    restoring stays unambiguous.
    """
    if len(payload) < min_bytes or _MARKER in payload:
        return payload, {}
    blobs: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            if len(value) < min_bytes:
                return value
            digest = hashlib.sha256(value.encode()).hexdigest()
            blobs[digest] = value
            return {BLOB_KEY: digest}
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    slim = walk(msgspec.json.decode(payload) if decoded is None else decoded)
    if not blobs:
        return payload, {}
    return msgspec.json.encode(slim), blobs


def restore(value: Any, lookup: Callable[[str], str | None]) -> Any:
    """Put blobs back into a decoded payload; a reference whose blob is unknown stays as it is."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(BLOB_KEY), str):
            found = lookup(value[BLOB_KEY])
            return value if found is None else found
        return {k: restore(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [restore(v, lookup) for v in value]
    return value
