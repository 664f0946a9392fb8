"""The dashboard's summary (collector/store/summary.py) as real sinks write it: a call's end in a later
batch than its start, or before it, a batch written twice, and two collectors writing one session's calls
at once all give the counts and buckets that rebuilding the summary from the stored events gives."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import trio
import trio_asyncio

from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row
from hookdb.collector.store.sink import PostgresSink

from conftest import migrate, run_sql

T0 = datetime(2026, 11, 3, 23, 58, tzinfo=UTC)  # calls run past midnight: their day is the session's


def event(kind: str, at: datetime, session: str = "s", tool: str | None = None, call: str | None = None
          ) -> Row:  # fmt: skip
    payload: dict[str, Any] = {"hook_event_name": kind, "session_id": session}
    if call is not None:
        payload |= {"tool_name": tool, "tool_use_id": call, "tool_input": {"command": "x" * 50}}
    return Row("acme", uuid.uuid4(), at, at, session, kind, tool, "hook", None, None, None,
               msgspec.json.encode(payload))  # fmt: skip


def start(session: str = "s") -> Row:
    return event("SessionStart", T0, session)


def pre(call: str, at: datetime, tool: str = "Bash", session: str = "s") -> Row:
    return event("PreToolUse", at, session, tool, call)


def post(call: str, at: datetime, tool: str = "Bash", session: str = "s", failed: bool = False) -> Row:
    return event("PostToolUseFailure" if failed else "PostToolUse", at, session, tool, call)


def write(dsn: str, *batches: Sequence[Row], sinks: int = 1) -> list[int]:
    """Write the batches through ``sinks`` sinks at once (batch i through sink i mod sinks, each sink's in
    order); answers how many events each batch inserted."""

    async def go() -> list[int]:
        written = [0] * len(batches)
        async with trio_asyncio.open_loop():
            options = ConnectOptions(dsn=dsn, application_name="test-summary")
            opened = [await PostgresSink.connect(options) for _ in range(sinks)]
            try:

                async def run(k: int) -> None:
                    for i in range(k, len(batches), sinks):
                        written[i] = await opened[k].write(batches[i])

                async with trio.open_nursery() as nursery:
                    for k in range(sinks):
                        nursery.start_soon(run, k)
            finally:
                for sink in opened:
                    await sink.aclose()
        return written

    return trio.run(go)


SUMMARY = {
    "tool_call_days": "SELECT day, tool_name, bucket, calls, failures, min_ms, max_ms FROM tool_call_days "
    "WHERE tenant_id = 'acme' AND calls <> 0 ORDER BY 1, 2, 3",
    "event_hours": "SELECT hour, events FROM event_hours WHERE tenant_id = 'acme' ORDER BY 1",
}


def summary(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r) for r in run_sql(dsn, sql)] for name, sql in SUMMARY.items()}


def rebuilt(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """The summary as hookdb_fill_summary computes it from the stored events (then put back as it was)."""
    run_sql(dsn, "SELECT hookdb_fill_summary('acme')")
    return summary(dsn)


def bucket(ms: float) -> int:
    return -1 if ms < 1 else math.floor(math.log2(ms) * 8)


def test_an_end_in_a_later_batch_or_before_its_start_moves_the_call_once(dsn: str) -> None:
    migrate(dsn)
    day = T0.date()
    write(
        dsn,
        [start(), pre("a", T0 + timedelta(seconds=1)), pre("b", T0 + timedelta(seconds=2)),
         post("b", T0 + timedelta(seconds=2.5))],
        [post("c", T0 + timedelta(minutes=3), tool="Read")],  # its start comes in the next batch
        [post("a", T0 + timedelta(minutes=5, seconds=1), failed=True),
         pre("c", T0 + timedelta(minutes=2, seconds=59), tool="Read"), pre("d", T0 + timedelta(minutes=4))],
    )  # fmt: skip
    got = summary(dsn)
    assert got["tool_call_days"] == [
        (day, "Bash", -2, 1, 0, None, None),  # d: started, not ended
        (day, "Bash", bucket(500), 1, 0, 500.0, 500.0),
        (day, "Bash", bucket(300_000), 1, 1, 300_000.0, 300_000.0),
        (day, "Read", bucket(1000), 1, 0, 1000.0, 1000.0),
    ]
    # a's start was counted open (-2) when it came and moved out when its end did: nothing left behind
    assert run_sql(dsn, "SELECT calls FROM tool_call_days WHERE bucket = -2") == [(1,)]
    assert sum(n for _, n in got["event_hours"]) == 8
    assert got == rebuilt(dsn)


def test_a_batch_written_again_or_holding_an_event_twice_counts_once(dsn: str) -> None:
    migrate(dsn)
    first = [start(), pre("a", T0 + timedelta(seconds=1))]
    end = post("a", T0 + timedelta(seconds=3))
    second = [end, pre("b", T0 + timedelta(seconds=4)), end]
    assert write(dsn, first, second, first, second) == [2, 2, 0, 0]
    got = summary(dsn)
    assert [r[2:4] for r in got["tool_call_days"]] == [(-2, 1), (bucket(2000), 1)]
    assert got["event_hours"] == [(T0.replace(minute=0), 4)]
    assert got == rebuilt(dsn)


def test_two_collectors_writing_one_sessions_calls_at_once_give_exact_counts(dsn: str) -> None:
    """Starts through one sink, ends through the other, in batches that overlap in time, so a call's end
    is often stored before its start, and both sinks upsert the same calls and summary rows together."""
    migrate(dsn)
    write(dsn, [start()])
    rng = random.Random(7)
    calls = 300
    durations = [rng.choice([5, 40, 41, 900, 1500, 20_000]) for _ in range(calls)]
    starts = [pre(f"t{i}", T0 + timedelta(seconds=i), tool=("Bash", "Read")[i % 2]) for i in range(calls)]
    ends = [
        post(f"t{i}", T0 + timedelta(seconds=i, milliseconds=ms), tool=("Bash", "Read")[i % 2],
             failed=i % 7 == 0)
        for i, ms in enumerate(durations)
    ]  # fmt: skip
    size = 20
    batches = []
    for k in range(0, calls, size):  # ends first in each pair of batches: the other sink's starts race them
        batches += [ends[k : k + size], starts[k : k + size]]
    assert sum(write(dsn, *batches, sinks=2)) == 2 * calls
    got = summary(dsn)
    expected: dict[tuple[str, int], list[float]] = {}
    failures: dict[tuple[str, int], int] = {}
    for i, ms in enumerate(durations):
        key = (("Bash", "Read")[i % 2], bucket(ms))
        expected.setdefault(key, []).append(float(ms))
        failures[key] = failures.get(key, 0) + (i % 7 == 0)
    assert [r[1:] for r in got["tool_call_days"]] == [
        (tool, b, len(ms), failures[(tool, b)], min(ms), max(ms))
        for (tool, b), ms in sorted(expected.items())
    ]
    assert got == rebuilt(dsn)
