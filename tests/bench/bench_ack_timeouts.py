"""How many ``hookdb-emit`` runs miss their ack time-out when many run at once (issue 11.13).

Waves of ``--senders`` processes, released together, each sending one event as ``hookdb-emit`` does,
against one live collector; for each ack time-out and with the time-out memory
(``transport.Unresponsive``) on or off, the share that went to the outbox and the time each took. Off
is the old behaviour: the marker path is made a dangling symlink, so no run can see or leave a marker.

Run: ``.venv/bin/python tests/bench/bench_ack_timeouts.py [--senders 200] [--waves 3] [--set S=V]``.
Not part of the pytest run.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from bench_spine import HookdbProcess, count_rows, fresh_database, start_server

from hookdb.client import emit_cli
from hookdb.client.transport import UNRESPONSIVE_MARKER

BIN = Path(sys.executable).parent


def _sender(socket_path: str, outbox: str, timeout: float, barrier: Barrier, results: Queue) -> None:
    os.environ.update({"HOOKDB_SOCKET": socket_path, "HOOKDB_OUTBOX": outbox})
    hook = b'{"hook_event_name": "PreToolUse", "session_id": "bench", "tool_name": "Bash"}'
    barrier.wait()
    started = time.monotonic()
    problem = emit_cli.run(["--timeout", str(timeout)], hook)
    results.put((problem is not None and "event kept in" in problem, time.monotonic() - started))


def wave(socket_path: str, outbox: Path, senders: int, timeout: float) -> tuple[int, list[float]]:
    """``senders`` runs of ``hookdb-emit``'s send, in forked processes released at once by a barrier.

    Returns how many went to the outbox, and each one's time from release to done.
    """
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(senders)
    results = fork.Queue()
    procs = [
        fork.Process(target=_sender, args=(socket_path, str(outbox), timeout, barrier, results))
        for _ in range(senders)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    return sum(outboxed for outboxed, _ in got), [seconds for _, seconds in got]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--timeouts", default="0.25,0.5,1.0")
    parser.add_argument("--dsn")
    parser.add_argument("--set", action="append", default=[], help="a collector setting: spool.fsync=always")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hookdb-bench-ack-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # the embedded server runs as its own user when we are root
        admin_dsn, _ = start_server(args.dsn, workdir, stack)
        dsn = stack.enter_context(fresh_database(admin_dsn, "acks", schema=False))
        socket_path = str(workdir / "hookdb.sock")
        collector = HookdbProcess(
            [
                "collector",
                "run",
                "--socket",
                socket_path,
                "--dsn",
                dsn,
                "--state-dir",
                str(workdir / "state"),
                "--set",
                "metrics.listen=127.0.0.1:0",
                *(arg for setting in args.set for arg in ("--set", setting)),
            ],
            workdir / "collector.log",
        )
        collector.ready_event = "collector.ready"
        stack.callback(collector.stop)
        collector.wait_ready()
        sent = 0
        print(f"{args.senders} concurrent hookdb-emit runs, {args.waves} waves each")
        print("timeout  memory  outboxed        send p50  p95   max (s)")
        for timeout in (float(t) for t in args.timeouts.split(",")):
            for memory in (False, True):
                outbox = workdir / f"outbox-{timeout}-{memory}"
                outbox.mkdir()
                if not memory:
                    (outbox / UNRESPONSIVE_MARKER).symlink_to(workdir / "nowhere" / "marker")
                outboxed, walls = 0, []
                for _ in range(args.waves):
                    n, w = wave(socket_path, outbox, args.senders, timeout)
                    outboxed += n
                    walls += w
                    sent += args.senders
                    with contextlib.suppress(FileNotFoundError):
                        if memory:
                            (outbox / UNRESPONSIVE_MARKER).unlink()  # each wave starts unmarked
                total = args.senders * args.waves
                q = statistics.quantiles(walls, n=20)
                print(
                    f"{timeout:7.2f}  {'on ' if memory else 'off'}     {outboxed:4d}/{total} "
                    f"({100 * outboxed / total:4.1f}%)  {q[9]:.2f}  {q[18]:.2f}  {max(walls):.2f}",
                    flush=True,
                )
        deadline = time.monotonic() + 120
        while (stored := count_rows(dsn)) < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        collector.check_alive()
        print(f"sent {sent}, stored {stored} (outbox copies drained; duplicates stored once)")


if __name__ == "__main__":
    main()
