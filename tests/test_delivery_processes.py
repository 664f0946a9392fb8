"""Delivery in processes of their own (``database.delivery_processes``): every event stored once, counted
in the collector's /metrics, the checkpoint moved; a delivery process that dies is replaced and its batches
delivered; an outage shows in /health/db and loses nothing; SIGTERM leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from pg import StoppablePostgres
from test_nothing_lost import envelope
from test_operate import get

from hookdb.client.wire import frame, new_event_id
from hookdb.collector.spool import deadletters

from conftest import Collector, count_rows, run_sql, wait_for, wait_for_rows

TWO = ("--set", "database.delivery_processes=2", "--set", "batch.max_events=100")


def frames(n: int, session: str) -> tuple[list[str], list[bytes]]:
    ids = [new_event_id() for _ in range(n)]
    out = []
    for seq, event_id in enumerate(ids):
        payload = msgspec.json.encode({"tool_name": "Bash", "tool_response": {"stdout": f"line {seq}"}})
        out.append(frame(envelope(event_id, payload, session=session)))
    return ids, out


def send(path: Path, data: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b"".join(data))


def health(collector: Collector, path: str) -> tuple[int, bytes]:
    return get(collector.metrics_port(), path)


def metric(collector: Collector, name: str) -> float:
    for line in health(collector, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def delivery_processes(collector: Collector) -> list[int]:
    """The collector's children: its delivery processes."""
    pid = collector.proc.pid
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(FileNotFoundError):  # a worker thread that ended meanwhile
            found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


def spawned(collector: Collector) -> list[int]:
    """Both delivery processes, once the collector has spawned them (it says it is ready first: intake
    does not wait for delivery)."""

    def both() -> list[int] | None:
        found = delivery_processes(collector)
        return found if len(found) == 2 else None

    return wait_for(both, 10)


def test_two_delivery_processes_store_every_event_once_and_the_collector_counts_them(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector(*TWO)
    spawned(collector)
    sent = [frames(1000, f"s{c}") for c in range(3)]
    threads = [threading.Thread(target=send, args=(socket_path, data)) for _, data in sent]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for_rows(dsn, 3000) == 3000
    assert run_sql(dsn, "SELECT count(DISTINCT event_id) FROM hook_audit_log")[0][0] == 3000
    counts = run_sql(dsn, "SELECT session_id, event_count FROM sessions ORDER BY session_id")
    assert [tuple(r) for r in counts] == [("s0", 1000), ("s1", 1000), ("s2", 1000)]  # each projected once
    # What the delivery processes counted shows in the collector's own /metrics, and the spool is delivered.
    wait_for(lambda: metric(collector, "hookdb_events_persisted_total") == 3000, 10)
    assert metric(collector, "hookdb_batches_total") >= 30
    assert metric(collector, "hookdb_event_commit_latency_seconds_count") == 3000
    assert metric(collector, "hookdb_spool_pending_records") == 0
    status, body = health(collector, "/health/db")
    assert status == 200
    assert json.loads(body)["breaker"] == "closed"
    # The fresh database was migrated once, by the collector before it said it was ready.
    assert [e.get("delivery_process") for e in collector.events("schema.migrated")] == [None]
    # database.writers = "auto": one connection each, since the two processes already write at once.
    [ready] = collector.events("collector.ready")
    assert (ready["delivery_processes"], ready["writers"]) == (2, 1)
    connections = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'hookdb-collector' AND datname = current_database()"
    )
    assert run_sql(dsn, connections)[0][0] == 2


