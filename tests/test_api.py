"""The read API (``hookdb api``) against a real PostgreSQL, over real HTTP: pages, filters, detail,
stats, tenant isolation, hostile parameters, outages, the live stream fed by the collector, and a
schemathesis run against its own /openapi.json."""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import httpx
import pytest
import seed
import test_ledger
from test_collector import send_concurrently
from test_data_model import event

from conftest import BIN, migrate, run_sql, wait_for

TOKEN_A, TOKEN_B = "token-of-acme", "token-of-beta"
TOKENS = {"acme": TOKEN_A, "beta": TOKEN_B}


def write_seed(dsn: str, *seeds: seed.Seed, first: int = 0) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for s in seeds:
                await seed.write(conn, s, first)
        finally:
            await conn.close()

    asyncio.run(go())


def client(api: Any, token: str | None = TOKEN_A) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=10)


def all_pages(http: httpx.Client, path: str = "/api/sessions", **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = http.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["sessions"] if "sessions" in body else body["events"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture
def seeded(dsn: str, start_api: Any) -> Any:
    """The API over 130 sessions of acme and 20 of beta (whose ids overlap acme's on purpose)."""
    migrate(dsn)
    write_seed(dsn, seed.Seed("acme", 130), seed.Seed("beta", 20))
    return start_api(dsn, TOKENS)


def test_pages_are_newest_first_and_complete(seeded: Any) -> None:
    with client(seeded) as http:
        first = http.get("/api/sessions", params={"limit": 50}).json()
        assert [s["session_id"] for s in first["sessions"][:2]] == ["s-000129", "s-000128"]
        assert first["next_cursor"]
        sessions = all_pages(http, limit=50)
    assert [s["session_id"] for s in sessions] == [f"s-{i:06d}" for i in reversed(range(130))]
    card = next(s for s in sessions if s["session_id"] == "s-000003")
    assert card["status"] == "failed"  # session i has STATUSES[i % 4]
    assert card["model"] == seed.MODELS[0]
    assert Decimal(str(card["cost_usd"])) == Decimal("0.04")
    assert card["qa_score"] == 21
    assert card["report_count"] == 1


def test_pagination_neither_repeats_nor_skips_while_sessions_arrive(dsn: str, seeded: Any) -> None:
    arriving = seed.Seed(
        "acme", 400, events=0, reports=False, prefix="new", start=seed.BASE + timedelta(days=1)
    )
    older = seed.Seed("acme", 40, events=0, reports=False, prefix="late", start=seed.BASE)
    stop = threading.Event()

    def insert() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            write_seed(dsn, seed.Seed(**{**arriving.__dict__, "sessions": n + 20}), first=n)
            if n < 40:  # some arrive with an older start (a backfill): they land between pages
                write_seed(dsn, seed.Seed(**{**older.__dict__, "sessions": n + 20}), first=n)
            n += 20

    writer = threading.Thread(target=insert)
    seen: list[str] = []
    with client(seeded) as http:
        cursor = None
        writer.start()
        try:
            while True:
                body = http.get(
                    "/api/sessions", params={"limit": 7, **({"cursor": cursor} if cursor else {})}
                ).json()
                seen += [s["session_id"] for s in body["sessions"]]
                cursor = body["next_cursor"]
                if cursor is None:
                    break
        finally:
            stop.set()
            writer.join()
    assert len(seen) == len(set(seen)), "a session was listed twice"
    assert {f"s-{i:06d}" for i in range(130)} <= set(seen), "a session present all along was skipped"
    started = {
        r[0]: r[1]
        for r in run_sql(dsn, "SELECT session_id, started_at FROM sessions WHERE tenant_id = 'acme'")
    }
    order = [started[s] for s in seen]
    assert order == sorted(order, reverse=True)


def expected_ids(dsn: str, where: str, *args: Any) -> list[str]:
    rows = run_sql(
        dsn,
        f"SELECT session_id FROM sessions WHERE tenant_id = 'acme' AND {where} "
        "ORDER BY started_at DESC, session_id DESC",
        *args,
    )
    return [r[0] for r in rows]


def test_each_filter_selects_what_sql_selects(dsn: str, seeded: Any) -> None:
    after = seed.BASE + timedelta(minutes=40)
    before = seed.BASE + timedelta(minutes=90)
    cases: list[tuple[dict[str, Any], str, tuple[Any, ...]]] = [
        ({"status": "completed"}, "status = 'completed'", ()),
        ({"status": ["failed", "running"]}, "status IN ('failed', 'running')", ()),
        ({"model": seed.MODELS[1]}, "model = $1", (seed.MODELS[1],)),
        ({"agent_type": "reviewer"}, "agent_type = 'reviewer'", ()),
        ({"started_after": after.isoformat()}, "started_at >= $1", (after,)),
        ({"started_before": before.isoformat()}, "started_at < $1", (before,)),
        (
            {"status": "ended", "model": seed.MODELS[0], "started_after": after.isoformat(),
             "started_before": before.isoformat()},
            "status = 'ended' AND model = $1 AND started_at >= $2 AND started_at < $3",
            (seed.MODELS[0], after, before),
        ),
    ]  # fmt: skip
    with client(seeded) as http:
        for params, where, args in cases:
            got = [s["session_id"] for s in all_pages(http, limit=9, **params)]
            want = expected_ids(dsn, where, *args)
            assert want, f"the seed leaves {params} empty: the case proves nothing"
            assert got == want, params


def test_detail_has_reports_states_and_a_paired_timeline(dsn: str, seeded: Any) -> None:
    run_sql(
        dsn,
        "INSERT INTO agent_states (tenant_id, session_id, agent_id, path, agent_type, content, sha256, "
        "updated_at) VALUES ('acme', 's-000005', 'a1', '/w/state/a1.json', 'reviewer', $1, 'x', now())",
        '{"step": 3}',
    )
    with client(seeded) as http:
        detail = http.get("/api/sessions/s-000005", params={"events_limit": 3}).json()
        assert detail["session"]["session_id"] == "s-000005"
        assert [r["content"] for r in detail["reports"]] == ["# Report 5\n\nQA score: 35\n\n- done\n"]
        assert [(a["agent_id"], a["content"]) for a in detail["agent_states"]] == [("a1", '{"step": 3}')]
        first = detail["events"]
        assert [e["event_type"] for e in first["events"]] == ["SessionStart", "PreToolUse", "PostToolUse"]
        events = first["events"] + all_pages(
            http, "/api/sessions/s-000005/events", cursor=first["next_cursor"]
        )
    assert len(events) == 8
    assert [e["event_type"] for e in events][-1] == "Stop"
    pre, post = events[1], events[2]
    assert pre["tool_use_id"] == post["tool_use_id"] == "toolu_5_0"
    assert pre["paired_event_id"] == post["event_id"]
    assert post["paired_event_id"] == pre["event_id"]
    assert pre["duration_ms"] == post["duration_ms"] == 1250.0  # PostToolUse 1.25 s after its PreToolUse
    assert events[0]["duration_ms"] is None
    assert events[0]["payload"]["model"] == seed.MODELS[2]


def test_stats_equal_what_sql_computes(dsn: str, seeded: Any) -> None:
    start, end = seed.BASE + timedelta(minutes=10), seed.BASE + timedelta(minutes=100)
    with client(seeded) as http:
        stats = http.get(
            "/api/sessions/stats", params={"from": start.isoformat(), "to": end.isoformat()}
        ).json()
    in_range = "tenant_id = 'acme' AND started_at >= $1 AND started_at < $2"
    rows = run_sql(dsn, f"SELECT status, count(*) FROM sessions WHERE {in_range} GROUP BY 1", start, end)
    assert stats["by_status"] == {r[0]: r[1] for r in rows}
    assert stats["sessions"] == 90
    cost = run_sql(dsn, f"SELECT sum(cost_usd) FROM sessions WHERE {in_range}", start, end)[0][0]
    assert Decimal(str(stats["cost_usd"])) == cost
    models = run_sql(
        dsn, f"SELECT model, count(*), sum(cost_usd) FROM sessions WHERE {in_range} GROUP BY 1", start, end
    )
    assert {(m["model"], m["sessions"], Decimal(str(m["cost_usd"]))) for m in stats["models"]} == {
        tuple(r) for r in models
    }
    scores = run_sql(
        dsn,
        f"SELECT (meta->>'qa_score')::numeric FROM sessions WHERE {in_range} AND meta ? 'qa_score'",
        start,
        end,
    )
    values = [r[0] for r in scores]
    assert stats["qa_scores"]["count"] == len(values) == 30
    assert Decimal(str(stats["qa_scores"]["mean"])) == pytest.approx(sum(values) / len(values))
    for bucket in stats["qa_scores"]["buckets"]:
        low, high = bucket["min"], bucket["max"]
        inside = [v for v in values if low <= v < high or (high == 100 and v == 100)]
        assert bucket["count"] == len(inside), bucket
    events = run_sql(
        dsn,
        "SELECT count(*) FROM hook_audit_log "
        "WHERE tenant_id = 'acme' AND occurred_at >= $1 AND occurred_at < $2",
        start,
        end,
    )[0][0]
    assert stats["events"] == events == sum(day["events"] for day in stats["per_day"])
    day = stats["per_day"]
    assert [(d["day"], d["sessions"], d["events"]) for d in day] == [("2026-11-01", 90, events)]
    assert day[0]["by_status"] == stats["by_status"]


def test_two_tenants_never_see_each_others_sessions(seeded: Any) -> None:
    with client(seeded, TOKEN_A) as a, client(seeded, TOKEN_B) as b:
        acme = {s["session_id"]: s for s in all_pages(a)}
        beta = {s["session_id"]: s for s in all_pages(b)}
        assert len(acme) == 130
        assert len(beta) == 20
        # The same session ids exist in both tenants: each token gets its own tenant's row.
        assert acme["s-000001"]["cwd"] == beta["s-000001"]["cwd"]  # same seed shape...
        assert b.get("/api/sessions/s-000100").status_code == 404  # ...but beta has no s-000100
        assert b.get("/api/sessions/s-000100/events").status_code == 404
        assert a.get("/api/sessions/stats", params={"from": "2026-10-01T00:00:00Z"}).json()["sessions"] == 130
        assert b.get("/api/sessions/stats", params={"from": "2026-10-01T00:00:00Z"}).json()["sessions"] == 20


def test_requests_without_a_valid_token_are_refused(seeded: Any) -> None:
    for token in (None, "wrong", ""):
        with client(seeded, token) as http:
            for path in (
                "/api/sessions",
                "/api/sessions/s-000001",
                "/api/sessions/stats",
                "/api/sessions/stream",
            ):
                answer = http.get(path)
                assert answer.status_code == 401, (token, path)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert answer.json()["error"] == "unauthorized"
    with httpx.Client(base_url=seeded.url, headers={"authorization": f"Basic {TOKEN_A}"}) as http:
        assert http.get("/api/sessions").status_code == 401


def test_hostile_parameters_get_400_never_500(dsn: str, seeded: Any) -> None:
    other_kind = seeded_cursor(seeded, "/api/sessions/s-000001/events", "limit")
    bad = [
        {"limit": "100000"},
        {"limit": "-1"},
        {"limit": "1; DROP TABLE sessions"},
        {"limit": "0x10"},
        {"status": "running' OR '1'='1"},
        {"cursor": "' OR 1=1 --"},
        {"cursor": "AAAA"},
        {"cursor": "kwHPf_________-ms"},  # well-formed base64, nonsense inside
        {"cursor": other_kind},  # a timeline cursor used for sessions
        {"started_after": "yesterday"},
        {"started_after": "2026-13-45T99:00:00Z"},
        {"started_after": "2026-11-01T00:00:00"},  # no UTC offset: ambiguous
        {"started_before": "0001-01-01T00:00:00+14:00"},
        {"model": "a\x00b"},
        {"unknown": "1"},
        {"limit": ["1", "2"]},
    ]
    with client(seeded) as http:
        for params in bad:
            answer = http.get("/api/sessions", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["error"] == "bad_request"
            assert answer.json()["detail"].split(":")[0] in {*params, "parameter"}, answer.text
        # Text filters are only ever values: a fragment of SQL matches nothing and harms nothing.
        for params in ({"model": "x' OR '1'='1"}, {"agent_type": "'; DELETE FROM sessions; --"}):
            answer = http.get("/api/sessions", params=params)
            assert answer.status_code == 200
            assert answer.json()["sessions"] == []
        assert (
            http.get(
                "/api/sessions/stats", params={"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
            ).status_code
            == 400
        )
        for params in (
            {"to": "0001-01-02T00:00:00Z"},  # the default from, 30 days before, is before year 1
            {"to": "0001-01-01T00:00:00+00:01"},
            {"from": "9999-12-31T23:59:59-14:00"},
            {"from": "0001-01-01T00:00:00Z", "to": "0001-01-01T00:00:00Z"},
            {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z", "x": "1"},
            {"to": "99999-01-01T00:00:00Z"},
        ):
            answer = http.get("/api/sessions/stats", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["detail"].split(":")[0] in {*params, "parameter"}, answer.text
        whole = http.get(
            "/api/sessions/stats",
            params={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"},
        )
        assert whole.status_code == 200, whole.text
        assert whole.json()["sessions"] == 130
        for params in ({"started_after": "0001-01-01T00:00:00Z"}, {"started_before": "9999-12-31T23:59:59Z"}):
            assert len(all_pages(http, **params)) == 130
        assert http.get("/api/sessions/s-000001", params={"events_limit": "501"}).status_code == 400
        assert http.get("/api/sessions/" + "x" * 600).status_code == 400
        assert http.get("/api/sessions/%00").status_code == 400
        assert http.get("/api/sessions/s-000001/events", params={"cursor": "garbage"}).status_code == 400
        assert http.get("/nowhere").status_code == 404
        assert http.post("/api/sessions").json()["error"] == "method_not_allowed"
    assert run_sql(dsn, "SELECT count(*) FROM sessions")[0][0] == 150


def seeded_cursor(api: Any, path: str, limit_name: str) -> str:
    with client(api) as http:
        return http.get(path, params={limit_name: 1}).json()["next_cursor"]


def test_database_down_is_503_with_retry_after_and_recovers(private_pg: Any, start_api: Any) -> None:
    migrate(private_pg.dsn)
    write_seed(private_pg.dsn, seed.Seed("acme", 3))
    api = start_api(private_pg.dsn, TOKENS)
    with client(api) as http:
        assert http.get("/api/sessions").status_code == 200
        private_pg.stop()
        for path in ("/api/sessions", "/api/sessions/s-000001", "/api/sessions/stats"):
            answer = http.get(path)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            assert answer.json()["error"] == "database_unavailable"
            assert "Traceback" not in answer.text
        wait_for(lambda: stream_status(http) == 503, 15)
        private_pg.start()
        # Pooled connections died with the old server: the first request after the restart succeeds.
        assert http.get("/api/sessions").status_code == 200
        assert len(http.get("/api/sessions").json()["sessions"]) == 3
        # One line for the outage and one for the recovery, however many requests failed between.
        assert [e["error"] for e in api.events("api.database_unavailable")] == ["database_unavailable"]
        assert len(api.events("api.database_available")) == 1
        wait_for(lambda: stream_status(http) == 200, 15)  # the live feed reconnects on its own


def stream_status(http: httpx.Client) -> int:
    with http.stream("GET", "/api/sessions/stream") as answer:
        return answer.status_code


class Stream:
    """Reads an SSE stream in a thread; ``next(kind)`` waits for the next event of that kind."""

    def __init__(self, api: Any, token: str) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.ended = threading.Event()
        self._http = client(api, token)
        self._response = self._http.send(self._http.build_request("GET", "/api/sessions/stream"), stream=True)
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = None
        try:
            for line in self._response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.put((kind, json.loads(line[6:])))
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def next(self, kind: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got, data = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if got == kind:
                return data

    def close(self) -> None:
        self._response.close()
        self._http.close()


def test_the_stream_shows_new_sessions_and_status_changes_from_the_collector(
    start_collector: Any, start_api: Any, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    collector = start_collector("--set", "batch.linger_seconds=0.05")
    api = start_api(dsn, {"default": TOKEN_A, "beta": TOKEN_B})  # local peers write tenant "default"
    acme, beta = Stream(api, TOKEN_A), Stream(api, TOKEN_B)
    try:
        send_concurrently(
            socket_path,
            [[event("SessionStart", {"model": "claude-opus-4-5"}, session="live-1")]],
        )
        change = acme.next("session")
        assert change["kind"] == "new"
        assert change["session"]["session_id"] == "live-1"
        assert change["session"]["status"] == "running"
        report = tmp_path / "reports" / "review.md"
        report.parent.mkdir()
        report.write_text("# Review\n\nQA score: 87\n")
        write = {
            "tool_name": "Write",
            "tool_input": {"file_path": str(report), "content": report.read_text()},
        }
        send_concurrently(
            socket_path,
            [
                [
                    event("PostToolUse", write, session="live-1"),
                    event("Stop", {}, session="live-1"),
                ]
            ],
        )
        card = wait_for_card(acme, lambda s: s["status"] == "completed" and s["qa_score"] == 87)
        assert card["report_count"] == 1
        with pytest.raises(queue.Empty):
            beta.next("session", timeout=1)  # beta's subscribers hear nothing of acme's sessions
    finally:
        acme.close()
        beta.close()
        collector.stop()


def wait_for_card(stream: Stream, done: Any) -> dict[str, Any]:
    while True:
        change = stream.next("session")
        if done(change["session"]):
            return change["session"]


def test_schemathesis_finds_no_server_error_or_schema_violation(seeded: Any, tmp_path: Path) -> None:
    st = BIN / "st"
    result = subprocess.run(
        [
            str(st), "run", f"{seeded.url}/openapi.json",
            "--header", f"Authorization: Bearer {TOKEN_A}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance,negative_data_rejection",
            "--max-examples", "60", "--seed", "1", "--no-color",
            "--phases", "examples,coverage,fuzzing",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_the_openapi_document_describes_every_endpoint(seeded: Any) -> None:
    with httpx.Client(base_url=seeded.url) as http:
        doc = http.get("/openapi.json").json()
    assert set(doc["paths"]) == {
        "/api/sessions", "/api/sessions/stats", "/api/sessions/stream", "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/events", "/api/sessions/{session_id}/export", "/api/usage",
    }  # fmt: skip
    usage = {p["name"]: p["schema"] for p in doc["paths"]["/api/usage"]["get"]["parameters"]}
    assert set(usage) == {"group", "from", "to"}
    assert usage["group"]["enum"] == ["agent", "day", "model", "project"]
    parameters = {p["name"] for p in doc["paths"]["/api/sessions"]["get"]["parameters"]}
    assert parameters == {
        "limit",
        "cursor",
        "q",
        "status",
        "model",
        "agent_type",
        "project",
        "cost_min",
        "cost_max",
        "started_after",
        "started_before",
    }
    export = doc["paths"]["/api/sessions/{session_id}/export"]["get"]
    assert {p["name"] for p in export["parameters"]} == {"session_id", "format"}
    assert set(export["responses"]["200"]["content"]) == {"application/json", "text/markdown"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_sigterm_ends_open_streams_and_exits_cleanly(seeded: Any) -> None:
    stream = Stream(seeded, TOKEN_A)
    try:
        seeded.proc.terminate()
        assert stream.ended.wait(2)  # the server ends open streams at once
        assert seeded.stop() == 0
        assert '"api.stopped"' in seeded.output
    finally:
        stream.close()


def test_session_ids_may_hold_any_text(dsn: str, seeded: Any) -> None:
    odd = "runs/2026 11/ü?#%&"
    run_sql(
        dsn,
        "INSERT INTO sessions (tenant_id, session_id, status, started_at, updated_at) "
        "VALUES ('acme', $1, 'running', now(), now())",
        odd,
    )
    with client(seeded) as http:
        path = "/api/sessions/" + quote(odd, safe="")
        assert http.get(path).json()["session"]["session_id"] == odd
        assert http.get(path + "/events").json()["events"] == []


def test_a_login_that_may_not_read_as_hookdb_reader_gets_a_clear_503(dsn: str, start_api: Any) -> None:
    migrate(dsn)
    run_sql(
        dsn, "DO $$ BEGIN CREATE ROLE hookdb_test_lonely LOGIN; EXCEPTION WHEN duplicate_object THEN END $$"
    )
    parts = urlsplit(dsn)
    lonely = parts._replace(netloc=f"hookdb_test_lonely@{parts.hostname or ''}").geturl()
    try:
        run_sql(lonely, "SELECT 1")
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"this server does not let a new role log in without a password: {exc}")
    api = start_api(lonely, TOKENS)
    with client(api) as http:
        for _ in range(3):
            answer = http.get("/api/sessions")
            assert answer.status_code == 503
            assert answer.json()["error"] == "database_misconfigured"
            assert "GRANT hookdb_reader TO" in answer.json()["detail"]
    assert len(api.events("api.database_unavailable")) == 1  # logged once, not per request


def test_reports_and_agent_states_of_any_path_length_are_stored_and_served(
    dsn: str, start_collector: Any, start_api: Any, socket_path: Path, tmp_path: Path
) -> None:
    # Paths past what a btree key row holds (about 2.7 kB, after compression: hence random names): keyed
    # by their sha256, stored in full.
    cwd = tmp_path.joinpath(*[secrets.token_hex(100) for _ in range(15)])
    (cwd / "reports").mkdir(parents=True)
    (cwd / "state").mkdir()
    report = cwd / "reports" / "summary-long.md"
    assert len(str(report)) > 3000
    report.write_text("# Long\n\nQA score: 91\n")
    agent_id = "agent-" + secrets.token_hex(1500)
    (cwd / "state" / "worker.json").write_text('{"step": 1}')
    start_collector()
    write_input = {"file_path": str(report), "content": "# Long\n\nQA score: 91\n"}
    common = {"cwd": str(cwd), "tool_name": "Write", "tool_input": write_input}
    send_concurrently(
        socket_path,
        [
            [
                event("SessionStart", {"cwd": str(cwd), "source": "startup"}, session="long"),
                event("PostToolUse", {**common, "tool_response": {"success": True}}, session="long"),
                event("SubagentStop", {"cwd": str(cwd), "agent_id": agent_id}, session="long"),
            ]
        ],
    )
    wait_for(lambda: run_sql(dsn, "SELECT count(*) FROM agent_states")[0][0] == 1, 30)
    assert run_sql(dsn, "SELECT path FROM reports")[0][0] == str(report)
    api = start_api(dsn, {"default": TOKEN_A})
    with client(api) as http:
        body = http.get("/api/sessions/long").json()
    assert [r["path"] for r in body["reports"]] == [str(report)]
    assert [(s["agent_id"], s["path"]) for s in body["agent_states"]] == [
        (agent_id, str(cwd / "state" / "worker.json"))
    ]


# -- Cards, project and cost filters, export (issue 14 items 1 and 6) -----------------------------------


def add_event(
    dsn: str,
    session_id: str,
    event_type: str,
    at: Any,
    payload: dict[str, Any],
    *,
    tenant: str = "acme",
    tool_name: str | None = None,
    received_at: Any = None,
) -> None:
    run_sql(
        dsn,
        "INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type, "
        "tool_name, source, payload) VALUES ($1, gen_random_uuid(), $2, coalesce($7::timestamptz, $2), "
        "$3, $4, $5, 'claude-code', $6::jsonb)",
        tenant,
        at,
        session_id,
        event_type,
        tool_name,
        json.dumps({"hook_event_name": event_type, "session_id": session_id, **payload}),
        received_at,
    )


def started(dsn: str, session_id: str) -> Any:
    rows = run_sql(
        dsn, "SELECT started_at FROM sessions WHERE tenant_id = 'acme' AND session_id = $1", session_id
    )
    return rows[0][0]


def test_cards_have_a_title_project_branch_and_duration(dsn: str, seeded: Any) -> None:
    t7 = started(dsn, "s-000007")
    first = "  Fix the flaky   loader test\n\nthen " + "explain why it failed " * 10
    add_event(dsn, "s-000007", "UserPromptSubmit", t7 + timedelta(milliseconds=1500), {"prompt": "later"})
    add_event(
        dsn, "s-000007", "UserPromptSubmit", t7 + timedelta(milliseconds=500),
        {"prompt": first, "git_branch": "fix/loader"},
    )  # fmt: skip
    # A prompt large enough to be stored as a blob is read from the blob.
    t8 = started(dsn, "s-000008")
    run_sql(
        dsn,
        "INSERT INTO payload_blobs (tenant_id, sha256, content) VALUES ('acme', 'd1', $1)",
        "Write the Q3 report\n" + "x" * 5000,
    )
    add_event(
        dsn, "s-000008", "UserPromptSubmit", t8 + timedelta(seconds=2), {"prompt": {"$hookdb.blob": "d1"}}
    )
    run_sql(
        dsn,
        "UPDATE sessions SET cwd = '/home/dev/hookdb/' WHERE tenant_id = 'acme' AND session_id = 's-000009'",
    )
    # Two prompts at one instant: the one received first, as the timeline orders them.
    t10 = started(dsn, "s-000010") + timedelta(seconds=1)
    later = t10 + timedelta(seconds=1)
    add_event(dsn, "s-000010", "UserPromptSubmit", t10, {"prompt": "second"}, received_at=later)
    add_event(dsn, "s-000010", "UserPromptSubmit", t10, {"prompt": "first"}, received_at=t10)
    # beta's s-000007 has the same id: its prompt must not title acme's card, nor acme's beta's.
    add_event(dsn, "s-000007", "UserPromptSubmit", t7, {"prompt": "beta's secret"}, tenant="beta")
    with client(seeded) as http, client(seeded, TOKEN_B) as b:
        cards = {s["session_id"]: s for s in all_pages(http, limit=50)}
        detail = http.get("/api/sessions/s-000007").json()["session"]
        beta = {s["session_id"]: s for s in all_pages(b)}
    card = cards["s-000007"]
    assert card["title"] == detail["title"]
    assert card["title"].startswith("Fix the flaky loader test then explain why it failed explain")
    assert len(card["title"]) <= 120
    assert card["title"].endswith("…")
    assert "\n" not in card["title"]
    assert card["git_branch"] == "fix/loader"
    assert card["project"] == "7"  # the seed's cwd is /work/s/7
    assert cards["s-000008"]["title"] == "Write the Q3 report " + "x" * 99 + "…"
    assert cards["s-000009"]["project"] == "hookdb"
    assert cards["s-000010"]["title"] == "first"
    assert cards["s-000001"]["title"] is None
    assert cards["s-000001"]["git_branch"] is None
    assert beta["s-000007"]["title"] == "beta's secret"
    # Duration: to ended_at when the session ended (seed: "ended" sessions), else to updated_at.
    for session_id, s in cards.items():
        end = s["ended_at"] or s["updated_at"]
        want = (datetime_of(end) - datetime_of(s["started_at"])) / timedelta(milliseconds=1)
        assert s["duration_ms"] == want == 8000, session_id


def datetime_of(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_project_and_cost_filters_select_what_sql_selects(dsn: str, seeded: Any) -> None:
    for i, cwd in ((10, "/home/a/proj"), (20, "/home/b/proj/"), (30, "/home/a/proj-two"), (40, "proj")):
        run_sql(
            dsn,
            "UPDATE sessions SET cwd = $1 WHERE tenant_id = 'acme' AND session_id = $2",
            cwd,
            f"s-{i:06d}",
        )
    run_sql(dsn, "UPDATE sessions SET cost_usd = NULL WHERE tenant_id = 'acme' AND session_id = 's-000011'")
    project = "regexp_replace(cwd, '/+$', '') ~ '(^|/)proj$'"
    after = seed.BASE + timedelta(minutes=40)
    cases: list[tuple[dict[str, Any], str, tuple[Any, ...]]] = [
        ({"project": "proj"}, project, ()),
        ({"project": "7"}, "cwd = '/work/s/7'", ()),
        ({"cost_min": "0.2"}, "cost_usd >= 0.2", ()),
        ({"cost_max": "0.10"}, "cost_usd <= 0.1", ()),
        ({"cost_min": "0.05", "cost_max": "0.3"}, "cost_usd BETWEEN 0.05 AND 0.3", ()),
        ({"cost_min": "0.12", "cost_max": "0.12"}, "cost_usd = 0.12", ()),
        (
            {"cost_min": "0.1", "cost_max": "0.4", "status": ["completed", "failed"], "model": seed.MODELS[0],
             "started_after": after.isoformat()},
            "cost_usd BETWEEN 0.1 AND 0.4 AND status IN ('completed', 'failed') AND model = $1 "
            "AND started_at >= $2",
            (seed.MODELS[0], after),
        ),
        ({"project": "proj", "cost_max": "0.25"}, f"{project} AND cost_usd <= 0.25", ()),
    ]  # fmt: skip
    with client(seeded) as http:
        for params, where, args in cases:
            got = [s["session_id"] for s in all_pages(http, limit=3, **params)]
            want = expected_ids(dsn, where, *args)
            assert want, f"the seed leaves {params} empty: the case proves nothing"
            assert got == want, params
        for params in (
            {"cost_min": "abc"},
            {"cost_min": "NaN"},
            {"cost_max": "Infinity"},
            {"cost_max": "1e400"},
            {"cost_min": "0.0000000000001"},
            {"cost_min": "0.5", "cost_max": "0.1"},
            {"project": ""},
            {"project": "a\x00b"},
            {"cost_max": ["1", "2"]},
        ):
            answer = http.get("/api/sessions", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["detail"].split(":")[0] in params, answer.text


def test_export_as_json_holds_every_event_once_with_restored_payloads(dsn: str, seeded: Any) -> None:
    write_seed(dsn, seed.Seed("acme", 1, events=600, prefix="long"))
    at = started(dsn, "long-000000")
    add_event(
        dsn,
        "long-000000",
        "Notification",
        at + timedelta(seconds=30),
        {"message": {"$hookdb.nul": ["a", "b"]}},
    )
    with client(seeded) as http:
        answer = http.get("/api/sessions/long-000000/export", params={"format": "json"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert (
            answer.headers["content-disposition"] == 'attachment; filename="hookdb-session-long-000000.json"'
        )
        exported = json.loads(answer.content)
        detail = http.get("/api/sessions/long-000000").json()
        pages = all_pages(http, "/api/sessions/long-000000/events", limit=500)
        assert http.get("/api/sessions/long-000000/export").headers["content-type"] == "application/json"
    ids = [e["event_id"] for e in exported["events"]]
    stored = {
        str(r[0])
        for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log WHERE session_id = 'long-000000'")
    }
    assert len(ids) == len(set(ids)) == len(stored) == 601
    assert set(ids) == stored
    assert exported["events"] == pages  # the same events, order, pairing and payloads as the timeline
    assert exported["session"] == detail["session"]
    assert exported["reports"] == detail["reports"]
    assert exported["reports"]
    assert exported["agent_states"] == detail["agent_states"]
    notice = next(e for e in exported["events"] if e["event_type"] == "Notification")
    assert notice["payload"]["message"] == "a\x00b"  # U+0000 put back, as the timeline does


def test_export_as_markdown_reads_as_a_document(dsn: str, seeded: Any) -> None:
    odd = "runs/2026 11/ü?#%&"
    at = seed.BASE + timedelta(days=2)
    run_sql(
        dsn,
        "INSERT INTO sessions (tenant_id, session_id, status, model, cwd, started_at, updated_at, "
        "ended_at, cost_usd, report_count) VALUES ('acme', $1, 'completed', 'claude-opus-4-5', "
        "'/home/dev/shop', $2, $3, $3, 1.25, 1)",
        odd, at, at + timedelta(minutes=3, seconds=5),
    )  # fmt: skip
    seconds = lambda n: at + timedelta(seconds=n)  # noqa: E731
    add_event(dsn, odd, "SessionStart", seconds(0), {"source": "startup"})
    add_event(dsn, odd, "UserPromptSubmit", seconds(1), {"prompt": "Count the `orders`\nper region"})
    bash = {"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {"command": "wc -l data/orders.csv"}}
    add_event(dsn, odd, "PreToolUse", seconds(2), bash, tool_name="Bash")
    add_event(
        dsn, odd, "PostToolUse", seconds(3.5), {**bash, "tool_response": {"stdout": "12"}}, tool_name="Bash"
    )
    read = {
        "tool_name": "Read",
        "tool_use_id": "t2",
        "tool_input": {"file_path": "/home/dev/shop/missing.csv"},
    }
    add_event(dsn, odd, "PreToolUse", seconds(4), read, tool_name="Read")
    add_event(
        dsn,
        odd,
        "PostToolUseFailure",
        seconds(4.2),
        {**read, "error": "File does not exist."},
        tool_name="Read",
    )
    add_event(dsn, odd, "Stop", seconds(5), {"last_assistant_message": "There are 12 orders."})
    run_sql(
        dsn,
        "INSERT INTO reports (tenant_id, session_id, path, report_type, content, sha256, word_count, "
        "written_at, event_id) VALUES ('acme', $1, '/home/dev/shop/reports/orders.md', 'summary', $2, 'x', "
        "4, $3, gen_random_uuid())",
        odd, "# Orders\n\n| region | n |\n|---|---|\n| North | 12 |\n", seconds(5),
    )  # fmt: skip
    with client(seeded) as http:
        answer = http.get(f"/api/sessions/{quote(odd, safe='')}/export", params={"format": "md"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/markdown; charset=utf-8"
    assert answer.headers["content-disposition"] == 'attachment; filename="hookdb-session-runs_2026_11.md"'
    md = answer.text
    lines = md.splitlines()
    assert lines[0] == "# Count the `orders` per region"
    for fact in (
        "- **Project:** shop",
        "- **Status:** completed",
        "- **Model:** claude-opus-4-5",
        "- **Duration:** 3 min 5 s",
        "- **Cost:** $1.25",
        "- **Reports:** 1",
        "- **Subagents:** 0",
    ):
        assert fact in lines, fact
    assert "| North | 12 |" in lines  # the report's markdown inline, as written
    timeline = lines[lines.index("## Timeline") :]
    assert sum("**Bash**" in line for line in timeline) == 1  # the call's start and end on one line
    assert any(line.endswith("**Bash** `wc -l data/orders.csv` — 1.5 s") for line in timeline), timeline
    assert any(
        line.endswith("**Read** `/home/dev/shop/missing.csv` — 200 ms — **failed**: `File does not exist.`")
        for line in timeline
    ), timeline
    assert "  > Count the `orders`" in timeline
    assert "  > There are 12 orders." in timeline


def test_export_is_only_of_the_tokens_tenant(dsn: str, seeded: Any) -> None:
    with client(seeded, TOKEN_B) as b, client(seeded, TOKEN_A) as a:
        for fmt in ("json", "md"):
            missing = b.get("/api/sessions/s-000100/export", params={"format": fmt})  # acme's only
            assert missing.status_code == 404
            assert missing.json()["error"] == "not_found"
        assert a.get("/api/sessions/nobody/export").status_code == 404
        assert a.get("/api/sessions/s-000001/export", params={"format": "pdf"}).status_code == 400
        exported = b.get("/api/sessions/s-000001/export").json()  # an id both tenants have
    beta = run_sql(
        dsn, "SELECT event_id FROM hook_audit_log WHERE tenant_id = 'beta' AND session_id = 's-000001'"
    )
    assert {e["event_id"] for e in exported["events"]} == {str(r[0]) for r in beta}
    assert exported["reports"] == [r for r in exported["reports"] if r["path"].startswith("/work/s/1/")]
    assert run_sql(dsn, "SELECT count(*) FROM hook_audit_log WHERE session_id = 's-000001'")[0][0] == 16


def test_an_export_cut_short_by_the_database_is_visibly_incomplete(private_pg: Any, start_api: Any) -> None:
    migrate(private_pg.dsn)
    write_seed(private_pg.dsn, seed.Seed("acme", 1, events=6000, prefix="big"))
    # 4 kB per event: the answer (24 MB) outgrows the sockets' buffers, so the API is still reading pages
    # of the timeline when the database stops.
    run_sql(
        private_pg.dsn,
        "UPDATE hook_audit_log SET payload = payload || jsonb_build_object('pad', repeat('x', 4000))",
    )
    api = start_api(private_pg.dsn, TOKENS)
    with client(api) as http, http.stream("GET", "/api/sessions/big-000000/export") as answer:
        assert answer.status_code == 200
        chunks = answer.iter_bytes()
        body = next(chunks)
        private_pg.stop()
        body += b"".join(chunks)
    assert body.startswith(b'{"session":{"session_id":"big-000000"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)  # unterminated: no one mistakes it for the whole session
    assert body.count(b'"event_type"') < 6000
    assert [e["error"] for e in api.events("api.export_cut")] == ["database_unavailable"]
    assert "Traceback" not in api.output


# -- What sessions cost: the usage ledger read back ------------------------------------------------------

LEDGER_COLUMNS = (
    "tenant_id, session_id, request_id, agent, agent_type, model, input_tokens, output_tokens, "
    "cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cost_usd, cost_source, at, "
    "sources"
)
TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
)


def ledger_rows(tenant: str, sessions: range, prefix: str = "s") -> list[tuple[Any, ...]]:
    """Per session: two main-agent requests (two models) and one of a subagent, the last of unknown cost
    every third session; requests spread over two UTC days."""
    rows = []
    for i in sessions:
        sid = f"{prefix}-{i:06d}"
        at = seed.BASE + timedelta(minutes=i) + timedelta(hours=30 * (i % 2))
        for n, (agent, agent_type, model) in enumerate(
            (
                ("main", None, seed.MODELS[0]),
                ("main", None, seed.MODELS[1]),
                (f"ag{i}", "reviewer", seed.MODELS[2]),
            )
        ):
            unknown = n == 2 and i % 3 == 0
            rows.append(
                (
                    tenant, sid, f"req_{i}_{n}", agent, agent_type, model,
                    100 * i + n, 10 * i + n, 1000 + n, 5 * n, n,
                    None if unknown else Decimal(i) / 1000 + Decimal(n) / 10 ** 6,
                    "unknown" if unknown else "reported", at + timedelta(seconds=n), ["transcript"],
                )
            )  # fmt: skip
    return rows


def insert_ledger(dsn: str, rows: list[tuple[Any, ...]]) -> None:
    """Ledger rows as the collector writes them, and the session totals its projection keeps."""
    values = ", ".join(f"${i}" for i in range(1, 16))

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.executemany(f"INSERT INTO usage_ledger ({LEDGER_COLUMNS}) VALUES ({values})", rows)
            await conn.execute(
                f"""UPDATE sessions s SET {", ".join(f"{k} = t.{k}" for k in TOKEN_KINDS)},
                        cost_usd = t.cost, cost_source = t.source, models = t.models
                    FROM (SELECT tenant_id, session_id, {", ".join(f"sum({k}) AS {k}" for k in TOKEN_KINDS)},
                                 sum(cost_usd) AS cost, max(cost_source) AS source,
                                 array_agg(DISTINCT model ORDER BY model) AS models
                          FROM usage_ledger GROUP BY 1, 2) t
                    WHERE s.tenant_id = t.tenant_id AND s.session_id = t.session_id"""
            )
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.fixture
def ledgered(dsn: str, seeded: Any) -> Any:
    """The seeded API with ledger rows for acme's sessions 10..29 and beta's 0..9."""
    insert_ledger(dsn, ledger_rows("acme", range(10, 30)) + ledger_rows("beta", range(10)))
    return seeded


def test_cards_and_detail_carry_tokens_cost_and_the_per_agent_ledger(dsn: str, ledgered: Any) -> None:
    with client(ledgered) as http:
        card = next(c for c in all_pages(http) if c["session_id"] == "s-000012")
        detail = http.get("/api/sessions/s-000012").json()
        bare = http.get("/api/sessions/s-000050").json()
    row = run_sql(dsn, "SELECT * FROM sessions WHERE tenant_id = 'acme' AND session_id = 's-000012'")[0]
    for name in (*TOKEN_KINDS, "cost_source", "models"):
        assert card[name] == (list(row[name]) if name == "models" else row[name]), name
    assert Decimal(str(card["cost_usd"])) == row["cost_usd"]
    assert card["cost_source"] == "unknown"
    assert card["models"] == sorted(seed.MODELS)
    assert detail["session"] == card
    assert [r["request_id"] for r in detail["requests"]] == ["req_12_0", "req_12_1", "req_12_2"]
    assert detail["requests"][2]["cost_usd"] is None
    assert detail["requests"][2]["sources"] == ["transcript"]
    agents = {a["agent"]: a for a in detail["agents"]}
    assert [a["agent"] for a in detail["agents"]] == ["main", "ag12"]
    ledger = run_sql(
        dsn,
        f"SELECT agent, count(*) AS n, {', '.join(f'sum({k}) AS {k}' for k in TOKEN_KINDS)}, "
        "coalesce(sum(cost_usd), 0) AS cost, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced "
        "FROM usage_ledger WHERE tenant_id = 'acme' AND session_id = 's-000012' GROUP BY agent",
    )
    for r in ledger:
        a = agents[r["agent"]]
        assert (a["requests"], a["unpriced"], Decimal(str(a["cost_usd"]))) == (
            r["n"],
            r["unpriced"],
            r["cost"],
        )
        assert all(a[k] == r[k] for k in TOKEN_KINDS)
        assert a["tokens"] == sum(r[k] for k in TOKEN_KINDS)
    assert agents["ag12"]["agent_type"] == "reviewer"
    assert bare["requests"] == bare["agents"] == []
    assert bare["session"]["models"] == []
    assert bare["session"]["cost_source"] is None
    assert bare["session"]["input_tokens"] is None


def usage_sql(dsn: str, key: str, start: datetime, end: datetime, tenant: str = "acme") -> dict[Any, Any]:
    rows = run_sql(
        dsn,
        f"SELECT {key} AS key, count(*) AS requests, "
        f"sum({' + '.join('u.' + k for k in TOKEN_KINDS)}) AS tokens, "
        "coalesce(sum(u.cost_usd), 0) AS cost FROM usage_ledger u "
        "LEFT JOIN sessions s ON s.tenant_id = u.tenant_id AND s.session_id = u.session_id "
        "WHERE u.tenant_id = $1 AND u.at >= $2 AND u.at < $3 GROUP BY 1",
        tenant,
        start,
        end,
    )
    return {r["key"]: (r["requests"], r["tokens"], r["cost"]) for r in rows}


def got(groups: list[dict[str, Any]]) -> dict[Any, Any]:
    return {g["key"]: (g["requests"], g["tokens"], Decimal(str(g["cost_usd"]))) for g in groups}


def test_usage_groups_equal_what_sql_computes_and_stay_in_their_tenant(dsn: str, ledgered: Any) -> None:
    start, end = seed.BASE + timedelta(minutes=15), seed.BASE + timedelta(days=2)
    span = {"from": start.isoformat(), "to": end.isoformat()}
    expected = {
        "day": usage_sql(dsn, "to_char(u.at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", start, end),
        "model": usage_sql(dsn, "u.model", start, end),
        "project": usage_sql(dsn, "regexp_replace(s.cwd, '^.*/', '')", start, end),
        "agent": usage_sql(dsn, "CASE WHEN u.agent = 'main' THEN 'main' ELSE u.agent_type END", start, end),
    }
    assert set(expected["day"]) == {"2026-11-01", "2026-11-02"}
    assert len(expected["project"]) == 17
    with client(ledgered) as a, client(ledgered, TOKEN_B) as b:
        for group, want in expected.items():
            answer = a.get("/api/usage", params={**span, "group": group}).json()
            assert answer["group"] == group
            assert got(answer["groups"]) == want, group
            assert answer["total"]["requests"] == sum(v[0] for v in want.values()) == 51
            assert Decimal(str(answer["total"]["cost_usd"])) == sum(v[2] for v in want.values())
            assert answer["total"]["unpriced"] == 5
        days = [g["key"] for g in a.get("/api/usage", params=span).json()["groups"]]
        assert days == sorted(days)  # group=day is the default, oldest first
        # beta's requests are beta's alone, although its session ids are acme's too
        beta = b.get("/api/usage", params={**span, "group": "model"}).json()
        assert got(beta["groups"]) == usage_sql(dsn, "u.model", start, end, "beta")
        assert beta["total"]["requests"] == 15
        nothing = {"from": "2026-10-01T00:00:00Z", "to": "2026-10-02T00:00:00Z"}
        assert a.get("/api/usage", params=nothing).json()["groups"] == []
        for params in (
            {"group": "tenant"},
            {"group": ""},
            {"from": "yesterday"},
            {"to": "2026-11-01T00:00:00"},
            {"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
            {"group": ["day", "model"]},
            {"tenant": "beta"},
        ):
            answer = a.get("/api/usage", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["detail"].split(":")[0] in {*params, "parameter"}, answer.text
        assert httpx.get(ledgered.url + "/api/usage").status_code == 401


def test_stats_add_usage_per_day_model_project_and_tool_calls(dsn: str, ledgered: Any) -> None:
    # Two of the range's Read calls fail, one after 5 s: failure rate and durations change with them.
    run_sql(
        dsn,
        "UPDATE hook_audit_log SET event_type = 'PostToolUseFailure', "
        "occurred_at = occurred_at + CASE session_id WHEN 's-000021' THEN interval '5 s' ELSE '0' END "
        "WHERE tenant_id = 'acme' AND session_id IN ('s-000020', 's-000021') AND event_type = 'PostToolUse' "
        "AND tool_name = 'Read'",
    )
    run_sql(dsn, "SELECT hookdb_fill_summary('acme')")  # the UPDATE bypassed the dashboard's summary
    start, end = seed.BASE + timedelta(minutes=15), seed.BASE + timedelta(days=2)
    with client(ledgered) as http:
        stats = http.get(
            "/api/sessions/stats", params={"from": start.isoformat(), "to": end.isoformat()}
        ).json()
    assert got(stats["usage_by_model"]) == usage_sql(dsn, "u.model", start, end)
    assert got(stats["usage_by_project"]) == usage_sql(dsn, "regexp_replace(s.cwd, '^.*/', '')", start, end)
    costs = [Decimal(str(g["cost_usd"])) for g in stats["usage_by_project"]]
    assert costs == sorted(costs, reverse=True)
    day_model = usage_sql(dsn, "to_char(u.at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ' ' || u.model", start, end)
    assert {f"{u['day']} {u['model']}": (u["requests"], u["tokens"], Decimal(str(u["cost_usd"])))
            for u in stats["usage_by_day_model"]} == day_model  # fmt: skip
    per_day = {d["day"]: d for d in stats["per_day"]}
    for day, (_, tokens, cost) in usage_sql(
        dsn, "to_char(u.at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", start, end
    ).items():
        assert (per_day[day]["tokens"], Decimal(str(per_day[day]["cost_usd"]))) == (tokens, cost)
    assert stats["usage"]["requests"] == 51
    calls = run_sql(
        dsn,
        "SELECT p.tool_name, count(*) AS calls, "
        "count(*) FILTER (WHERE e.event_type = 'PostToolUseFailure') AS failed, "
        "array_agg(extract(epoch FROM e.occurred_at - p.occurred_at) * 1000) AS ms "
        "FROM hook_audit_log p JOIN sessions s USING (tenant_id, session_id) "
        "JOIN hook_audit_log e ON e.tenant_id = p.tenant_id AND e.session_id = p.session_id "
        "AND e.payload->>'tool_use_id' = p.payload->>'tool_use_id' AND e.event_type <> 'PreToolUse' "
        "WHERE p.tenant_id = 'acme' AND p.event_type = 'PreToolUse' "
        "AND s.started_at >= $1 AND s.started_at < $2 "
        "GROUP BY 1",
        start,
        end,
    )
    tools = {t["tool"]: t for t in stats["tools"]}
    assert set(tools) == {r["tool_name"] for r in calls}
    for r in calls:
        t = tools[r["tool_name"]]
        assert (t["calls"], t["failures"]) == (r["calls"], r["failed"])
        assert t["failure_rate"] == pytest.approx(r["failed"] / r["calls"])
        ms = sorted(float(v) for v in r["ms"])
        assert t["p50_ms"] == pytest.approx(statistics.quantiles(ms, n=100, method="inclusive")[49])
        assert t["p95_ms"] == pytest.approx(statistics.quantiles(ms, n=100, method="inclusive")[94])
    assert tools["Read"]["failures"] == 2
    assert tools["Read"]["p50_ms"] == 1250


def test_a_live_sessions_card_gets_its_tokens_and_cost_from_its_transcript(
    start_collector: Any, start_api: Any, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    """A real collector reads the real transcript fixture on Stop; the stream, the card and the detail
    carry what the ledger recorded."""
    transcript = tmp_path / f"{test_ledger.SESSION}.jsonl"
    transcript.write_bytes(test_ledger.DATA)
    collector = start_collector("--set", "batch.linger_seconds=0.05")
    api = start_api(dsn, {"default": TOKEN_A})
    stream = Stream(api, TOKEN_A)
    try:
        test_ledger.stop(socket_path, transcript)
        card = wait_for_card(stream, lambda s: s["cost_usd"] is not None)
    finally:
        stream.close()
        collector.stop()
    assert Decimal(str(card["cost_usd"])) == test_ledger.TOTAL
    assert card["cost_source"] == "computed"
    tokens = tuple(card[k] for k in TOKEN_KINDS)
    assert tokens == (2450, 251, 23924, 12292, 0)  # Claude Code's own JSON output for the run
    assert card["models"] == ["claude-sonnet-4-5"]
    with client(api) as http:
        detail = http.get(f"/api/sessions/{test_ledger.SESSION}").json()
    assert detail["session"] == card
    assert [r["request_id"] for r in detail["requests"]] == test_ledger.REQUESTS
    [main] = detail["agents"]
    assert (main["agent"], main["requests"], Decimal(str(main["cost_usd"]))) == ("main", 3, test_ledger.TOTAL)


def test_an_sdk_summary_is_not_counted_beside_the_per_request_rows_of_its_session(
    dsn: str, start_api: Any
) -> None:
    """The Agent SDK's per-model summary of a session repeats what its transcript or OTLP rows say: the
    detail and ``/api/usage`` count it only for a session that has no per-request row."""
    migrate(dsn)
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    run_sql(
        dsn,
        "INSERT INTO sessions (tenant_id, session_id, status, started_at, updated_at) VALUES "
        "('acme', 'both', 'completed', $1, $1), ('acme', 'sdk-only', 'completed', $1, $1)",
        at,
    )
    for session, request, cost, source in [
        ("both", "req_1", "0.5", "transcript"),
        ("both", "sdk:claude-sonnet-4-5", "0.5", "sdk"),
        ("sdk-only", "sdk:claude-sonnet-4-5", "0.25", "sdk"),
    ]:
        run_sql(
            dsn,
            "INSERT INTO usage_ledger (tenant_id, session_id, request_id, agent, model, input_tokens, "
            "output_tokens, cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, "
            "cost_usd, cost_source, at, sources) VALUES ('acme', $1, $2, 'main', 'claude-sonnet-4-5', "
            "10, 1, 0, 0, 0, $3::numeric, 'reported', $4, ARRAY[$5])",
            session,
            request,
            cost,
            at,
            source,
        )
    api = start_api(dsn, TOKENS)
    span = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "group": "model"}
    with client(api) as http:
        usage = http.get("/api/usage", params=span).json()
        assert usage["total"]["requests"] == 2
        assert Decimal(str(usage["total"]["cost_usd"])) == Decimal("0.75")
        both = http.get("/api/sessions/both").json()
        assert [r["request_id"] for r in both["requests"]] == ["req_1"]
        alone = http.get("/api/sessions/sdk-only").json()
        assert [r["request_id"] for r in alone["requests"]] == ["sdk:claude-sonnet-4-5"]
