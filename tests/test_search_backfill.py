"""``hookdb search backfill``: a database upgraded from before migration 0007 gets the search documents of
its older events, the same parts live capture makes, found through a real ``hookdb api`` per tenant.

The older events are captured by a real collector (so blobs, escapes and sessions rows are as stored),
then made "older than 0007": their documents deleted and version 7's ``applied_at`` set after they arrived.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections import Counter
from typing import Any

import pytest
from test_collector import send_concurrently
from test_data_model import event
from test_search import TOKENS, search

from hookdb.collector.admin import search_backfill
from hookdb.collector.store import search as store_search

from conftest import BIN, migrate, run_sql, wait_for_rows

BIG = "zeppelinoid cargo manifest\n" + "ballast " * 4000  # a tool output stored as a blob
OLD_WORDS = {"quixotic": "prompt", "marmalade": "tool_input", "zeppelinoid": "tool_output",
             "gizzard": "tool_output", "persimmon": "reply"}  # fmt: skip


def hookdb_search_backfill(dsn: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKDB_")}
    return subprocess.run(
        [str(BIN / "hookdb"), "search", "backfill", "--dsn", dsn, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The summary's ``name: value`` lines (the log lines on stdout are JSON)."""
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("{")]
    return dict(line.split(":", 1) for line in lines if ":" in line) | {"text": "\n".join(lines)}


def parts(dsn: str) -> Counter[tuple[str, str, str]]:
    """Every document's parts as (session, kind, text)."""
    found: Counter[tuple[str, str, str]] = Counter()
    for doc in run_sql(dsn, "SELECT session_id, kinds, ends, body FROM search_docs"):
        start = 0
        for kind, end in zip(doc["kinds"], doc["ends"], strict=True):
            found[doc["session_id"], kind, doc["body"][start:end]] += 1
            start = end + 1
    return found


def docs(dsn: str) -> list[tuple[Any, ...]]:
    rows = run_sql(
        dsn, "SELECT tenant_id, session_id, doc_key, at, kinds, ends, body FROM search_docs ORDER BY 1, 2, 3"
    )
    return [tuple(r) for r in rows]


@pytest.fixture
def upgraded(start_collector: Any, socket_path: Any, dsn: str) -> dict[str, Counter[tuple[str, str, str]]]:
    """alpha's session a-old and beta's b-old captured before 0007 (their documents gone), then a newer
    event of a-old captured after it, with its document; the parts live capture had made of the old ones."""
    collector = start_collector("--set", f'tenants.uids={{{os.getuid()} = ["alpha", "beta"]}}')
    now = time.time_ns()
    call = {
        "tool_name": "Bash",
        "tool_use_id": "toolu-1",
        "tool_input": {"command": "grep marmalade jam.txt"},
    }
    alpha = [
        event("UserPromptSubmit", {"prompt": "Why is the quixotic pipeline stalling?"},
              session="a-old", tenant="alpha", at_ns=now),
        event("PreToolUse", call, session="a-old", tenant="alpha", at_ns=now + 1_000_000),
        event("PostToolUse", {**call, "tool_response": {"stdout": BIG, "stderr": ""}},
              session="a-old", tenant="alpha", at_ns=now + 2_000_000),
        event("PostToolUseFailure", {**call, "error": "gizzard\x00overflow"},
              session="a-old", tenant="alpha", at_ns=now + 3_000_000),
        event("Stop", {"last_assistant_message": "The persimmon cache was full."},
              session="a-old", tenant="alpha", at_ns=now + 4_000_000),
        event("SessionStart", {"source": "startup"}, session="a-old", tenant="alpha", at_ns=now - 1_000_000),
    ]  # fmt: skip
    beta = [
        event(
            "UserPromptSubmit", {"prompt": "Tune the glockenspiel"}, session="b-old", tenant="beta", at_ns=now
        )
    ]
    send_concurrently(socket_path, [alpha, beta])
    wait_for_rows(dsn, len(alpha) + len(beta))
    stored = run_sql(dsn, "SELECT string_agg(payload::text, ' ') FROM hook_audit_log")[0][0]
    assert '"$hookdb.blob"' in stored  # the blob path is taken
    assert '"$hookdb.nul"' in stored  # and the escape path
    live = parts(dsn)
    run_sql(dsn, "DELETE FROM search_docs")
    run_sql(dsn, "UPDATE schema_migrations SET applied_at = clock_timestamp() WHERE version = 7")
    newer = event("UserPromptSubmit", {"prompt": "A newer walrus question"}, session="a-old", tenant="alpha",
                  at_ns=now + 5_000_000)  # fmt: skip
    send_concurrently(socket_path, [[newer]])
    wait_for_rows(dsn, len(alpha) + len(beta) + 1)
    collector.stop()
    return {"live": live}


