"""The sans-io transcript tail: the requests new since the last read, each once (store/transcripts.py)."""

from __future__ import annotations

import itertools
import json
import os
import tracemalloc
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookdb.collector.store import usage
from hookdb.collector.store.transcripts import FileIdentity, TailError, TailState, TranscriptTail, subagent_of

FIXTURE = Path(__file__).parent / "fixtures" / "claude-code-2.1.332" / "session-bash-write.jsonl"
DATA = FIXTURE.read_bytes()
FILE = FileIdentity(1, 100)
REQUESTS = ["req_1c1b81cd74c74190a3d7", "req_4c26c1ad940f4268993a", "req_b922416d167e48c9bf1c"]


def _tail(**kw) -> TranscriptTail:
    return TranscriptTail(tenant="acme", session="eecfd417-cf44-4be8-9a5e-001868de6639", **kw)


def _read(tail: TranscriptTail, data: bytes, identity: FileIdentity = FILE, chunk: int = 65536):
    """What the I/O layer does: resume, then feed what is new in chunks."""
    offset = tail.resume(identity, len(data))
    records, states, skipped = [], [], 0
    while offset < len(data):
        piece = data[offset : offset + chunk]
        batch = tail.feed(piece, offset)
        offset += len(piece)
        records += batch.records
        skipped += batch.skipped
        if batch.cost_state is not None:
            states.append(batch.cost_state)
    return records, states, skipped


def _assistant(message_id: str, request_id: str, *, model="claude-sonnet-4-5", **extra) -> bytes:
    line = {
        "type": "assistant",
        "requestId": request_id,
        "timestamp": "2026-12-01T07:54:43.146Z",
        "message": {
            "id": message_id,
            "model": model,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0},
        },
    } | extra
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def test_the_fixture_transcript_gives_exactly_its_three_requests_and_claude_codes_cost():
    records, states, skipped = _read(_tail(), DATA)
    assert [r.request_id for r in records] == REQUESTS
    assert skipped == 0
    assert {r.agent for r in records} == {usage.MAIN}
    assert {r.cost_source for r in records} == {"computed"}
    got = usage.totals(records)
    (state,) = states
    assert state.total_cost_usd == Decimal("0.0643872")
    assert got.cost_usd == state.total_cost_usd
    # Claude Code's JSON output: 2450 input / 251 output / 23924 cache-read / 12292 cache-creation tokens.
    model = state.model_usage["claude-sonnet-4-5"]
    assert (got.input_tokens, got.output_tokens, got.cache_read_tokens) == (2450, 251, 23924)
    assert got.cache_creation_5m_tokens + got.cache_creation_1h_tokens == 12292
    assert (model.input_tokens, model.output_tokens, model.cache_read_input_tokens) == (2450, 251, 23924)
    assert model.cache_creation_input_tokens == 12292
    assert model.cost_usd == Decimal("0.0643872")
    assert got.main_model == "claude-sonnet-4-5"
    assert (got.cost_source, got.unpriced_requests) == ("computed", 0)


def test_a_message_split_in_content_blocks_counts_once():
    lines = DATA.splitlines(keepends=True)
    split = [line for line in lines if b'"req_1c1b81cd74c74190a3d7"' in line and b'"assistant"' in line]
    assert len(split) == 2  # the fixture's first message: a text block and a tool_use block
    records, _, _ = _read(_tail(), b"".join(split))
    assert len(records) == 1
    assert records[0].input_tokens == 2140


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, len(DATA) - 1), max_size=40))
def test_any_chunking_gives_the_same_records(cuts):
    tail = _tail()
    tail.resume(FILE, len(DATA))
    bounds = [0, *sorted(set(cuts)), len(DATA)]
    records = []
    for start, end in itertools.pairwise(bounds):
        batch = tail.feed(DATA[start:end], start)
        records += batch.records
        assert batch.skipped == 0
    assert [r.request_id for r in records] == REQUESTS
    assert tail.state.cost_state is not None
    assert tail.state.cost_state.total_cost_usd == Decimal("0.0643872")
    assert tail.state.offset == len(DATA)
    assert not tail.state.partial


