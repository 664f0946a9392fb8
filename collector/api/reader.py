"""Tenant-scoped reads: every query runs in a read-only transaction as ``hookdb_reader`` with the
tenant set for that transaction alone, so row-level security is the last line of defence.

Nothing is kept between transactions (role, timeout and planner settings by ``SET LOCAL``, the tenant
by ``set_config(..., true)``, no prepared statement reused, the type codecs looked up in a
transaction), so a transaction-mode pooler may give each one another server connection.
Each transaction also checks that row-level security applies to it: a login that could bypass it (a
superuser, BYPASSRLS, an owner of tables not forced) is refused with what to fix, never served.

asyncpg is asyncio; the trio side crosses over once per request through trio-asyncio. A database that
cannot answer becomes :class:`Unavailable` (the app's 503), never a stack trace.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import asyncpg
import msgspec
import trio_asyncio

from hookdb.collector import classification as cls
from hookdb.collector.store.connect import ConnectOptions, quote_ident
from hookdb.collector.store.migrate import SchemaError

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[Any]]

TENANT_TABLES = ("hook_audit_log", "payload_blobs", "sessions", "reports", "agent_states", "usage_ledger")
# SET LOCAL of the tenant (as a parameter), and whether row-level security applies to this transaction.
_SET_TENANT = "SELECT set_config('hookdb.tenant', $1, true) IS NOT NULL AND " + " AND ".join(
    f"row_security_active('{table}')" for table in TENANT_TABLES
)
_WHO = """
SELECT current_user AS who, session_user AS login, r.rolsuper AS super, r.rolbypassrls AS bypass,
       array(SELECT c.relname::text FROM pg_class c
             WHERE c.oid = ANY($1::regclass[]) AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
             ORDER BY 1) AS unforced
FROM pg_roles r WHERE r.rolname = current_user
"""
_SNAPSHOT = re.compile(r"[0-9A-Fa-f-]+\Z")


class Unavailable(Exception):
    """The database cannot answer now; ``error`` is the API's code, ``detail`` says why."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


def unavailable(exc: BaseException) -> Unavailable | None:
    """What a database error means for a reader: unavailable (503), or ``None`` for a bug (500)."""
    if isinstance(exc, Unavailable):
        return exc
    if isinstance(exc, SchemaError):  # e.g. the login may not act as hookdb_reader
        return Unavailable("database_misconfigured", str(exc))
    code = getattr(exc, "sqlstate", None)
    if code == "57014":
        return Unavailable("query_timeout", "the database did not answer in time")
    if code in ("42P01", "42883", "3F000"):
        return Unavailable("schema_missing", "the database has no hookdb schema yet: run hookdb migrate")
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError) or cls.sqlstate_class(exc) in (
        "08",
        "28",
        "53",
        "57",
        "58",
    ):
        return Unavailable("database_unavailable", f"the database is unreachable ({type(exc).__name__})")
    return None


def _raw_json(data: bytes) -> msgspec.Raw:
    return msgspec.Raw(data[1:])  # jsonb's binary format: a version byte, then the JSON text, passed on as is


async def _setup(conn: asyncpg.Connection) -> None:
    # In a transaction: through a transaction pooler, the type lookup's two round trips must not land on
    # two server connections.
    async with conn.transaction():
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=bytes, decoder=_raw_json, format="binary"
        )


async def _enter(conn: asyncpg.Connection, options: ConnectOptions, tenant: str) -> None:
    """Make the transaction just begun on ``conn`` read as ``options.role`` for ``tenant``, or refuse it."""
    await options.begin(conn)
    if not await conn.fetchval(_SET_TENANT, tenant):
        raise await _bypassing(conn)


