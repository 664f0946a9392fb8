"""The collector as a real process: concurrent clients, duplicates, bad input, signals, sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import msgspec

from hookdb.client import Emitter
from hookdb.client.protocol import Reply
from hookdb.client.wire import encode_envelope, frame, new_event_id

from conftest import BIN, count_rows, in_threads, run_sql, wait_for_rows


def frames_for(client: int, n: int, *, ack: bool = False) -> list[bytes]:
    return [
        frame(
            encode_envelope(
                event_id=new_event_id(),
                occurred_at_ns=time.time_ns(),
                source="app",
                event_type="PostToolUse",
                session_id=f"session-{client}",
                tenant=None,
                payload=msgspec.json.encode({"tool_name": "Bash", "client": client, "seq": i}),
                ack=ack,
            )
        )
        for i in range(n)
    ]


def send_concurrently(path: Path, per_client: list[list[bytes]]) -> None:
    def send(frames: list[bytes]) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            for data in frames:
                sock.sendall(data)

    in_threads(send, ((frames,) for frames in per_client))


def test_20_clients_x_500_events_are_10000_rows_and_resending_adds_none(
    start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector()
    per_client = [frames_for(c, 500) for c in range(20)]
    send_concurrently(socket_path, per_client)
    assert wait_for_rows(dsn, 10_000) == 10_000
    assert run_sql(dsn, "SELECT count(DISTINCT event_id) FROM hook_audit_log")[0][0] == 10_000
    send_concurrently(socket_path, per_client)
    time.sleep(1.0)  # two linger periods and more: a duplicate would have landed by now
    assert wait_for_rows(dsn, 10_000) == 10_000


def test_emitters_in_20_threads(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    emitted: list[str] = []

    def work(n: int) -> None:
        with Emitter(str(socket_path)) as emitter:
            for i in range(200):
                emitted.append(
                    str(emitter.emit("PreToolUse", {"tool_name": "Read", "i": i}, session_id=f"t{n}"))
                )

    in_threads(work, ((n,) for n in range(20)))
    assert wait_for_rows(dsn, 4000) == 4000
    stored = {str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")}
    assert stored == set(emitted)


def test_a_malformed_client_does_not_disturb_five_good_ones(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector()
    good = [frames_for(c, 400) for c in range(5)]
    bad_streams = {
        "oversize": (2**31).to_bytes(4, "big") + b"junk",
        "not_msgpack": frame(b"\xc1\xc1\xc1"),
        "bad_envelope": frame(msgspec.msgpack.encode({"v": 1, "event_id": "x"})),
        "unsupported_version": frame(msgspec.msgpack.encode({"v": 99})),
        "truncated": frames_for(99, 1)[0][:-3],
    }
    replies: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def misbehave() -> None:
        for reason, data in bad_streams.items():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(str(socket_path))
                    sock.sendall(frames_for(98, 1)[0] + data)  # one good frame first: it must be kept
                    sock.shutdown(socket.SHUT_WR)
                    sock.settimeout(5)
                    stream = b""
                    while chunk := sock.recv(4096):  # the reply, then the collector hangs up
                        stream += chunk
                    replies[reason] = (
                        msgspec.msgpack.decode(stream[4:], type=Reply).status if stream else None
                    )
            except BaseException as exc:
                errors.append(exc)

    bad = threading.Thread(target=misbehave)
    bad.start()
    send_concurrently(socket_path, good)
    bad.join()
    assert errors == []
    assert replies == {reason: reason for reason in bad_streams}  # each told why before the hang-up
    assert wait_for_rows(dsn, 2000 + len(bad_streams)) == 2000 + len(bad_streams)
    log = [json.loads(line) for line in collector.output.splitlines() if line.startswith("{")]
    reasons = sorted(e["reason"] for e in log if e["event"] == "frame.rejected")
    assert reasons == ["bad_envelope", "not_msgpack", "oversize", "truncated", "unsupported_version"]
    assert all("peer" in e for e in log if e["event"] == "frame.rejected")


def test_sigterm_writes_everything_received_and_exits_0(start_collector, socket_path: Path, dsn: str) -> None:
    collector = start_collector("--set", "batch.linger_seconds=30", "--set", "batch.max_events=100000")
    send_concurrently(socket_path, [frames_for(c, 1000) for c in range(3)])
    time.sleep(0.2)
    assert count_rows(dsn) == 0  # still lingering in the batch
    assert collector.stop(signal.SIGTERM) == 0
    assert count_rows(dsn) == 3000
    assert '"collector.stopped"' in collector.output
    assert not socket_path.exists()


def test_sigint_flushes_too(start_collector, socket_path: Path, dsn: str) -> None:
    collector = start_collector("--set", "batch.linger_seconds=30")
    send_concurrently(socket_path, [frames_for(0, 10)])
    time.sleep(0.2)
    assert collector.stop(signal.SIGINT) == 0
    assert count_rows(dsn) == 10


def test_a_stale_socket_is_replaced_and_a_live_one_is_not_stolen(
    start_collector, socket_path: Path, dsn: str
) -> None:
    first = start_collector()
    first.stop(signal.SIGKILL)
    assert socket_path.exists()  # SIGKILL leaves the socket file behind
    second = start_collector()
    assert '"socket.stale_replaced"' in second.output
    third = start_collector(wait=False)
    assert third.proc.wait(30) == 1
    assert "another collector is serving" in third.output
    send_concurrently(socket_path, [frames_for(0, 5)])
    assert wait_for_rows(dsn, 5) == 5


def test_a_regular_file_at_the_socket_path_is_left_alone(start_collector, socket_path: Path) -> None:
    socket_path.write_text("precious")
    collector = start_collector(wait=False)
    assert collector.proc.wait(30) == 1
    assert "is not a socket" in collector.output
    assert socket_path.read_text() == "precious"


def test_socket_mode_is_0660(start_collector, socket_path: Path) -> None:
    start_collector()
    assert os.stat(socket_path).st_mode & 0o777 == 0o660


def test_peer_credentials_are_recorded(start_collector, socket_path: Path, dsn: str) -> None:
    start_collector()
    send_concurrently(socket_path, [frames_for(0, 1)])
    wait_for_rows(dsn, 1)
    row = run_sql(dsn, "SELECT peer_pid, peer_uid, peer_gid FROM hook_audit_log")[0]
    assert (row["peer_pid"], row["peer_uid"], row["peer_gid"]) == (os.getpid(), os.getuid(), os.getgid())


def test_a_bad_setting_is_refused_by_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "hookdb"),
            "collector",
            "run",
            "--socket",
            str(tmp_path / "s"),
            "--set",
            "batch.max_events=lots",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "batch.max_events" in result.stderr
    assert not (tmp_path / "s").exists()


def test_embedded_postgres_is_the_default(tmp_path: Path) -> None:
    """``hookdb collector run`` with no DSN starts its own PostgreSQL and writes there."""
    sock = tmp_path / "hookdb.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_SOCKET")}
    env["HOOKDB_SOCKET"] = str(sock)
    env["HOOKDB_STATE_DIR"] = str(tmp_path / "state")
    log_path = tmp_path / "collector.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "hookdb"), "collector", "run", "--set", "metrics.listen=127.0.0.1:0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while '"collector.ready"' not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        dsn = next(
            json.loads(line)["dsn"]
            for line in log_path.read_text().splitlines()
            if '"embedded_postgres.started"' in line
        )
        send_concurrently(sock, [frames_for(0, 3)])
        assert wait_for_rows(dsn, 3) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_check_config_names_the_key_and_line(tmp_path: Path) -> None:
    def check(text: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "collector.toml"
        path.write_text(text)
        command = [str(BIN / "hookdb"), "check-config", str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    unknown = check('[spool]\nfsync = "always"\ncolour = "blue"\n')
    assert unknown.returncode == 1
    assert "collector.toml:3: spool.colour: unknown setting" in unknown.stderr
    wrong = check('[tenants]\ndefault = "a"\n\n[batch]\nmax_events = "many"\n')
    assert wrong.returncode == 1
    assert "collector.toml:5: batch.max_events: Expected `int`, got `str`" in wrong.stderr
    good = check("[batch]\nmax_events = 10\n[breaker]\nopen_seconds = 60\n")
    assert (good.returncode, good.stderr) == (0, "")


def test_a_bad_config_file_never_touches_the_spool(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[spool]\nmax_bytes = -1\n")
    state = tmp_path / "state"
    result = subprocess.run(
        [
            str(BIN / "hookdb"),
            "collector",
            "run",
            "--config",
            str(tmp_path / "bad.toml"),
            "--state-dir",
            str(state),
            "--socket",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "spool.max_bytes" in result.stderr
    assert not state.exists()
