"""Nothing is lost: through a PostgreSQL outage, collector crashes, no collector, poison, a damaged spool.

Real PostgreSQL, real collector processes, real sockets and signals. Each test checks what a user would:
the rows in ``hook_audit_log``, the collector's JSON log lines, the files under the state directory.
"""

from __future__ import annotations

import base64
import json
import random
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
from pg import StoppablePostgres

from hookdb.client import Emitter
from hookdb.client.protocol import Reply, decode_envelope
from hookdb.client.records import Damage, Record
from hookdb.client.wire import (
    ACCEPTED,
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    encode_envelope,
    frame,
    new_event_id,
)
from hookdb.collector.daemon import SPOOL_RECORD_OVERHEAD
from hookdb.collector.spool.entry import decode_entry
from hookdb.collector.spool.segments import scan_segment

from conftest import BIN, Collector, count_rows, run_sql, wait_for, wait_for_rows

# -- helpers ------------------------------------------------------------------------------------------------


def envelope(event_id: str, payload: bytes, *, ack: bool = False, session: str = "s") -> bytes:
    return encode_envelope(
        event_id=event_id,
        occurred_at_ns=time.time_ns(),
        source="app",
        event_type="PostToolUse",
        session_id=session,
        tenant=None,
        payload=payload,
        ack=ack,
    )


def make_frames(client: int, n: int, *, ack: bool = False) -> tuple[list[str], list[bytes]]:
    """``n`` events of one client: their ids and their frames."""
    ids = [new_event_id() for _ in range(n)]
    frames = [
        frame(envelope(i, msgspec.json.encode({"tool_name": "Bash", "client": client, "seq": s}), ack=ack))
        for s, i in enumerate(ids)
    ]
    return ids, frames


def send(path: Path, frames: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b"".join(frames))


def transitions(collector: Collector) -> list[dict[str, Any]]:
    """The breaker transitions logged so far; fails the test at once if the collector died."""
    if collector.proc.poll() is not None:
        pytest.fail(f"collector exited with {collector.proc.returncode}:\n{collector.output[-5000:]}")
    return [e for e in collector.events() if e["event"] == "breaker.transition"]


def stored_ids(dsn: str) -> list[str]:
    return [str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")]


def with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


def ack_roundtrip(path: Path, ids: list[str], frames: list[bytes]) -> set[str]:
    """Send acknowledged frames in one burst; return the ids the collector acked as accepted."""
    acked: set[str] = set()
    decoder = FrameDecoder()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"".join(frames))
        while len(acked) < len(ids):
            data = sock.recv(65536)
            assert data, "the collector hung up before acking everything"
            decoder.receive_data(data)
            while (body := decoder.next_frame()) is not None:
                reply = msgspec.msgpack.decode(body, type=Reply)
                assert reply.status == ACCEPTED, reply
                acked.add(reply.event_id)  # type: ignore[arg-type]
    assert acked == set(ids)
    return acked


