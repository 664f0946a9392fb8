"""Operating the collector: metrics and health over HTTP, systemd notifications and socket activation,
and tenants decided by the kernel's peer credentials."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pg import StoppablePostgres
from prometheus_client.parser import text_string_to_metric_families
from test_collector import frames_for, send_concurrently

from hookdb.client.wire import ProtocolError
from hookdb.collector.intake.tenancy import Grant, TenantPolicy
from hookdb.collector.spool.entry import Peer

from conftest import BIN, Collector, count_rows, run_sql, wait_for, wait_for_rows


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(collector: Collector) -> dict[str, float]:
    """Every sample of ``/metrics``, parsed by Prometheus's own text parser, as ``name{labels}`` → value."""
    status, body = get(collector.metrics_port(), "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_metrics_count_what_was_sent_persisted_and_rejected(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector()
    frames = frames_for(0, 500)
    send_concurrently(socket_path, [frames, frames[:100]])  # 100 duplicates
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
        bad.connect(str(socket_path))
        bad.sendall((2**31).to_bytes(4, "big"))
        bad.recv(100)
    assert wait_for_rows(dsn, 500) == 500

    def settled() -> dict[str, float] | None:
        m = scrape(collector)
        return (
            m if m["hookdb_events_persisted_total{}"] + m["hookdb_events_duplicate_total{}"] == 600 else None
        )

    m = wait_for(settled, 30)
    assert m["hookdb_events_received_total{}"] == 600
    assert m["hookdb_events_persisted_total{}"] == 500
    assert m["hookdb_events_duplicate_total{}"] == 100
    assert m["hookdb_events_rejected_total{reason=oversize}"] == 1
    assert m["hookdb_events_rejected_total{reason=bad_envelope}"] == 0
    assert m["hookdb_batch_size_events_sum{}"] == 600
    assert m["hookdb_event_commit_latency_seconds_count{}"] == 600
    assert m["hookdb_breaker_state{}"] == 0
    assert m["hookdb_spool_pending_records{}"] == 0
    assert m["hookdb_client_connections{}"] == 0

    promtool = shutil.which("promtool")
    if promtool:  # the reference linter for the exposition format (CI installs it)
        _, body = get(collector.metrics_port(), "/metrics")
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_health_endpoints_follow_the_database(start_collector, private_pg: StoppablePostgres) -> None:
    collector = start_collector(
        "--dsn",
        private_pg.dsn,
        "--set",
        "database.health_check_seconds=0.3",
        "--set",
        "breaker.failures=2",
        "--set",
        "breaker.open_seconds=1",
        "--set",
        "breaker.retry_seconds=0.2",
        "--set",
        "database.connect_timeout_seconds=2",
    )
    port = collector.metrics_port()
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz")[0] == 200
    assert get(port, "/health/db")[0] == 200

    private_pg.stop()
    _, body = wait_for(lambda: (r := get(port, "/health/db"))[0] == 503 and r, 30)
    report = json.loads(body)
    assert report["status"] == "unavailable"
    assert report["breaker"] in ("closed", "open", "half_open")
    assert report["last_error"]
    assert "pending_records" in report["spool"]
    assert get(port, "/healthz")[0] == 200  # alive all the same

    private_pg.start()
    wait_for(lambda: get(port, "/health/db")[0] == 200, 30)
    assert json.loads(get(port, "/health/db")[1])["breaker"] == "closed"


def test_unknown_paths_and_methods(start_collector) -> None:
    port = start_collector().metrics_port()
    assert get(port, "/nope")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code in (405, 413)


def notifications(sock: socket.socket, until: str, timeout: float = 30) -> list[str]:
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while until not in received:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            received.extend(sock.recv(4096).decode().splitlines())
        except TimeoutError:
            pytest.fail(f"no {until} from the collector; got {received}")
    return received


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, dsn: str) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
        collector = Collector(
            [
                "--socket",
                str(tmp_path / "h.sock"),
                "--dsn",
                dsn,
                "--state-dir",
                str(tmp_path / "state"),
                "--set",
                "metrics.enabled=false",
            ],
            env,
            tmp_path / "collector.log",
        )
        got = notifications(notify, "READY=1")
        assert any(line.startswith("STATUS=") for line in got)
        assert notifications(notify, "WATCHDOG=1").count("WATCHDOG=1") >= 1
        time.sleep(0.5)  # 0.2 s interval: more keep-alives arrive while it runs
        assert notifications(notify, "WATCHDOG=1").count("WATCHDOG=1") >= 1
        collector.proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in notifications(notify, "STOPPING=1")
        assert collector.proc.wait(30) == 0
        collector.stop()


