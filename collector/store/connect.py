"""How every hookdb process reaches PostgreSQL: one place turns the config into connection settings.

The daemon, ``hookdb api``, backfill and the admin commands all connect through :class:`ConnectOptions`,
so the DSN, the password file (read afresh at every connect, so a rotated password needs no restart),
the time-outs, keepalives and the role they act as are decided the same way everywhere.

Everything a transaction depends on (role, ``statement_timeout``, other settings, the tenant) is set in
that transaction by :meth:`ConnectOptions.begin`, so a transaction-mode pooler may run each transaction
on another server connection. With ``database.pooler = "transaction"`` nothing but ``application_name``
is sent at startup (a default pgbouncer refuses other startup parameters) and asyncpg keeps no prepared
statements; directly to a server, the startup also carries the timeout and the server's TCP keepalives
(so the server notices a vanished client), which cover admin work outside hookdb's own transactions.

A connection refused at setup (login, database, startup parameters, connection slots) is logged once per
distinct cause with what to change (``classification.setup_refusal``); the caller retries as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from hookdb.collector import classification as cls
from hookdb.collector.config import Config
from hookdb.collector.ops import logs
from hookdb.collector.store.migrate import SchemaError

log = logs.get("hookdb.connect")

# The server notices a vanished client; the client's own time-outs notice a vanished server.
_KEEPALIVES = (
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
)


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach PostgreSQL; the password file is read at every connect, so rotation needs no restart."""

    dsn: str
    connect_timeout: float = 10.0
    statement_timeout: float = 30.0  # 0: none (admin work bounded by lock_timeout instead)
    password_file: str = ""
    role: str = "hookdb_writer"  # "" acts as the login itself
    role_setting: str = "database.role"  # where the role is configured, for the error that names it
    blob_min_bytes: int = 8192
    application_name: str = "hookdb-collector"
    settings: tuple[tuple[str, str], ...] = ()  # more server settings, for every transaction
    pooler: str = "none"  # database.pooler: "transaction" keeps nothing on the connection at all
    _begin: dict[bool, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_config(
        cls,
        config: Config,
        dsn: str,
        *,
        application_name: str,
        role: str | None = None,
        role_setting: str = "database.role",
        statement_timeout: float | None = None,
        settings: tuple[tuple[str, str], ...] = (),
    ) -> ConnectOptions:
        """The options of ``config``'s ``[database]`` for ``dsn``; ``role`` and ``statement_timeout``
        default to the writer's (``database.role``, ``database.statement_timeout_seconds``)."""
        database = config.database
        return cls(
            dsn=dsn,
            connect_timeout=database.connect_timeout_seconds,
            statement_timeout=database.statement_timeout_seconds
            if statement_timeout is None
            else statement_timeout,
            password_file=database.password_file,
            role=database.role if role is None else role,
            role_setting=role_setting,
            blob_min_bytes=database.blob_min_bytes,
            application_name=application_name,
            settings=settings,
            pooler=database.pooler,
        )

    @property
    def through_pooler(self) -> bool:
        return self.pooler == "transaction"

    def local_settings(self) -> tuple[tuple[str, str], ...]:
        """The settings every transaction takes for itself (``SET LOCAL``)."""
        timeout = (("statement_timeout", str(int(self.statement_timeout * 1000))),)
        return (*timeout, *self.settings) if self.statement_timeout else self.settings

    def kwargs(self) -> dict[str, Any]:
        """``asyncpg.connect`` keyword arguments (the password file read now)."""
        settings = {"application_name": self.application_name}
        kwargs: dict[str, Any] = {"timeout": self.connect_timeout, "server_settings": settings}
        if self.through_pooler:
            # A statement prepared in one transaction is gone (or another client's) in the next.
            kwargs["statement_cache_size"] = 0
        else:
            settings.update(self.local_settings())
            if not self.statement_timeout:
                settings["statement_timeout"] = "0"
            settings.update(_KEEPALIVES)
        if self.password_file:
            kwargs["password"] = Path(self.password_file).read_text().strip()
        return kwargs

    async def connect(self, **extra: Any) -> asyncpg.Connection:
        """A new connection (asyncio side); ``extra`` overrides ``asyncpg.connect`` arguments. A refused
        setup is logged once per cause with what to change, and raised."""
        try:
            return await asyncpg.connect(self.dsn, **{**self.kwargs(), **extra})
        except Exception as exc:
            report_refusal(exc, self.application_name)
            raise

    async def begin(self, conn: asyncpg.Connection, tenant: str | None = None) -> None:
        """Give the transaction just begun on ``conn`` its settings, role and (when given) tenant, in one
        round trip (a single protocol message without a tenant); nothing outlives the transaction."""
        with_tenant = tenant is not None
        sql = self._begin.get(with_tenant)
        if sql is None:
            calls = [
                f"set_config({quote_literal(k)}, {quote_literal(v)}, true)" for k, v in self.local_settings()
            ]
            if self.role:
                calls.append(f"set_config('role', {quote_literal(self.role)}, true)")
            if with_tenant:
                calls.append("set_config('hookdb.tenant', $1, true)")
            sql = self._begin[with_tenant] = "SELECT " + (", ".join(calls) or "1")
        try:
            if with_tenant:
                await conn.execute(sql, tenant)
            else:
                await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError:
            raise SchemaError(_role_refused(self.role, self.role_setting)) from None


class Refused(msgspec.Struct, array_like=True):
    """A connection setup the server or pooler refused, as logged: ``database.setup_refused``."""

    cause: str
    client: str
    error: str
    fix: str


def report_refusal(exc: BaseException, client: str) -> bool:
    """Log ``exc`` once per distinct cause if it says the server or pooler refused the connection's setup
    (or keep it for :func:`take_refusals`, once :func:`forward_refusals` was called); True if it does."""
    refusal = cls.setup_refusal(exc)
    if refusal is None:
        return False
    refused = Refused(refusal.cause, client, str(exc), refusal.fix)
    if _forwarded is None:
        log_refusal(refused)
    elif refusal.cause not in _reported:
        _reported.add(refusal.cause)
        _forwarded.append(refused)
    return True


def log_refusal(refused: Refused) -> None:
    """Log ``refused`` unless its cause was logged already."""
    if refused.cause not in _reported:
        _reported.add(refused.cause)
        log.error("database.setup_refused", client=refused.client, error=refused.error, fix=refused.fix)


def forward_refusals() -> None:
    """Keep refusals for :func:`take_refusals` instead of logging them: a delivery process hands them to
    the collector, which logs each cause once for all its processes."""
    global _forwarded
    _forwarded = []


def take_refusals() -> list[Refused]:
    """The refusals kept since the last call."""
    if not _forwarded:
        return []
    taken = list(_forwarded)
    _forwarded.clear()
    return taken


_reported: set[str] = set()  # causes logged by this process: each once, however often the breaker retries
_forwarded: list[Refused] | None = None


async def through_pooler(conn: asyncpg.Connection) -> bool:
    """Whether ``conn`` reaches the server through a pooler: the backend pid the connection was given at its
    start (pgbouncer makes one up) is not the server process answering it."""
    return await conn.fetchval("SELECT pg_backend_pid()") != conn.get_server_pid()


async def assume_role(conn: asyncpg.Connection, role: str, setting: str, *, local: bool = False) -> None:
    """``SET ROLE`` so row-level security applies to this connection; ``setting`` names where it is set.

    ``local``: ``SET LOCAL ROLE``, for the current transaction only, which is what survives a
    transaction-mode pooler (the next transaction may run on another server connection).
    """
    if not role:
        return
    try:
        await conn.execute(f"SET {'LOCAL ' if local else ''}ROLE {quote_ident(role)}")
    except asyncpg.InsufficientPrivilegeError:
        raise SchemaError(_role_refused(role, setting)) from None


def _role_refused(role: str, setting: str) -> str:
    return f"the database user may not act as {role}: GRANT {role} TO <that user>, or set {setting}"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A string literal (``standard_conforming_strings`` is on in every supported server)."""
    return "'" + text.replace("'", "''") + "'"