class AckingClient(threading.Thread):
    """A raw protocol client that streams acknowledged events, 50 per burst, through collector crashes.

    It records every id it ever wrote to a socket (``sent``) and every id acked as accepted (``acked``);
    after a broken connection it reconnects and resends the bursts' unacked frames, as a real client would.
    """

    BURST = 50

    def __init__(self, path: Path, number: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.number = number
        self.stop = stop
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.reconnects = 0
        self.error: BaseException | None = None
        self._seq = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _new_burst(self) -> dict[str, bytes]:
        burst = {}
        for _ in range(self.BURST):
            event_id = new_event_id()
            payload = msgspec.json.encode({"client": self.number, "seq": self._seq})
            self._seq += 1
            burst[event_id] = frame(envelope(event_id, payload, ack=True, session=f"c{self.number}"))
        return burst

    def _run(self) -> None:
        pending: dict[str, bytes] = {}  # written (maybe) but not acked: resent after a reconnect
        while not self.stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(10)
                sock.connect(str(self.path))
            except OSError:  # the collector is down: its socket is missing or refuses
                sock.close()
                time.sleep(0.02)
                continue
            try:
                with sock:
                    while not self.stop.is_set():
                        if not pending:
                            pending = self._new_burst()
                        self.sent.update(pending)
                        sock.sendall(b"".join(pending.values()))
                        decoder = FrameDecoder()
                        while pending:
                            data = sock.recv(65536)
                            if not data:
                                raise ConnectionResetError("collector closed the connection")
                            decoder.receive_data(data)
                            while (body := decoder.next_frame()) is not None:
                                reply = msgspec.msgpack.decode(body, type=Reply)
                                if reply.status != ACCEPTED:
                                    raise AssertionError(f"refused: {reply}")
                                self.acked.add(reply.event_id)  # type: ignore[arg-type]
                                pending.pop(reply.event_id, None)  # type: ignore[arg-type]
            except OSError:
                self.reconnects += 1


# -- 1. PostgreSQL outage ---------------------------------------------------------------------------------


def test_postgres_outage_opens_the_breaker_and_loses_nothing(
    start_collector, socket_path: Path, private_pg: StoppablePostgres
) -> None:
    """4 clients stream 20,000 events; PostgreSQL stops in the middle and comes back: all 20,000 land once."""
    run_sql(private_pg.dsn, "CREATE DATABASE hookdb_outage")
    dsn = with_database(private_pg.dsn, "hookdb_outage")
    collector = start_collector(
        "--dsn",
        dsn,
        "--set",
        "breaker.failures=3",
        "--set",
        "breaker.open_seconds=2",
        "--set",
        "breaker.retry_seconds=0.2",
        "--set",
        "breaker.probe_timeout_seconds=5",
        "--set",
        "database.connect_timeout_seconds=2",
        "--set",
        "batch.max_events=100",
        use_dsn=False,
    )
    clients = [make_frames(c, 5000) for c in range(4)]
    pg_down, pg_back = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def stream(frames: list[bytes]) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(socket_path))
                sock.sendall(b"".join(frames[:1500]))  # before the outage
                assert pg_down.wait(60)
                for at in range(1500, 3500, 100):  # during it, at a steady pace
                    sock.sendall(b"".join(frames[at : at + 100]))
                    time.sleep(0.02)
                assert pg_back.wait(60)
                sock.sendall(b"".join(frames[3500:]))  # after it
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(frames,)) for _, frames in clients]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: count_rows(dsn) >= 1000, 30)  # writes are flowing: now pull the plug
        private_pg.stop()
        pg_down.set()
        opened = wait_for(lambda: [t for t in transitions(collector) if t["to_state"] == "open"], 30)
        assert opened[0]["from_state"] == "closed"
        assert opened[0]["reason"] == "failures"
        time.sleep(0.3)
        restarted_at = private_pg.start()
        pg_back.set()
        closed = wait_for(
            lambda: [t for t in transitions(collector) if t["to_state"] == "closed"], 30, interval=0.01
        )
    finally:
        pg_down.set()
        pg_back.set()
        for t in threads:
            t.join()
    assert errors == []
    assert closed[0]["from_state"] == "half_open"
    assert closed[0]["reason"] == "probe_succeeded"
    closed_at = datetime.fromisoformat(closed[0]["timestamp"]).timestamp()
    print(f"\nPostgreSQL back → breaker closed: {closed_at - restarted_at:.3f} s")
    assert closed_at >= restarted_at - 0.05  # the probe that closed it ran against the restarted server
    assert wait_for_rows(dsn, 20_000, timeout=90) == 20_000
    assert run_sql(dsn, "SELECT count(DISTINCT event_id) FROM hook_audit_log")[0][0] == 20_000
    assert set(stored_ids(dsn)) == {i for ids, _ in clients for i in ids}
    assert transitions(collector)[-1]["to_state"] == "closed"


# -- 2. collector crashes -------------------------------------------------------------------------------


