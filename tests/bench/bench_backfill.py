"""Benchmark of ``hookdb backfill claude-code``: events per second over a large synthetic transcript tree.

Generates ``--files`` session transcripts of ``--lines`` lines each (default 200 × 1000; every tenth
session also has a subagent transcript of a tenth as many lines), shaped like Claude Code's: prompts,
assistant messages split over lines that share a message id, tool uses and their results (Bash, Read,
Edit with the whole original file, Grep, some failures). Then, on one PostgreSQL server, a fresh
database for each write:

a. mapping only: ``transcript_events`` over every file, in this process (the floor of any backfill);
b. mapping, envelopes and rows (``encode_envelope`` + ``event_row``), as the command builds its batches;
c. ``PostgresSink.write`` of those batches of 1000, only the writes timed: the write path alone;
d. ``hookdb backfill claude-code DIR --dsn`` end to end, as a process: the figure users get;
e. the same command again on the now full database (every event already there: 0 new rows).

Run: ``.venv/bin/python tests/bench/bench_backfill.py [--files F] [--lines L] [--dsn DSN] [--json PATH]``.
Not part of the pytest run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import trio
import trio_asyncio
from bench_spine import start_server  # the script's own folder is on sys.path

from hookdb.collector.admin import backfill as bf
from hookdb.collector.admin.backfill_cli import _rows, _stream
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row
from hookdb.collector.store.sink import PostgresSink

BATCH = 1000
TENANT = "default"
MODEL = "claude-sonnet-4-5-20250929"
_WORDS = [
    *("revenue", "region", "store", "units", "price", "total", "quarter", "report", "summary", "analysis"),
    *("session", "agent", "tool", "event", "value", "data", "frame", "index", "result", "error", "config"),
    *("path", "module", "function", "test", "parse", "load", "write", "read"),
]


# -- The synthetic transcripts -------------------------------------------------------------------------


class _Writer:
    """Lines of one transcript, each with a fresh uuid, chained by parentUuid, a second or so apart."""

    def __init__(self, f: Any, session_id: str, cwd: str, at: datetime, agent_id: str | None) -> None:
        self.f, self.session_id, self.cwd, self.at, self.agent_id = f, session_id, cwd, at, agent_id
        self.parent: str | None = None
        self.count = 0

    def line(self, kind: str, message: dict[str, Any], **extra: Any) -> None:
        self.at += timedelta(milliseconds=random.randrange(50, 3000))
        uid = str(uuid.uuid4())
        line: dict[str, Any] = {
            "parentUuid": self.parent,
            "isSidechain": self.agent_id is not None,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": "2.1.42",
            "gitBranch": "main",
        }
        if self.agent_id:
            line["agentId"] = self.agent_id
        line.update(type=kind, message=message, **extra)
        line["uuid"] = uid
        line["timestamp"] = self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.f.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.parent = uid
        self.count += 1


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _source(rng: random.Random, lines: int) -> str:
    return "\n".join(f"    {rng.choice(_WORDS)}_{i} = {rng.choice(_WORDS)}({i})" for i in range(lines)) + "\n"


def _tool(rng: random.Random, cwd: str) -> tuple[str, dict[str, Any], Any, str, bool]:
    """(name, input, toolUseResult, tool_result content, is_error) of one random tool call."""
    r = rng.random()
    if r < 0.35:
        out = "\n".join(_text(rng, 12) for _ in range(rng.randrange(1, 30)))
        failed = rng.random() < 0.1
        inp = {"command": f"pytest -q tests/test_{rng.choice(_WORDS)}.py", "description": "Run tests"}
        if failed:
            return "Bash", inp, f"Error: Exit code 1\n{out}", f"Exit code 1\n{out}", True
        return "Bash", inp, {"stdout": out, "stderr": "", "interrupted": False, "isImage": False}, out, False
    if r < 0.65:
        path = f"{cwd}/src/{rng.choice(_WORDS)}.py"
        content = _source(rng, rng.randrange(10, 120))
        file = {"filePath": path, "content": content, "numLines": content.count("\n"), "startLine": 1}
        return "Read", {"file_path": path}, {"type": "text", "file": file}, content, False
    if r < 0.85:
        path = f"{cwd}/src/{rng.choice(_WORDS)}.py"
        original = _source(rng, rng.randrange(50, 600))  # sometimes over blob_min_bytes
        old = original.splitlines()[3] + "\n"
        new = old.replace("=", "= 1 +", 1)
        inp = {"file_path": path, "old_string": old, "new_string": new}
        result = {"filePath": path, "oldString": old, "newString": new, "originalFile": original}
        return (
            "Edit",
            inp,
            {**result, "structuredPatch": [], "userModified": False, "replaceAll": False},
            (f"The file {path} has been updated."),
            False,
        )
    files = [f"{cwd}/src/{rng.choice(_WORDS)}.py" for _ in range(rng.randrange(1, 20))]
    result = {"mode": "files_with_matches", "filenames": files, "numFiles": len(files)}
    return "Grep", {"pattern": rng.choice(_WORDS), "path": f"{cwd}/src"}, result, "\n".join(files), False


def _conversation(w: _Writer, rng: random.Random, lines: int, *, prompts: bool) -> None:
    """Fill ``w`` with ``lines`` lines: turns of tool calls, each turn closed by a text answer."""
    usage = {"input_tokens": 6, "cache_creation_input_tokens": 800, "cache_read_input_tokens": 18_000}
    w.line("user", {"role": "user", "content": _text(rng, 25)}, promptId=str(uuid.uuid4()))
    while w.count < lines - 1:
        msg = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": MODEL}
        if prompts and rng.random() < 0.03 and w.count < lines - 3:
            answer = [{"type": "text", "text": _text(rng, 40)}]
            w.line("assistant", {**msg, "content": answer, "usage": {**usage, "output_tokens": 120}})
            w.line("user", {"role": "user", "content": _text(rng, 20)}, promptId=str(uuid.uuid4()))
            continue
        if rng.random() < 0.2:  # a message streamed over two lines: text, then the tool use
            said = [{"type": "text", "text": _text(rng, 15)}]
            w.line("assistant", {**msg, "content": said, "usage": {**usage, "output_tokens": 90}})
        tool_use_id = f"toolu_{uuid.uuid4().hex[:24]}"
        name, tool_input, result, content, failed = _tool(rng, w.cwd)
        call = [{"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input}]
        w.line("assistant", {**msg, "content": call, "usage": {**usage, "output_tokens": 90}})
        block: dict[str, Any] = {"tool_use_id": tool_use_id, "type": "tool_result", "content": content}
        if failed:
            block["is_error"] = True
        w.line("user", {"role": "user", "content": [block]}, toolUseResult=result)
    end = [{"type": "text", "text": _text(rng, 30)}]
    msg = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": MODEL}
    w.line("assistant", {**msg, "content": end, "usage": {**usage, "output_tokens": 60}})


def generate(root: Path, files: int, lines: int, seed: int = 20260314) -> tuple[int, int]:
    """Write the transcript directory; return (files, bytes)."""
    rng = random.Random(seed)
    random.seed(seed)
    project = root / "-home-dev-proj"
    project.mkdir(parents=True)
    count = 0
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(files):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        at = start + timedelta(hours=i)
        with (project / f"{sid}.jsonl").open("w") as f:
            _conversation(_Writer(f, sid, "/home/dev/proj", at, None), rng, lines, prompts=True)
        count += 1
        if i % 10 == 0:
            agent = uuid.uuid4().hex[:16]
            sub = project / sid / "subagents" / f"agent-{agent}.jsonl"
            sub.parent.mkdir(parents=True)
            with sub.open("w") as f:
                _conversation(_Writer(f, sid, "/home/dev/proj", at, agent), rng, lines // 10, prompts=False)
            count += 1
    return count, sum(p.stat().st_size for p in root.rglob("*.jsonl"))


# -- Measurements --------------------------------------------------------------------------------------


def _units(root: Path) -> tuple[list[bf.TranscriptSession], bf.Tally]:
    tally = bf.Tally()
    return bf.find_transcripts(root, tally), tally


def measure_mapping(root: Path) -> dict[str, Any]:
    units, tally = _units(root)
    started = time.perf_counter()
    n = sum(1 for u in units for _ in bf.transcript_events(u, tally))
    seconds = time.perf_counter() - started
    return {"events": n, "seconds": seconds, "events_per_second": n / seconds, "malformed": tally.malformed}


def _batches(root: Path) -> Iterator[list[Row]]:
    """The batches ``hookdb backfill --dsn`` writes, built by its own code."""
    units, tally = _units(root)
    return _rows(_stream(units, bf.transcript_events, tally), tally, TENANT, None, BATCH)


def measure_rows(root: Path) -> dict[str, Any]:
    started = time.perf_counter()
    n = sum(len(rows) for rows in _batches(root))
    seconds = time.perf_counter() - started
    return {"events": n, "seconds": seconds, "events_per_second": n / seconds}


def measure_sink(dsn: str, root: Path) -> dict[str, Any]:
    """Only the ``PostgresSink.write`` calls are timed; each batch is built (untimed) just before."""

    async def go() -> tuple[int, float]:
        async with trio_asyncio.open_loop():
            sink = await PostgresSink.connect(ConnectOptions(dsn=dsn))
            n, seconds = 0, 0.0
            try:
                for rows in _batches(root):
                    started = time.perf_counter()
                    await sink.write(rows)
                    seconds += time.perf_counter() - started
                    n += len(rows)
            finally:
                await sink.aclose()
            return n, seconds

    n, seconds = trio.run(go)
    return {"events": n, "seconds": seconds, "events_per_second": n / seconds}


def measure_cli(dsn: str, root: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_SOCKET", "HOOKDB_CONFIG")}
    command = [sys.executable, "-m", "hookdb.collector.cli", "backfill", "claude-code", str(root)]
    started = time.perf_counter()
    done = subprocess.run([*command, "--dsn", dsn], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"backfill failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    found = re.search(r"^events:\s+(\d+) read, (\d+) new rows$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    events, new = int(found.group(1)), int(found.group(2))
    return {"events": events, "new_rows": new, "seconds": wall, "events_per_second": events / wall}


def run_sql(dsn: str, sql: str) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    name = f"hookdb_bench_backfill_{uuid.uuid4().hex[:8]}"
    run_sql(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    finally:
        run_sql(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def render(res: dict[str, Any]) -> str:
    env = res["environment"]
    rows = [
        ("a. mapping only (in process)", res["mapping"]),
        ("b. mapping + envelope + row (in process)", res["rows"]),
        ("c. PostgresSink.write of those batches (writes only)", res["sink"]),
        ("d. hookdb backfill --dsn, first run (process, wall)", res["first_run"]),
        ("e. hookdb backfill --dsn, second run: 0 new rows", res["second_run"]),
    ]
    out = [
        f"hookdb backfill benchmark: {env['files']} files ({env['sessions']} sessions), "
        f"{env['lines']:,} lines, {env['bytes'] / 1e6:,.0f} MB; PostgreSQL {env['server']}; "
        f"{env['cpus']} CPUs, load {env['load']:.2f}",
        f"{'':58}{'events':>10}{'seconds':>10}{'events/s':>11}",
    ]
    out += [
        f"{label:58}{r['events']:>10,}{r['seconds']:>10.2f}{r['events_per_second']:>11,.0f}"
        for label, r in rows
    ]
    first, sink, mapping = res["first_run"], res["sink"], res["rows"]
    serial = first["events"] / (mapping["seconds"] + sink["seconds"])
    out.append(
        f"ratios: d / (b then c, in series) = {first['events_per_second'] / serial:.2f}; "
        f"d / c (the write path alone) = {first['events_per_second'] / sink['events_per_second']:.2f}; "
        f"new rows in d: {first['new_rows']:,}, in e: {res['second_run']['new_rows']:,}"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=200, help="session transcripts (default 200)")
    parser.add_argument("--lines", type=int, default=1000, help="lines per transcript (default 1000)")
    parser.add_argument(
        "--dsn", help="postgresql:// URI of a role that may create databases; default: embedded"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hookdb-bench-backfill-")))
        root = workdir / "projects"
        _progress(f"writing {args.files} transcripts of {args.lines} lines")
        files, size = generate(root, args.files, args.lines)
        _progress("starting PostgreSQL")
        admin_dsn, server = start_server(args.dsn, workdir, stack)
        res: dict[str, Any] = {
            "environment": {
                "files": files,
                "sessions": args.files,
                "lines": sum(1 for p in root.rglob("*.jsonl") for _ in p.open("rb")),
                "bytes": size,
                "server": server,
                "cpus": os.cpu_count(),
                "load": os.getloadavg()[0],
                "python": sys.version.split()[0],
            }
        }
        _progress("a, b. mapping")
        res["mapping"] = measure_mapping(root)
        res["rows"] = measure_rows(root)
        _progress("c. PostgresSink.write")
        with fresh_database(admin_dsn) as dsn:
            res["sink"] = measure_sink(dsn, root)
        _progress("d, e. hookdb backfill, twice")
        with fresh_database(admin_dsn) as dsn:
            res["first_run"] = measure_cli(dsn, root)
            res["second_run"] = measure_cli(dsn, root)
            res["rows_in_database"] = run_sql(dsn, "SELECT count(*) FROM hook_audit_log")
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
