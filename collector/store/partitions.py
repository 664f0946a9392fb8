"""Monthly partitions of ``hook_audit_log``: created ahead of time so events never pile up in the default.

A month's partition is created empty, filled with any rows of that month the default partition caught
(when there is one attached), and attached, in one transaction under an advisory lock of its name; so
creating a month late is as safe as creating it early, and writers creating it at once create it once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

PARENT = "hook_audit_log"
NAME_PATTERN = re.compile(rf"{PARENT}_y(\d{{4}})m(\d{{2}})")


def month_start(moment: datetime, offset: int = 0) -> datetime:
    """The first instant (UTC) of the month ``offset`` months after ``moment``'s."""
    index = moment.year * 12 + moment.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_y{start.year:04d}m{start.month:02d}"


def month_of_name(name: str) -> datetime | None:
    """The month a ``hook_audit_log_yYYYYmMM`` name stands for; None for any other name."""
    match = NAME_PATTERN.fullmatch(name)
    if match is None or not 1 <= int(match[2]) <= 12:
        return None
    return datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)


async def ensure_months(conn: asyncpg.Connection, now: datetime, ahead: int = 2) -> list[str]:
    """Create the partitions of this month and the next ``ahead`` months that are missing; return them."""
    created = []
    for offset in range(ahead + 1):
        start = month_start(now, offset)
        if await create_month(conn, start):
            created.append(partition_name(start))
    return created


_DEFAULT_ATTACHED = (
    "SELECT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = $2::regclass)"
)


async def create_month(conn: asyncpg.Connection, start: datetime) -> bool:
    """Create the partition of the month starting at ``start`` unless it exists; True if created."""
    name = partition_name(start)
    end = month_start(start, 1)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
        if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
            return False
        await conn.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        if await conn.fetchval(_DEFAULT_ATTACHED, f"{PARENT}_default", PARENT):  # else it caught nothing
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


@dataclass(frozen=True)
class Partition:
    """An attached partition of ``hook_audit_log`` and its range (UTC); no range for the default."""

    name: str
    start: datetime | None
    end: datetime | None

    @property
    def month(self) -> datetime | None:
        """The month it holds if it is one of ours: named and bounded exactly as ``create_month`` makes it."""
        month = month_of_name(self.name)
        if month is None or self.start != month or self.end != month_start(month, 1):
            return None
        return month


# The bound as PostgreSQL prints it, cast back in the same session: exact whatever TimeZone and DateStyle.
_BOUNDS = r"""
SELECT c.relname AS name, bound[1]::timestamptz AS range_start, bound[2]::timestamptz AS range_end
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid,
LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$FROM \('([^']*)'\) TO \('([^']*)'\)$re$) bound
WHERE i.inhparent = $1::regclass
ORDER BY range_start NULLS LAST, name
"""


async def attached(conn: asyncpg.Connection) -> list[Partition]:
    """The partitions attached to ``hook_audit_log``, oldest range first, the default last."""
    return [Partition(r["name"], r["range_start"], r["range_end"]) for r in await conn.fetch(_BOUNDS, PARENT)]


async def default_months(conn: asyncpg.Connection) -> list[datetime]:
    """The months (UTC) of the rows the default partition holds, oldest first."""
    rows = await conn.fetch(
        f"SELECT DISTINCT date_trunc('month', occurred_at, 'UTC') AS month FROM {PARENT}_default ORDER BY 1"
    )
    return [r["month"] for r in rows]
