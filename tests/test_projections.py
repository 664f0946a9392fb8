"""Projections without a database: in-flight de-duplication, batch aggregation, report patterns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hookdb.collector.store import blobs
from hookdb.collector.store.projections import CallFields, SingleFlight, glob_regex, project
from hookdb.collector.store.rows import Row
from hookdb.collector.store.sink import TenantRows, prepare


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


def row(event_type: str, payload: dict, at: datetime, *, session: str = "s", tool: str | None = None) -> Row:
    return Row(
        tenant_id="t",
        event_id=uuid.uuid4(),
        occurred_at=at,
        received_at=at,
        session_id=session,
        event_type=event_type,
        tool_name=tool,
        source="app",
        peer_pid=1,
        peer_uid=1000,
        peer_gid=1000,
        payload=msgspec.json.encode(payload),
    )


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


def test_values_an_event_may_replace_are_the_latest_events_whatever_the_order_in_the_batch() -> None:
    """A resumed session (two SessionStarts), two ends, two SDK Results, listed newest first: the batch
    says what the newest of each says, with its time, as the session row's merge across batches does."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    later = t0 + timedelta(seconds=5)
    rows = [
        row("SessionEnd", {"reason": "logout"}, later),
        row("SessionStart", {"model": "m2", "source": "resume", "agent_type": "b"}, later),
        row("Result", {"total_cost_usd": 0.5}, later),
        row("SessionEnd", {"reason": "clear"}, t0),
        row("SessionStart", {"model": "m1", "source": "startup", "agent_type": "a"}, t0),
        row("Result", {"total_cost_usd": 0.25}, t0),
    ]
    change = project(rows).sessions[("t", "s")]
    assert (change.model, change.source, change.agent_type) == ("m2", "resume", "b")
    assert (change.model_at, change.source_at, change.agent_type_at) == (later, later, later)
    assert (change.cost_usd, change.cost_usd_at) == (Decimal("0.5"), later)
    assert (change.ended_at, change.meta["end_reason"]) == (later, "logout")


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


async def test_prepare_decodes_each_payload_once_for_blobs_and_projections(monkeypatch) -> None:
    decoded: list[bytes] = []
    decode = blobs.decode

    def counting(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(bytes(data))
        return decode(data, *args, **kwargs)

    monkeypatch.setattr(blobs, "decode", counting)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    big = "x" * 10_000
    report = "/no/reports/r.md"
    rows = [
        row("PostToolUse", {"tool_input": {"file_path": report, "content": big}}, t0, tool="Write"),
        row("PostToolUse", {"tool_input": {"file_path": "/nope/a.txt"}, "out": big}, t0, tool="Read"),
        row("Stop", {}, t0),
        row("Notification", {"message": "hi"}, t0),  # neither projected nor large: never decoded
    ]
    prepared = await prepare(rows, blob_min_bytes=8192)
    assert sorted(decoded) == sorted(r.payload for r in rows[:3])
    assert len(prepared.blobs) == 1  # one text, stored once
    assert prepared.rows[0].payload != rows[0].payload
    assert prepared.rows[3] == rows[3]
    part = prepared.tenants["t"]
    assert part.projection.reports[("t", "s", report)].content == big  # the inline content
    assert part.projection.sessions[("t", "s")].event_count == 4


def test_only_new_rows_are_projected_and_each_event_once() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first, second = row("SubagentStart", {}, t0), row("Stop", {}, t0 + timedelta(seconds=1))
    again = first._replace(received_at=t0 + timedelta(seconds=5))  # the same event, spooled twice
    part = TenantRows([first, second, again], [{}, {}, {}])
    part.projection = project(part.rows, part.payloads)
    assert part.projection_of({first.event_id, second.event_id}).sessions[("t", "s")].event_count == 2
    only = part.projection_of({second.event_id}).sessions[("t", "s")]
    assert (only.event_count, only.subagent_count, only.status) == (1, 0, "completed")
    whole = TenantRows([first, second], [{}, {}], project([first, second]))
    assert whole.projection_of({first.event_id, second.event_id}) is whole.projection  # all new: as prepared


# What a tool call's payload may say of the fields the projections read: texts (with U+0000, empty), other
# JSON values, or nothing; and keys they do not read.
_FIELD = st.one_of(
    st.text(alphabet="ab/\x00", max_size=4), st.integers(), st.none(), st.lists(st.integers(), max_size=2)
)
_PAYLOAD = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "cwd": _FIELD,
            "transcript_path": _FIELD,
            "tool_use_id": st.sampled_from(["toolu-1", "toolu-2", "", "to\x00lu"]) | _FIELD,
            "tool_input": st.fixed_dictionaries(
                {"file_path": st.just("/r/reports/a.md"), "content": st.text()}
            ),
            "other": st.dictionaries(st.text(max_size=3), _FIELD, max_size=3),
        },
    ),
    st.lists(st.integers(), max_size=2),  # not an object: says nothing
)
_CALL = st.tuples(
    st.sampled_from(["PreToolUse", "PostToolUse", "PostToolUseFailure"]),
    st.sampled_from(["Bash", "Read", "Write", "Edit"]),
    st.sampled_from(["s", "u"]),
    st.integers(0, 5),
    _PAYLOAD,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_CALL, min_size=1, max_size=12))
def test_a_deferred_batch_reads_only_the_call_fields_and_projects_as_from_whole_payloads(calls) -> None:
    """While search is deferred a tool call's payload is decoded for its CallFields alone (a write's
    PostToolUse, or a payload to rewrite, whole), and the batch's sessions, calls and reports are those its
    whole payloads give."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        row(event, payload, t0 + timedelta(seconds=second), session=session, tool=tool)  # type: ignore[arg-type]
        for event, tool, session, second, payload in calls
    ]
    prepared = trio.run(prepare, rows, 1 << 20, True)
    part = prepared.tenants["t"]
    for r, read in zip(rows, part.payloads, strict=True):
        # A write's PostToolUse is read whole for its report, a payload to rewrite (its U+0000) for that.
        whole = r.event_type == "PostToolUse" and r.tool_name in ("Write", "Edit")
        whole = whole or blobs.needs_rewrite(r.payload, 1 << 20)
        assert isinstance(read, CallFields) is (not whole and isinstance(blobs.decode(r.payload), dict))
    expected = project(rows, [blobs.decode(r.payload) for r in rows], defer_search=True)
    got = part.projection
    assert got.sessions == expected.sessions
    assert (got.calls.starts, got.calls.ends) == (expected.calls.starts, expected.calls.ends)
    assert {k: (w.inline, w.event_id) for k, w in got.reports.items()} == {
        k: (w.inline, w.event_id) for k, w in expected.reports.items()
    }  # as projected (prepare then reads the files)
    assert got.deferred == expected.deferred == rows
