"""The web page, in a real browser (Chromium through Playwright) against a real ``hookdb api`` process.

Sessions are seeded with SQL as the superuser; each test checks what a user sees: cards and their
badges, the detail view, live changes, the outage notice, and that an agent's report cannot run script.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pg import StoppablePostgres

from conftest import migrate, run_sql, wait_for
from fixtures import corpus

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run must install it", pytrace=False)
    pytest.skip(
        f"SKIPPED LOUDLY: no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=15_000)

CARDS = "#session-list [data-session-id]"


# -- Fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture
def page(dsn: str) -> Iterator[Page]:
    """A fresh browser; the test fails on a script error or a Content-Security-Policy violation.

    Playwright's sync API keeps its asyncio loop marked as running in this thread, where ``run_sql``
    (asyncio.run) then refuses to run: the browser starts after the ``dsn`` fixture's database and stops
    before it is dropped, and the tests run their SQL through :func:`sql` (another thread).
    """
    # Playwright runs its own asyncio loop: one of the standard kind, whatever policy trio-asyncio (imported
    # by other tests in this process) has installed.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        yield from _browser_page()
    finally:
        asyncio.set_event_loop_policy(policy)


def _browser_page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: "Content Security Policy" in msg.text and problems.append(f"CSP: {msg.text}"),
        )
        yield page
        browser.close()
    assert not problems


def sql(dsn: str, statement: str, *args: Any) -> list[Any]:
    """``run_sql`` on a thread of its own (see :func:`page`)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run_sql, dsn, statement, *args).result()


def add_session(
    dsn: str,
    tenant: str,
    session_id: str,
    *,
    status: str = "running",
    model: str | None = "claude-sonnet-4-5",
    agent_type: str | None = "main",
    started_at: datetime | None = None,
    cost: str | None = None,
    qa_score: float | None = None,
    reports: int = 0,
    subagents: int = 0,
) -> None:
    started = started_at or datetime.now(UTC)
    meta = {} if qa_score is None else {"qa_score": qa_score}
    sql(
        dsn,
        """INSERT INTO sessions (tenant_id, session_id, status, status_at, model, agent_type, cwd, source,
                                 started_at, updated_at, subagent_count, report_count, cost_usd, meta)
           VALUES ($1, $2, $3, $4, $5, $6, '/work/project', 'startup', $4, $4, $7, $8, $9::numeric,
                   $10::jsonb)""",
        tenant,
        session_id,
        status,
        started,
        model,
        agent_type,
        subagents,
        reports,
        cost,
        json.dumps(meta),
    )


def add_report(dsn: str, tenant: str, session_id: str, path: str, content: str) -> None:
    sql(
        dsn,
        """INSERT INTO reports (tenant_id, session_id, path, report_type, content, sha256, word_count,
                                written_at, event_id)
           VALUES ($1, $2, $3, 'report', $4, 'x', $5, now(), gen_random_uuid())""",
        tenant,
        session_id,
        path,
        content,
        len(content.split()),
    )


def add_event(
    dsn: str,
    tenant: str,
    session_id: str,
    event_type: str,
    at: datetime,
    tool_name: str | None = None,
    *,
    received_at: datetime | None = None,
    event_id: str | None = None,
    **payload: Any,
) -> None:
    body = {"session_id": session_id, "hook_event_name": event_type, **payload}
    if tool_name:
        body["tool_name"] = tool_name
    sql(
        dsn,
        """INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type,
                                       tool_name, source, payload)
           VALUES ($1, coalesce($7::uuid, gen_random_uuid()), $2, coalesce($8::timestamptz, $2), $3, $4,
                   $5, 'hook', $6::jsonb)""",
        tenant,
        at,
        session_id,
        event_type,
        tool_name,
        json.dumps(body),
        event_id,
        received_at,
    )


def add_request(
    dsn: str,
    tenant: str,
    session_id: str,
    request_id: str,
    at: datetime,
    model: str | None,
    tokens: tuple[int, int, int, int, int],
    cost: str | None,
    *,
    agent: str = "main",
    agent_type: str | None = None,
) -> None:
    """A model API request in the usage ledger, and the session's totals, as the collector keeps them."""
    sql(
        dsn,
        """INSERT INTO usage_ledger (tenant_id, session_id, request_id, agent, agent_type, model,
                                     input_tokens, output_tokens, cache_read_tokens, cache_creation_5m_tokens,
                                     cache_creation_1h_tokens, cost_usd, cost_source, at, sources)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::numeric,
                   CASE WHEN $12 IS NULL THEN 'unknown' ELSE 'reported' END, $13, '{transcript}')""",
        tenant, session_id, request_id, agent, agent_type, model, *tokens, cost, at,
    )  # fmt: skip
    sql(
        dsn,
        """UPDATE sessions s SET input_tokens = t.i, output_tokens = t.o, cache_read_tokens = t.r,
                  cache_creation_5m_tokens = t.w5, cache_creation_1h_tokens = t.w1, cost_usd = t.cost,
                  cost_source = t.source, models = t.models
           FROM (SELECT sum(input_tokens) AS i, sum(output_tokens) AS o, sum(cache_read_tokens) AS r,
                        sum(cache_creation_5m_tokens) AS w5, sum(cache_creation_1h_tokens) AS w1,
                        sum(cost_usd) AS cost, max(cost_source) AS source,
                        array_agg(DISTINCT model) FILTER (WHERE model IS NOT NULL) AS models
                 FROM usage_ledger WHERE tenant_id = $1 AND session_id = $2) t
           WHERE s.tenant_id = $1 AND s.session_id = $2""",
        tenant,
        session_id,
    )


