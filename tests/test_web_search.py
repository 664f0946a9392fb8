"""The page's search box, in Chromium against a real collector and ``hookdb api``: results as you type,
the snippet's matches marked, only the token's tenant, and agent-written text never run as markup (the
``page`` fixture fails the test on any page error or Content-Security-Policy violation)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from test_collector import send_concurrently
from test_data_model import event
from test_search import tool_call
from test_search_backlog import defer_stored
from test_web import CARDS, card, serve, sign_in, sql
from test_web import page as page  # the fixture

from conftest import wait_for

WORD = "quixotically"
HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def test_the_search_box_finds_a_session_by_a_word_of_its_tool_output_in_its_tenant_only(
    page: Any, dsn: str, start_collector: Any, socket_path: Path, start_api: Any
) -> None:
    start_collector("--set", f'tenants.uids={{{os.getuid()} = ["alpha", "beta"]}}')
    now = time.time_ns()
    frames = [
        event("UserPromptSubmit", {"prompt": "Why is CI red?"}, session="a-web", tenant="alpha", at_ns=now),
        *tool_call("a-web", "alpha", "make ci", {"stdout": f"{HOSTILE} {WORD} at step 3"}, now + 10**7),
        event("UserPromptSubmit", {"prompt": "Write the docs"}, session="a-docs", tenant="alpha",
              at_ns=now + 2 * 10**7),
        event("UserPromptSubmit", {"prompt": "Why is CI green?"}, session="b-web", tenant="beta", at_ns=now),
    ]  # fmt: skip
    send_concurrently(socket_path, [frames])
    wait_for(lambda: sql(dsn, "SELECT count(*) FROM hook_audit_log")[0][0] == len(frames))
    api = serve(start_api, dsn, alpha="token-a", beta="token-b")

    sign_in(page, api.url, "token-a")
    cards = page.locator(CARDS)
    search = page.get_by_role("searchbox", name="Search sessions")
    expect(cards).to_have_count(2)
    search.press_sequentially(WORD[:5], delay=20)  # typing: results once it pauses, stale ones dropped
    search.press_sequentially(WORD[5:], delay=20)
    expect(cards).to_have_count(1)
    found = card(page, "a-web")
    snippet = found.locator(".card-snippet")
    assert snippet.locator("mark").all_inner_texts() == [WORD]
    assert "tool output" in snippet.inner_text()
    assert snippet.locator("img, script").count() == 0
    assert page.evaluate("window.__xss === undefined")

    search.fill("")
    expect(cards).to_have_count(2)
    assert page.locator(".card-snippet").count() == 0

    page.get_by_role("button", name="Change token").click()
    page.get_by_label("API token").fill("token-b")
    page.get_by_role("button", name="Show sessions").click()
    expect(cards).to_have_count(1)
    search.fill(WORD)
    search.press("Enter")
    page.get_by_text("No session matches the search.").wait_for()
    assert cards.count() == 0
    search.fill("green")
    card(page, "b-web").wait_for()
    assert cards.count() == 1


def test_a_search_says_how_many_events_are_not_searchable_yet(
    page: Any, dsn: str, start_collector: Any, socket_path: Path, start_api: Any
) -> None:
    first = start_collector("--set", "search.defer_backlog_events=0")
    now = time.time_ns()
    frames = tool_call("w-1", "default", "make ci", {"stdout": f"{WORD} at step 3"}, now)
    send_concurrently(socket_path, [frames])
    wait_for(lambda: sql(dsn, "SELECT count(*) FROM hook_audit_log")[0][0] == len(frames))
    assert first.stop() == 0
    defer_stored(dsn, sql)  # as a collector that stopped before making them leaves them
    api = serve(start_api, dsn, default="token-d")

    sign_in(page, api.url, "token-d")
    search = page.get_by_role("searchbox", name="Search sessions")
    search.fill(WORD)
    search.press("Enter")
    page.get_by_text(
        "No session matches the search. 2 recent events are not searchable yet: indexing follows a burst."
    ).wait_for()
    start_collector()  # takes up the backlog at start
    wait_for(lambda: sql(dsn, "SELECT count(*) FROM search_backlog")[0][0] == 0)
    search.fill("")
    expect(page.locator(CARDS)).to_have_count(1)  # the whole list again
    search.fill(WORD)
    search.press("Enter")
    card(page, "w-1").wait_for()
    expect(page.locator("#list-end")).not_to_contain_text("not searchable")