def test_fed_one_byte_at_a_time():
    records, states, _ = _read(_tail(), DATA, chunk=1)
    assert [r.request_id for r in records] == REQUESTS
    assert len(states) == 1


def test_a_line_torn_mid_write_waits_for_its_end():
    line = _assistant("msg_1", "req_1")
    tail = _tail()
    tail.resume(FILE, 20)
    assert tail.feed(line[:20], 0).records == []
    assert bytes(tail.state.partial) == line[:20]
    # The writer finishes the line: the next read starts where the last one stopped.
    assert tail.resume(FILE, len(line)) == 20
    (record,) = tail.feed(line[20:], 20).records
    assert record.request_id == "req_1"
    # A last line without its newline yet is not read either.
    assert tail.feed(_assistant("msg_2", "req_2").rstrip(b"\n"), len(line)).records == []


def test_the_reading_state_survives_a_restart_of_the_collector():
    """The state is a value: kept (encoded) after a read, the next read goes on where this one stopped."""
    half = DATA.index(b'"req_4c26c1ad940f4268993a"') + 100  # mid-line: a torn line is part of the state
    tail = _tail()
    first, _, _ = _read(tail, DATA[:half])
    kept = msgspec.msgpack.encode(tail.state)
    restored = _tail(state=msgspec.msgpack.decode(kept, type=TailState))
    assert restored.state == tail.state
    rest, states, _ = _read(restored, DATA)
    assert [r.request_id for r in first + rest] == REQUESTS
    assert len(states) == 1


def test_usage_that_grew_for_a_message_already_read_is_returned_again_and_merged():
    early = _assistant("msg_1", "req_1")
    late = early.replace(b'"output_tokens":5', b'"output_tokens":50')
    records, _, _ = _read(_tail(), early + early + late + late)
    assert [r.output_tokens for r in records] == [5, 50]
    (merged,) = usage.ledger(records).values()
    assert merged.output_tokens == 50


def test_a_transcript_growing_between_reads_gives_only_what_is_new():
    tail = _tail()
    half = DATA.index(b'"req_4c26c1ad940f4268993a"')
    first, _, _ = _read(tail, DATA[:half])
    assert [r.request_id for r in first] == REQUESTS[:1]
    assert tail.resume(FILE, len(DATA)) == half
    rest, states, _ = _read(tail, DATA)
    assert [r.request_id for r in rest] == REQUESTS[1:]
    assert len(states) == 1
    assert tail.state.restarts == 0


def test_a_truncated_and_rewritten_transcript_is_read_again_without_double_counting():
    tail = _tail()
    _read(tail, DATA)
    rewritten = DATA[: DATA.index(b'"req_b922416d167e48c9bf1c"')].rsplit(b"\n", 1)[0] + b"\n"
    assert tail.resume(FILE, len(rewritten)) == 0  # shorter than what was read: truncated
    assert tail.state.restarts == 1
    records, _, _ = _read(tail, rewritten)
    assert records == []
    grown = rewritten + _assistant("msg_new", "req_new")
    records, _, _ = _read(tail, grown)
    assert [r.request_id for r in records] == ["req_new"]


def test_a_replaced_transcript_is_read_from_the_start():
    tail = _tail()
    _read(tail, DATA)
    replaced = DATA + _assistant("msg_new", "req_new")
    records, states, _ = _read(tail, replaced, identity=FileIdentity(1, 101))
    assert tail.state.restarts == 1
    assert [r.request_id for r in records] == ["req_new"]
    assert len(states) == 1  # the new file's own cost-state


def test_bytes_that_do_not_continue_the_read_are_refused():
    tail = _tail()
    tail.feed(b"{}\n", 0)
    with pytest.raises(TailError, match="offset 10, expected 3"):
        tail.feed(b"{}\n", 10)


