"""Benchmark of the web page: page load to first card, in Chromium against a real ``hookdb api``.

The data is bench_api's (``tests/seed.py`` sessions with their first prompts and ledger requests, on a
fresh database of one PostgreSQL server, embedded unless ``--dsn``): ``--sessions`` sessions of
``--events`` events each. A real ``hookdb api`` serves it. Each run opens a new browser context (an empty
cache, the token already in localStorage, as for a returning user), goes to ``/`` and records, in the
page's own clock from the start of the navigation, when the HTML was received, when the DOM was ready and
when the first ``GET /api/sessions`` was sent and how long it took (Resource Timing), and when the first
session card was in the list (a MutationObserver installed before the page's scripts run). Then the same
page is reloaded once in that context (a warm cache). Medians and p95 of ``--runs`` runs are printed, and
when each static file arrived on a cold load.

Run: ``.venv/bin/python tests/bench/bench_page.py [--sessions N] [--events E] [--runs R] [--dsn DSN]``;
about a minute with the defaults on 2 cores. Needs Chromium at /usr/bin/chromium. Not part of the pytest
run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, sync_playwright

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from bench_api import TENANT, TOKENS, _seed, make_data, migrate, running_api  # noqa: E402
from bench_spine import _progress, fresh_database, percentile, run_asyncio, start_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CARD = "#session-list [data-session-id]"
# Before the page's scripts: the token a returning user has, and a watch for the first card.
INIT = """
localStorage.setItem("hookdb.token", %s);
window.__firstCard = null;
new MutationObserver((_, watch) => {
  if (document.querySelector(%s)) { window.__firstCard = performance.now(); watch.disconnect(); }
}).observe(document, { childList: true, subtree: true });
"""
TIMES = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const list = performance.getEntriesByType("resource").find((r) => /\\/api\\/sessions\\?/.test(r.name));
  const files = performance.getEntriesByType("resource").filter((r) => r.name.includes("/static/"));
  return { html: nav.responseEnd, dom_ready: nav.domContentLoadedEventEnd, first_card: window.__firstCard,
           list_sent: list ? list.startTime : null,
           list_request: list ? list.responseEnd - list.startTime : null,
           files: Object.fromEntries(files.map((r) => [r.name, r.responseEnd])) };
}"""


def measure(context: BrowserContext, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One cold load and one warm reload: the page's timings of each, in ms from navigation start."""
    page = context.new_page()
    found: list[dict[str, Any]] = []
    for go in (lambda: page.goto(url), page.reload):
        go()
        page.wait_for_selector(CARD)
        page.wait_for_function("window.__firstCard !== null")
        found.append(page.evaluate(TIMES))
    page.close()
    return found[0], found[1]


def summary(label: str, runs: list[dict[str, Any]]) -> None:
    for key in ("html", "dom_ready", "list_sent", "list_request", "first_card"):
        values = sorted(r[key] for r in runs if r[key] is not None)
        if values:
            print(
                f"{label:5} {key:13} median {statistics.median(values):7.1f} ms   "
                f"p95 {percentile(values, 95):7.1f} ms   max {values[-1]:7.1f} ms   (n={len(values)})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions (default 10000)")
    parser.add_argument("--events", type=int, default=20, help="events per session (default 20)")
    parser.add_argument("--runs", type=int, default=20, help="page loads (default 20)")
    parser.add_argument(
        "--dsn", help="postgresql:// URI of a role that may create databases; default: embedded"
    )
    args = parser.parse_args(argv)
    data = make_data(args.sessions, args.events, 2, 2, 2)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hookdb-bench-page-")))
        _progress("starting PostgreSQL")
        admin_dsn, _ = start_server(args.dsn, workdir, stack)
        dsn = stack.enter_context(fresh_database(admin_dsn, "page", schema=False))
        migrate(dsn)
        _progress(f"seeding {args.sessions:,} sessions")
        run_asyncio(_seed(dsn, data))
        _api, url = stack.enter_context(running_api(dsn, workdir, None))
        _progress(f"hookdb api at {url}; {args.runs} page loads")
        # Playwright runs its own asyncio loop, of the standard kind whatever policy an import installed.
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        cold: list[dict[str, Any]] = []
        warm: list[dict[str, Any]] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            for run in range(args.runs + 1):  # the first unmeasured: the API's pool and plans warm up
                context = browser.new_context()
                context.add_init_script(INIT % (f'"{TOKENS[TENANT]}"', f"'{CARD}'"))
                first, again = measure(context, url)
                context.close()
                if run:
                    cold.append(first)
                    warm.append(again)
            browser.close()
    print(
        f"page load to first card, {args.sessions:,} sessions, {args.runs} runs (ms from navigation start):"
    )
    summary("cold", cold)
    summary("warm", warm)
    print("cold, each static file received (median ms from navigation start):")
    for name in cold[0]["files"]:
        ends = [r["files"][name] for r in cold if name in r["files"]]
        print(f"  {statistics.median(ends):7.1f} ms  {name.partition('/static/')[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
