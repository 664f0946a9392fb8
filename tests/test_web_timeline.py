"""The timeline of a session in a real browser: subagents as nested spans with their own cost, failures in
red, an Edit as a diff (Chromium through Playwright against a real ``hookdb api``, as tests/test_web.py).

Events are seeded as Claude Code sends them: what a subagent fires carries its ``agent_id`` and
``agent_type`` (SubagentStart and SubagentStop too), the Agent tool call that starts a subagent brackets
it, and its result names the subagent (``tool_response.agentId``); the ledger's requests name their agent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect
from test_web import add_event, add_request, add_session, ago, card, page, screenshot, serve, sign_in, sql

from conftest import migrate
from fixtures import corpus

__all__ = ["page"]  # the fixture, from tests/test_web.py

MAIN = None  # the agent_id of the session's own agent: none


class Session:
    """Seeds one session's events, each ``offset`` seconds after ``start``, as ``agent`` (None: main)."""

    def __init__(self, dsn: str, session_id: str, start: datetime) -> None:
        self.dsn, self.session_id, self.start = dsn, session_id, start

    def at(self, offset: float) -> datetime:
        return self.start + timedelta(seconds=offset)

    def event(
        self, offset: float, event_type: str, agent: tuple[str, str] | None = MAIN, **payload: Any
    ) -> None:
        if agent is not None:
            payload |= {"agent_id": agent[0], "agent_type": agent[1]}
        tool = payload.pop("tool_name", None)
        add_event(self.dsn, "acme", self.session_id, event_type, self.at(offset), tool, **payload)

    def call(
        self,
        start: float,
        end: float | None,
        tool: str,
        tool_use_id: str,
        tool_input: dict[str, Any],
        agent: tuple[str, str] | None = MAIN,
        **result: Any,
    ) -> None:
        """A tool call: its PreToolUse, then its PostToolUse (Failure, given ``error``) unless end is None."""
        fields = {"tool_name": tool, "tool_use_id": tool_use_id, "tool_input": tool_input}
        self.event(start, "PreToolUse", agent, **fields)
        if end is not None:
            ended = "PostToolUseFailure" if "error" in result else "PostToolUse"
            self.event(end, ended, agent, **fields, **result)

    def request(
        self,
        offset: float,
        request_id: str,
        tokens: tuple[int, int, int, int, int],
        cost: str,
        agent: tuple[str, str] | None = MAIN,
    ) -> None:
        who = {} if agent is None else {"agent": agent[0], "agent_type": agent[1]}
        add_request(self.dsn, "acme", self.session_id, request_id, self.at(offset), "claude-sonnet-4-5",
                    tokens, cost, **who)  # fmt: skip


def items(list_: Locator) -> Locator:
    """The entries of a timeline list itself, not of the lists nested in it."""
    return list_.locator(":scope > li")


def span(page: Page, agent_id: str) -> Locator:
    return page.locator(f'#detail li.subagent[data-agent-id="{agent_id}"]')


def own(span_: Locator) -> Locator:
    return items(span_.locator(":scope > ol.span-events"))


def dollars(text: str) -> Decimal:
    return Decimal(re.findall(r"\$(\d+\.\d\d)", text)[0])


PLAN = ("a1b2c3d4e5f60718", "Plan")
EXPLORE = ("e5f6a7b8c9d00112", "Explore")
PRICES = ("aa11aa11aa11aa11", "Explore")
DATES = ("bb22bb22bb22bb22", "Explore")


