"""From a validated frame to the row it becomes in ``hook_audit_log``."""

from __future__ import annotations

from datetime import datetime

from hookdb.client.protocol import decode_envelope
from hookdb.collector.spool.entry import Peer

# Column order of the rows below, as the sink copies them.
COLUMNS = (
    "tenant_id",
    "event_id",
    "occurred_at",
    "received_at",
    "session_id",
    "event_type",
    "tool_name",
    "source",
    "peer_pid",
    "peer_uid",
    "peer_gid",
    "payload",
)
PAYLOAD = COLUMNS.index("payload")
_INDEX = {name: i for i, name in enumerate(COLUMNS)}

Row = tuple[object, ...]


def event_row(body: bytes, peer: Peer | None, received_at: datetime, tenant: str) -> Row:
    """Decode one frame body into the row of ``tenant`` (as decided at intake); raises ``ProtocolError``
    for a frame that cannot be stored."""
    env, tool_name = decode_envelope(body)
    return (
        tenant,
        env.event_id,
        env.occurred_at,
        received_at,
        env.session_id,
        env.event_type,
        tool_name,
        env.source,
        peer.pid if peer else None,
        peer.uid if peer else None,
        peer.gid if peer else None,
        env.payload,
    )


def column(row: Row, name: str) -> object:
    """One column's value of a row, by name."""
    return row[_INDEX[name]]


def row_bytes(row: Row) -> int:
    """What a row weighs for batching: its payload."""
    return len(row[PAYLOAD])  # type: ignore[arg-type]
