"""A fleet: many hosts' collectors, one database, directly and through a transaction-mode pooler.

Eight collector processes, each with its own state directory, socket and client, start together on a
fresh database (so their migrations and partition creation race) and write into one server. Every event
is stored once, and the sessions every host has events of merge to what one collector would have made of
all the events, whatever order the hosts' batches commit in: counts add up, the first and last times are
the extremes, the status is the newest status event's, the model the newest SessionStart's, a session
ended on two hosts ends at the later end.
Writers that meet a month without a partition at the same moment create what is missing once.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec
import pytest
import trio
import trio_asyncio
from test_nothing_lost import ack_roundtrip
from test_pooler import POOLED, database_of, pgbouncer  # noqa: F401 - the fixture, used by name

from hookdb.client.wire import encode_envelope, frame, new_event_id
from hookdb.collector import classification as cls
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row
from hookdb.collector.store.sink import PostgresSink

from conftest import Collector, in_threads, migrate, run_sql, wait_for_rows

HOSTS = 8
EVENTS = 500  # per host
SHARED = 4  # sessions every host has events of
BURST = 100  # acknowledged frames a client sends before it waits for their acks
STATUS_EVENTS = ("UserPromptSubmit", "Stop", "StopFailure")


class Sent(NamedTuple):
    """One event a host's client sends, as the session row should see it."""

    session_id: str
    event_type: str
    at: datetime
    model: str | None = None  # a SessionStart's


