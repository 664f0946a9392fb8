"""Projections without a database: in-flight de-duplication, batch aggregation, report patterns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import trio

from hookdb.collector.store.projections import SingleFlight, glob_regex, project
from hookdb.collector.store.rows import COLUMNS


async def test_fifty_concurrent_requests_share_one_computation() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0
    results: list[int] = []

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await trio.sleep(0.05)
        return 42

    async def ask() -> None:
        results.append(await flight.get("session-1", compute))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(ask)
    assert calls == 1
    assert results == [42] * 50


async def test_a_failure_reaches_every_waiter_and_is_not_left_pending() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    failures: list[BaseException] = []

    async def broken() -> int:
        await trio.sleep(0.01)
        raise OSError("disk gone")

    async def ask() -> None:
        try:
            await flight.get("k", broken)
        except OSError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert len(failures) == 5
    assert flight._pending == {}  # cleaned up in finally


def row(
    event_type: str, payload: dict, at: datetime, *, session: str = "s", tool: str | None = None
) -> tuple:
    values = {
        "tenant_id": "t",
        "event_id": uuid.uuid4(),
        "occurred_at": at,
        "received_at": at,
        "session_id": session,
        "event_type": event_type,
        "tool_name": tool,
        "source": "app",
        "peer_pid": 1,
        "peer_uid": 1000,
        "peer_gid": 1000,
        "payload": msgspec.json.encode(payload),
    }
    return tuple(values[c] for c in COLUMNS)


def test_status_follows_the_latest_event_whatever_the_order_in_the_batch() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        row("SessionEnd", {"reason": "logout"}, t0 + timedelta(seconds=3)),
        row("SessionStart", {"model": "m1", "source": "startup", "cwd": "/w"}, t0),
        row("Stop", {}, t0 + timedelta(seconds=2)),
        row("SubagentStart", {"agent_id": "a"}, t0 + timedelta(seconds=1)),
        row(
            "PostToolUse",
            {"tool_input": {"file_path": "/w/reports/x.md", "content": "hi"}},
            t0 + timedelta(seconds=1),
            tool="Write",
        ),
        row("PostToolUse", {"tool_input": {"file_path": "/w/src/x.md"}}, t0, tool="Write"),
    ]
    out = project(rows)
    change = out.sessions[("t", "s")]
    assert (change.status, change.model, change.cwd, change.event_count) == ("ended", "m1", "/w", 6)
    assert (change.started_at, change.updated_at, change.subagent_count) == (t0, t0 + timedelta(seconds=3), 1)
    assert change.meta == {"end_reason": "logout"}
    assert list(out.reports) == [("t", "s", "/w/reports/x.md")]
    assert out.reports[("t", "s", "/w/reports/x.md")].inline == "hi"
    assert out.ended == {("t", "s")}


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/reports/**/*.md", "/a/reports/x.md", True),
        ("**/reports/**/*.md", "/a/reports/b/c/x.md", True),
        ("**/reports/**/*.md", "/a/reports.md", False),
        ("**/reports/**/*.md", "/a/reports/x.txt", False),
        ("state/*.json", "state/a.json", True),
        ("state/*.json", "state/sub/a.json", False),
    ],
)
def test_glob_patterns(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).match(path)) is matches
