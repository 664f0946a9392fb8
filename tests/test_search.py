"""Full-text search of sessions (``GET /api/sessions?q=``) end to end: events sent to a real collector,
projected into search documents under row-level security, searched through a real ``hookdb api``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api import all_pages
from test_collector import send_concurrently
from test_data_model import event

from hookdb.collector.store import search as store_search

from conftest import run_sql, wait_for_rows

TOKENS = {"alpha": "token-of-alpha", "beta": "token-of-beta"}
WORD = "zanzibarite"  # only in a tool output of alpha's session


def http(api: Any, tenant: str = "alpha") -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"authorization": f"Bearer {TOKENS[tenant]}"}, timeout=10)


def search(api: Any, q: str, tenant: str = "alpha", **params: Any) -> list[dict[str, Any]]:
    with http(api, tenant) as client:
        return all_pages(client, q=q, **params)


def tool_call(session: str, tenant: str, command: str, output: Any, at_ns: int) -> list[bytes]:
    call = {"tool_name": "Bash", "tool_use_id": f"toolu-{at_ns}", "tool_input": {"command": command}}
    return [
        event("PreToolUse", call, session=session, tenant=tenant, at_ns=at_ns),
        event("PostToolUse", {**call, "tool_response": output}, session=session, tenant=tenant,
              at_ns=at_ns + 1_000_000),
    ]  # fmt: skip


@pytest.fixture
def tenants_collector(start_collector: Any) -> Any:
    return start_collector("--set", f'tenants.uids={{{os.getuid()} = ["alpha", "beta"]}}')


@pytest.fixture
def recorded(tenants_collector: Any, socket_path: Path, dsn: str, start_api: Any, tmp_path: Path) -> Any:
    """alpha's session a-1 (a prompt, a Bash call whose output holds WORD, a report, a reply) and beta's
    b-1 (the same shape, other words)."""
    now = time.time_ns()
    report = tmp_path / "project" / "reports" / "findings.md"
    report.parent.mkdir(parents=True)
    report.write_text("# Findings\n\nThe quokka population doubled.\n")
    alpha = [
        event("UserPromptSubmit", {"prompt": "Why does the nightly build fail?", "cwd": str(tmp_path)},
              session="a-1", tenant="alpha", at_ns=now),
        *tool_call("a-1", "alpha", "make test",
                   {"stdout": f"collected 12 items\nerror: {WORD} overflow in module gears\n", "stderr": ""},
                   now + 10_000_000),
        event("PostToolUse", {"tool_name": "Write", "tool_use_id": "toolu-w",
                              "tool_input": {"file_path": str(report), "content": report.read_text()}},
              session="a-1", tenant="alpha", at_ns=now + 20_000_000),
        event("Stop", {"last_assistant_message": "It fails: the flux capacitors were unplugged."},
              session="a-1", tenant="alpha", at_ns=now + 30_000_000),
    ]  # fmt: skip
    beta = [
        event(
            "UserPromptSubmit", {"prompt": "Tune the glockenspiel"}, session="b-1", tenant="beta", at_ns=now
        ),
        *tool_call("b-1", "beta", "make tune", {"stdout": "all notes in tune\n"}, now + 10_000_000),
    ]
    send_concurrently(socket_path, [alpha, beta])
    wait_for_rows(dsn, len(alpha) + len(beta))
    return start_api(dsn, TOKENS)


def test_each_searchable_event_is_one_part_of_its_session_s_documents(recorded: Any, dsn: str) -> None:
    docs = run_sql(dsn, "SELECT session_id, kinds, ends, length(body) AS chars FROM search_docs")
    kinds = {s: sorted(k for d in docs if d["session_id"] == s for k in d["kinds"]) for s in ("a-1", "b-1")}
    # the Write call's PostToolUse has no tool_response: no part; its report is a document of its own
    assert kinds == {"a-1": ["prompt", "reply", "report", "tool_input", "tool_output"],
                     "b-1": ["prompt", "tool_input", "tool_output"]}  # fmt: skip
    assert all(len(d["ends"]) == len(d["kinds"]) and d["ends"][-1] == d["chars"] for d in docs)


def test_a_session_s_parts_make_documents_in_time_order_bounded_and_in_key_order() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    big = "w" * (store_search.DOC_CHARS // 2)
    parts = [
        store_search.SearchDoc("t", "s-2", at + timedelta(seconds=2), b"\x03" * 16, "reply", "late"),
        store_search.SearchDoc("t", "s-2", at, b"\x09" * 16, "prompt", "early"),
        store_search.SearchDoc("t", "s-1", at, b"\x01" * 16, "tool_output", big),
        store_search.SearchDoc("t", "s-1", at + timedelta(seconds=1), b"\x02" * 16, "tool_output", big),
        store_search.SearchDoc("t", "s-1", at + timedelta(seconds=2), b"\x04" * 16, "reply", "done"),
    ]
    docs = store_search.documents(parts)
    assert [(d.session_id, d.doc_key[:1], d.kinds, d.ends) for d in docs] == [
        ("s-1", b"\x01", ["tool_output"], [len(big)]),  # the next part would take it past DOC_CHARS
        ("s-1", b"\x02", ["tool_output", "reply"], [len(big), len(big) + 5]),
        ("s-2", b"\x09", ["prompt", "reply"], [5, 10]),  # keyed by its first part, in time
    ]
    assert docs[2].body == "early\nlate"
    assert docs[1].body == f"{big}\ndone"
    assert all(len(d.body) <= store_search.DOC_CHARS for d in docs)
    assert store_search.documents(list(reversed(parts))) == docs  # a batch written again: the same keys


def test_a_word_only_in_a_tool_output_is_found_for_its_tenant_only(recorded: Any) -> None:
    [found] = search(recorded, WORD)
    assert found["session_id"] == "a-1"
    snippet = found["snippet"]
    assert snippet["kind"] == "tool_output"
    assert [p["text"] for p in snippet["parts"] if p["match"]] == [WORD]
    assert WORD in "".join(p["text"] for p in snippet["parts"])
    assert search(recorded, WORD, tenant="beta") == []
    assert search(recorded, "glockenspiel") == []  # beta's prompt
    assert [s["session_id"] for s in search(recorded, "glockenspiel", tenant="beta")] == ["b-1"]


def test_prompts_replies_tool_inputs_and_reports_are_found_with_stemming(recorded: Any) -> None:
    for q, kind in [
        ("nightly", "prompt"),
        ("capacitor unplug", "reply"),  # "capacitors were unplugged": English stemming
        ('"flux capacitors"', "reply"),
        ("unplugging", "reply"),  # no word as typed in the text: the part that matches on its own
        ("quokka", "report"),
        ("make test", "tool_input"),
    ]:
        [found] = search(recorded, q)
        assert (found["session_id"], found["snippet"]["kind"]) == ("a-1", kind), q
    assert search(recorded, "nightly -build") == []  # websearch syntax: -word excludes
    assert [s["session_id"] for s in search(recorded, "glockenspiel or nightly", tenant="beta")] == ["b-1"]


def test_bad_queries_are_400_or_empty_never_500(recorded: Any) -> None:
    with http(recorded) as client:
        for q, status in [
            ("", 400),
            ("   ", 400),
            ("x" * 257, 400),
            ("a\x00b", 400),
            ("the and of", 200),  # only stop words: nothing to match
            ("!!! ((( ::: <-> & | * '\" \\", 200),
            ("zanzibarite:* & !(", 200),
            ("<script>alert(1)</script>", 200),
        ]:
            answer = client.get("/api/sessions", params={"q": q})
            assert answer.status_code == status, (q, answer.text)
            if status == 400:
                assert answer.json()["detail"].startswith("q:")
            elif q.startswith("the"):
                assert answer.json()["sessions"] == []
        # tsquery operators typed by a user are words to websearch_to_tsquery, not syntax errors
        assert [s["session_id"] for s in client.get("/api/sessions", params={"q": "zanzibarite:*"}).json()[
            "sessions"]] == ["a-1"]  # fmt: skip


def test_a_huge_tool_output_with_nul_is_bounded_and_searchable(
    tenants_collector: Any, socket_path: Path, dsn: str, start_api: Any
) -> None:
    output = {"stdout": "begin plumbago\x00after nul\n" + "lorem ipsum dolor " * 40_000 + "late xylophonic\n"}
    frames = tool_call("big", "alpha", "cat huge.log", output, time.time_ns())
    deep = {"stdout": "filler words here " * 50 + "then Rhododendrons bloomed"}  # 900 characters in
    frames += tool_call("deep", "alpha", "cat garden.log", deep, time.time_ns())
    send_concurrently(socket_path, [frames])
    wait_for_rows(dsn, 4)
    api = start_api(dsn, TOKENS)
    [found] = search(api, "rhododendron")  # stemmed, deep in the text: the snippet is around it
    assert [p["text"] for p in found["snippet"]["parts"] if p["match"]] == ["Rhododendrons"]
    assert [s["session_id"] for s in search(api, "plumbago")] == ["big"]
    assert [s["session_id"] for s in search(api, "nul")] == ["big"]
    assert search(api, "xylophonic") == []  # past what one event contributes
    docs = run_sql(
        dsn, "SELECT kinds, ends, length(body) AS chars, strpos(body, chr(2)) AS marks FROM search_docs"
    )
    parts = [(kind, end - before - 1) for d in docs for kind, before, end in
             zip(d["kinds"], [-1, *d["ends"]], d["ends"], strict=False)]  # fmt: skip
    assert sorted(kind for kind, _ in parts) == ["tool_input"] * 2 + ["tool_output"] * 2
    assert max(size for kind, size in parts if kind == "tool_output") == store_search.TOOL_CHARS
    assert all(d["ends"][-1] == d["chars"] and d["marks"] == 0 for d in docs)


def test_search_pages_by_keyset_and_combines_with_filters(
    tenants_collector: Any, socket_path: Path, dsn: str, start_api: Any
) -> None:
    now = time.time_ns()
    frames = []
    for i in range(13):
        session = f"p-{i:02d}"
        frames.append(event("SessionStart", {"model": f"model-{i % 3}"}, session=session, tenant="alpha",
                            at_ns=now + i * 1_000_000_000))  # fmt: skip
        words = "heliotrope" if i % 2 == 0 else "heliotrope marigold"
        frames.append(event("UserPromptSubmit", {"prompt": f"plant the {words}"}, session=session,
                            tenant="alpha", at_ns=now + i * 1_000_000_000 + 1))  # fmt: skip
    send_concurrently(socket_path, [frames])
    wait_for_rows(dsn, len(frames))
    api = start_api(dsn, TOKENS)
    newest_first = [f"p-{i:02d}" for i in reversed(range(13))]
    assert [s["session_id"] for s in search(api, "heliotrope", limit=4)] == newest_first
    assert [s["session_id"] for s in search(api, "marigold", limit=2)] == newest_first[1::2]
    model = [s["session_id"] for s in search(api, "heliotrope", limit=3, model="model-1")]
    assert model == [f"p-{i:02d}" for i in reversed(range(13)) if i % 3 == 1]
    both = [s["session_id"] for s in search(api, "marigold", limit=1, model="model-1")]
    assert both == [f"p-{i:02d}" for i in reversed(range(13)) if i % 3 == 1 and i % 2 == 1]
    with http(api) as client:
        unsearched = client.get("/api/sessions").json()["sessions"]
    assert all("snippet" not in card for card in unsearched)
