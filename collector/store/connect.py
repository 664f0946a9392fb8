"""How every hookdb process reaches PostgreSQL: one place turns the config into connection settings.

The daemon, ``hookdb api``, backfill and the admin commands all connect through :class:`ConnectOptions`,
so the DSN, the password file (read afresh at every connect, so a rotated password needs no restart),
the time-outs, keepalives and the role they act as are decided the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from hookdb.collector.config import Config
from hookdb.collector.store.migrate import SchemaError


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach PostgreSQL; the password file is read at every connect, so rotation needs no restart."""

    dsn: str
    connect_timeout: float = 10.0
    statement_timeout: float = 30.0  # 0: none (admin work bounded by lock_timeout instead)
    password_file: str = ""
    role: str = "hookdb_writer"  # "" acts as the login itself
    blob_min_bytes: int = 8192
    application_name: str = "hookdb-collector"
    settings: tuple[tuple[str, str], ...] = ()  # more server settings for every session

    @classmethod
    def from_config(
        cls,
        config: Config,
        dsn: str,
        *,
        application_name: str,
        role: str | None = None,
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
            blob_min_bytes=database.blob_min_bytes,
            application_name=application_name,
            settings=settings,
        )

    def kwargs(self) -> dict[str, Any]:
        """``asyncpg.connect`` keyword arguments (the password file read now)."""
        settings = {
            **dict(self.settings),
            "application_name": self.application_name,
            "statement_timeout": str(int(self.statement_timeout * 1000)),
            # The server notices a vanished client; the client's own time-outs notice a vanished server.
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
        }
        kwargs: dict[str, Any] = {"timeout": self.connect_timeout, "server_settings": settings}
        if self.password_file:
            kwargs["password"] = Path(self.password_file).read_text().strip()
        return kwargs

    async def connect(self) -> asyncpg.Connection:
        """A new connection (asyncio side)."""
        return await asyncpg.connect(self.dsn, **self.kwargs())


async def assume_role(conn: asyncpg.Connection, role: str, setting: str, *, local: bool = False) -> None:
    """``SET ROLE`` so row-level security applies to this connection (``local``: to this transaction only,
    ``SET LOCAL ROLE``); ``setting`` names where the role is configured."""
    if not role:
        return
    try:
        await conn.execute(f"SET {'LOCAL ' if local else ''}ROLE {quote_ident(role)}")
    except asyncpg.InsufficientPrivilegeError:
        raise SchemaError(
            f"the database user may not act as {role}: GRANT {role} TO <that user>, or set {setting}"
        ) from None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
