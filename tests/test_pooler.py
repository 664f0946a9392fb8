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
import queue
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import pytest
import seed
from test_api import TOKEN_A, TOKEN_B, TOKENS, Stream, client, write_seed
from test_nothing_lost import AckingClient, ack_roundtrip, make_frames

from hookdb.client.wire import encode_envelope, frame, new_event_id

from conftest import BIN, count_rows, in_threads, migrate, run_sql, wait_for, wait_for_rows

PGBOUNCER = Path("/usr/sbin/pgbouncer")
# Server connections per database and user: fewer than the API's 8 and the 16 clients', and as many as a
# session detail reads at once (api.pool_size is at least 4 for that reason).
SERVER_POOL = 4
PASSWORD = "pooler-secret"
OWNER = "hookdb_test_owner"
# hookdb's setting for it: nothing but application_name at startup (a default pgbouncer refuses the rest).
POOLED = ("--set", "database.pooler=transaction")
# What a pgbouncer told to ignore the startup parameters hookdb sends a server ignores (the API's included).
IGNORED_STARTUP = "statement_timeout,plan_cache_mode," + ",".join(
    f"tcp_keepalives_{name}" for name in ("idle", "interval", "count")
)
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


def make_pooler(pg_server: str, pool_size: int = SERVER_POOL, *, more: str = "") -> Pooler:
    """pgbouncer's configuration, in transaction mode in front of ``pg_server`` with ``pool_size`` server
    connections per database and user and an auth file for the test logins (not started yet); ``more``:
    more settings of its ``[pgbouncer]`` section."""
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
default_pool_size = {pool_size}
max_client_conn = 500
{more}"""
    )
    (folder / "pgbouncer.log").touch()
    for path in folder.iterdir():
        path.chmod(0o644)
    return Pooler(port, user, folder)


@pytest.fixture
def pgbouncer(pg_server: str) -> Iterator[Pooler]:
    """pgbouncer in transaction mode in front of the test server (Debian's package, as .ci/run installs)."""
    if not PGBOUNCER.exists():
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    pooler = make_pooler(pg_server)
    try:
        pooler.start()
        yield pooler
    finally:
        pooler.stop()
        shutil.rmtree(pooler.folder, ignore_errors=True)


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

    in_threads(worker, ((n,) for n in range(threads)))
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


def pooled(pooler: Pooler, dsn: str) -> str:
    """``dsn``'s database and login, through ``pooler``."""
    return pooler.dsn(database_of(dsn), unquote(urlsplit(dsn).username or "postgres"))


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tenant_frame(tenant: str, session: str) -> tuple[str, bytes]:
    event_id = new_event_id()
    data = encode_envelope(
        event_id=event_id,
        occurred_at_ns=time.time_ns(),
        source="app",
        event_type="SessionStart",
        session_id=session,
        tenant=tenant,
        payload=b'{"model": "claude-opus-4-5"}',
        ack=True,
    )
    return event_id, frame(data)


def heard(stream: Stream, seconds: float) -> set[str]:
    """The session ids ``stream`` announced within ``seconds``."""
    found: set[str] = set()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            found.add(stream.next("session", timeout=left)["session"]["session_id"])
        except queue.Empty:
            break
    return found


def test_collector_and_api_through_a_transaction_pooler_lose_nothing_and_leak_nothing(
    dsn: str, pgbouncer: Pooler, start_collector: Any, start_api: Any, socket_path: Path
) -> None:
    seeded(dsn)
    target = pooled(pgbouncer, dsn)
    uid = os.getuid()
    # 8 writers and the API's 8 connections share the pooler's 4 server connections.
    collector = start_collector(
        "--dsn", target, *POOLED, "--set", "database.writers=8", "--set", "batch.linger_seconds=0.05",
        "--set", f'tenants.uids={{"{uid}" = ["default", "acme", "beta"]}}', use_dsn=False,
    )  # fmt: skip
    api = start_api(
        target, TOKENS, *POOLED, "--set", "api.pool_size=8", "--set", f"api.listen_dsn={toml_string(dsn)}",
        "--set", "api.heartbeat_seconds=2",  # within the stream client's read time-out all along
    )  # fmt: skip
    # Open all along: the default tenant's sessions change with every batch, and neither stream hears them.
    streams = {TOKEN_A: Stream(api, TOKEN_A), TOKEN_B: Stream(api, TOKEN_B)}
    try:
        batches = [make_frames(n, 2500, ack=True) for n in range(8)]  # 8 clients, tenant "default"
        failures: list[BaseException] = []

        def send(ids: list[str], frames: list[bytes]) -> None:
            try:
                for start in range(0, len(frames), 250):
                    ack_roundtrip(socket_path, ids[start : start + 250], frames[start : start + 250])
            except BaseException as exc:
                failures.append(exc)

        senders = [threading.Thread(target=send, args=batch) for batch in batches]
        for s in senders:
            s.start()
        problems = hammer(api, threads=16, requests=63)  # 1,008 requests while the events go in
        for s in senders:
            s.join()
        assert failures == []
        assert problems == [], f"{len(problems)} of 1008 answers wrong, e.g. {problems[:5]}"
        counts = "SELECT count(*), count(DISTINCT event_id) FROM hook_audit_log WHERE tenant_id = 'default'"
        wait_for(lambda: run_sql(dsn, counts)[0][0] >= 20_000, 90)
        time.sleep(0.5)  # nothing more comes
        assert run_sql(dsn, counts)[0] == (20_000, 20_000)
        assert run_sql(dsn, "SELECT event_count FROM sessions WHERE tenant_id = 'default'")[0][0] == 20_000
        assert server_connections(dsn) <= SERVER_POOL + 1  # + the live feed's, direct to the server
        # The live feed (LISTEN direct, the cards read through the pooler): each tenant hears its own only.
        ids, frames = zip(tenant_frame("acme", "a-live"), tenant_frame("beta", "b-live"), strict=True)
        ack_roundtrip(socket_path, list(ids), list(frames))
        assert heard(streams[TOKEN_A], 3) == {"a-live"}
        assert heard(streams[TOKEN_B], 1) == {"b-live"}
        assert not any(stream.ended.is_set() for stream in streams.values())
    finally:
        for stream in streams.values():
            stream.close()
    assert collector.stop() == 0
    assert collector.events("database.setup_refused") == []


def test_the_pooler_restarted_mid_stream_loses_nothing(
    dsn: str, pgbouncer: Pooler, start_collector: Any, socket_path: Path
) -> None:
    migrate(dsn)
    collector = start_collector(
        "--dsn", pooled(pgbouncer, dsn), *POOLED, "--set", "breaker.open_seconds=0.2", use_dsn=False
    )
    stop = threading.Event()
    clients = [AckingClient(socket_path, n, stop) for n in range(4)]
    for c in clients:
        c.start()
    try:
        wait_for(lambda: count_rows(dsn) >= 2000, 60)
        pgbouncer.stop()  # every connection through it cut, mid-stream
        time.sleep(0.5)
        pgbouncer.start()
        restarted_at = count_rows(dsn)
        wait_for(lambda: count_rows(dsn) >= restarted_at + 2000, 60)
    finally:
        stop.set()
        for c in clients:
            c.join(30)
    assert [c.error for c in clients if c.error] == []
    acked = set().union(*(c.acked for c in clients))
    sent = set().union(*(c.sent for c in clients))
    wait_for(lambda: count_rows(dsn) >= len(acked), 60)
    assert collector.stop() == 0
    stored = [str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")]
    assert len(stored) == len(set(stored))
    assert acked <= set(stored) <= sent
    noticed = collector.events("write.failed") + collector.events("breaker.transition")
    assert noticed, "the restart went unseen"


def test_a_connection_setup_the_pooler_refuses_is_logged_once_with_what_to_change(
    dsn: str, pgbouncer: Pooler, start_collector: Any, socket_path: Path
) -> None:
    migrate(dsn)
    target = pooled(pgbouncer, dsn)
    fast = ("--set", "breaker.open_seconds=0.1", "--set", "breaker.max_open_seconds=0.2")
    fast += ("--set", "database.health_check_seconds=0.2")
    # database.pooler left at "none": the startup parameters a direct server takes, which pgbouncer refuses.
    collector = start_collector("--dsn", target, *fast, use_dsn=False)
    ids, frames = make_frames(0, 1, ack=True)
    ack_roundtrip(socket_path, ids, frames)  # spooled, though it cannot be written yet
    wait_for(lambda: pgbouncer.log.read_text().count("unsupported startup parameter") >= 5, 30)
    refused = collector.events("database.setup_refused")
    assert len(refused) == 1, refused
    assert 'set database.pooler = "transaction"' in refused[0]["fix"]
    assert "unsupported startup parameter" in refused[0]["error"]
    assert collector.stop() == 0
    assert count_rows(dsn) == 0
    collector = start_collector("--dsn", target, *POOLED, use_dsn=False)  # what the line said to change
    assert wait_for_rows(dsn, 1) == 1
    assert collector.stop() == 0


def test_prepared_statements_a_pooler_loses_are_logged_once_and_cost_no_event(
    pg_server: str, dsn: str, start_collector: Any, socket_path: Path, tmp_path: Path
) -> None:
    """A pgbouncer told to ignore the startup parameters, and a collector not told of it: a statement it
    prepared in one transaction is missing in the next. Nothing is dead-lettered for it."""
    if not PGBOUNCER.exists():
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    migrate(dsn)
    # Two server connections, taken in turn: a client's next transaction lands on the other one.
    more = f"ignore_startup_parameters = {IGNORED_STARTUP}\nmin_pool_size = 2\nserver_round_robin = 1\n"
    pooler = make_pooler(pg_server, 2, more=more)
    pooler.start()
    try:
        # Both server connections open before the collector starts (min_pool_size fills the pool in the
        # background only): else its transactions may all land on the one that is there.
        in_threads(run_sql, [(pooled(pooler, dsn), "SELECT pg_sleep(0.5)")] * 2)
        fast = ("--set", "breaker.open_seconds=0.1", "--set", "breaker.max_open_seconds=0.2")
        collector = start_collector("--dsn", pooled(pooler, dsn), *fast, use_dsn=False)
        ids, frames = make_frames(0, 200, ack=True)
        ack_roundtrip(socket_path, ids, frames)
        wait_for(lambda: collector.events("database.setup_refused"), 30)
        time.sleep(1)  # the breaker retries meanwhile
        refused = collector.events("database.setup_refused")
        assert len(refused) == 1, refused
        assert 'set database.pooler = "transaction"' in refused[0]["fix"]
        assert collector.stop() == 0
        assert collector.events("event.dead_lettered") == []
        collector = start_collector("--dsn", pooled(pooler, dsn), *POOLED, use_dsn=False)
        assert wait_for_rows(dsn, 200) == 200
        assert collector.stop() == 0
    finally:
        pooler.stop()
        shutil.rmtree(pooler.folder, ignore_errors=True)


def test_partitions_maintain_through_a_pooler_refuses_in_one_line_and_runs_straight_to_the_server(
    dsn: str, pgbouncer: Pooler, tmp_path: Path
) -> None:
    """A run's session lock and its multi-transaction detaches need a session of their own: through a busy
    pooler its unlock may run on another server connection, leaving the lock on one the pooler keeps (every
    later run refused), and its lock_timeout on a connection other clients get. Before, it ran through it."""
    migrate(dsn)

    def maintain(target: str) -> subprocess.CompletedProcess:
        command = [str(BIN / "hookdb"), "partitions", "maintain", "--dsn", target]
        command += ["--state-dir", str(tmp_path), *POOLED]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    through = maintain(pooled(pgbouncer, dsn))
    assert through.returncode == 1, through.stderr
    [line] = through.stderr.splitlines()
    assert "goes through a pooler" in line
    assert "--dsn straight to the server" in line
    locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    assert run_sql(dsn, locks)[0][0] == 0
    direct = maintain(dsn)
    assert direct.returncode == 0, direct.stderr


def test_an_api_feed_listening_through_a_pooler_says_so_once(
    dsn: str, pg_server: str, start_api: Any
) -> None:
    """api.listen_dsn set, but to a pooler that ignores the startup parameters a server takes (so the
    connection is not refused): the config cannot tell, the connection can."""
    if not PGBOUNCER.exists():
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    seeded(dsn)
    pooler = make_pooler(pg_server, more=f"ignore_startup_parameters = {IGNORED_STARTUP}\n")
    pooler.start()
    try:
        target = pooled(pooler, dsn)
        direct = start_api(target, TOKENS, *POOLED, "--set", f"api.listen_dsn={toml_string(dsn)}")
        mistaken = start_api(target, TOKENS, *POOLED, "--set", f"api.listen_dsn={toml_string(target)}")
        wait_for(lambda: mistaken.events("api.feed_through_pooler"), 10)
        [warning] = mistaken.events("api.feed_through_pooler")
        assert "set api.listen_dsn to a DSN that reaches the server directly" in warning["detail"]
        assert direct.events("api.feed_through_pooler") == []
    finally:
        pooler.stop()