def test_old_events_become_searchable_per_tenant_once(upgraded: Any, dsn: str, start_api: Any) -> None:
    api = start_api(dsn, TOKENS)
    for word in [*OLD_WORDS, "glockenspiel"]:
        assert search(api, word) == search(api, word, tenant="beta") == [], word
    [newer] = search(api, "walrus")

    dry = summary(hookdb_search_backfill(dsn, "--dry-run"))
    assert dry["sessions"].strip() == "2"
    assert (
        dry["events"].strip().startswith("6 read")
    )  # 5 of alpha (not SessionStart, not the newer), 1 of beta
    assert dry["documents"].strip() == "2 made, 2 not stored yet (dry run: nothing written)"
    assert len(docs(dsn)) == 1  # the newer event's, written live

    done = summary(hookdb_search_backfill(dsn))
    assert done["documents"].strip() == "2 made, 2 written"
    for word, kind in OLD_WORDS.items():
        [found] = search(api, word)
        assert (found["session_id"], found["snippet"]["kind"]) == ("a-old", kind), word
        assert search(api, word, tenant="beta") == [], word
    assert [s["session_id"] for s in search(api, "glockenspiel", tenant="beta")] == ["b-old"]
    assert search(api, "glockenspiel") == []
    # The same parts as live capture made, the big output's from its original string (not its blob
    # reference); the newer event's part once, in its own document only.
    walrus = ("a-old", "prompt", "A newer walrus question")
    assert parts(dsn) == upgraded["live"] + Counter([walrus])
    assert [s["session_id"] for s in search(api, "walrus")] == [newer["session_id"]]

    written = docs(dsn)
    again = summary(hookdb_search_backfill(dsn))
    assert again["documents"].strip() == "2 made, 0 written"
    assert docs(dsn) == written
    assert summary(hookdb_search_backfill(dsn, "--dry-run", "--tenant", "beta"))["documents"].strip() == (
        "1 made, 0 not stored yet (dry run: nothing written)"
    )


def test_a_database_created_at_0007_or_later_has_nothing_to_backfill(dsn: str) -> None:
    migrate(dsn)
    assert "nothing to backfill" in summary(hookdb_search_backfill(dsn))["text"]


@pytest.mark.parametrize("schema", ["none", "below 0007"])
def test_a_database_below_0007_is_refused_in_one_line(dsn: str, schema: str) -> None:
    if schema == "below 0007":
        migrate(dsn)
        run_sql(dsn, "DELETE FROM schema_migrations WHERE version >= 7")
    result = hookdb_search_backfill(dsn)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "hookdb: search backfill: the schema lacks migration 0007 (search documents): run `hookdb migrate` "
        "first"
    ]


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    result = hookdb_search_backfill("postgresql://hookdb@127.0.0.1:1/hookdb")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("hookdb: search backfill: ")
    assert "Traceback" not in result.stdout + result.stderr


def test_sessions_longer_than_a_page_are_chunked_as_one_ordered_list(
    start_collector: Any, socket_path: Any, dsn: str
) -> None:
    """p-1's events span two pages (``PAGE``) and several documents: the documents are its parts in time
    order, each as full as ``DOC_CHARS`` lets it be, as ``search.documents`` makes them of the whole list."""
    start_collector()
    now = time.time_ns()
    texts = [f"prompt {i:05d} about the orbit of moon number {i}" for i in range(search_backfill.PAGE + 100)]
    # Sent in reverse: their order in the documents is the events' time order, not their arrival order.
    long = [event("UserPromptSubmit", {"prompt": t}, session="p-1", at_ns=now + i * 1000)
            for i, t in enumerate(texts)][::-1]  # fmt: skip
    short = [event("Stop", {"last_assistant_message": "short reply"}, session="p-2", at_ns=now)]
    send_concurrently(socket_path, [long, short])
    wait_for_rows(dsn, len(long) + len(short))
    run_sql(dsn, "DELETE FROM search_docs")
    run_sql(dsn, "UPDATE schema_migrations SET applied_at = clock_timestamp() WHERE version = 7")

    done = summary(hookdb_search_backfill(dsn))
    assert done["sessions"].strip() == "2"
    rows = run_sql(dsn, "SELECT session_id, kinds, ends, body FROM search_docs ORDER BY session_id, at")
    assert [(r["session_id"], r["body"]) for r in rows if r["session_id"] == "p-2"] == [
        ("p-2", "short reply")
    ]
    bodies = [r["body"] for r in rows if r["session_id"] == "p-1"]
    assert len(bodies) > 2
    assert "\n".join(bodies).split("\n") == texts
    for body, following in itertools.pairwise(bodies):
        assert len(body) <= store_search.DOC_CHARS
        assert (
            len(body) + 1 + len(following.split("\n")[0]) > store_search.DOC_CHARS
        )  # the next part did not fit
    assert done["documents"].strip() == f"{len(bodies) + 1} made, {len(bodies) + 1} written"