def add_hook_event(dsn: str, tenant: str, session_id: str, at: datetime, payload: dict[str, Any]) -> None:
    """A real hook payload (tests/fixtures/hooks) as an event of ``session_id``."""
    body = {k: v for k, v in payload.items() if k != "session_id"}
    add_event(dsn, tenant, session_id, body.pop("hook_event_name"), at, body.pop("tool_name", None), **body)


def screenshot(page: Page, name: str) -> None:
    """Saved to $HOOKDB_SCREENSHOTS/<name>.png when that is set, for people to look at."""
    if folder := os.environ.get("HOOKDB_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)


def serve(start_api: Any, dsn: str, *extra: str, **tokens: str) -> Any:
    """``hookdb api`` on ``dsn`` (tokens by tenant), once its live feed listens: until then the stream
    answers 503 and the page would wait out Retry-After (5 s) before it is live. The rows the test inserted
    directly are summed into the dashboard's summary first."""
    sql(dsn, "SELECT hookdb_fill_summary(t) FROM (SELECT DISTINCT tenant_id FROM hook_audit_log) e(t)")
    api = start_api(dsn, tokens, *extra)
    wait_for(lambda: api.events("feed.listening"))
    return api


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Show sessions").click()


def card(page: Page, session_id: str) -> Any:
    return page.locator(f'#session-list [data-session-id="{session_id}"]')


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


# -- Tests ---------------------------------------------------------------------------------------------


def test_cards_show_only_the_tokens_tenant(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(
        dsn,
        "acme",
        "acme-1",
        status="completed",
        model="claude-opus-4-1",
        cost="1.25",
        qa_score=87,
        reports=2,
        subagents=1,
        started_at=ago(minutes=3),
    )
    add_session(dsn, "acme", "acme-2", status="failed", model="claude-haiku-4-5", started_at=ago(hours=2))
    add_session(dsn, "globex", "globex-1", model="gpt-5", cost="0.5")
    api = serve(start_api, dsn, acme="token-a", globex="token-b")

    page.goto(api.url)
    expect(page.get_by_label("API token")).to_be_visible()  # no token yet: the form asks for one
    sign_in(page, api.url, "token-a")

    expect(page.locator(CARDS)).to_have_count(2)
    first = card(page, "acme-1")
    expect(first.locator(".status-badge")).to_have_text("completed")
    expect(first).to_contain_text("claude-opus-4-1")
    expect(first).to_contain_text("$1.25")
    expect(first).to_contain_text("QA 87")
    expect(first).to_contain_text("2 reports")
    expect(first).to_contain_text("1 subagent")
    expect(first).to_contain_text("3 min ago")
    expect(card(page, "acme-2").locator(".status-badge")).to_have_text("failed")
    expect(card(page, "acme-2")).to_contain_text("2 h ago")
    expect(page.locator(CARDS).first).to_have_attribute("data-session-id", "acme-1")  # newest first
    expect(page.locator("#session-list")).not_to_contain_text("globex")
    assert page.evaluate("localStorage.getItem('hookdb.token')") == "token-a"

    page.reload()  # the token is remembered
    expect(card(page, "acme-1")).to_be_visible()

    page.get_by_role("button", name="Change token").click()
    page.get_by_label("API token").fill("no-such-token")
    page.get_by_role("button", name="Show sessions").click()
    expect(page.get_by_text("The token was not accepted.")).to_be_visible()
    expect(page.locator(CARDS)).to_have_count(0)

    page.get_by_label("API token").fill("token-b")
    page.get_by_role("button", name="Show sessions").click()
    expect(page.locator(CARDS)).to_have_count(1)
    expect(card(page, "globex-1")).to_contain_text("gpt-5")
    expect(page.locator("#session-list")).not_to_contain_text("acme")


def test_infinite_scroll_loads_the_next_pages(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    sql(
        dsn,
        """INSERT INTO sessions (tenant_id, session_id, status, started_at, updated_at, model)
           SELECT 'acme', format('s-%s', lpad(i::text, 3, '0')), 'completed',
                  now() - i * interval '1 minute', now() - i * interval '1 minute', 'claude-sonnet-4-5'
           FROM generate_series(1, 120) AS i""",
    )
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")

    cards = page.locator(CARDS)
    expect(cards).to_have_count(50)
    expect(cards.first).to_have_attribute("data-session-id", "s-001")
    expect(card(page, "s-051")).to_have_count(0)

    cards.last.scroll_into_view_if_needed()
    expect(cards).to_have_count(100)
    expect(cards.nth(50)).to_have_attribute("data-session-id", "s-051")

    cards.last.scroll_into_view_if_needed()
    expect(cards).to_have_count(120)
    expect(cards.last).to_have_attribute("data-session-id", "s-120")
    expect(page.get_by_text("No more sessions.")).to_be_visible()


def test_detail_shows_reports_agent_states_and_timeline(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1", status="completed", cost="0.42", reports=1)
    add_session(dsn, "acme", "s-2")
    add_report(
        dsn,
        "acme",
        "s-1",
        "/work/project/reports/summary.md",
        "# Findings\n\nThe build is **green** and *fast*; run `make test`.\n\n"
        "- first item\n- second item\n  - nested item\n\n"
        "> quoted line\n\n```python\nprint('hi')\n```\n\nSee [the docs](https://example.com/docs).\n",
    )
    sql(
        dsn,
        """INSERT INTO agent_states (tenant_id, session_id, agent_id, path, agent_type, content, sha256,
                                     updated_at)
           VALUES ('acme', 's-1', 'agent-7', '.claude/state.json', 'reviewer', '{"step":3,"done":false}',
                   'x', now())""",
    )
    start = ago(minutes=5)
    add_event(dsn, "acme", "s-1", "SessionStart", start)
    add_event(dsn, "acme", "s-1", "PreToolUse", start + timedelta(seconds=1), "Bash", tool_use_id="tu-1")
    add_event(dsn, "acme", "s-1", "PostToolUse", start + timedelta(seconds=2.5), "Bash", tool_use_id="tu-1")
    sql(
        dsn,
        """INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type,
                                       source, payload)
           SELECT 'acme', gen_random_uuid(), $1::timestamptz + i * interval '1 second', now(), 's-1',
                  'Notification', 'hook', jsonb_build_object('n', i)
           FROM generate_series(1, 120) AS i""",
        start + timedelta(seconds=2),
    )
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")

    card(page, "s-1").click()
    detail = page.locator("#detail")
    expect(detail.locator(".status-badge")).to_have_text("completed")
    report = detail.locator(".report")
    expect(report.get_by_role("heading", name="Findings")).to_be_visible()
    expect(report.locator("strong")).to_have_text("green")
    expect(report.locator("em")).to_have_text("fast")
    expect(report.locator("p code")).to_have_text("make test")
    expect(report.locator(":scope > ul > li")).to_have_count(2)
    expect(report.locator("ul ul > li")).to_have_text("nested item")
    expect(report.locator("blockquote")).to_have_text("quoted line")
    expect(report.locator("pre code")).to_have_text("print('hi')")
    docs = report.get_by_role("link", name="the docs")
    expect(docs).to_have_attribute("href", "https://example.com/docs")
    expect(docs).to_have_attribute("rel", "noopener noreferrer")
    expect(detail.locator(".agent-state pre")).to_have_text('{\n  "step": 3,\n  "done": false\n}')
    expect(detail.locator(".agent-state")).to_contain_text("agent-7")

    events = detail.locator(".timeline-event")
    expect(events).to_have_count(99)  # 100 events: the tool call's start and end share a row
    expect(events.nth(0)).to_contain_text("SessionStart")
    expect(events.nth(1)).to_contain_text("PreToolUse → PostToolUse")
    expect(events.nth(1).locator(".tool-name")).to_have_text("Bash")
    expect(events.nth(1).locator(".duration")).to_have_text("1.5 s")
    expect(events.nth(2)).to_contain_text("Notification")
    page.get_by_role("button", name="Load more events").click()
    expect(events).to_have_count(122)
    expect(page.get_by_role("button", name="Load more events")).to_be_hidden()

    card(page, "s-2").click()  # another session replaces the detail
    expect(detail.get_by_text("No reports.")).to_be_visible()
    expect(detail.locator(".timeline-event")).to_have_count(0)


def test_a_report_cannot_run_script(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    evil = "evil<b>bold<img src=x onerror=window.__pwned=4>"  # ids and paths are agent-chosen text too
    add_session(dsn, "acme", evil, model="<i>model</i>")
    add_report(
        dsn,
        "acme",
        evil,
        "/work/project/reports/<i>evil</i>.md",
        '# Hi\n<script>window.__pwned=1</script>\n<img src=x onerror="window.__pwned=2">\n\n'
        "[x](javascript:window.__pwned=3) and [y](data:text/html,<script>alert(1)</script>)\n",
    )
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")

    expect(card(page, evil)).to_contain_text(evil)  # shown as text
    expect(card(page, evil)).to_contain_text("<i>model</i>")
    card(page, evil).click()
    report = page.locator("#detail .report")
    expect(report.get_by_role("heading", name="Hi")).to_be_visible()
    expect(report).to_contain_text("<script>window.__pwned=1</script>")
    expect(report).to_contain_text('<img src=x onerror="window.__pwned=2">')
    expect(report).to_contain_text("[x](javascript:window.__pwned=3)")  # not a link: the text as written
    expect(page.locator("#detail")).to_contain_text("/work/project/reports/<i>evil</i>.md")
    expect(page.locator("body").locator("script, img, iframe, b, i, [onerror]")).to_have_count(0)
    expect(report.locator("a")).to_have_count(0)  # no link to a javascript: or data: URL
    report.get_by_text("[x](javascript:window.__pwned=3)", exact=False).click()
    assert page.evaluate("window.__pwned") is None


def test_new_sessions_and_status_changes_arrive_live(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "old", started_at=ago(minutes=10))
    api = serve(start_api, dsn, acme="token-a", globex="token-b")
    sign_in(page, api.url, "token-a")
    expect(page.locator(CARDS)).to_have_count(1)
    expect(page.locator("#live-state")).to_have_text("Live")

    add_session(dsn, "globex", "someone-elses")
    add_session(dsn, "acme", "fresh", model="claude-opus-4-1", cost="0.01")
    expect(page.locator(CARDS)).to_have_count(2)
    expect(page.locator(CARDS).first).to_have_attribute("data-session-id", "fresh")
    expect(card(page, "fresh").locator(".status-badge")).to_have_text("running")
    expect(card(page, "fresh")).to_contain_text("claude-opus-4-1")
    expect(page.locator("#session-list")).not_to_contain_text("someone-elses")  # it came first: not for us

    card(page, "old").click()
    expect(page.locator("#detail .status-badge")).to_have_text("running")
    sql(dsn, "UPDATE sessions SET status = 'completed', status_at = now() WHERE session_id = 'old'")
    expect(card(page, "old").locator(".status-badge")).to_have_text("completed")
    expect(page.locator("#detail .status-badge")).to_have_text("completed")
    expect(card(page, "fresh").locator(".status-badge")).to_have_text("running")


def test_filters_reload_the_list_and_apply_to_live_sessions(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "opus-failed", status="failed", model="claude-opus-4-1", started_at=ago(days=3))
    add_session(dsn, "acme", "opus-running", model="claude-opus-4-1", started_at=ago(hours=1))
    add_session(dsn, "acme", "haiku-failed", status="failed", model="claude-haiku-4-5")
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    expect(page.locator(CARDS)).to_have_count(3)
    expect(page.locator("#live-state")).to_have_text("Live")

    page.get_by_role("tab", name="Filters").click()
    page.get_by_label("failed").check()
    page.get_by_label("Model").fill("claude-opus-4-1")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("tab", name="Filters (2)")).to_be_visible()
    expect(page.locator(CARDS)).to_have_count(1)
    expect(card(page, "opus-failed")).to_be_visible()

    add_session(dsn, "acme", "opus-running-2", model="claude-opus-4-1")  # does not match: stays out
    add_session(dsn, "acme", "opus-failed-2", status="failed", model="claude-opus-4-1")
    expect(page.locator(CARDS)).to_have_count(2)
    expect(page.locator(CARDS).first).to_have_attribute("data-session-id", "opus-failed-2")
    expect(card(page, "opus-running-2")).to_have_count(0)

    page.get_by_role("tab", name="Filters").click()
    started_after = ago(days=1).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_label("Started after").fill(started_after)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(CARDS)).to_have_count(1)
    expect(card(page, "opus-failed-2")).to_be_visible()

    page.get_by_role("tab", name="Filters (3)").click()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator(CARDS)).to_have_count(5)


def test_database_outage_shows_the_notice_and_recovers(
    page: Page, private_pg: StoppablePostgres, start_api
) -> None:
    sql(private_pg.dsn, "CREATE DATABASE hookdb_web")
    dsn = with_database(private_pg.dsn, "hookdb_web")
    migrate(dsn)
    add_session(dsn, "acme", "before", status="completed", model="claude-opus-4-1")
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    notice = page.locator("#unavailable")
    expect(card(page, "before")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("Live")
    expect(notice).to_be_hidden()

    private_pg.stop()
    expect(notice).to_be_visible()
    expect(notice).to_have_text("Session history is unavailable. Retrying…")

    private_pg.start()
    expect(notice).to_be_hidden(timeout=30_000)
    expect(card(page, "before").locator(".status-badge")).to_have_text("completed")
    expect(page.locator("#live-state")).to_have_text("Live", timeout=30_000)
    add_session(dsn, "acme", "after")  # the stream is back: a new session shows up without a reload
    expect(page.locator(CARDS).first).to_have_attribute("data-session-id", "after")


def test_the_page_loads_with_the_database_down(page: Page, private_pg: StoppablePostgres, start_api) -> None:
    sql(private_pg.dsn, "CREATE DATABASE hookdb_web")
    dsn = with_database(private_pg.dsn, "hookdb_web")
    migrate(dsn)
    add_session(dsn, "acme", "waiting", model="claude-opus-4-1")
    api = serve(start_api, dsn, acme="token-a")
    private_pg.stop()

    sign_in(page, api.url, "token-a")
    expect(page.locator("#unavailable")).to_be_visible()
    expect(page.locator(CARDS)).to_have_count(0)
    private_pg.start()
    expect(card(page, "waiting")).to_be_visible(timeout=30_000)
    expect(page.locator("#unavailable")).to_be_hidden()


def test_the_page_rides_out_an_api_restart(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "before")
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    expect(card(page, "before")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("Live")

    api.stop()  # the network fails: no answer at all
    expect(page.locator("#unavailable")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("Offline")
    add_session(dsn, "acme", "while-away")

    port = urlsplit(api.url).port
    serve(start_api, dsn, "--listen", f"127.0.0.1:{port}", acme="token-a")
    expect(page.locator("#unavailable")).to_be_hidden()
    expect(page.locator(CARDS).first).to_have_attribute("data-session-id", "while-away")
    expect(page.locator("#live-state")).to_have_text("Live")
    add_session(dsn, "acme", "after")
    expect(page.locator(CARDS).first).to_have_attribute("data-session-id", "after")


def test_a_report_renders_github_flavoured_markdown(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1", reports=1)
    add_report(
        dsn,
        "acme",
        "s-1",
        "/work/project/reports/analysis.md",
        "# Q3\n\n| Region | Revenue (€) | Share |\n|:---|---:|:---:|\n| North | 402,118.20 | 31.3% |\n"
        "| South | 351,004.75 | 27.3% |\n\n- [x] load the data\n- [ ] check the gaps\n- plain item\n\n"
        "```sql\nSELECT 1;\n```\n\n~~old~~ and a bare https://example.com/x link.\n",
    )
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    card(page, "s-1").click()

    report = page.locator("#detail .report")
    table = report.locator("table")
    expect(table).to_have_count(1)
    expect(table.locator("thead th")).to_have_text(["Region", "Revenue (€)", "Share"])
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.locator("tbody tr").first.locator("td")).to_have_text(["North", "402,118.20", "31.3%"])
    expect(table.locator("td.align-right")).to_have_count(2)  # alignment by class: no style attribute
    expect(report.locator("[style]")).to_have_count(0)

    boxes = report.get_by_role("checkbox")
    expect(boxes).to_have_count(2)
    expect(boxes.nth(0)).to_be_checked()
    expect(boxes.nth(1)).not_to_be_checked()
    expect(boxes.nth(0)).to_be_disabled()
    expect(report.locator("li.task-list-item").nth(1)).to_have_text("check the gaps")
    expect(report.locator("li:not(.task-list-item)")).to_have_text("plain item")

    expect(report.locator(".code-block .code-lang")).to_have_text("sql")
    expect(report.locator(".code-block pre code.language-sql")).to_have_text("SELECT 1;")
    expect(report.locator("s")).to_have_text("old")
    expect(report.get_by_role("link", name="https://example.com/x")).to_have_attribute(
        "href", "https://example.com/x"
    )
    expect(report.get_by_role("heading", name="Q3")).to_have_js_property("tagName", "H4")


def test_the_timeline_shows_a_failed_bash_and_an_edits_diff(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1", status="failed")
    hooks = corpus.hook_payloads()
    failure = hooks["PostToolUseFailure"]
    bash = {**failure, "hook_event_name": "PreToolUse"}
    del bash["error"], bash["is_interrupt"], bash["duration_ms"]
    edit_end = corpus.large_edit_payload(size=2_000)
    edit_start = {k: v for k, v in edit_end.items() if k not in ("tool_response", "duration_ms")}
    edit_start["hook_event_name"] = "PreToolUse"
    start = ago(minutes=5)
    add_hook_event(dsn, "acme", "s-1", start, hooks["SessionStart"])
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=1), hooks["UserPromptSubmit"])
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=2), bash)
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=3.873), failure)
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=5), edit_start)
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=5.037), edit_end)
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=9), hooks["Stop"])
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    card(page, "s-1").click()

    rows = page.locator("#detail .timeline-event")
    expect(rows).to_have_count(5)
    expect(rows.nth(1)).to_contain_text("UserPromptSubmit")
    expect(rows.nth(1).locator(".event-subject")).to_contain_text("Analyse the Q3 sales in data/sales_q3.csv")

    failed = rows.nth(2)
    expect(failed).to_have_class("timeline-event kind-tool failed")
    expect(failed.locator(".tool-name")).to_have_text("Bash")
    expect(failed).to_contain_text("PreToolUse → PostToolUseFailure")
    expect(failed.locator(".event-subject")).to_have_text("python -m pytest tests/test_loader.py -q")
    expect(failed.locator(".duration")).to_have_text("1.9 s")
    error = failed.locator(".event-error")
    expect(error).to_contain_text("1 failed, 5 passed in 0.41s")
    assert error.evaluate(  # in the page's red
        """e => { const probe = document.createElement("span"); probe.style.color = "var(--failed)";
                  document.body.append(probe); const red = getComputedStyle(probe).color; probe.remove();
                  return getComputedStyle(e).color === red; }"""
    )

    edit = rows.nth(3)
    expect(edit.locator(".tool-name")).to_have_text("Edit")
    expect(edit.locator(".event-subject")).to_have_text("/home/dev/proj/src/sales/metrics.py")
    hunk = edit_end["tool_response"]["structuredPatch"][0]
    diff = edit.locator(".diff")
    expect(diff.locator(".diff-hunk")).to_have_text(
        f"@@ -{hunk['oldStart']},{hunk['oldLines']} +{hunk['newStart']},{hunk['newLines']} @@"
    )
    expect(diff.locator(".diff-add")).to_have_text(["+    if not values:", "+        return 0.0"])
    expect(diff.locator(".diff-ctx")).to_have_count(len(hunk["lines"]) - 2)
    expect(edit.locator(".event-error")).to_have_count(0)
    edit.scroll_into_view_if_needed()
    screenshot(page, "detail-diff")

    expect(rows.nth(4).locator(".event-subject")).to_contain_text("I've written the analysis")
    # Bars on one time axis: the failed Bash starts 2 s into the 9 s shown and lasts 1.873 s.
    left, width = failed.locator(".span-bar").evaluate("b => [b.style.left, b.style.width]")
    assert abs(float(left.rstrip("%")) - 2 / 9 * 100) < 0.1
    assert abs(float(width.rstrip("%")) - 1.873 / 9 * 100) < 0.1

    failed.scroll_into_view_if_needed()
    screenshot(page, "detail")
    payload = failed.locator("details.payload")
    expect(payload.locator("pre").nth(1)).to_be_hidden()
    payload.locator("summary").click()  # the payloads, one click away
    expect(payload.locator("pre").nth(1)).to_contain_text('"error": "Exit code 1')


