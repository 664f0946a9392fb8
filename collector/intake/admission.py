"""Admission of one frame into the spool: valid envelope, and a tenant the sender may write.

Shared by the socket listener and the outbox drainer, so both apply the same rules.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hookdb.client.protocol import Envelope, decode_envelope
from hookdb.client.wire import ProtocolError
from hookdb.collector.intake.tenancy import Grant
from hookdb.collector.spool.deadletters import DeadLetter
from hookdb.collector.spool.entry import Peer, encode_entry, from_ns


class _NoGrant(Grant):
    def resolve(self, claimed: str | None) -> str:
        raise ProtocolError("peer_not_allowed", "this peer may write no tenant")


_NOTHING = _NoGrant("", frozenset())


class KeptRefusal(ProtocolError):
    """A refused frame that is kept as a dead letter: well-formed, but not the sender's to write."""

    def __init__(self, refusal: ProtocolError, letter: DeadLetter) -> None:
        super().__init__(refusal.reason, refusal.detail)
        self.letter = letter


def admit(body: bytes, peer: Peer | None, grant: Grant | None, received_at_ns: int) -> tuple[bytes, Envelope]:
    """The spool entry for ``body`` and its envelope; raises ``ProtocolError`` (or ``KeptRefusal``).

    The entry keeps what was validated here (see ``spool.entry``): delivery does not decode the frame again.

    ``grant`` is what the peer may write; ``None`` when it may write nothing.
    """
    envelope, tool_name = decode_envelope(body)
    try:
        tenant = (grant or _NOTHING).resolve(envelope.tenant)
    except ProtocolError as exc:
        letter = DeadLetter(
            dead_at=datetime.now(UTC),
            error=f"{exc.reason}: {exc.detail}",
            sqlstate=None,
            received_at=from_ns(received_at_ns),
            peer=peer,
            event_id=str(envelope.event_id),
            event_type=envelope.event_type,
            session_id=envelope.session_id,
            envelope=body,
        )
        raise KeptRefusal(exc, letter) from None
    return encode_entry(body, envelope, tool_name, peer, received_at_ns, tenant), envelope