def test_a_killed_delivery_process_is_replaced_and_its_batches_delivered_once(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector(*TWO)
    # One killed at once, while it still imports: it dies with the collector's first message unread (the
    # collector's read of its end is then reset, not ended).
    os.kill(spawned(collector)[1], signal.SIGKILL)
    ids, data = frames(6000, "s")
    sender = threading.Thread(
        target=lambda: [send(socket_path, data[i : i + 200]) for i in range(0, 6000, 200)]
    )
    sender.start()
    wait_for(lambda: count_rows(dsn) >= 500, 30)
    victim = delivery_processes(collector)[0]
    os.kill(victim, signal.SIGKILL)
    sender.join()
    assert wait_for_rows(dsn, 6000) == 6000
    assert sorted(str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")) == sorted(ids)
    died = collector.events("delivery.process_died")
    assert [d["exit_code"] for d in died] == [-signal.SIGKILL, -signal.SIGKILL]
    wait_for(
        lambda: len(delivery_processes(collector)) == 2 and victim not in delivery_processes(collector), 10
    )
    assert collector.proc.poll() is None
    wait_for(lambda: metric(collector, "hookdb_spool_pending_records") == 0, 10)
    assert metric(collector, 'hookdb_delivery_process_restarts_total{reason="died"}') == 2
    wait_for(lambda: metric(collector, "hookdb_delivery_processes") == 2, 10)


def test_a_dead_process_s_batches_are_taken_up_at_once_by_the_live_one(
    start_collector, socket_path: Path, dsn: str
) -> None:
    """Not left for its replacement: here every replacement is stopped as soon as it is spawned, so only the
    live process can deliver them. (Should a slow live process leave one to a stopped replacement, the
    watchdog kills that as hung, and the live one takes the batch up then.)"""
    collector = start_collector(*TWO, "--set", "database.delivery_hung_seconds=5")
    wait_for(lambda: len(collector.events("delivery.process_started")) == 2, 30)
    first, live = spawned(collector)
    os.kill(first, signal.SIGSTOP)  # it holds what it is sent, unanswered
    stopped = {first}
    watching = threading.Event()

    def stop_replacements() -> None:
        while not watching.is_set():
            for pid in set(delivery_processes(collector)) - stopped - {live}:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
            time.sleep(0.001)

    stopper = threading.Thread(target=stop_replacements)
    try:
        ids, data = frames(1000, "s")
        for i in range(0, 1000, 100):
            send(socket_path, data[i : i + 100])
        wait_for(lambda: count_rows(dsn) >= 100, 30)
        time.sleep(0.5)  # the live process has written what it was given; the rest waits in the stopped one
        assert count_rows(dsn) < 1000
        stopper.start()
        os.kill(first, signal.SIGKILL)
        assert wait_for_rows(dsn, 1000, timeout=30) == 1000
        wait_for(lambda: len(stopped) >= 2, 10)  # its replacement was spawned, and stopped: no part in it
    finally:
        watching.set()
        if stopper.is_alive():
            stopper.join()
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert sorted(str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")) == sorted(ids)


def test_processes_that_cannot_start_are_restarted_ever_later_and_show_in_health(
    start_collector, socket_path: Path, dsn: str
) -> None:
    """Every delivery process killed as soon as it is spawned, as one that cannot start (a broken install, a
    memory limit below its imports) dies: restarted after 1, 2, 4… seconds rather than every second, and
    /health/db unavailable meanwhile; once they can start again, everything is delivered."""
    collector = start_collector(*TWO)
    wait_for(lambda: len(collector.events("delivery.process_started")) == 2, 30)
    ids, data = frames(300, "s")
    send(socket_path, data)
    assert wait_for_rows(dsn, 300) == 300
    watching = threading.Event()

    def kill_every_process() -> None:
        while not watching.is_set():
            for pid in delivery_processes(collector):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)

    killer = threading.Thread(target=kill_every_process)
    killer.start()
    try:

        def restarts(process: int) -> list[float]:
            died = collector.events("delivery.process_died")
            return [d["restart_seconds"] for d in died if d["process"] == process]

        wait_for(lambda: restarts(0)[:3] == [1, 2, 4] and restarts(1)[:3] == [1, 2, 4], 30)
        status, body = health(collector, "/health/db")
        assert status == 503
        assert "no delivery process is up" in json.loads(body)["last_error"]
        more, data = frames(200, "s")
        send(socket_path, data)  # spooled meanwhile
    finally:
        watching.set()
        killer.join()
    assert wait_for_rows(dsn, 500, timeout=60) == 500
    stored = sorted(str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log"))
    assert stored == sorted(ids + more)
    wait_for(lambda: health(collector, "/health/db")[0] == 200, 30)


def test_a_hung_delivery_process_is_killed_and_its_batches_delivered_by_its_replacement(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector(*TWO, "--set", "database.delivery_hung_seconds=2")
    wait_for(lambda: len(collector.events("delivery.process_started")) == 2, 30)
    hung = delivery_processes(collector)[0]
    os.kill(hung, signal.SIGSTOP)  # alive, holding what it is given, never answering
    try:
        ids, data = frames(2000, "s")
        for i in range(0, 2000, 100):
            send(socket_path, data[i : i + 100])
        assert wait_for_rows(dsn, 2000) == 2000
    finally:
        with suppress(ProcessLookupError):  # killed by the collector, as it should be
            os.kill(hung, signal.SIGCONT)
    assert sorted(str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")) == sorted(ids)
    [event] = collector.events("delivery.process_hung")
    assert event["seconds"] == 2
    assert event["batches_unanswered"] >= 1
    assert hung not in delivery_processes(collector)  # killed, not left stopped
    assert metric(collector, 'hookdb_delivery_process_restarts_total{reason="hung"}') == 1
    wait_for(lambda: metric(collector, "hookdb_spool_pending_records") == 0, 10)
    assert collector.events("delivery.process_died") == []


def test_an_outage_shows_in_health_and_loses_nothing_with_two_delivery_processes(
    start_collector, socket_path: Path, private_pg: StoppablePostgres
) -> None:
    run_sql(private_pg.dsn, "CREATE DATABASE hookdb_processes")
    dsn = urlsplit(private_pg.dsn)._replace(path="/hookdb_processes").geturl()
    collector = start_collector(
        *TWO,
        "--dsn", dsn,
        "--set", "breaker.failures=2",
        "--set", "breaker.open_seconds=1",
        "--set", "breaker.retry_seconds=0.2",
        "--set", "database.connect_timeout_seconds=2",
        "--set", "database.health_check_seconds=0.5",
        use_dsn=False,
    )  # fmt: skip
    _, data = frames(500, "s")
    send(socket_path, data)
    assert wait_for_rows(dsn, 500) == 500
    private_pg.stop()
    try:
        _, data = frames(500, "s")
        send(socket_path, data)

        def unavailable() -> dict[str, Any] | None:
            status, body = health(collector, "/health/db")
            return json.loads(body) if status == 503 and json.loads(body)["breaker"] == "open" else None

        answer = wait_for(unavailable, 30)
        assert answer["last_error"]
        assert answer["spool"]["pending_records"] == 500
    finally:
        private_pg.start()
    assert wait_for_rows(dsn, 1000, timeout=60) == 1000
    assert run_sql(dsn, "SELECT count(DISTINCT event_id) FROM hook_audit_log")[0][0] == 1000
    wait_for(lambda: health(collector, "/health/db")[0] == 200, 30)
    assert metric(collector, "hookdb_events_persisted_total") == 1000


def test_sigterm_delivers_what_is_spooled_and_leaves_no_delivery_process(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector(*TWO, "--set", "batch.linger_seconds=5")  # batches wait: shutdown flushes
    children = spawned(collector)
    _, data = frames(150, "s")
    send(socket_path, data)
    wait_for(lambda: count_rows(dsn) >= 100, 30)  # the first full batch; the other 50 linger
    assert collector.stop() == 0
    assert count_rows(dsn) == 150
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert collector.events("collector.stopped")[0]["undelivered_records"] == 0


def test_delivery_processes_exit_when_the_collector_is_killed(
    start_collector, socket_path: Path, dsn: str
) -> None:
    collector = start_collector(*TWO)
    children = spawned(collector)
    _, data = frames(3000, "s")
    send(socket_path, data)
    wait_for(lambda: count_rows(dsn) >= 100, 30)
    collector.stop(signal.SIGKILL)

    def gone(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"

    wait_for(lambda: all(gone(pid) for pid in children), 15)
    restarted = start_collector(*TWO)  # what they had not answered is in the spool: delivered once
    assert wait_for_rows(dsn, 3000) == 3000
    assert run_sql(dsn, "SELECT count(DISTINCT event_id) FROM hook_audit_log")[0][0] == 3000
    assert restarted.proc.poll() is None


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next(
        (int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS")), 0.0
    )


def test_an_event_that_kills_its_delivery_process_is_dead_lettered_alone_and_the_rest_delivered(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    """A memory limit's kill, as a cgroup's MemoryMax would (a thread here kills a delivery process past
    300 MB): the event whose decoding needs more is isolated from its batch and given up; the others are
    stored, the checkpoint moves on, and no process is left crash-looping."""
    collector = start_collector(*TWO)
    wait_for(lambda: len(collector.events("delivery.process_started")) == 2, 30)
    watching = threading.Event()
    kills: list[int] = []

    def memory_limit() -> None:
        while not watching.is_set():
            for pid in delivery_processes(collector):
                if rss_mb(pid) > 300:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
            time.sleep(0.002)

    killer = threading.Thread(target=memory_limit)
    killer.start()
    try:
        before, first = frames(150, "s")
        after, last = frames(150, "s")
        # Twenty million empty arrays: 60 MB of JSON, over a gigabyte once decoded.
        payload = b'{"tool_name": "Bash", "tool_response": [' + b",".join([b"[]"] * 20_000_000) + b"]}"
        poison_id = new_event_id()
        send(socket_path, [*first, frame(envelope(poison_id, payload)), *last])
        assert wait_for_rows(dsn, 300, timeout=120) == 300
        wait_for(lambda: metric(collector, "hookdb_spool_pending_records") == 0, 60)
    finally:
        watching.set()
        killer.join()
    stored = {str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")}
    assert stored == set(before + after)
    [given_up] = collector.events("delivery.record_given_up")
    assert given_up["events"] == 1
    letters = [x for path in deadletters.pending_files(tmp_path / "state") for x in deadletters.read(path)]
    assert [letter.event_id for letter in letters if not isinstance(letter, str)] == [poison_id]
    assert len(kills) >= 2
    assert metric(collector, "hookdb_dead_letters_total") == 1
    assert collector.proc.poll() is None
