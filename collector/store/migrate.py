"""``hookdb migrate``: bring a database to the schema this hookdb knows, safely and exactly once.

Numbered SQL files ship in the package (``collector/store/migrations/NNNN_name.sql``). Pending ones are
applied in order, each in its own subtransaction, all in one transaction under a transaction-level advisory
lock (two collectors starting together apply each migration once; no lock outlives the transaction, so it
works through a transaction-mode pooler too). ``schema_migrations`` records each version with the checksum of
its file: an applied migration whose file was edited is refused, and so is a database at a version this
hookdb does not know (it was migrated by a newer release).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

import asyncpg

MIGRATION_LOCK = 0x686F6F6B6462  # "hookdb", for pg_advisory_lock


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this hookdb; the message says why and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migrations shipped with this hookdb, in order."""
    found = []
    for entry in files("hookdb.collector.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append(Migration(int(name[:4]), name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations are not numbered 1..n: {[m.name for m in found]}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the pending migrations; return their names. An asyncio coroutine (see ``trio_asyncio``)."""
    known = migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        applied = await _applied(conn)
        _check(applied, known)
        done = []
        for migration in known:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.name)
        return done


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    return {
        r["version"]: r["checksum"]
        for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
    }


def _check(applied: dict[int, str], known: list[Migration]) -> None:
    by_version = {m.version: m for m in known}
    newer = sorted(v for v in applied if v not in by_version)
    if newer:
        raise SchemaError(
            f"the database schema is at version {max(applied)}, newer than this hookdb knows "
            f"({len(known)}): upgrade hookdb, or point it at another database"
        )
    for version, checksum in applied.items():
        migration = by_version[version]
        if checksum != migration.checksum:
            raise SchemaError(
                f"migration {migration.name} was changed after it was applied (checksum {checksum[:12]} "
                f"in the database, {migration.checksum[:12]} in the file): restore the file and add a "
                "new migration instead"
            )
