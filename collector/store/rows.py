"""The row an event becomes in ``hook_audit_log``: a typed record the sink COPYs as it is."""

from __future__ import annotations

import functools
import operator
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import repeat
from typing import NamedTuple

from hookdb.client.protocol import decode_envelope
from hookdb.collector.spool.entry import EPOCH, Entry, Peer, from_ns


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


_new_row = tuple.__new__  # a Row without its generated __new__'s Python frame: this runs for every event
_NO_PEER = (None, None, None)
# The frames of one read share their received_at (the listener stamps a read, not a frame): convert each once.
_received_at = functools.lru_cache(maxsize=64)(from_ns)


def entry_row(entry: Entry) -> Row:
    """The row of a spooled event: everything in it was validated at intake."""
    head = entry.head
    pid, uid, gid = head.peer or _NO_PEER
    return _new_row(
        Row,
        (
            head.tenant,
            head.event_id,
            head.occurred_at,
            _received_at(head.received_at_ns),
            head.session_id,
            head.event_type,
            head.tool_name,
            head.source,
            pid,
            uid,
            gid,
            entry.payload,
        ),
    )


def event_row(body: bytes, peer: Peer | None, received_at: datetime, tenant: str) -> Row:
    """Decode and validate one frame body into the row of ``tenant``, as intake and delivery together do;
    raises ``ProtocolError`` for a frame that cannot be stored."""
    envelope, tool_name = decode_envelope(body)
    return Row(
        tenant,
        envelope.event_id,
        envelope.occurred_at,
        received_at,
        envelope.session_id,
        envelope.event_type,
        tool_name,
        envelope.source,
        None if peer is None else peer.pid,
        None if peer is None else peer.uid,
        None if peer is None else peer.gid,
        envelope.payload,
    )


def since_epoch(times: Iterable[datetime], unit: timedelta) -> list[int]:
    """Whole ``unit``s from the epoch to each time, floored and exact (without a Python frame per time: the
    sink and the summary convert every event's)."""
    return list(map(operator.floordiv, map(operator.sub, times, repeat(EPOCH)), repeat(unit)))
