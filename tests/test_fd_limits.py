"""File descriptors are a budget: the collector raises its limit, keeps its caps below it, survives
running out (EMFILE) and lets no single local user take every connection slot."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_collector import frames_for, send_concurrently
from test_operate import emit_as, system_user

from hookdb.client.wire import BUSY, encode_reply, frame

from conftest import BIN, Collector, kill_all, wait_for, wait_for_rows


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def connect_idle(path: Path, n: int) -> list[socket.socket]:
    idle = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        idle.append(s)
    return idle


@pytest.fixture
def start_limited(tmp_path: Path, dsn: str) -> Iterator[Any]:
    """Start collectors under ``prlimit --nofile=SOFT:HARD``, otherwise as ``start_collector`` does."""
    started: list[Collector] = []

    def start(limits: str) -> Collector:
        args = ["--socket", str(tmp_path / "hookdb.sock"), "--state-dir", str(tmp_path / "state")]
        args += ["--dsn", dsn, "--set", "metrics.listen=127.0.0.1:0"]
        env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_SOCKET")}
        command = ["prlimit", f"--nofile={limits}", str(BIN / "hookdb")]
        collector = Collector(args, env, tmp_path / f"collector-{len(started)}.log", command=command)
        started.append(collector)
        collector.wait_ready()
        return collector

    yield start
    kill_all(started)


def test_the_soft_limit_is_raised_and_max_connections_kept_below_it(start_limited) -> None:
    raised = start_limited("100:4096")
    assert nofile(raised.proc.pid) == (4096, 4096)
    assert not raised.events("listener.max_connections_clamped")
    assert raised.stop() == 0
    low = start_limited("200:200")
    [clamped] = low.events("listener.max_connections_clamped")
    # 200 less a quarter of it for files, less the metrics listener's cap (64)
    assert (clamped["max_connections"], clamped["clamped_to"], clamped["fd_limit"]) == (
        1024,
        86,
        200,
    )  # 200 less a quarter for files, less the metrics cap (64)


def test_running_out_of_descriptors_pauses_accepting_and_serving_resumes(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector()
    pid = collector.proc.pid
    time.sleep(0.5)  # settled: database connections and spool segment open
    limit = open_fds(pid) + 5
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:{limit}"], check=True)
    idle = connect_idle(socket_path, 20)  # 5 are accepted, then accept(2) fails with EMFILE
    wait_for(lambda: collector.events("listener.accept_failing"), 10)
    assert collector.events("listener.accept_failing")[0]["error"] == "EMFILE"
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting.connect(str(socket_path))  # in the backlog meanwhile
    for data in frames_for(1, 10):
        waiting.sendall(data)
    waiting.close()
    time.sleep(1)
    assert collector.proc.poll() is None
    assert len(collector.events("listener.accept_failing")) == 1  # one line, however many retries
    for s in idle:
        s.close()
    assert wait_for_rows(dsn, 10, timeout=30) == 10
    wait_for(lambda: collector.events("listener.accept_resumed"), 10)
    send_concurrently(socket_path, [frames_for(2, 10)])
    assert wait_for_rows(dsn, 20, timeout=30) == 20
    assert collector.proc.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_one_uid_cannot_take_every_connection_slot(start_collector, dsn: str) -> None:
    alice = system_user("hookdb-test-alice")
    shared = Path(tempfile.mkdtemp(prefix="hookdb-uidcap-"))  # reachable by alice, unlike tmp_path
    shared.chmod(0o755)
    (shared / "outbox-hookdb-test-alice").mkdir(mode=0o777)
    (shared / "outbox-hookdb-test-alice").chmod(0o777)
    socket_path = shared / "hookdb.sock"
    collector = start_collector(
        "--set",
        "listener.socket_mode=0o666",
        "--set",
        "listener.max_connections=20",
        "--set",
        "listener.max_connections_per_uid=10",
        socket=socket_path,
    )
    hog = connect_idle(socket_path, 30)  # this test's uid (root): 10 are served, 20 refused at once
    wait_for(lambda: collector.events("connection.uid_cap_reached"), 10)
    time.sleep(0.5)  # every connection accepted
    refused = []
    for s in hog:
        try:
            refused.append(s.recv(64, socket.MSG_DONTWAIT))
        except BlockingIOError:
            continue  # served, idle
    assert refused == [frame(encode_reply(None, BUSY))] * 20
    assert len(collector.events("connection.uid_cap_reached")) == 1

    hook = b'{"hook_event_name": "Stop", "session_id": "other-user"}'
    started = time.monotonic()
    other = emit_as(alice, socket_path, hook)
    assert (other.returncode, other.stderr) == (0, b"")  # served: not pushed to its outbox
    assert time.monotonic() - started < 5
    assert wait_for_rows(dsn, 1) == 1

    env = {**os.environ, "HOOKDB_SOCKET": str(socket_path)}
    own = subprocess.run(
        [str(BIN / "hookdb-emit")], input=hook, capture_output=True, env=env, timeout=10, check=False
    )
    assert b"too many" in own.stderr  # over the cap: to the outbox, not lost
    assert b"event kept in" in own.stderr
    port = collector.metrics_port()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert 'hookdb_client_connections_refused_total{reason="uid_cap"} 21.0' in text
    for s in hog:
        s.close()
    assert wait_for_rows(dsn, 2) == 2  # the outbox copy, drained once the hog let go