def test_socket_activation_uses_the_passed_socket(tmp_path: Path, dsn: str) -> None:
    path = tmp_path / "activated.sock"
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("SKIPPED LOUDLY: systemd-socket-activate is not installed here (CI installs systemd)")
    collector = Collector(
        [
            "--socket",
            str(tmp_path / "not-this-one.sock"),
            "--dsn",
            dsn,
            "--state-dir",
            str(tmp_path / "state"),
            "--set",
            "metrics.enabled=false",
        ],
        dict(os.environ),
        tmp_path / "collector.log",
        command=[activate, "-l", str(path), str(BIN / "hookdb")],
    )
    wait_for(path.exists, 30)  # systemd-socket-activate binds it, then starts hookdb on the first connection
    send_concurrently(path, [frames_for(0, 5)])  # systemd-socket-activate starts it on the first connection
    assert wait_for_rows(dsn, 5) == 5
    assert collector.events("socket.inherited")
    assert not (tmp_path / "not-this-one.sock").exists()
    assert collector.stop() == 0


def test_policy_grants() -> None:
    policy = TenantPolicy(default="shared", uids={1000: ["alpha", "beta"]}, gids={50: ["gamma"]})
    assert policy.grant(Peer(1, 1000, 50)) == Grant("alpha", frozenset({"alpha", "beta", "gamma"}))
    assert policy.grant(Peer(1, 2000, 50)) == Grant("gamma", frozenset({"gamma"}))
    assert policy.grant(Peer(1, 2000, 60)) == Grant("shared", frozenset({"shared"}))
    assert TenantPolicy(default="", uids={}, gids={}).grant(Peer(1, 2000, 60)) is None
    grant = policy.grant(Peer(1, 1000, 0))
    assert grant is not None
    assert grant.resolve(None) == "alpha"
    assert grant.resolve("beta") == "beta"
    with pytest.raises(ProtocolError, match="tenant_not_allowed"):
        grant.resolve("delta")
    with pytest.raises(ValueError, match="no user named"):
        TenantPolicy.from_names(default="", uids={"no-such-user-hookdb": ["x"]}, gids={})


def system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def emit_as(
    user: pwd.struct_passwd, socket_path: Path, stdin: bytes, *args: str
) -> subprocess.CompletedProcess[Any]:
    command = [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        str(BIN / "hookdb-emit"),
        "--socket",
        str(socket_path),
        *args,
    ]
    env = {"PATH": os.environ["PATH"], "HOOKDB_OUTBOX": str(socket_path.parent / f"outbox-{user.pw_name}")}
    return subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=30, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients as two other users")
def test_peer_credentials_decide_the_tenant(start_collector, dsn: str) -> None:
    alice, bob = system_user("hookdb-test-alice"), system_user("hookdb-test-bob")
    shared = Path(tempfile.mkdtemp(prefix="hookdb-peers-"))  # reachable by both users, unlike tmp_path
    shared.chmod(0o755)
    for user in (alice, bob):
        (shared / f"outbox-{user.pw_name}").mkdir()
        (shared / f"outbox-{user.pw_name}").chmod(0o777)
    socket_path = shared / "hookdb.sock"
    collector = start_collector(
        "--set",
        "listener.socket_mode=0o666",
        "--set",
        "tenants.default=",
        "--set",
        'tenants.uids={hookdb-test-alice = ["alpha"]}',
        socket=socket_path,
    )
    hook = msgspec.json.encode({"hook_event_name": "Stop", "session_id": "s"})

    assert emit_as(alice, socket_path, hook).stderr == b""
    claimed = emit_as(alice, socket_path, hook, "--tenant", "beta")
    assert b"refused the event: tenant_not_allowed" in claimed.stderr
    unmapped = emit_as(bob, socket_path, hook)
    assert b"refused the event: peer_not_allowed" in unmapped.stderr
    assert (claimed.returncode, unmapped.returncode) == (0, 0)

    assert wait_for_rows(dsn, 1) == 1
    row = run_sql(dsn, "SELECT tenant_id, peer_uid, peer_gid FROM hook_audit_log")[0]
    assert tuple(row) == ("alpha", alice.pw_uid, alice.pw_gid)
    rejected = [e["reason"] for e in collector.events("frame.rejected")]
    assert sorted(rejected) == ["peer_not_allowed", "tenant_not_allowed"]
    letters = (
        (collector.log_path.parent / "state" / "deadletter" / "deadletter.jsonl").read_text().splitlines()
    )
    errors = sorted(json.loads(line)["error"].split(":")[0] for line in letters)
    assert errors == ["peer_not_allowed", "tenant_not_allowed"]  # kept, not lost
    assert count_rows(dsn) == 1
