"""The row an event becomes in ``hook_audit_log``: a typed record the sink COPYs as it is."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from hookdb.client.protocol import decode_envelope
from hookdb.collector.spool.entry import Entry, Peer, entry_of, from_ns, to_ns


class Row(NamedTuple):
    """One ``hook_audit_log`` row; the field order is the column order the sink copies."""

    tenant_id: str
    event_id: uuid.UUID
    occurred_at: datetime
    received_at: datetime
    session_id: str | None
    event_type: str
    tool_name: str | None
    source: str
    peer_pid: int | None
    peer_uid: int | None
    peer_gid: int | None
    payload: bytes


COLUMNS = Row._fields


def entry_row(entry: Entry) -> Row:
    """The row of a spooled event: everything in it was validated at intake."""
    peer = entry.peer
    return Row(
        entry.tenant,
        entry.event_id,
        entry.occurred_at,
        from_ns(entry.received_at_ns),
        entry.session_id,
        entry.event_type,
        entry.tool_name,
        entry.source,
        None if peer is None else peer.pid,
        None if peer is None else peer.uid,
        None if peer is None else peer.gid,
        entry.payload,
    )


def event_row(body: bytes, peer: Peer | None, received_at: datetime, tenant: str) -> Row:
    """Decode and validate one frame body into the row of ``tenant``, as intake and delivery together do;
    raises ``ProtocolError`` for a frame that cannot be stored."""
    envelope, tool_name = decode_envelope(body)
    return entry_row(entry_of(envelope, tool_name, peer, to_ns(received_at), tenant))


def row_bytes(row: Row) -> int:
    """What a row weighs for batching: its payload."""
    return len(row.payload)
