"""Tenancy under a transaction-mode pooler and under logins that could bypass row-level security.

Debian's real pgbouncer runs in transaction mode in front of the test PostgreSQL with fewer server
connections than the API has clients, so consecutive transactions of one API connection land on
different server connections: the role and the tenant must be set in each transaction, and nothing else
may be kept between them. A login that owns the tables sees only its tenant (FORCE ROW LEVEL SECURITY); a
superuser login reading as itself is refused with what to fix.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import pytest
import seed
from test_api import TOKEN_A, TOKEN_B, TOKENS, client, write_seed

from conftest import migrate, run_sql, wait_for

PGBOUNCER = Path("/usr/sbin/pgbouncer")
# Server connections per database and user: fewer than the API's 8 and the 16 clients', and as many as a
# session detail reads at once (api.pool_size is at least 4 for that reason).
SERVER_POOL = 4
PASSWORD = "pooler-secret"
OWNER = "hookdb_test_owner"
# hookdb's setting for it: nothing but application_name at startup (a default pgbouncer refuses the rest).
POOLED = ("--set", "database.pooler=transaction")
ACME, BETA = 40, 15  # sessions of each tenant; ids apart (a-…, b-…) so a leak shows in every answer


@dataclass
class Pooler:
    """A pgbouncer process (with pgbouncer's defaults: no ``ignore_startup_parameters``);
    ``dsn(database, user)`` reaches the test server through it."""

    port: int
    user: str
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "pgbouncer.log"

    def dsn(self, database: str, user: str) -> str:
        return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        with open(self.log, "ab") as output:
            self.proc = subprocess.Popen(
                [str(PGBOUNCER), "-u", self.user, str(self.folder / "pgbouncer.ini")],
                stdout=output,
                stderr=output,
            )
        proc = self.proc

        def listening() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"pgbouncer exited with {proc.returncode}:\n{self.log.read_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, 10)

    def stop(self) -> None:
        """SIGTERM: pgbouncer's immediate shutdown, every client and server connection cut."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pgbouncer(pg_server: str) -> Iterator[Pooler]:
    """pgbouncer in transaction mode in front of the test server, with an auth file for the test logins."""
    if not PGBOUNCER.exists():
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    server = urlsplit(pg_server)
    host = unquote(dict(p.split("=", 1) for p in server.query.split("&") if "=" in p).get("host", ""))
    host = host or server.hostname or "127.0.0.1"
    # pgbouncer refuses to run as root: it runs as the owner of the server's socket directory (who can
    # reach the socket), or as nobody for a server on TCP.
    user = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
    if user == "root":
        user = "nobody"
    folder = Path(tempfile.mkdtemp(prefix="hookdb-pgbouncer-"))
    folder.chmod(0o755)
    port = _free_port()
    admin = unquote(server.username or "postgres")
    users = [admin, OWNER]
    (folder / "userlist.txt").write_text("".join(f'"{u}" "{PASSWORD}"\n' for u in users))
    backend = f"host={host} port={server.port or 5432}"
    if server.password:
        backend += f" password={unquote(server.password)}"
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
* = {backend}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
default_pool_size = {SERVER_POOL}
max_client_conn = 500
"""
    )
    (folder / "pgbouncer.log").touch()
    for path in folder.iterdir():
        path.chmod(0o644)
    pooler = Pooler(port, user, folder)
    try:
        pooler.start()
        yield pooler
    finally:
        pooler.stop()
        shutil.rmtree(folder, ignore_errors=True)


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def seeded(dsn: str) -> None:
    migrate(dsn)
    write_seed(dsn, seed.Seed("acme", ACME, prefix="a"), seed.Seed("beta", BETA, prefix="b"))


def make_owner(dsn: str) -> None:
    """A login role that owns every hookdb table (and may read them all, were it not for FORCE)."""
    run_sql(dsn, f"DO $$ BEGIN CREATE ROLE {OWNER} LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
    run_sql(dsn, f"ALTER ROLE {OWNER} PASSWORD '{PASSWORD}' NOSUPERUSER NOBYPASSRLS")
    for (table,) in run_sql(
        dsn,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')",
    ):
        run_sql(dsn, f"ALTER TABLE {table} OWNER TO {OWNER}")


EXPECTED = {TOKEN_A: ("a-", ACME), TOKEN_B: ("b-", BETA)}


def check(http: Any, token: str, kind: int) -> str | None:
    """One request of ``kind`` for ``token``'s tenant; what is wrong with the answer, or None."""
    prefix, count = EXPECTED[token]
    if kind == 0:
        answer = http.get("/api/sessions", params={"limit": 200})
        if answer.status_code != 200:
            return f"{answer.status_code} {answer.text}"
        ids = [s["session_id"] for s in answer.json()["sessions"]]
        if len(ids) != count or not all(i.startswith(prefix) for i in ids):
            return f"listing of {prefix}: {len(ids)} sessions, {sorted({i[:2] for i in ids})}"
    elif kind == 1:
        answer = http.get("/api/sessions/stats", params={"from": "2026-10-01T00:00:00Z"})
        if answer.status_code != 200:
            return f"{answer.status_code} {answer.text}"
        if answer.json()["sessions"] != count:
            return f"stats of {prefix}: {answer.json()['sessions']} sessions"
    elif kind == 2:  # a session of the other tenant is not there
        other = "b-000001" if prefix == "a-" else "a-000001"
        answer = http.get(f"/api/sessions/{other}" + random.choice(("", "/events")))
        if answer.status_code != 404:
            return f"{other} for {prefix}: {answer.status_code}"
    else:  # a detail: four connections, one snapshot
        answer = http.get(f"/api/sessions/{prefix}000003")
        if answer.status_code != 200:
            return f"{answer.status_code} {answer.text}"
        if answer.json()["session"]["session_id"] != f"{prefix}000003" or len(answer.json()["reports"]) != 1:
            return f"detail of {prefix}000003: {answer.text[:200]}"
    return None


def hammer(api: Any, threads: int = 16, requests: int = 30) -> list[str]:
    """Many concurrent requests of both tenants; every problem found."""
    problems: list[str] = []

    def worker(n: int) -> None:
        rng = random.Random(n)
        with client(api, TOKEN_A) as a, client(api, TOKEN_B) as b:
            for _ in range(requests):
                token = rng.choice((TOKEN_A, TOKEN_B))
                try:
                    problem = check(a if token == TOKEN_A else b, token, rng.randrange(4))
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem:
                    problems.append(problem)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return problems


def server_connections(dsn: str) -> int:
    """Backends of the test database other than this query's own."""
    return run_sql(
        dsn,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )[0][0]


def test_two_tenants_through_a_transaction_pooler_never_see_each_other(
    dsn: str, pgbouncer: Pooler, start_api: Any
) -> None:
    seeded(dsn)
    admin = unquote(urlsplit(dsn).username or "postgres")
    # The superuser login, reading as hookdb_reader (api.role): the role must hold in every transaction.
    api = start_api(pgbouncer.dsn(database_of(dsn), admin), TOKENS, *POOLED, "--set", "api.pool_size=8")
    problems = hammer(api)
    assert problems == [], f"{len(problems)} of {16 * 30} answers wrong, e.g. {problems[:5]}"
    # The API's connections shared the pooler's few server connections.
    assert server_connections(dsn) <= SERVER_POOL + 1  # + the API's live feed, pinned to one


def test_a_login_that_owns_the_tables_sees_only_its_tenant(
    dsn: str, pgbouncer: Pooler, start_api: Any
) -> None:
    seeded(dsn)
    make_owner(dsn)
    owner_dsn = pgbouncer.dsn(database_of(dsn), OWNER)
    try:
        run_sql(owner_dsn, "SELECT 1")
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"the test server does not let {OWNER} log in: {exc}")
    api = start_api(owner_dsn, TOKENS, *POOLED, "--set", "api.role=")  # reads as the owner itself
    assert hammer(api, threads=6, requests=15) == []


def test_a_login_that_bypasses_row_level_security_is_refused(
    dsn: str, pgbouncer: Pooler, start_api: Any
) -> None:
    seeded(dsn)
    admin = unquote(urlsplit(dsn).username or "postgres")
    for target, pooled in ((dsn, ()), (pgbouncer.dsn(database_of(dsn), admin), POOLED)):
        api = start_api(target, TOKENS, *pooled, "--set", "api.role=")  # a superuser reading as itself
        with client(api) as http:
            for path in ("/api/sessions", "/api/sessions/stats", "/api/sessions/a-000001"):
                answer = http.get(path)
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == "database_misconfigured"
                assert "bypasses row-level security" in answer.json()["detail"]
                assert 'api.role = "hookdb_reader"' in answer.json()["detail"]
        assert len(api.events("api.database_unavailable")) == 1  # logged once, not per request
        api.stop()