def test_sigkilled_collector_keeps_every_acknowledged_event_exactly_once(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    """5 rounds of SIGKILL at a random moment while 3 clients stream acknowledged events."""
    seed = random.randrange(1 << 32)
    print(f"\nrandom seed {seed}")
    rng = random.Random(seed)
    stop = threading.Event()
    clients = [AckingClient(socket_path, n, stop) for n in range(3)]
    for c in clients:
        c.start()
    settings = ("--set", "spool.fsync=always", "--set", "batch.linger_seconds=0.05")

    def stream_a_while(collector: Collector) -> None:
        """Wait until this collector has acked 300 more events (so the clients are mid-stream)."""
        before = sum(len(c.acked) for c in clients)

        def progressed() -> bool:
            if collector.proc.poll() is not None:
                pytest.fail(f"collector exited with {collector.proc.returncode}:\n{collector.output[-5000:]}")
            return sum(len(c.acked) for c in clients) >= before + 300

        wait_for(progressed, 30)

    rounds: list[Collector] = []
    try:
        for _ in range(5):
            collector = start_collector(*settings)
            rounds.append(collector)
            stream_a_while(collector)
            time.sleep(rng.uniform(0.0, 0.5))
            assert collector.stop(signal.SIGKILL) == -signal.SIGKILL
            assert all(c.error is None for c in clients), [c.error for c in clients]
        last = start_collector(*settings)
        rounds.append(last)
        stream_a_while(last)
    finally:
        stop.set()
        for c in clients:
            c.join(30)
    assert all(c.error is None for c in clients), [c.error for c in clients]
    acked = set().union(*(c.acked for c in clients))
    sent = set().union(*(c.sent for c in clients))
    wait_for(lambda: acked <= set(stored_ids(dsn)), 60, interval=0.2)
    assert last.stop(signal.SIGTERM) == 0  # and whatever else was spooled is written before it exits
    counts = {
        str(r[0]): r[1] for r in run_sql(dsn, "SELECT event_id, count(*) FROM hook_audit_log GROUP BY 1")
    }
    replayed = [e["records"] for c in rounds for e in c.events("spool.replaying")]
    print(
        f"sent {len(sent)}, acked {len(acked)}, stored {len(counts)}, "
        f"reconnects {sum(c.reconnects for c in clients)}, replayed at restarts {replayed}"
    )
    assert acked - counts.keys() == set()  # every acknowledged event is stored...
    assert {i: n for i, n in counts.items() if n != 1} == {}  # ...exactly once...
    assert counts.keys() - sent == set()  # ...and nothing is stored that was never sent
    assert len(acked) >= 6 * 300


# -- 3. no collector at all ------------------------------------------------------------------------------


def test_events_emitted_while_no_collector_runs_arrive_from_the_outbox(
    start_collector, socket_path: Path, dsn: str
) -> None:
    outbox = socket_path.parent / "outbox"
    emitted: list[list[str]] = [[] for _ in range(5)]
    emitters = [Emitter(str(socket_path), timeout=0.1) for _ in range(5)]

    def work(n: int) -> None:
        for i in range(1000):
            emitted[n].append(
                str(emitters[n].emit("PreToolUse", {"tool_name": "Read", "i": i}, session_id=f"t{n}"))
            )

    threads = [threading.Thread(target=work, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    cli_runs = [
        subprocess.run(
            [str(BIN / "hookdb-emit"), "--socket", str(socket_path)],
            input=json.dumps({"hook_event_name": "Stop", "session_id": f"cli-{n}"}).encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        for n in range(3)
    ]
    for t in threads:
        t.join()
    for emitter in emitters:
        assert (emitter.sent, emitter.outboxed, emitter.lost) == (0, 1000, 0)
        emitter.close()  # releases its outbox file to the collector
    for run in cli_runs:
        assert (run.returncode, run.stdout) == (0, b"")
        assert b"event kept in" in run.stderr
    assert len(list(outbox.glob("*.out"))) == 5 + 3
    assert run_sql(dsn, "SELECT to_regclass('hook_audit_log')")[0][0] is None  # nothing reached the database

    start_collector()
    assert wait_for_rows(dsn, 5003) == 5003
    stored = stored_ids(dsn)
    assert len(set(stored)) == 5003
    assert {i for ids in emitted for i in ids} <= set(stored)
    cli_sessions = run_sql(dsn, "SELECT session_id FROM hook_audit_log WHERE source = 'claude-code'")
    assert sorted(r[0] for r in cli_sessions) == ["cli-0", "cli-1", "cli-2"]
    wait_for(lambda: not list(outbox.glob("*.out")), 30)


# -- 4. a poison event -----------------------------------------------------------------------------------


def test_a_poison_event_is_dead_lettered_and_its_99_batch_mates_are_stored(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    collector = start_collector("--set", "batch.linger_seconds=1")
    ids = [new_event_id() for _ in range(100)]
    bodies = [envelope(i, msgspec.json.encode({"tool_name": "Bash", "seq": s})) for s, i in enumerate(ids)]
    poison = 37
    bodies[poison] = envelope(ids[poison], b'{"n": 1e1000000}')  # valid JSON; numeric overflow in jsonb
    decode_envelope(bodies[poison])  # the collector's own validation lets it through
    send(socket_path, [frame(b) for b in bodies])  # one burst: one batch

    assert wait_for_rows(dsn, 99) == 99
    stored = set(stored_ids(dsn))
    assert ids[poison] not in stored
    assert stored == set(ids) - {ids[poison]}
    letters_file = tmp_path / "state" / "deadletter" / "deadletter.jsonl"
    wait_for(letters_file.exists, 10)
    letters = [json.loads(line) for line in letters_file.read_text().splitlines()]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["event_id"] == ids[poison]
    assert letter["sqlstate"] == "22003"
    assert "numeric" in letter["error"]
    assert base64.b64decode(letter["envelope"]) == bodies[poison]
    events = collector.events()
    assert [e for e in events if e["event"] == "breaker.transition"] == []
    assert [e["event_id"] for e in events if e["event"] == "event.dead_lettered"] == [ids[poison]]


# -- 5. a damaged spool segment at start-up --------------------------------------------------------------


def test_a_damaged_spool_segment_is_quarantined_and_its_intact_records_delivered(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    # A collector whose database does not exist spools everything and delivers nothing.
    missing = with_database(dsn, "hookdb_no_such_database")
    first = start_collector("--dsn", missing, "--set", "collector.shutdown_seconds=1", use_dsn=False)
    ids, frames = make_frames(0, 300, ack=True)
    ack_roundtrip(socket_path, ids, frames)  # acked: each one is in the spool
    assert first.stop(signal.SIGTERM) == 0
    stopped = first.events("collector.stopped")
    assert stopped[0]["undelivered_records"] == 300

    spool_dir = tmp_path / "state" / "spool"
    segments = [p for p in spool_dir.glob("*.seg") if p.stat().st_size > 8]
    assert len(segments) == 1
    segment = segments[0]
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    for at in range(middle, middle + 16):
        data[at] ^= 0xFF
    segment.write_bytes(data)

    intact: list[str] = []
    damage_at: int | None = None
    after_damage = 0
    for item in scan_segment(segment, DEFAULT_MAX_FRAME_BYTES + SPOOL_RECORD_OVERHEAD):
        if isinstance(item, Damage):
            damage_at = item.start
            continue
        assert isinstance(item, Record)
        envelope_body = decode_entry(item.body).envelope
        intact.append(str(decode_envelope(envelope_body)[0].event_id))
        after_damage += damage_at is not None
    assert damage_at is not None
    assert 0 < after_damage < len(intact)  # intact records on both sides of the damage
    assert 290 <= len(intact) < 300

    second = start_collector()  # a working database now
    quarantined = second.events("spool.quarantined")
    assert quarantined
    assert quarantined[0]["segments"] == [segment.name]
    assert not segment.exists()
    assert (spool_dir / "quarantine" / segment.name).read_bytes() == bytes(data)
    assert wait_for_rows(dsn, len(intact)) == len(intact)
    assert sorted(stored_ids(dsn)) == sorted(intact)

    new_ids, new_frames = make_frames(1, 10)
    send(socket_path, new_frames)
    assert wait_for_rows(dsn, len(intact) + 10) == len(intact) + 10
    assert set(new_ids) <= set(stored_ids(dsn))


def test_dead_letters_are_listed_and_replayed_after_the_cause_is_fixed(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    start_collector("--set", "batch.linger_seconds=0.5")
    run_sql(
        dsn,
        """
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.event_type = 'Poison' THEN
                RAISE EXCEPTION 'no poison here' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$""",
    )
    run_sql(
        dsn,
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON hook_audit_log "
        "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    ids = [new_event_id() for _ in range(10)]
    poisoned = {ids[3], ids[7]}
    frames = [
        frame(
            encode_envelope(
                event_id=i,
                occurred_at_ns=time.time_ns(),
                source="app",
                event_type="Poison" if i in poisoned else "Stop",
                session_id="s",
                tenant=None,
                payload=b"{}",
            )
        )
        for i in ids
    ]
    send(socket_path, frames)
    assert wait_for_rows(dsn, 8) == 8
    state = ["--state-dir", str(tmp_path / "state")]
    listing = subprocess.run(
        [str(BIN / "hookdb"), "deadletter", "list", *state],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {line.split()[2] for line in listing.stdout.splitlines()} == poisoned
    assert "23514" in listing.stdout

    run_sql(dsn, "DROP TRIGGER refuse_poison ON hook_audit_log")  # the operator's fix
    replay = subprocess.run(
        [str(BIN / "hookdb"), "deadletter", "replay", *state, "--socket", str(socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 2 dead letters" in replay.stdout
    assert wait_for_rows(dsn, 10) == 10
    assert set(stored_ids(dsn)) == set(ids)
    again = subprocess.run(
        [str(BIN / "hookdb"), "deadletter", "list", *state],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert again.stdout.startswith("no dead letters")