def plan(host: int, base: datetime, rng: random.Random) -> list[Sent]:
    """``EVENTS`` events of one host: most on the shared sessions, the rest on its own; times interleave
    with the other hosts' (unique to the microsecond, so the newest status event is one event)."""
    events = []
    for n in range(EVENTS):
        session = f"shared-{n % SHARED}" if n % 5 else f"host-{host}"
        kind = rng.choice(("PostToolUse",) * 6 + STATUS_EVENTS + ("SubagentStart",))
        if n in (7, 9) and host < 2:  # two hosts end the same session
            kind = "SessionEnd"
        model = None
        if n % 11 == 3:  # every host (re)starts the shared sessions, each with its own model
            kind, model = "SessionStart", f"model-{host}-{n}"
        at = base + timedelta(microseconds=rng.randrange(3_600_000_000 // HOSTS) * HOSTS + host)
        events.append(Sent(session, kind, at, model))
    return events


def frames_of(events: list[Sent]) -> tuple[list[str], list[bytes]]:
    """The events' ids and acknowledged frames."""
    ids = [new_event_id() for _ in events]
    frames = [
        frame(
            encode_envelope(
                event_id=event_id,
                occurred_at_ns=int(e.at.timestamp()) * 1_000_000_000 + e.at.microsecond * 1000,
                source="fleet",
                event_type=e.event_type,
                session_id=e.session_id,
                tenant=None,
                payload=msgspec.json.encode(
                    {"hook_event_name": e.event_type, **({"model": e.model} if e.model else {})}
                ),
                ack=True,
            )
        )
        for event_id, e in zip(ids, events, strict=True)
    ]
    return ids, frames


def expected_sessions(events: list[Sent]) -> dict[str, dict[str, Any]]:
    """What one collector would make of all the events: each session's row."""
    rows: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e.at):
        first = {"event_count": 0, "started_at": e.at, "subagent_count": 0, "status": "running"}
        row = rows.setdefault(e.session_id, {**first, "ended_at": None, "model": None})
        row["event_count"] += 1
        row["updated_at"] = e.at
        row["subagent_count"] += e.event_type == "SubagentStart"
        if e.event_type in cls.EVENT_STATUS:
            row["status"] = cls.EVENT_STATUS[e.event_type]
        if e.event_type == "SessionEnd":
            row["ended_at"] = e.at
        row["model"] = e.model or row["model"]
    return rows


def stored_sessions(dsn: str) -> dict[str, dict[str, Any]]:
    return {
        r["session_id"]: dict(r)
        for r in run_sql(
            dsn,
            "SELECT session_id, event_count, started_at, updated_at, subagent_count, status, ended_at, "
            "model FROM sessions",
        )
    }


def start_fleet(start_collector: Any, tmp_path: Path, target: str, *extra: str) -> list[Collector]:
    """``HOSTS`` collectors, started at once so their start-up (migrations, partitions) races."""
    fleet = [
        start_collector(
            "--dsn",
            target,
            "--state-dir",
            str(tmp_path / f"host-{host}"),
            "--set",
            "batch.linger_seconds=0.05",
            *extra,
            socket=tmp_path / f"host-{host}.sock",
            wait=False,
            use_dsn=False,
        )
        for host in range(HOSTS)
    ]
    for collector in fleet:
        collector.wait_ready(60)
    return fleet


@pytest.mark.parametrize("route", ["direct", "pooler"])
def test_eight_collectors_into_one_database_store_every_event_once_and_merge_shared_sessions(
    route: str, dsn: str, start_collector: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra: tuple[str, ...] = ()
    target = dsn
    if route == "pooler":  # 8 collectors × 2 writers through 4 server connections
        pooler = request.getfixturevalue("pgbouncer")
        target = pooler.dsn(database_of(dsn), unquote(urlsplit(dsn).username or "postgres"))
        extra = POOLED
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1, minutes=5)
    plans = [plan(host, base, random.Random(host)) for host in range(HOSTS)]
    fleet = start_fleet(start_collector, tmp_path, target, *extra)

    def client(host: int) -> None:
        ids, frames = frames_of(plans[host])
        for start in range(0, len(frames), BURST):
            end = start + BURST
            ack_roundtrip(tmp_path / f"host-{host}.sock", ids[start:end], frames[start:end])

    in_threads(client, ((host,) for host in range(HOSTS)))
    total = HOSTS * EVENTS
    assert wait_for_rows(dsn, total, 90) == total
    for collector in fleet:
        assert collector.stop() == 0, collector.output[-3000:]
    assert run_sql(dsn, "SELECT count(*), count(DISTINCT event_id) FROM hook_audit_log")[0] == (total, total)
    expected = expected_sessions([e for p in plans for e in p])
    stored = stored_sessions(dsn)
    assert sum(s["event_count"] for s in stored.values()) == total  # no event projected twice
    assert stored.keys() == expected.keys()
    for session, row in expected.items():
        assert stored[session] == {"session_id": session, **row}, session
    for collector in fleet:
        assert collector.events("write.failed") == [], collector.output[-3000:]  # no deadlock, no race


def test_writers_meeting_a_month_without_a_partition_together_create_the_default_partition_once(
    dsn: str,
) -> None:
    """The month's name is taken by a detached table and there is no default partition: every writer
    falls back to creating the default one, at the same moment; each creates it or finds it made."""
    migrate(dsn)
    run_sql(dsn, "ALTER TABLE hook_audit_log DETACH PARTITION hook_audit_log_default")
    run_sql(dsn, "DROP TABLE hook_audit_log_default")
    run_sql(dsn, "CREATE TABLE hook_audit_log_y2031m05 (LIKE hook_audit_log)")  # detached: never filled
    at = datetime(2031, 5, 15, 12, tzinfo=UTC)
    writers = 6

    async def race() -> list[int]:
        async with trio_asyncio.open_loop():
            options = ConnectOptions(dsn=dsn, application_name="test-race")
            sinks = [await PostgresSink.connect(options) for _ in range(writers)]
            written: list[int] = []
            try:
                start = trio.Event()

                async def write(sink: PostgresSink) -> None:
                    row = Row("t", uuid.uuid4(), at, at, "s", "Stop", None, "app", None, None, None, b"{}")
                    await start.wait()
                    written.append(await sink.write([row]))

                async with trio.open_nursery() as nursery:
                    for sink in sinks:
                        nursery.start_soon(write, sink)
                    await trio.sleep(0.1)
                    start.set()
            finally:
                for sink in sinks:
                    await sink.aclose()
            return written

    assert trio.run(race) == [1] * writers
    assert run_sql(dsn, "SELECT count(*) FROM hook_audit_log_default")[0][0] == writers