def test_subagents_are_nested_spans_with_their_own_cost(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1", status="completed", subagents=4)
    s = Session(dsn, "s-1", ago(minutes=10))
    s.event(0, "SessionStart", source="startup")
    s.event(1, "UserPromptSubmit", prompt="Fix the loader and check the Q3 data")
    s.request(1.5, "req_m1", (1000, 200, 5000, 0, 0), "0.30")
    # The main agent starts a Plan subagent, which starts an Explore subagent of its own.
    s.call(2, None, "Agent", "tu-plan", {"subagent_type": "Plan", "description": "Plan the loader fix"})
    s.event(2.1, "SubagentStart", PLAN)
    s.request(2.5, "req_p1", (400, 100, 0, 0, 0), "0.04", PLAN)
    s.call(3, 4, "Bash", "tu-pytest", {"command": "python -m pytest tests/test_loader.py -q"}, PLAN,
           error="Exit code 1\n1 failed, 5 passed in 0.41s", is_interrupt=False)  # fmt: skip
    readers = {"subagent_type": "Explore", "description": "Find the CSV readers"}
    s.call(5, None, "Agent", "tu-explore", readers, PLAN)
    s.event(5.1, "SubagentStart", EXPLORE)
    s.request(5.5, "req_e1", (300, 50, 0, 0, 0), "0.02", EXPLORE)
    s.call(6, 6.2, "Read", "tu-read", {"file_path": "/home/dev/proj/src/sales/loader.py"}, EXPLORE,
           tool_response={"type": "text"})  # fmt: skip
    s.event(7, "SubagentStop", EXPLORE, last_assistant_message="Two readers: loader.py and legacy.py")
    s.event(7.1, "PostToolUse", PLAN, tool_name="Agent", tool_use_id="tu-explore", tool_input=readers,
            tool_response={"status": "completed", "agentId": EXPLORE[0]})  # fmt: skip
    edit_end = corpus.large_edit_payload(size=2_000)
    edit = {k: edit_end[k] for k in ("tool_name", "tool_use_id", "tool_input")}
    s.event(8, "PreToolUse", PLAN, **edit)
    s.event(8.05, "PostToolUse", PLAN, **edit, tool_response=edit_end["tool_response"])
    s.event(9, "SubagentStop", PLAN, last_assistant_message="The loader is fixed")
    s.event(9.1, "PostToolUse", tool_name="Agent", tool_use_id="tu-plan",
            tool_input={"subagent_type": "Plan"}, tool_response={"agentId": PLAN[0]})  # fmt: skip
    # Two Explore subagents at once; the second call's subagent starts first, and their events interleave.
    for offset, tool_use_id, what in (
        (10, "tu-prices", "Check the prices"),
        (10.1, "tu-dates", "Check the dates"),
    ):
        s.event(offset, "PreToolUse", tool_name="Agent", tool_use_id=tool_use_id,
                tool_input={"subagent_type": "Explore", "description": what})  # fmt: skip
    s.event(10.2, "SubagentStart", DATES)
    s.event(10.3, "SubagentStart", PRICES)
    s.request(10.5, "req_a1", (200, 40, 0, 0, 0), "0.01", PRICES)
    s.request(10.6, "req_b1", (250, 60, 0, 0, 0), "0.01", DATES)
    s.event(
        11, "PreToolUse", PRICES, tool_name="Grep", tool_use_id="tu-grep", tool_input={"pattern": "price"}
    )
    s.event(
        11.1, "PreToolUse", DATES, tool_name="Bash", tool_use_id="tu-date", tool_input={"command": "date -I"}
    )
    s.event(
        11.5, "PostToolUse", PRICES, tool_name="Grep", tool_use_id="tu-grep", tool_input={"pattern": "price"}
    )
    s.event(
        11.6, "PostToolUse", DATES, tool_name="Bash", tool_use_id="tu-date", tool_input={"command": "date -I"}
    )
    s.request(11.8, "req_b2", (100, 20, 0, 0, 0), "0.02", DATES)
    s.event(12, "SubagentStop", PRICES, last_assistant_message="Prices are fine")
    s.event(12.5, "SubagentStop", DATES, last_assistant_message="Dates are fine")
    for offset, tool_use_id, agent in ((13, "tu-prices", PRICES), (13.1, "tu-dates", DATES)):
        s.event(offset, "PostToolUse", tool_name="Agent", tool_use_id=tool_use_id,
                tool_input={"subagent_type": "Explore"}, tool_response={"agentId": agent[0]})  # fmt: skip
    s.request(14, "req_m2", (800, 150, 6050, 0, 0), "0.25")
    s.event(15, "Stop", last_assistant_message="Done")
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    expect(card(page, "s-1").locator(".cost")).to_have_text("$0.65 reported")
    card(page, "s-1").click()

    # The main agent's list: its own events and requests, each span right under the call that started it.
    top = items(page.locator("#detail .timeline-body > ol.events"))
    expect(top).to_have_count(11)
    expect(top.nth(3).locator(".tool-name")).to_have_text("Agent")
    expect(top.nth(4)).to_have_attribute("data-agent-id", PLAN[0])
    expect(top.nth(5).locator(".event-subject")).to_have_text("Check the prices")
    expect(top.nth(6)).to_have_attribute("data-agent-id", PRICES[0])
    expect(top.nth(7).locator(".event-subject")).to_have_text("Check the dates")
    expect(top.nth(8)).to_have_attribute("data-agent-id", DATES[0])
    expect(top.nth(9)).to_have_attribute("data-request-id", "req_m2")

    plan = span(page, PLAN[0])
    head = plan.locator(":scope > .span-head")
    expect(head.locator(".span-toggle")).to_have_text("Plan")
    expect(head.locator(".span-what")).to_have_text("Plan the loader fix")
    expect(head.locator(".duration")).to_have_text("6.9 s")
    expect(plan.locator(":scope > .span-usage")).to_have_text(
        f"{PLAN[0]} · 1 request · 500 tokens: 400 in · 100 out · $0.04"
        " · with 1 nested subagent: 850 tokens, $0.06"
    )
    # On the session's axis (15 s from SessionStart to Stop), from SubagentStart to SubagentStop.
    left, width = head.locator(".span-bar").evaluate("b => [b.style.left, b.style.width]")
    assert abs(float(left.rstrip("%")) - 2.1 / 15 * 100) < 0.1
    assert abs(float(width.rstrip("%")) - 6.9 / 15 * 100) < 0.1
    mine = own(plan)
    expect(mine.locator(":scope > .event-row > .event-type, :scope > .span-head .span-toggle")).to_have_text(
        ["SubagentStart", "API request", "PreToolUse → PostToolUseFailure", "PreToolUse → PostToolUse",
         "Explore", "PreToolUse → PostToolUse", "SubagentStop"]
    )  # fmt: skip
    failed = mine.nth(2)
    expect(failed).to_have_class("timeline-event kind-tool failed")
    expect(failed.locator(".event-error")).to_contain_text("1 failed, 5 passed in 0.41s")
    assert failed.locator(".event-error").evaluate(  # in the page's red
        """e => { const probe = document.createElement("span"); probe.style.color = "var(--failed)";
                  document.body.append(probe); const red = getComputedStyle(probe).color; probe.remove();
                  return getComputedStyle(e).color === red; }"""
    )
    diff = mine.nth(5).locator(".diff")
    expect(diff.locator(".diff-add")).to_have_text(["+    if not values:", "+        return 0.0"])

    explore = span(page, EXPLORE[0])
    expect(mine.nth(4)).to_have_attribute("data-agent-id", EXPLORE[0])
    expect(explore.locator(":scope > .span-head .span-what")).to_have_text("Find the CSV readers")
    expect(explore.locator(":scope > .span-head .duration")).to_have_text("1.9 s")
    expect(explore.locator(":scope > .span-usage")).to_have_text(
        f"{EXPLORE[0]} · 1 request · 350 tokens: 300 in · 50 out · $0.02"
    )
    expect(own(explore).locator(".event-subject")).to_have_text(
        [EXPLORE[1], "/home/dev/proj/src/sales/loader.py", "Two readers: loader.py and legacy.py"]
    )

    # The concurrent ones: each with its own events and requests only.
    prices, dates = span(page, PRICES[0]), span(page, DATES[0])
    expect(own(prices).locator(".tool-name")).to_have_text(["Grep"])
    expect(prices.locator(":scope > .span-failures")).to_be_hidden()
    expect(own(prices)).to_have_count(4)  # SubagentStart, its request, Grep, SubagentStop
    expect(own(dates).locator(".tool-name")).to_have_text(["Bash"])
    expect(own(dates).locator(".request-usage")).to_have_count(2)
    expect(own(dates)).to_have_count(5)
    expect(prices.locator(":scope > .span-usage")).to_have_text(
        f"{PRICES[0]} · 1 request · 240 tokens: 200 in · 40 out · $0.01"
    )
    expect(dates.locator(":scope > .span-usage")).to_have_text(
        f"{DATES[0]} · 2 requests · 430 tokens: 350 in · 80 out · $0.03"
    )
    top.nth(3).evaluate("call => call.scrollIntoView()")
    screenshot(page, "detail-subagents")

    # The totals add up: the main agent's requests and each subagent's own are the session's cost.
    main = page.locator("#detail .agents tbody tr.agent-main td").last.text_content()
    spans = page.locator("#detail li.subagent > .span-usage").all_text_contents()
    assert len(spans) == 4
    parts = [dollars(main or ""), *(dollars(t.split(" · with ")[0]) for t in spans)]
    assert sum(parts) == Decimal("0.65") == dollars(card(page, "s-1").locator(".cost").text_content() or "")

    # Collapsing a span hides what it holds (the nested span too), not its head and usage.
    toggle = head.locator(".span-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(plan.locator(":scope > .span-failures")).to_have_text("1 failure inside")  # never hidden
    expect(mine.first).to_be_hidden()
    expect(own(explore).first).to_be_hidden()
    expect(plan.locator(":scope > .span-usage")).to_be_visible()
    expect(prices.locator(":scope > .span-head")).to_be_visible()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(own(explore).nth(2)).to_be_visible()


def test_running_subagents_follow_the_call_of_their_type(page: Page, dsn: str, start_api) -> None:
    """While the Agent calls have no result, each subagent goes under the open call of its type."""
    migrate(dsn)
    add_session(dsn, "acme", "s-live", subagents=2)
    s = Session(dsn, "s-live", ago(minutes=1))
    review, scan = ("c0ffee0000000001", "general-purpose"), ("c0ffee0000000002", "Explore")
    s.event(0, "UserPromptSubmit", prompt="Review and scan")
    s.call(1, None, "Agent", "tu-scan", {"subagent_type": "Explore", "description": "Scan the data"})
    s.call(1.1, None, "Agent", "tu-review", {"subagent_type": "general-purpose", "description": "Review"})
    s.event(1.2, "SubagentStart", review)
    s.event(1.3, "SubagentStart", scan)
    s.call(2, 2.5, "Bash", "tu-wc", {"command": "wc -l data.csv"}, scan, tool_response={"stdout": "3"})
    s.call(2.1, None, "Read", "tu-r", {"file_path": "/home/dev/proj/README.md"}, review)
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    card(page, "s-live").click()

    top = items(page.locator("#detail .timeline-body > ol.events"))
    expect(top).to_have_count(5)
    expect(top.nth(1).locator(".event-subject")).to_have_text("Scan the data")
    expect(top.nth(2)).to_have_attribute("data-agent-id", scan[0])
    expect(top.nth(3).locator(".event-subject")).to_have_text("Review")
    expect(top.nth(4)).to_have_attribute("data-agent-id", review[0])
    expect(own(span(page, scan[0])).locator(".event-subject")).to_have_text([scan[1], "wc -l data.csv"])
    expect(own(span(page, review[0])).locator(".event-subject")).to_have_text(
        [review[1], "/home/dev/proj/README.md"]
    )
    expect(span(page, review[0]).locator(":scope > .span-head .duration")).to_have_text("running")
    expect(span(page, review[0]).locator(":scope > .span-usage")).to_have_text(
        f"{review[0]} · no API requests recorded"
    )


def test_a_failure_never_looks_like_a_success(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1", status="failed")
    hooks = corpus.hook_payloads()
    s = Session(dsn, "s-1", ago(minutes=5))
    denied = {k: hooks["PermissionDenied"][k] for k in ("tool_name", "tool_use_id", "tool_input")}
    s.event(0, "PreToolUse", **denied)
    s.event(0.2, "PermissionDenied", **denied, reason=hooks["PermissionDenied"]["reason"])
    failure = hooks["StopFailure"]
    s.event(1, "StopFailure", error=failure["error"], error_details=failure["error_details"])
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    card(page, "s-1").click()

    rows = page.locator("#detail .timeline-event")
    expect(rows).to_have_count(2)
    call = rows.nth(0)
    expect(call).to_have_class("timeline-event kind-tool failed")
    expect(call.locator(".event-type")).to_have_text("PreToolUse → PermissionDenied")
    expect(call.locator(".duration")).to_have_text("denied")
    expect(call.locator(".event-error")).to_have_text(hooks["PermissionDenied"]["reason"])
    stop = rows.nth(1)
    expect(stop).to_have_class("timeline-event kind-event failed")
    expect(stop.locator(".event-error")).to_contain_text("rate_limit\n429")


def test_a_later_page_puts_each_subagent_under_the_call_that_names_it(
    page: Page, dsn: str, start_api
) -> None:
    """The first page alone cannot tell two running Explore subagents apart (the second call's one started
    first); the calls' results on the next page name them, and each moves under its own call."""
    migrate(dsn)
    add_session(dsn, "acme", "s-1", status="completed", subagents=2)
    s = Session(dsn, "s-1", ago(minutes=10))
    first, second = ("f1f1f1f1f1f1f1f1", "Explore"), ("f2f2f2f2f2f2f2f2", "Explore")
    for offset, tool_use_id, what in ((0, "tu-1", "First"), (0.1, "tu-2", "Second")):
        s.call(offset, None, "Agent", tool_use_id, {"subagent_type": "Explore", "description": what})
    s.event(0.2, "SubagentStart", second)
    s.event(0.3, "SubagentStart", first)
    reads = 55  # 110 events of the first subagent: the calls' results are on the second page (of 100)
    sql(
        dsn,
        """INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type,
                                       tool_name, source, payload)
           SELECT 'acme', gen_random_uuid(), t, t, 's-1', kind, 'Read', 'hook',
                  jsonb_build_object('hook_event_name', kind, 'session_id', 's-1', 'tool_name', 'Read',
                                     'tool_use_id', 'tu-read-' || n, 'agent_id', $2::text,
                                     'agent_type', 'Explore',
                                     'tool_input', jsonb_build_object('file_path', '/data/' || n || '.csv'))
           FROM generate_series(1, $3) n,
                LATERAL (VALUES ('PreToolUse', interval '0'), ('PostToolUse', interval '200 ms')) e(kind, d),
                LATERAL (SELECT $1::timestamptz + n * interval '1 s' + d AS t) at""",
        s.at(1),
        first[0],
        reads,
    )
    s.event(reads + 2, "SubagentStop", second)
    s.event(reads + 3, "SubagentStop", first)
    for offset, tool_use_id, agent in ((reads + 4, "tu-1", first), (reads + 5, "tu-2", second)):
        s.event(offset, "PostToolUse", tool_name="Agent", tool_use_id=tool_use_id,
                tool_input={"subagent_type": "Explore"}, tool_response={"agentId": agent[0]})  # fmt: skip
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    card(page, "s-1").click()
    more = page.get_by_role("button", name="Load more events")
    more.click()
    expect(more).to_be_hidden()

    top = items(page.locator("#detail .timeline-body > ol.events"))
    expect(top).to_have_count(4)
    expect(top.nth(0).locator(".event-subject")).to_have_text("First")
    expect(top.nth(1)).to_have_attribute("data-agent-id", first[0])
    expect(top.nth(2).locator(".event-subject")).to_have_text("Second")
    expect(top.nth(3)).to_have_attribute("data-agent-id", second[0])
    expect(own(span(page, first[0]))).to_have_count(reads + 2)
    expect(own(span(page, second[0]))).to_have_count(2)
    expect(top.nth(0).locator(".duration")).to_have_text(f"{reads + 4}.0 s")


def test_a_multiedit_without_a_patch_shows_each_edit_as_a_diff(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1")
    s = Session(dsn, "s-1", ago(minutes=5))
    edits = [{"old_string": "a = 1\n", "new_string": "a = 2\n"}, {"old_string": "b()", "new_string": ""}]
    s.call(0, None, "MultiEdit", "tu-m", {"file_path": "/home/dev/proj/x.py", "edits": edits})
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    card(page, "s-1").click()
    diff = page.locator("#detail .timeline-event .diff span")
    expect(diff).to_have_text(["-a = 1", "+a = 2", "-b()"])


def test_a_backfilled_claude_code_session_nests_its_subagent(
    page: Page, dsn: str, start_api, tmp_path
) -> None:
    """Claude Code's own transcripts (the session and its Explore subagent), imported by ``hookdb backfill``
    with the usage ledger it builds from them: the subagent's span is under its Agent call, with its share."""
    root = tmp_path / "projects" / "-home-dev-proj"
    shutil.copytree(corpus.transcript_path().parent, root)
    migrate(dsn)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hookdb"), "backfill", "claude-code", str(tmp_path / "projects"),
         "--dsn", dsn],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    api = serve(start_api, dsn, default="token-d")
    sign_in(page, api.url, "token-d")
    card(page, corpus.SESSION_ID).click()

    explore = span(page, corpus.AGENT_ID)
    call = page.locator("#detail li.timeline-event", has=page.locator(".tool-name", has_text="Agent"))
    expect(call.locator(".event-subject")).to_have_text("Find store reporting gaps")
    expect(explore.locator(":scope > .span-head .span-what")).to_have_text(
        re.compile(r"^In data/sales_q3\.csv, find")
    )
    assert call.evaluate("li => li.nextElementSibling.dataset.agentId") == corpus.AGENT_ID
    expect(explore.locator(":scope > .span-head .span-toggle")).to_have_text("Explore")
    expect(own(explore).locator(".tool-name")).to_have_text(["Bash"])
    expect(own(explore).locator(".event-type").first).to_have_text("SubagentStart")
    expect(own(explore).locator(".event-type").last).to_have_text("SubagentStop")
    # Its own usage is its row of the usage by agent table, and only its requests are inside.
    row = page.locator("#detail .agents tbody tr.agent-sub td")
    expect(row.first).to_have_text(f"Explore · {corpus.AGENT_ID}")
    requests, tokens_, cost = (row.nth(i).text_content() for i in (1, 2, 4))
    expect(explore.locator(":scope > .span-usage")).to_contain_text(
        f"{corpus.AGENT_ID} · {requests} requests · {tokens_} tokens: "
    )
    expect(explore.locator(":scope > .span-usage")).to_contain_text(f" · {cost}")
    expect(own(explore).locator(".request-usage")).to_have_count(int(requests or 0))
    expect(page.locator("#detail li.subagent")).to_have_count(1)
    call.evaluate("li => li.scrollIntoView()")
    screenshot(page, "detail-backfilled-subagent")
