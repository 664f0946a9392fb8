"""Monthly partitions of ``hook_audit_log``: created ahead of time so events never pile up in the default.

A month's partition is created empty, filled with any rows of that month the default partition caught,
and attached, in one transaction; so creating a month late is as safe as creating it early.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

PARENT = "hook_audit_log"


def month_start(moment: datetime, offset: int = 0) -> datetime:
    """The first instant (UTC) of the month ``offset`` months after ``moment``'s."""
    index = moment.year * 12 + moment.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_y{start.year:04d}m{start.month:02d}"


async def ensure_months(conn: asyncpg.Connection, now: datetime, ahead: int = 2) -> list[str]:
    """Create the partitions of this month and the next ``ahead`` months that are missing; return them."""
    created = []
    for offset in range(ahead + 1):
        start = month_start(now, offset)
        if await create_month(conn, start):
            created.append(partition_name(start))
    return created


async def create_month(conn: asyncpg.Connection, start: datetime) -> bool:
    """Create the partition of the month starting at ``start`` unless it exists; True if created."""
    name = partition_name(start)
    end = month_start(start, 1)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
        if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
            return False
        await conn.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        await conn.execute(
            f"WITH moved AS (DELETE FROM {PARENT}_default WHERE occurred_at >= $1 AND occurred_at < $2 "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            start,
            end,
        )
        await conn.execute(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ('{start.isoformat()}') "
            f"TO ('{end.isoformat()}')"
        )
    return True