async def _bypassing(conn: asyncpg.Connection) -> Unavailable:
    """Why row-level security does not apply to this transaction, and what to change."""
    row = await conn.fetchrow(_WHO, list(TENANT_TABLES))
    who, login = quote_ident(row["who"]), quote_ident(row["login"])
    if row["super"] or row["bypass"]:
        fix = (
            f'set api.role = "hookdb_reader" and GRANT hookdb_reader TO {login}'
            if row["who"] == row["login"]
            else f"ALTER ROLE {who} NOSUPERUSER NOBYPASSRLS, or set api.role to a role without them"
        )
        why = f"{who} bypasses row-level security (superuser or BYPASSRLS)"
    else:
        fix = "run hookdb migrate (it forces row-level security on every table)"
        why = f"row-level security is not enabled and forced on {', '.join(row['unforced'])}"
    return Unavailable("database_misconfigured", f"the API refuses to read: {why}; {fix}")


class Reader:
    """A pool of read-only connections; use as ``async with Reader(...) as reader`` from trio."""

    def __init__(self, options: ConnectOptions, pool_size: int) -> None:
        self._options = options
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._acquiring = asyncio.Lock()  # bound to the loop only when first used

    async def __aenter__(self) -> Reader:
        await trio_asyncio.aio_as_trio(self._open)()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            await trio_asyncio.aio_as_trio(self._pool.close)()

    async def _open(self) -> None:
        # No connection is made yet: the API starts, and answers 503, while the database is down.
        options = self._options

        async def connect(*_: object, **__: object) -> asyncpg.Connection:
            # The password file read afresh. No statement cache: under a transaction-mode pooler a
            # statement prepared in one transaction is gone (or another client's) in the next.
            return await options.connect(statement_cache_size=0)

        self._pool = await asyncpg.create_pool(
            min_size=0,
            max_size=self._pool_size,
            max_inactive_connection_lifetime=60,
            connect=connect,
            init=_setup,
        )

    async def read(self, tenant: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work(conn)`` in one read-only transaction of ``tenant``."""
        return await trio_asyncio.aio_as_trio(self._retrying)(lambda: self._read(tenant, work))

    async def read_together(self, tenant: str, works: Sequence[Work]) -> list[Any]:
        """Each of ``works`` on its own connection, concurrently, all reading one snapshot of ``tenant``."""
        return await trio_asyncio.aio_as_trio(self._retrying)(lambda: self._read_together(tenant, works))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt``; once more if it met a connection that died since it was pooled (a server
        restart), so a restart costs no request a 503 once the server is back."""
        assert self._pool is not None
        for retry in (False, True):
            try:
                return await attempt()
            except Exception as exc:
                problem = unavailable(exc)
                if problem is None:
                    raise
                stale = isinstance(exc, asyncpg.ConnectionDoesNotExistError | asyncpg.InterfaceError)
                if retry or not stale:
                    raise problem from exc
                self._pool.expire_connections()
        raise AssertionError("unreachable")

    async def _read(self, tenant: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            await _enter(conn, self._options, tenant)
            return await work(conn)

    async def _read_together(self, tenant: str, works: Sequence[Work]) -> list[Any]:
        assert self._pool is not None
        async with AsyncExitStack() as stack:
            # One request takes its connections, and begins their transactions, at a time: two requests
            # each holding some and waiting for more could otherwise wait for each other forever. Under
            # a transaction pooler a server connection is taken at BEGIN, so the BEGINs are inside too.
            async with self._acquiring:
                conns = [await stack.enter_async_context(self._pool.acquire()) for _ in works]
                first = conns[0]
                await stack.enter_async_context(first.transaction(isolation="repeatable_read", readonly=True))
                await _enter(first, self._options, tenant)
                snapshot = await first.fetchval("SELECT pg_export_snapshot()")
                if not _SNAPSHOT.match(snapshot):
                    raise AssertionError(f"unexpected snapshot id {snapshot!r}")
                for conn in conns[1:]:
                    await stack.enter_async_context(
                        conn.transaction(isolation="repeatable_read", readonly=True)
                    )
                    await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                    await _enter(conn, self._options, tenant)

            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(work(conn)) for conn, work in zip(conns, works, strict=True)]
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None  # the first failure; the others followed from it
            return [task.result() for task in tasks]
