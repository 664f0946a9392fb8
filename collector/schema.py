"""Bring a database to the schema this collector writes (``schema.sql``, shipped in the package)."""

from __future__ import annotations

from importlib.resources import files

import asyncpg

# pg_advisory_xact_lock key: two collectors starting together apply the schema once.
SCHEMA_LOCK = 0x686F6F6B6462  # "hookdb"


def schema_sql() -> str:
    return (files("hookdb.collector") / "schema.sql").read_text()


async def ensure_schema(conn: asyncpg.Connection) -> bool:
    """Apply ``schema.sql`` when ``hook_audit_log`` is missing; return whether it was applied.

    An asyncio coroutine: call it from trio through ``trio_asyncio.aio_as_trio``.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        if await conn.fetchval("SELECT to_regclass('hook_audit_log')") is not None:
            return False
        await conn.execute(schema_sql())
        return True