def test_equal_timestamps_keep_the_order_they_were_received_in(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1")
    at = ago(minutes=5).replace(microsecond=0)
    end = at + timedelta(seconds=30)
    # Received in this order, at the same occurred_at; event ids in the opposite order.
    for n, (event_type, when) in enumerate(
        [("SessionStart", at), ("UserPromptSubmit", at), ("Stop", end), ("SessionEnd", end)]
    ):
        add_event(
            dsn,
            "acme",
            "s-1",
            event_type,
            when,
            received_at=when + timedelta(milliseconds=n),
            event_id=f"{9 - n:08d}-0000-0000-0000-000000000000",
        )
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")
    card(page, "s-1").click()
    types = page.locator("#detail .timeline-event .event-type")
    expect(types).to_have_text(["SessionStart", "UserPromptSubmit", "Stop", "SessionEnd"])

    # Pages of one event each break between the ties without skipping or repeating one.
    seen, cursor = [], None
    while True:
        query = "limit=1" + (f"&cursor={cursor}" if cursor else "")
        request = urllib.request.Request(
            f"{api.url}/api/sessions/s-1/events?{query}", headers={"Authorization": "Bearer token-a"}
        )
        with urllib.request.urlopen(request) as answer:
            body = json.load(answer)
        seen += [e["event_type"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["SessionStart", "UserPromptSubmit", "Stop", "SessionEnd"]


def test_the_overview_charts_the_tenants_stats(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    now = datetime.now(UTC)
    plan = [  # (id, status, model, cost, days ago)
        ("a", "completed", "claude-opus-4-1", "1.25", 1),
        ("b", "completed", "claude-opus-4-1", "0.75", 1),
        ("c", "failed", "claude-sonnet-4-5", "0.40", 3),
        ("d", "running", "claude-sonnet-4-5", None, 0),
        ("e", "completed", "claude-haiku-4-5", "0.10", 12),
        ("f", "ended", "claude-opus-4-1", "2.00", 45),  # outside the last 30 days
    ]
    for session_id, status, model, cost, days_ago in plan:
        started = now - timedelta(days=days_ago, minutes=5)
        add_session(dsn, "acme", session_id, status=status, model=model, cost=cost, started_at=started)
        for i in range(3 + days_ago % 4):
            add_event(dsn, "acme", session_id, "Notification", started + timedelta(seconds=i))
    add_session(dsn, "globex", "g", status="completed", model="gpt-5", cost="9.00")
    add_event(dsn, "globex", "g", "Notification", now - timedelta(minutes=1))
    sql(dsn, "UPDATE sessions SET meta = '{\"qa_score\": 80}' WHERE session_id IN ('a', 'c')")
    api = serve(start_api, dsn, acme="token-a", globex="token-b")
    sign_in(page, api.url, "token-a")

    def expected(days: int) -> dict[str, Any]:
        window = "now() - $1 * interval '1 day'"
        [sessions, cost] = sql(
            dsn,
            f"SELECT count(*), coalesce(sum(cost_usd), 0) FROM sessions WHERE tenant_id = 'acme' "
            f"AND started_at >= {window}",
            days,
        )[0]
        [events] = sql(
            dsn,
            f"SELECT count(*) FROM hook_audit_log WHERE tenant_id = 'acme' AND occurred_at >= {window}",
            days,
        )[0]
        models = sql(
            dsn,
            f"SELECT model, count(*), sum(cost_usd) FROM sessions WHERE tenant_id = 'acme' "
            f"AND started_at >= {window} GROUP BY model ORDER BY count(*) DESC, model",
            days,
        )
        return {"sessions": sessions, "cost": cost, "events": events, "models": models}

    overview = page.locator("#detail .dashboard")
    want = expected(30)
    assert want["sessions"] == 5
    expect(overview.locator(".total-sessions .tile-value")).to_have_text(str(want["sessions"]))
    expect(overview.locator(".total-events .tile-value")).to_have_text(str(want["events"]))
    expect(overview.locator(".total-cost .tile-value")).to_have_text(f"${want['cost']:.2f}")
    expect(overview.locator(".total-qa .tile-value")).to_have_text("80.0 (2)")
    expect(overview.locator(".sessions-per-day .chart-caption")).to_have_text(f"{want['sessions']} sessions")
    expect(overview.locator(".events-per-day .chart-caption")).to_have_text(f"{want['events']} events")
    expect(overview.locator(".by-status .chart-caption")).to_have_text("completed 3, failed 1, running 1")
    expect(overview.locator(".cost-by-model .chart-caption")).to_have_text(f"${want['cost']:.2f} in all")
    rows = overview.locator("table.models tbody tr")
    expect(rows).to_have_count(len(want["models"]))
    for row, (model, count, cost) in zip(rows.all(), want["models"], strict=True):
        expect(row.locator("td")).to_have_text([model, str(count), f"${cost or 0:.2f}"])
    charts = overview.locator(".chart .uplot canvas")
    # sessions, events, cost and tokens per day, by status, cost by model, projects, tools, QA scores
    expect(charts).to_have_count(9)
    for canvas in charts.all():  # each chart drew something
        assert canvas.evaluate(
            "c => c.width > 100 && c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v)"
        )
    screenshot(page, "dashboard")

    page.get_by_label("Range").select_option("7")
    want = expected(7)
    assert want["sessions"] == 4
    expect(overview.locator(".total-sessions .tile-value")).to_have_text(str(want["sessions"]))
    expect(overview.locator(".total-events .tile-value")).to_have_text(str(want["events"]))
    expect(overview.locator(".total-cost .tile-value")).to_have_text(f"${want['cost']:.2f}")
    expect(page.locator("#detail")).not_to_contain_text("gpt-5")
    screenshot(page, "list")

    card(page, "a").click()  # a session replaces the overview; back to none brings it again
    expect(overview).to_have_count(0)
    page.evaluate("location.hash = ''")
    expect(overview.locator(".total-sessions .tile-value")).to_have_text("5")


def test_a_card_says_what_the_session_was_and_the_detail_exports_it(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    start = ago(minutes=10)
    add_session(dsn, "acme", "s-shop", status="completed", cost="1.25", reports=1, started_at=start)
    add_session(dsn, "acme", "s-other", cost="0.05", started_at=ago(minutes=20))
    sql(
        dsn,
        "UPDATE sessions SET cwd = '/home/dev/shop', updated_at = $1 WHERE session_id = 's-shop'",
        start + timedelta(minutes=3, seconds=5),
    )
    add_event(dsn, "acme", "s-shop", "SessionStart", start, source="startup")
    add_event(
        dsn, "acme", "s-shop", "UserPromptSubmit", start + timedelta(seconds=1),
        prompt="Count the orders\nper region", git_branch="feature/orders",
    )  # fmt: skip
    add_event(dsn, "acme", "s-shop", "PreToolUse", start + timedelta(seconds=2), "Bash", tool_use_id="t1",
              tool_input={"command": "wc -l orders.csv"})  # fmt: skip
    add_event(dsn, "acme", "s-shop", "PostToolUse", start + timedelta(seconds=3), "Bash", tool_use_id="t1",
              tool_input={"command": "wc -l orders.csv"})  # fmt: skip
    add_report(dsn, "acme", "s-shop", "/home/dev/shop/reports/orders.md", "# Orders\n\n12 in North.\n")
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")

    shop = card(page, "s-shop")
    expect(shop.locator(".card-title")).to_have_text("Count the orders per region")
    expect(shop.locator(".card-project")).to_have_text("shop ⎇ feature/orders")
    expect(shop.locator(".duration")).to_have_text("3 min 5 s")
    expect(shop).to_contain_text("$1.25")
    expect(card(page, "s-other").locator(".card-title")).to_have_text("s-other")  # no prompt: the id
    expect(card(page, "s-other").locator(".card-project")).to_have_text("project")
    screenshot(page, "cards")

    page.get_by_role("tab", name="Filters").click()
    page.get_by_label("Project").fill("shop")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(CARDS)).to_have_count(1)
    expect(shop).to_be_visible()
    page.get_by_role("tab", name="Filters (1)").click()
    page.get_by_label("Project").fill("")
    page.get_by_label("Cost at most").fill("0.1")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(CARDS)).to_have_count(1)
    expect(card(page, "s-other")).to_be_visible()
    page.get_by_role("tab", name="Filters (1)").click()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator(CARDS)).to_have_count(2)

    page.get_by_role("tab", name="Sessions").click()
    shop.click()
    expect(page.locator("#detail .detail-id")).to_have_text("Count the orders per region")
    with page.expect_download() as got:
        page.get_by_role("button", name="Export JSON").click()
    download = got.value
    assert download.suggested_filename == "hookdb-session-s-shop.json"
    exported = json.loads(Path(download.path()).read_text())
    assert exported["session"]["session_id"] == "s-shop"
    assert exported["session"]["title"] == "Count the orders per region"
    assert [e["event_type"] for e in exported["events"]] == [
        "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse",
    ]  # fmt: skip
    assert [r["content"] for r in exported["reports"]] == ["# Orders\n\n12 in North.\n"]
    with page.expect_download() as got:
        page.get_by_role("button", name="Export Markdown").click()
    assert got.value.suggested_filename == "hookdb-session-s-shop.md"
    markdown = Path(got.value.path()).read_text()
    assert markdown.startswith("# Count the orders per region\n")
    assert "**Bash** `wc -l orders.csv` — 1.0 s" in markdown


def test_cards_and_the_detail_show_tokens_cost_agents_and_api_requests(
    page: Page, dsn: str, start_api
) -> None:
    migrate(dsn)
    add_session(dsn, "acme", "s-1", status="completed", subagents=1)
    add_session(dsn, "acme", "s-bare", started_at=ago(hours=1))
    hooks = corpus.hook_payloads()
    edit_end = corpus.large_edit_payload(size=600)
    edit_start = {k: v for k, v in edit_end.items() if k not in ("tool_response", "duration_ms")}
    edit_start["hook_event_name"] = "PreToolUse"
    start = ago(minutes=5)
    add_hook_event(dsn, "acme", "s-1", start, hooks["SessionStart"])
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=1), hooks["UserPromptSubmit"])
    add_request(dsn, "acme", "s-1", "req_1", start + timedelta(seconds=2), "claude-opus-4-5",
                (1200, 300, 10_000, 2000, 0), "0.0512")  # fmt: skip
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=3), edit_start)
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=3.5), edit_end)
    add_request(dsn, "acme", "s-1", "req_2", start + timedelta(seconds=4), "claude-haiku-4-5",
                (800, 120, 0, 0, 0), "0.0014", agent="a7f3", agent_type="Explore")  # fmt: skip
    add_request(dsn, "acme", "s-1", "req_3", start + timedelta(seconds=6), "claude-opus-4-5",
                (1500, 420, 12_000, 0, 0), "0.0374")  # fmt: skip
    add_hook_event(dsn, "acme", "s-1", start + timedelta(seconds=9), hooks["Stop"])
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")

    one = card(page, "s-1")
    # 1200+300+10000+2000 + 800+120 + 1500+420+12000 = 28340 tokens; $0.0512 + $0.0014 + $0.0374 = $0.09
    expect(one.locator(".tokens")).to_have_text("28.3k tokens")
    expect(one.locator(".cost")).to_have_text("$0.09 reported")
    expect(one.locator(".card-model")).to_contain_text("claude-haiku-4-5, claude-opus-4-5")
    expect(card(page, "s-bare").locator(".tokens")).to_have_count(0)
    one.click()

    agents = page.locator("#detail .agents tbody tr")
    expect(agents).to_have_count(2)
    expect(agents.nth(0).locator("td")).to_have_text(
        ["main", "2", "27.4k", "2.7k in · 720 out · 22k cache read · 2k cache write", "$0.09"]
    )
    expect(agents.nth(1).locator("td")).to_have_text(
        ["Explore · a7f3", "1", "920", "800 in · 120 out", "< $0.01"]
    )
    facts = page.locator("#detail .facts")
    expect(facts).to_contain_text("$0.09 (reported)")
    expect(facts).to_contain_text("28.3k (3.5k in · 840 out · 22k cache read · 2k cache write)")

    rows = page.locator("#detail .timeline-event")
    kinds = [
        "SessionStart", "UserPromptSubmit", "API request", "PreToolUse → PostToolUse", "API request",
        "API request", "Stop",
    ]  # fmt: skip
    expect(rows.locator(".event-type")).to_have_text(kinds)
    request = rows.nth(2)
    expect(request).to_have_class("timeline-event kind-request")
    expect(request.locator(".request-model")).to_have_text("claude-opus-4-5")
    expect(request.locator(".request-cost")).to_have_text("$0.05")
    expect(request.locator(".request-usage")).to_have_text(
        "13.5k tokens: 1.2k in · 300 out · 10k cache read · 2k cache write · $0.05 reported"
    )
    expect(rows.nth(4).locator(".request-model")).to_have_text("claude-haiku-4-5 · Explore")
    expect(rows.nth(3).locator(".diff")).to_be_visible()
    page.locator("#detail .agents").scroll_into_view_if_needed()
    screenshot(page, "detail-usage")
    rows.nth(3).scroll_into_view_if_needed()
    screenshot(page, "detail-requests")


