"""Many collectors into one PostgreSQL, directly and through pgbouncer in transaction mode (issue 16).

a. one collector, then ``--hosts`` collectors (each with its own state directory, socket and client)
   writing the same events into one server: events per second, and events per second of server CPU; the
   ratio of the latter (fleet / one) says what the fleet costs the server per event (target ≥ 0.8);
b. the same fleet through pgbouncer (transaction mode, ``--pool`` server connections), in the same run:
   the pooler's cost on the write path;
c. ``hookdb api`` directly and through the pooler: p95 of a mix of list, detail and stats requests.

Each measurement has a fresh database that the collectors migrate themselves, starting together.
Run: ``.venv/bin/python tests/bench/bench_fleet.py [--events N] [--hosts 8] [--requests 600] [--dsn DSN]``.
Not part of the pytest run. Needs /usr/sbin/pgbouncer (Debian package pgbouncer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
from bench_spine import (
    BIN,
    HookdbProcess,
    _postmaster_of,
    count_rows,
    family_cpu,
    fresh_database,
    process_cpu,
    run_asyncio,
    run_sql,
    start_server,
)

from hookdb.client.wire import encode_envelope, frame, new_event_id
from hookdb.collector.intake.tenancy import token_digest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import seed  # noqa: E402 - needs tests/ on sys.path
from test_pooler import Pooler, make_pooler  # noqa: E402

POOLED = ("--set", "database.pooler=transaction")
TOKEN = "bench-token"


@dataclass
class Write:
    """One write measurement: ``events`` stored in ``seconds``, costing the server ``server_cpu`` seconds
    (and the pooler ``pooler_cpu``)."""

    label: str
    collectors: int
    events: int
    seconds: float
    server_cpu: float
    pooler_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def per_server_cpu(self) -> float:
        return self.events / self.server_cpu

    def row(self) -> str:
        return (
            f"{self.label:<22} {self.collectors:>2} {self.rate:>7.0f} ev/s server CPU {self.server_cpu:5.1f}s"
            f" ({self.server_cpu / self.seconds:4.2f} cores)  {self.per_server_cpu:7.0f} ev/server-CPU-s"
            + (f"  pooler CPU {self.pooler_cpu:5.1f} s" if self.pooler_cpu else "")
        )


def frames(client: int, n: int) -> list[bytes]:
    """``n`` fire-and-forget events of one client, on 16 sessions of its own and 16 every client shares."""
    out = []
    for i in range(n):
        session = f"shared-{i % 16}" if i % 2 else f"c{client}-{i % 16}"
        payload = json.dumps({"tool_name": "Bash", "tool_input": {"command": f"ls {i}"}, "client": client})
        envelope = encode_envelope(
            event_id=new_event_id(),
            occurred_at_ns=time.time_ns(),
            source="bench",
            event_type="PostToolUse",
            session_id=session,
            tenant=None,
            payload=payload.encode(),
        )
        out.append(frame(envelope))
    return out


def start_collectors(dsn: str, workdir: Path, count: int, extra: tuple[str, ...]) -> list[HookdbProcess]:
    collectors = []
    for host in range(count):
        folder = workdir / f"host-{host}"
        folder.mkdir(parents=True)
        args = ["collector", "run", "--socket", str(folder / "hookdb.sock"), "--dsn", dsn]
        args += ["--state-dir", str(folder / "state"), "--set", "metrics.enabled=false", *extra]
        process = HookdbProcess(args, folder / "collector.log")
        process.ready_event = "collector.ready"
        collectors.append(process)
    for process in collectors:
        process.wait_ready(120)
    return collectors


def measure_writes(
    label: str, admin_dsn: str, count: int, events: int, workdir: Path, pooler: Pooler | None
) -> Write:
    """``events`` split among ``count`` collectors (one client each) into a fresh database, directly or
    through ``pooler``."""
    with fresh_database(admin_dsn, label.split()[0], schema=False) as dsn:
        postmaster = run_asyncio(_postmaster_of(dsn))
        assert postmaster is not None, "the server must run on this machine to count its CPU"
        reach = pooler.dsn(urlsplit(dsn).path.lstrip("/"), _user(dsn)) if pooler else dsn
        collectors = start_collectors(
            reach, workdir / label.replace(" ", "-"), count, POOLED if pooler else ()
        )
        try:
            shares = [frames(c, events // count) for c in range(count)]
            total = sum(len(s) for s in shares)
            server0 = family_cpu(postmaster)
            pooler0 = process_cpu(pooler.proc.pid) if pooler and pooler.proc else 0.0
            started = time.perf_counter()
            senders = [
                threading.Thread(target=_send, args=(Path(c.log_path).parent / "hookdb.sock", s))
                for c, s in zip(collectors, shares, strict=True)
            ]
            for s in senders:
                s.start()
            while count_rows(dsn) < total:
                for c in collectors:
                    c.check_alive()
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            server = family_cpu(postmaster) - server0
            pooled = process_cpu(pooler.proc.pid) - pooler0 if pooler and pooler.proc else 0.0
            for s in senders:
                s.join()
        finally:
            for c in collectors:
                with contextlib.suppress(Exception):
                    c.stop()
        stored = tuple(run_sql(dsn, "SELECT count(*), count(DISTINCT event_id) FROM hook_audit_log")[0])
        projected = run_sql(dsn, "SELECT sum(event_count) FROM sessions")[0][0]
        assert stored == (total, total), stored
        assert projected == total, projected
        return Write(label, count, total, seconds, server, pooled)


def _user(dsn: str) -> str:
    return unquote(urlsplit(dsn).username or "postgres")


def _send(path: Path, data: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b"".join(data))


# ------------------------------------------------------------------------------------------------ API


@contextlib.contextmanager
def running_api(dsn: str, workdir: Path, *extra: str) -> Iterator[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "api.toml"
    config.write_text(f'[api.tokens]\nacme = ["{token_digest(TOKEN)}"]\n')
    args = ["api", "--dsn", dsn, "--listen", "127.0.0.1:0", "--config", str(config), *extra]
    api = HookdbProcess(args, workdir / "api.log")
    api.ready_event = "api.listening"
    try:
        line = api.wait_ready()
        yield json.loads(line)["url"]
    finally:
        api.stop()


def measure_api(url: str, requests: int, threads: int = 4) -> dict[str, float]:
    """p50 and p95 (ms) of ``requests`` mixed requests from ``threads`` clients."""
    times: list[float] = []
    errors: list[str] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            for _ in range(requests // threads):
                path = rng.choice(
                    (
                        "/api/sessions?limit=50",
                        "/api/sessions/stats",
                        f"/api/sessions/s-{rng.randrange(200):06d}",
                    )
                )
                started = time.perf_counter()
                answer = http.get(path)
                times.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    errors.append(f"{path}: {answer.status_code}")

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[:5]
    cuts = statistics.quantiles(times, n=20)
    return {"p50_ms": statistics.median(times) * 1000, "p95_ms": cuts[18] * 1000}


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=24_000, help="events per write measurement")
    parser.add_argument("--hosts", type=int, default=8, help="collectors of the fleet")
    parser.add_argument("--pool", type=int, default=4, help="pgbouncer's server connections")
    parser.add_argument("--requests", type=int, default=600, help="API requests per route")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three write measurements")
    parser.add_argument("--dsn", help="an admin DSN of the server to use (default: an embedded one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hookdb-bench-fleet-")))
        admin_dsn, label = start_server(args.dsn, workdir, stack)
        pooler = make_pooler(admin_dsn, args.pool)
        pooler.start()
        stack.callback(pooler.stop)
        print(f"server: {label}; pgbouncer pool {args.pool}; {args.events} events per measurement")
        runs: dict[str, list[Write]] = {"one": [], "fleet": [], "pooled": []}
        for round_ in range(args.rounds):  # the three in turn, so a busy spell of the machine hits all alike
            for key, name, count, through in (
                ("one", "one collector", 1, None),
                ("fleet", "fleet direct", args.hosts, None),
                ("pooled", "fleet via pgbouncer", args.hosts, pooler),
            ):
                write = measure_writes(f"{name} {round_}", admin_dsn, count, args.events, workdir, through)
                runs[key].append(write)
                print(write.row(), flush=True)
        per_cpu = {key: statistics.median(w.per_server_cpu for w in ws) for key, ws in runs.items()}
        rate = {key: statistics.median(w.rate for w in ws) for key, ws in runs.items()}
        pooler_cpu = statistics.median(w.pooler_cpu / w.events * 1e6 for w in runs["pooled"])
        print(f"medians of {args.rounds} rounds:")
        print(f"fleet / one, per server CPU second: {per_cpu['fleet'] / per_cpu['one']:.2f} (target .8)")
        print(f"fleet / one, events per second:     {rate['fleet'] / rate['one']:.2f}")
        server_us = f"{1e6 / per_cpu['pooled']:.1f} vs {1e6 / per_cpu['fleet']:.1f} µs"
        print(f"pgbouncer / direct: {rate['pooled'] / rate['fleet']:.2f} of the rate; server CPU per event")
        print(f"    {server_us}; pgbouncer's own {pooler_cpu:.1f} µs")
        with fresh_database(admin_dsn, "api", schema=False) as dsn:
            subprocess.run([str(BIN / "hookdb"), "migrate", "--dsn", dsn], check=True, capture_output=True)
            seed_database(dsn)
            reach = pooler.dsn(urlsplit(dsn).path.lstrip("/"), _user(dsn))
            with running_api(dsn, workdir / "api-direct") as url:
                direct = measure_api(url, args.requests)
            listen = ("--set", f'api.listen_dsn="{dsn}"')
            with running_api(reach, workdir / "api-pooled", *POOLED, *listen) as url:
                through = measure_api(url, args.requests)
        print(f"API direct:        p50 {direct['p50_ms']:6.1f} ms  p95 {direct['p95_ms']:6.1f} ms")
        print(f"API via pgbouncer: p50 {through['p50_ms']:6.1f} ms  p95 {through['p95_ms']:6.1f} ms")
    return 0


def seed_database(dsn: str) -> None:
    """200 sessions of tenant acme (``s-000000`` …), 8 events each."""

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await seed.write(conn, seed.Seed("acme", 200), 0)
        finally:
            await conn.close()

    run_asyncio(go())


if __name__ == "__main__":
    sys.exit(main())
