"""The web page shows the sessions of tests/test_read_odd_payloads.py: every event a row with its subject and
its payload (an integer of 5,000 digits as its digits, a payload too deep to write out said so), no script
error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import test_read_odd_payloads as odd
from playwright.sync_api import Locator, Page, expect
from test_web import card, page, serve, sign_in

from conftest import migrate

__all__ = ["page"]  # the fixture, from tests/test_web.py

NUMBERS = ["start", "big_nested", "big_with_nul", "e5000_with_nul", "tiny", "stop"]
TOO_DEEP = "(this payload is nested too deep to show here: the JSON export holds it whole)"


def payload(row: Locator) -> Locator:
    row.locator(".payload summary").click()
    return row.locator("pre.json")


def test_the_page_shows_every_odd_event_and_its_payload(page: Page, dsn: str, start_api: Any) -> None:
    migrate(dsn)
    with ThreadPoolExecutor(1) as pool:  # run_sql's asyncio.run, beside Playwright's loop (tests/test_web.py)
        pool.submit(odd.store, dsn).result()
        pool.submit(odd.store, dsn, "odd-numbers", NUMBERS, "{}").result()
    api = serve(start_api, dsn, acme="token-a")
    sign_in(page, api.url, "token-a")

    card(page, odd.SESSION).click()
    rows = page.locator("#detail .timeline-event")
    expect(rows).to_have_count(len(odd.EVENTS))
    names = [name for name, *_ in odd.EVENTS]
    row = {name: rows.nth(i) for i, name in enumerate(names)}
    expect(row["big_nested"].locator(".event-subject")).to_have_text("echo big")
    expect(row["deep_5000"].locator(".event-subject")).to_have_text("echo deep")
    expect(row["nul"].locator(".event-subject")).to_have_text("before\x00after")
    expect(payload(row["deep_300"])).to_contain_text('"bottom"')
    expect(payload(row["deep_5000"])).to_have_text(TOO_DEEP)
    expect(payload(row["deep_at_top"])).to_have_text(TOO_DEEP)
    expect(payload(row["escapes"])).to_contain_text(r'"message": "\\u0000 and \\ud800 as text"')
    expect(row["stop"]).to_contain_text("All odd payloads read.")

    card(page, "odd-numbers").click()
    rows = page.locator("#detail .timeline-event")
    expect(rows).to_have_count(len(NUMBERS))
    expect(payload(rows.nth(1))).to_contain_text(f'"n": {odd.BIG}')  # every digit, not Infinity or null
    expect(payload(rows.nth(2))).to_contain_text(f'"n": {odd.BIG}')
    expect(payload(rows.nth(3))).to_contain_text('"n": 1' + "0" * 5000)
    tiny = payload(rows.nth(4))
    expect(tiny).to_contain_text('"b": 0.' + "0" * 399 + "1")  # 1E-400 as jsonb writes it, not 0
    expect(tiny).to_contain_text('"c": 1.5e-300')
