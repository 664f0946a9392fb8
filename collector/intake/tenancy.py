"""Which tenants a local client may write, decided by the kernel-reported uid and gid of its socket.

Like journald's trusted fields, this does not rely on anything the client says: the envelope's
``tenant`` is only a claim, accepted when the peer's uid or gid is mapped to that tenant.
"""

from __future__ import annotations

import grp
import hashlib
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hookdb.client.wire import ProtocolError
from hookdb.collector.spool.entry import Peer


@dataclass(frozen=True, slots=True)
class Grant:
    """The tenants one peer may write; ``primary`` is used when a frame names none."""

    primary: str
    allowed: frozenset[str]

    def resolve(self, claimed: str | None) -> str:
        if claimed is None or claimed == self.primary:
            return self.primary
        if claimed in self.allowed:
            return claimed
        raise ProtocolError("tenant_not_allowed", f"this peer may not write tenant {claimed!r}")


class TenantPolicy:
    """Maps peers to grants: the uid's tenants, then the gid's; unmapped peers get ``default`` or nothing."""

    def __init__(
        self, *, default: str | None, uids: Mapping[int, Sequence[str]], gids: Mapping[int, Sequence[str]]
    ) -> None:
        self.default = default or None
        self._uids = dict(uids)
        self._gids = dict(gids)

    @classmethod
    def from_names(
        cls, *, default: str, uids: Mapping[str, Sequence[str]], gids: Mapping[str, Sequence[str]]
    ) -> TenantPolicy:
        """Build from config keys that are numeric ids or user/group names (resolved now, so a typo fails
        the start-up, not a write); raises ``ValueError`` naming the unknown name."""
        try:
            return cls(
                default=default,
                uids={_id(key, pwd.getpwnam, "user"): tenants for key, tenants in uids.items()},
                gids={_id(key, grp.getgrnam, "group"): tenants for key, tenants in gids.items()},
            )
        except ValueError as exc:
            raise ValueError(f"tenants: {exc}") from None

    def grant(self, peer: Peer | None) -> Grant | None:
        """The peer's grant, or ``None`` when it may write nothing."""
        tenants: list[str] = []
        if peer is not None:
            tenants += self._uids.get(peer.uid, ())
            tenants += self._gids.get(peer.gid, ())
        if tenants:
            return Grant(tenants[0], frozenset(tenants))
        if self.default is not None:
            return Grant(self.default, frozenset({self.default}))
        return None


def user_ids(users: Mapping[str, str]) -> dict[str, int]:
    """``users`` (each a name or a numeric uid) as uids, resolved now; raises ``ValueError`` naming an
    unknown user."""
    return {key: _id(user, pwd.getpwnam, "user") for key, user in users.items()}


def _id(key: str, lookup: object, kind: str) -> int:
    if key.isdigit():
        return int(key)
    try:
        entry = lookup(key)  # type: ignore[operator]
    except KeyError:
        raise ValueError(f"no {kind} named {key!r} on this host") from None
    return entry[2]


def token_digest(token: str) -> str:
    """How a bearer token is stored in the config: ``sha256:<hex>`` (``hookdb hash-token``)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenTenants:
    """Which tenant a bearer token speaks for (HTTP has no peer credentials, so nothing else may say)."""

    def __init__(self, tokens: Mapping[str, Sequence[str]]) -> None:
        """``tokens`` maps each tenant to the digests of its tokens, as the config holds them."""
        self._tenants = {digest: tenant for tenant, digests in tokens.items() for digest in digests}

    def tenant(self, authorization: str) -> str | None:
        """The tenant of an ``Authorization`` header value; ``None`` unless it is a known bearer token."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self._tenants.get(token_digest(token.strip()))