def test_lines_without_usage_are_passed_over_and_unreadable_ones_counted():
    lines = [
        _assistant("msg_1", "req_1"),
        _assistant("msg_s", "req_s", model="<synthetic>"),  # Claude Code's own stand-in for an API error
        _assistant("msg_n", None),  # no request id: cannot be joined, not a billed request
        b'{"type":"user","message":{"role":"user","content":"say \\"assistant\\""}}\n',
        b"not json at all\n",
        b'{"type":"assistant","message":{"id":"m","usage":"lots"},"requestId":"r"}\n',
        b'{"type":"assistant", broken\n',
        _assistant("msg_neg", "req_neg").replace(b'"output_tokens":5', b'"output_tokens":-5'),
        b'{"type":"cost-state","totalCostUSD":"a lot"}\n',
        b"\n",
        _assistant("msg_2", "req_2"),
    ]
    records, states, skipped = _read(_tail(), b"".join(lines))
    assert [r.request_id for r in records] == ["req_1", "req_2"]
    assert states == []
    assert skipped == 4


def test_a_line_longer_than_the_limit_is_skipped_in_bounded_memory():
    big = b'{"type":"user","toolUseResult":"' + b"x" * 5000 + b'","assistant":1}\n'
    data = _assistant("msg_1", "req_1") + big + _assistant("msg_2", "req_2")
    tail = _tail(max_line=1000)
    tail.resume(FILE, len(data))
    records, skipped = [], 0
    for offset in range(0, len(data), 300):
        batch = tail.feed(data[offset : offset + 300], offset)
        records += batch.records
        skipped += batch.skipped
        assert len(tail.state.partial) <= 1000
    assert [r.request_id for r in records] == ["req_1", "req_2"]
    assert skipped == 1


def test_subagent_transcripts_give_the_subagents_requests():
    assert subagent_of("/home/dev/.claude/projects/p/s1/subagents/agent-a1b2c3.jsonl") == "a1b2c3"
    assert subagent_of("/home/dev/.claude/projects/p/s1.jsonl") is None
    assert subagent_of("/home/dev/.claude/projects/p/agent-a1b2c3.jsonl") is None
    tail = _tail(agent="a1b2c3", agent_type="Explore")
    lines = _assistant("msg_1", "req_1", isSidechain=True) + _assistant("msg_2", "req_2", agentId="a1b2c3")
    records, _, _ = _read(tail, lines)
    assert [(r.agent, r.agent_type) for r in records] == [("a1b2c3", "Explore")] * 2
    # A main transcript's sidechain line that names its agent is that agent's request.
    (record,) = _read(_tail(), _assistant("msg_3", "req_3", agentId="ffee"))[0]
    assert record.agent == "ffee"
    assert usage.by_agent([*records, record]).keys() == {"a1b2c3", "ffee"}


def test_cache_writes_split_by_lifetime():
    line = {
        "type": "assistant",
        "requestId": "req_1",
        "timestamp": "2026-12-01T07:54:43Z",
        "message": {
            "id": "msg_1",
            "model": "claude-opus-4-7",
            "usage": {
                "input_tokens": 1,
                "output_tokens": 1,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 1000,
                "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
            },
        },
    }
    (record,) = _read(_tail(), json.dumps(line).encode() + b"\n")[0]
    assert (record.cache_creation_5m_tokens, record.cache_creation_1h_tokens) == (400, 600)
    assert record.cost_usd == Decimal("0.00853")  # 5 + 25 + 400 × 6.25 + 600 × 10, per million


def test_a_50_mb_transcript_is_read_incrementally_in_bounded_memory(tmp_path):
    """Fifty megabytes of real lines (the fixture, with fresh ids each copy), read 1 MiB at a time."""
    path = tmp_path / "long.jsonl"
    copies = 0
    with path.open("wb") as out:
        while out.tell() < 50 * 1024 * 1024:
            out.write(DATA.replace(b'"req_', b'"req_%d_' % copies).replace(b'"msg_', b'"msg_%d_' % copies))
            copies += 1
    size = path.stat().st_size
    tail = _tail()
    found = 0
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            offset = tail.resume(FileIdentity(os.stat(path).st_dev, os.stat(path).st_ino), size)
            while chunk := f.read(1024 * 1024):
                found += len(tail.feed(chunk, offset).records)
                offset += len(chunk)
                del chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == 3 * copies
    assert tail.state.offset == size
    # A chunk, its longest line, and the ids seen: a few MiB, never the 50 MB file.
    assert peak < 8 * 1024 * 1024, peak