def test_the_overview_charts_cost_tokens_projects_and_tool_calls(page: Page, dsn: str, start_api) -> None:
    migrate(dsn)
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    if now > datetime.now(UTC):
        now -= timedelta(days=1)
    plan = [  # (session, project, status, days ago, [(model, tokens, cost)])
        (
            "a",
            "shop",
            "completed",
            1,
            [("claude-opus-4-5", 5000, "0.50"), ("claude-haiku-4-5", 1000, "0.02")],
        ),
        ("b", "shop", "failed", 2, [("claude-opus-4-5", 3000, "0.30")]),
        (
            "c",
            "docs",
            "completed",
            2,
            [("claude-sonnet-4-5", 2000, "0.10"), ("claude-sonnet-4-5", 500, None)],
        ),
        ("d", "infra", "running", 0, [("claude-haiku-4-5", 4000, "0.04")]),
        ("old", "shop", "completed", 40, [("claude-opus-4-5", 9000, "9.00")]),  # outside the last 30 days
    ]
    for session_id, project, status, days_ago, requests in plan:
        started = now - timedelta(days=days_ago)
        add_session(dsn, "acme", session_id, status=status, started_at=started)
        sql(dsn, "UPDATE sessions SET cwd = $1 WHERE session_id = $2", f"/home/dev/{project}", session_id)
        for n, (model, tokens, cost) in enumerate(requests):
            add_request(dsn, "acme", session_id, f"r{n}", started + timedelta(minutes=n), model,
                        (tokens, 0, 0, 0, 0), cost)  # fmt: skip
    # Tool calls of a: Bash 1 s, 3 s (failed), 2 s; Read 0.5 s.
    calls = [("Bash", 1.0, False), ("Bash", 3.0, True), ("Bash", 2.0, False), ("Read", 0.5, False)]
    for n, (tool, seconds, failed) in enumerate(calls):
        at = now - timedelta(days=1) + timedelta(minutes=10 + n)
        add_event(dsn, "acme", "a", "PreToolUse", at, tool, tool_use_id=f"t{n}")
        end = "PostToolUseFailure" if failed else "PostToolUse"
        add_event(dsn, "acme", "a", end, at + timedelta(seconds=seconds), tool, tool_use_id=f"t{n}")
    add_session(dsn, "globex", "g", status="completed")
    add_request(dsn, "globex", "g", "r0", now, "gpt-5", (99_000, 0, 0, 0, 0), "99.00")
    api = serve(start_api, dsn, acme="token-a", globex="token-b")
    sign_in(page, api.url, "token-a")

    overview = page.locator("#detail .dashboard")
    [requests, tokens, cost] = sql(
        dsn,
        "SELECT count(*), sum(input_tokens), sum(cost_usd) FROM usage_ledger "
        "WHERE tenant_id = 'acme' AND at >= now() - interval '30 days'",
    )[0]
    assert (requests, tokens, cost) == (6, 15_500, Decimal("0.96"))
    expect(overview.locator(".total-tokens .tile-value")).to_have_text("15.5k")
    expect(overview.locator(".total-requests .tile-value")).to_have_text("6")
    expect(overview.locator(".cost-per-day .chart-caption")).to_have_text(
        "$0.96 in all, 1 request of unknown cost"
    )
    expect(overview.locator(".tokens-per-day .chart-caption")).to_have_text("15.5k tokens in 6 requests")
    expect(overview.locator(".sessions-per-day .chart-caption")).to_have_text("4 sessions")
    expect(overview.locator(".top-projects .chart-caption")).to_have_text(
        "shop $0.82, docs $0.10, infra $0.04"
    )
    expect(overview.locator(".tool-calls .chart-caption")).to_have_text("4 calls, 1 failure")
    tools = overview.locator("table.tools tbody tr")
    expect(tools).to_have_count(2)
    # Bash: 3 calls, 1 failed; durations 1, 2, 3 s: p50 2 s, p95 2.9 s (linear interpolation)
    expect(tools.nth(0).locator("td")).to_have_text(["Bash", "3", "1", "33.3%", "2.0 s", "2.9 s"])
    expect(tools.nth(1).locator("td")).to_have_text(["Read", "1", "0", "0.0%", "500 ms", "500 ms"])
    for name in ("cost-per-day", "tokens-per-day", "sessions-per-day"):
        legend = overview.locator(f".{name} .u-legend")
        expect(legend).to_be_visible()
    # The stacks: the cost chart has one layer per model, the sessions chart one per status.
    expect(overview.locator(".cost-per-day .u-legend .u-series")).to_have_count(4)  # the day, 3 models
    expect(overview.locator(".sessions-per-day .u-legend .u-series")).to_have_count(4)  # the day, 3 statuses
    charts = overview.locator(".chart .uplot canvas")
    expect(charts).to_have_count(8)  # no QA scores in this data
    for canvas in charts.all():
        assert canvas.evaluate(
            "c => c.width > 100 && c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v)"
        )
    expect(page.locator("#detail")).not_to_contain_text("gpt-5")
    screenshot(page, "dashboard-usage")
    tools.nth(1).scroll_into_view_if_needed()
    screenshot(page, "dashboard-tools")
