"""The PostgreSQL sink: writes a batch of rows with binary COPY, each event id exactly once.

Rows are COPYed into a per-connection temporary staging table, then moved with
``INSERT … SELECT … ON CONFLICT DO NOTHING`` in the same transaction: a redelivered event adds no row,
and (with row-level security) the INSERT's policy checks apply, which a plain COPY would bypass.
asyncpg is asyncio; the trio side crosses over once per batch through trio-asyncio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import trio_asyncio

from hookdb.collector.events import COLUMNS, Row
from hookdb.collector.schema import ensure_schema

STAGE = "hookdb_stage"
_COLUMN_LIST = ", ".join(COLUMNS)
_INSERT = (
    f"INSERT INTO hook_audit_log ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {STAGE} ON CONFLICT DO NOTHING"
)


def _jsonb_encode(payload: bytes) -> bytes:
    return b"\x01" + payload  # jsonb's binary format: a version byte, then the JSON text


def _jsonb_decode(data: bytes) -> bytes:
    return data[1:]


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach PostgreSQL; the password file is read at every connect, so rotation needs no restart."""

    dsn: str
    connect_timeout: float = 10.0
    statement_timeout: float = 30.0
    password_file: str = ""

    def kwargs(self) -> dict[str, Any]:
        settings = {
            "application_name": "hookdb-collector",
            "statement_timeout": str(int(self.statement_timeout * 1000)),
            # The server notices a vanished collector; the collector's own time-outs notice a vanished server.
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
        }
        kwargs: dict[str, Any] = {"timeout": self.connect_timeout, "server_settings": settings}
        if self.password_file:
            kwargs["password"] = Path(self.password_file).read_text().strip()
        return kwargs


async def _open(options: ConnectOptions) -> tuple[asyncpg.Connection, bool]:
    conn = await asyncpg.connect(options.dsn, **options.kwargs())
    try:
        created = await ensure_schema(conn)
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=_jsonb_encode, decoder=_jsonb_decode, format="binary"
        )
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (LIKE hook_audit_log INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
    except BaseException:
        conn.terminate()
        raise
    return conn, created


async def _write(conn: asyncpg.Connection, rows: Sequence[Row]) -> int:
    async with conn.transaction():
        await conn.copy_records_to_table(STAGE, records=rows, columns=COLUMNS)
        status = await conn.execute(_INSERT)
    return int(status.rsplit(" ", 1)[1])


class PostgresSink:
    """One connection that writes batches; call from trio inside ``trio_asyncio.open_loop()``."""

    def __init__(self, conn: asyncpg.Connection, *, schema_created: bool) -> None:
        self._conn = conn
        self.schema_created = schema_created

    @classmethod
    async def connect(cls, options: ConnectOptions) -> PostgresSink:
        """Connect, apply the schema if the database has none, and prepare the staging table."""
        conn, created = await trio_asyncio.aio_as_trio(_open)(options)
        return cls(conn, schema_created=created)

    async def ping(self) -> None:
        """Check that the server still answers."""
        await trio_asyncio.aio_as_trio(self._conn.fetchval)("SELECT 1")

    async def write(self, rows: Sequence[Row]) -> int:
        """Write one batch in one transaction; return how many rows were new (the rest were duplicates)."""
        return await trio_asyncio.aio_as_trio(_write)(self._conn, rows)

    def terminate(self) -> None:
        """Drop the connection at once: after a failure its state is unknown."""
        self._conn.terminate()

    async def aclose(self) -> None:
        if not self._conn.is_closed():
            await trio_asyncio.aio_as_trio(self._conn.close)(timeout=5)
