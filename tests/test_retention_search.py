"""Retention takes an archived month's text out of search: the search documents made from a month's events
go when ``hookdb partitions maintain`` archives or drops the month, for every tenant, under row-level
security; a live month's, a late row's (while it is live) and reports' stay. Events sent to a real
collector, searched through a real ``hookdb api``, real ``hookdb partitions maintain --now`` runs as the
login that owns the tables (held to row-level security like any other) and as a superuser."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from test_collector import send_concurrently
from test_data_model import event
from test_retention import _db, maintain
from test_search import TOKENS, search, tool_call

from hookdb.collector.store import partitions

from conftest import migrate, run_sql, wait_for_rows

REAL_NOW = datetime.now(UTC)  # the collector stamps arrivals with its own clock
OLD = partitions.month_start(REAL_NOW, -8)  # archived (live from month -6)
GONE = partitions.month_start(REAL_NOW, -26)  # past the purge horizon (month -24): dropped unarchived
LIVE = partitions.month_start(REAL_NOW, -2)
OWNER = "hookdb_test_retention_owner"
WORDS = {  # word: (tenant, session, time), each in one tool output
    "alphasecretolivine": ("alpha", "a-old", OLD + timedelta(days=3)),
    "betasecretgarnet": ("beta", "b-old", OLD + timedelta(days=4)),
    "gonesecretbasalt": ("alpha", "a-gone", GONE + timedelta(days=2)),
    "livequartzite": ("alpha", "a-live", LIVE + timedelta(days=1)),
    "latefeldspar": ("alpha", "a-late", OLD + timedelta(days=5)),  # arrives now, claiming OLD
}
REPORT_WORD = "quokka"  # in a report written in a-old during OLD


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000


def found(api: Any, word: str) -> list[str]:
    tenant = WORDS[word][0] if word in WORDS else "alpha"
    return [s["session_id"] for s in search(api, word, tenant=tenant)]


def searchable(api: Any) -> set[str]:
    return {w for w in [*WORDS, REPORT_WORD] if found(api, w)}


def doc_count(dsn: str) -> int:
    return run_sql(dsn, "SELECT count(*) FROM search_docs")[0][0]


def event_docs_dated(dsn: str, month: datetime, but: str = "") -> int:
    """The event documents dated in ``month`` (by ``at``), not of session ``but``: what a run deletes."""
    return run_sql(
        dsn,
        "SELECT count(*) FROM search_docs WHERE at >= $1 AND at < $2 AND session_id <> $3 "
        "AND NOT 'report' = ANY(kinds)",
        month,
        partitions.month_start(month, 1),
        but,
    )[0][0]


def as_owner(dsn: str) -> str:
    """The DSN of a login (no superuser, no BYPASSRLS) that owns every hookdb table, as a deployment's
    retention runs; the first use makes it the owner."""
    run_sql(dsn, f"DO $$ BEGIN CREATE ROLE {OWNER} LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
    run_sql(dsn, f"ALTER ROLE {OWNER} NOSUPERUSER NOBYPASSRLS")
    run_sql(dsn, f"GRANT CREATE ON SCHEMA public TO {OWNER}")  # retention creates tables
    for (table,) in run_sql(
        dsn,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')",
    ):
        run_sql(dsn, f"ALTER TABLE {table} OWNER TO {OWNER}")
    return urlsplit(dsn)._replace(netloc=f"{OWNER}:@").geturl()


def line(output: str, start: str) -> str:
    [found] = [x for x in output.splitlines() if x.startswith(start)]
    return found


def run(admin: str, dsn: str, paths: dict[str, Path], now: datetime, *extra: str) -> tuple[str, str]:
    """A dry run, which must delete no document, then the run; their outputs."""
    before = run_sql(admin, "SELECT tenant_id, session_id, doc_key FROM search_docs ORDER BY 1, 2, 3")
    preview = maintain(dsn, paths, now, "--dry-run", *extra)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert run_sql(admin, "SELECT tenant_id, session_id, doc_key FROM search_docs ORDER BY 1, 2, 3") == before
    result = maintain(dsn, paths, now, *extra)
    assert "FAILED" not in result.stdout, result.stdout
    return preview.stdout, result.stdout


def counts(output: str) -> dict[str, int]:
    """Table -> the search documents its report line says it deletes (or would)."""
    return {
        m[1]: int(m[2])
        for m in re.finditer(
            r"^\S+(?: \S+)?\s+(hook_audit_log_y\d{4}m\d\d): .*; (\d+) search documents", output, re.M
        )
    }


@pytest.fixture
def recorded(dsn: str, start_collector: Any, socket_path: Path, start_api: Any, tmp_path: Path) -> Any:
    """Each word of WORDS in a tool output of its tenant's session at its time, and a report in a-old, sent
    to a real collector; every event but a-late's arrived on time (as if sent then: the collector stamps
    ``received_at`` now). OLD and GONE have their partitions, as when they were current. The API."""
    migrate(dsn)
    for month in (OLD, GONE):
        _db(dsn, lambda conn, m=month: partitions.create_month(conn, m))
    start_collector("--set", f'tenants.uids={{{os.getuid()} = ["alpha", "beta"]}}')
    report = tmp_path / "project" / "reports" / "findings.md"
    report.parent.mkdir(parents=True)
    report.write_text(f"# Findings\n\nThe {REPORT_WORD} population doubled.\n")
    at = OLD + timedelta(days=3, hours=1)
    clients: list[list[bytes]] = [
        [
            event(
                "UserPromptSubmit",
                {"prompt": "Write up the findings", "cwd": str(tmp_path)},
                session="a-old",
                tenant="alpha",
                at_ns=ns(at),
            ),
            event(
                "PostToolUse",
                {
                    "tool_name": "Write",
                    "tool_use_id": "toolu-w",
                    "tool_input": {"file_path": str(report), "content": report.read_text()},
                },
                session="a-old",
                tenant="alpha",
                at_ns=ns(at) + 1_000_000,
            ),
        ]
    ]
    for word, (tenant, session, when) in WORDS.items():
        clients.append(
            tool_call(session, tenant, "cat notes.txt", {"stdout": f"found {word} here\n"}, ns(when))
        )
    send_concurrently(socket_path, clients)
    wait_for_rows(dsn, sum(len(c) for c in clients))
    run_sql(
        dsn,
        "UPDATE hook_audit_log SET received_at = occurred_at + interval '1 second' "
        "WHERE session_id <> 'a-late'",
    )
    api = start_api(dsn, TOKENS)
    assert searchable(api) == {*WORDS, REPORT_WORD}
    return api


@pytest.mark.parametrize("login", ["owner", "superuser"])
def test_archived_and_dropped_months_leave_search_live_and_late_text_and_reports_stay(
    recorded: Any, dsn: str, paths: dict[str, Path], login: str
) -> None:
    target = as_owner(dsn) if login == "owner" else dsn
    old, gone = event_docs_dated(dsn, OLD, but="a-late"), event_docs_dated(dsn, GONE)
    assert old >= 2  # alpha's and beta's; the report's is not counted
    assert gone >= 1

    preview, out = run(dsn, target, paths, REAL_NOW)
    old_name, gone_name = partitions.partition_name(OLD), partitions.partition_name(GONE)
    assert counts(preview) == {old_name: old, gone_name: gone}, preview
    assert f"delete {old + gone} search documents" in line(preview, "dry run, nothing changed")
    assert counts(out) == {old_name: old, gone_name: gone}, out
    assert line(out, f"archived  {old_name}").endswith(f"; {old} search documents deleted")
    assert line(out, f"dropped   {gone_name}").endswith(f"; {gone} search documents deleted")
    assert line(out, "done: ").endswith(f", deleted {old + gone} search documents")

    # Both tenants' text of the archived month is gone, and the dropped month's; the live month's, the late
    # row's (in the default partition, live while it arrived within the window) and the report stay.
    assert searchable(recorded) == {"livequartzite", "latefeldspar", REPORT_WORD}
    assert found(recorded, REPORT_WORD) == ["a-old"]
    assert run_sql(dsn, "SELECT count(*) FROM hook_audit_log_default WHERE session_id = 'a-late'")[0][0] == 2

    # A second run deletes nothing more.
    again = maintain(target, paths, REAL_NOW)
    assert "nothing to do" in again.stdout, again.stdout

    # Seven months on, the late row is old by its arrival too: archived under the month it arrived in, and
    # its text goes with it; so does the live month's. The report stays.
    later = partitions.month_start(REAL_NOW, 7) + timedelta(days=1)
    late = event_docs_dated(dsn, OLD)
    preview, out = run(dsn, target, paths, later)
    arrived = partitions.partition_name(partitions.month_start(REAL_NOW))
    assert counts(preview)[arrived] == counts(out)[arrived] == late >= 1, out
    assert searchable(recorded) == {REPORT_WORD}


def test_a_month_whose_upload_fails_leaves_search_and_the_next_run_finishes(
    recorded: Any, dsn: str, paths: dict[str, Path]
) -> None:
    target = as_owner(dsn)
    old = event_docs_dated(dsn, OLD, but="a-late")
    failed = maintain(target, paths, REAL_NOW, "--set", 'retention.upload_command=["false"]')
    assert failed.returncode == 1
    old_name = partitions.partition_name(OLD)
    assert "upload of" in failed.stdout
    # Detached, still in the database: its text is out of search already, as its events are out of queries.
    assert run_sql(dsn, "SELECT to_regclass($1) IS NOT NULL", old_name)[0][0]
    assert searchable(recorded) == {"livequartzite", "latefeldspar", REPORT_WORD}
    assert event_docs_dated(dsn, OLD, but="a-late") == 0 < old

    # The next run finishes the month, deleting again harmlessly.
    preview, out = run(
        dsn,
        target,
        paths,
        REAL_NOW,
        "--set",
        f'retention.upload_command=["cp", "{{path}}", "{paths["up"]}/"]',
    )
    assert counts(preview) == counts(out) == {old_name: 0}, out
    assert run_sql(dsn, "SELECT to_regclass($1) IS NULL", old_name)[0][0]
    assert searchable(recorded) == {"livequartzite", "latefeldspar", REPORT_WORD}
