"""The OTLP/HTTP receiver: Claude Code's own telemetry, posted as it posts it, lands as events and ledger rows
(intake/otlp_http.py), through a real collector process and a real PostgreSQL."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from test_http_hooks import token_digest

from conftest import count_rows, run_sql, wait_for

OTLP = Path(__file__).parent / "fixtures" / "claude-code-2.1.332" / "otlp"
LOGS = {"json": (OTLP / "v1-logs.json").read_bytes(), "pb": (OTLP / "v1-logs.pb").read_bytes()}
METRICS = {"json": (OTLP / "v1-metrics.json").read_bytes(), "pb": (OTLP / "v1-metrics.pb").read_bytes()}
TYPES = {"json": "application/json", "pb": "application/x-protobuf"}
SESSIONS = {"json": "8cd286ee-7ce9-4b85-b553-27cb41131f9f", "pb": "e78cdaf4-b5c3-4968-96e1-191036fb7339"}
TOKENS = {"acme": "token-of-acme", "beta": "token-of-beta"}
RECORDS = 14  # log records in each fixture
POINTS = 10  # metric data points in each fixture
TOTAL = Decimal("0.0643872")


def post(
    port: int,
    body: bytes,
    kind: str = "json",
    *,
    path: str = "/v1/logs",
    token: str | None = TOKENS["acme"],
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    sent = {"Content-Type": TYPES[kind], **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_with_otlp(start_collector: Any, *extra: str) -> int:
    tokens = ", ".join(f'{tenant} = ["{token_digest(token)}"]' for tenant, token in TOKENS.items())
    collector = start_collector(
        "--set",
        "otlp.enabled=true",
        "--set",
        "otlp.listen=127.0.0.1:0",
        "--set",
        f"http_hooks.tokens={{{tokens}}}",
        *extra,
    )
    return collector.events("otlp.listening")[0]["port"]


def settled(dsn: str, expected: int) -> int:
    wait_for(lambda: count_rows(dsn) >= expected)
    time.sleep(0.5)  # any row too many would have landed by now
    return count_rows(dsn)


def ledger(dsn: str, session: str) -> list[Any]:
    return run_sql(
        dsn,
        "SELECT request_id, model, input_tokens, output_tokens, cache_read_tokens, cache_creation_5m_tokens, "
        "cache_creation_1h_tokens, cost_usd, cost_source, sources, tenant_id FROM usage_ledger "
        "WHERE session_id = $1 ORDER BY at",
        session,
    )


def test_protobuf_and_json_exports_land_as_the_same_events_and_ledger_rows_once(start_collector, dsn) -> None:
    port = start_with_otlp(start_collector)
    for kind in ("json", "pb"):
        status, body = post(port, LOGS[kind], kind)
        assert status == 200
        if kind == "pb":
            assert not ExportLogsServiceResponse.FromString(body).HasField("partial_success")
        else:
            assert json.loads(body) == {}
    assert settled(dsn, 2 * RECORDS) == 2 * RECORDS
    for kind in ("json", "pb"):  # a retried export is the same events: nothing more
        assert post(port, LOGS[kind], kind)[0] == 200
    assert settled(dsn, 2 * RECORDS) == 2 * RECORDS
    events = {
        kind: run_sql(
            dsn,
            "SELECT event_type, source, tenant_id, payload->>'model' AS model FROM hook_audit_log "
            "WHERE session_id = $1 ORDER BY occurred_at, event_type",
            session,
        )
        for kind, session in SESSIONS.items()
    }
    assert [tuple(r) for r in events["json"]] == [tuple(r) for r in events["pb"]]
    assert {(r["source"], r["tenant_id"]) for r in events["json"]} == {("claude-code-otel", "acme")}
    rows = {kind: ledger(dsn, session) for kind, session in SESSIONS.items()}
    assert [tuple(r)[1:] for r in rows["json"]] == [tuple(r)[1:] for r in rows["pb"]]
    assert len(rows["json"]) == 3
    assert {(r["cost_source"], tuple(r["sources"])) for r in rows["json"]} == {("reported", ("otlp",))}
    for session in SESSIONS.values():
        s = run_sql(dsn, "SELECT * FROM sessions WHERE session_id = $1", session)[0]
        assert (s["cost_usd"], s["cost_source"], s["model"]) == (TOTAL, "reported", "claude-sonnet-4-5")
        assert (s["input_tokens"], s["output_tokens"], s["cache_read_tokens"]) == (2450, 251, 23924)


def test_metric_points_land_as_events_once(start_collector, dsn) -> None:
    port = start_with_otlp(start_collector)
    for kind in ("json", "pb", "json"):
        assert post(port, METRICS[kind], kind, path="/v1/metrics")[0] == 200
    assert settled(dsn, 2 * POINTS) == 2 * POINTS
    cost = run_sql(
        dsn,
        "SELECT (payload->'otel.metric'->>'value')::numeric AS v FROM hook_audit_log "
        "WHERE event_type = 'claude_code.cost.usage'",
    )
    assert [r["v"] for r in cost] == [TOTAL, TOTAL]


def test_a_tenants_token_writes_only_that_tenant(start_collector, dsn) -> None:
    port = start_with_otlp(start_collector)
    assert post(port, LOGS["pb"], "pb", token=TOKENS["beta"])[0] == 200
    assert settled(dsn, RECORDS) == RECORDS
    for table in ("hook_audit_log", "usage_ledger", "sessions"):
        tenants = run_sql(dsn, f"SELECT DISTINCT tenant_id FROM {table}")
        assert [r[0] for r in tenants] == ["beta"], table


def test_no_valid_token_is_401_and_a_body_over_the_limit_413(start_collector, dsn) -> None:
    port = start_with_otlp(start_collector, "--set", "otlp.max_body_bytes=20000")
    assert post(port, LOGS["json"], token=None)[0] == 401
    assert post(port, LOGS["json"], token="not-a-token")[0] == 401
    assert len(LOGS["json"]) > 20000
    assert post(port, LOGS["json"])[0] == 413
    squeezed = gzip.compress(LOGS["json"])  # small on the wire, over the limit once inflated
    assert len(squeezed) < 20000
    assert post(port, squeezed, headers={"Content-Encoding": "gzip"})[0] == 413
    assert post(port, b"\x1f\x8b not gzip", headers={"Content-Encoding": "gzip"})[0] == 400
    assert post(port, gzip.compress(LOGS["pb"]), "pb", headers={"Content-Encoding": "gzip"})[0] == 200
    assert post(port, b"{not json")[0] == 400
    assert post(port, b"{}", path="/v1/traces")[0] == 404
    assert settled(dsn, RECORDS) == RECORDS


OTLP_REQUESTS = ["req_650ca1f031f24ac1b823", "req_cbcfe896ac9f44e88331", "req_87b1def2cdac493aac72"]


def _renamed(value: Any, session: str, requests: dict[str, str]) -> Any:
    """The OTLP JSON fixture as if it came from the transcript fixture's run: its session and request ids."""
    if isinstance(value, list):
        return [_renamed(v, session, requests) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("key") == "session.id":
        return {"key": "session.id", "value": {"stringValue": session}}
    if value.get("key") == "request_id":
        return {"key": "request_id", "value": {"stringValue": requests[value["value"]["stringValue"]]}}
    return {k: _renamed(v, session, requests) for k, v in value.items()}


def test_a_request_seen_in_the_transcript_and_by_otlp_is_one_row_with_the_reported_cost(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    from test_ledger import DATA, REQUESTS, SESSION, stop

    collector = start_collector(
        "--set",
        "otlp.enabled=true",
        "--set",
        "otlp.listen=127.0.0.1:0",
        "--set",
        f'http_hooks.tokens={{default = ["{token_digest(TOKENS["acme"])}"]}}',  # the socket's tenant too
    )
    port = collector.events("otlp.listening")[0]["port"]
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    stop(socket_path, transcript)
    wait_for(lambda: len(ledger(dsn, SESSION)) == 3)
    assert {r["cost_source"] for r in ledger(dsn, SESSION)} == {"computed"}
    same = dict(zip(OTLP_REQUESTS, REQUESTS, strict=True))
    body = json.dumps(_renamed(json.loads(LOGS["json"]), SESSION, same)).encode()
    assert post(port, body)[0] == 200
    wait_for(lambda: {r["cost_source"] for r in ledger(dsn, SESSION)} == {"reported"})
    rows = run_sql(dsn, "SELECT request_id, sources, alt::text FROM usage_ledger ORDER BY at")
    assert [(r["request_id"], r["sources"], r["alt"]) for r in rows] == [
        (request, ["otlp", "transcript"], "[]")
        for request in REQUESTS  # the figures agree: no alt
    ]
    sql = "SELECT cost_usd, cost_source, input_tokens FROM sessions WHERE session_id = $1"
    s = run_sql(dsn, sql, SESSION)
    assert tuple(s[0]) == (TOTAL, "reported", 2450)


def test_a_record_postgresql_cannot_store_is_refused_alone_as_a_partial_success(start_collector, dsn) -> None:
    port = start_with_otlp(start_collector)
    document = json.loads(LOGS["json"])
    records = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    records[0]["attributes"].append({"key": "bad", "value": {"stringValue": "nul \u0000 here"}})
    status, body = post(port, json.dumps(document).encode())
    assert status == 200
    answer = json.loads(body)["partialSuccess"]
    assert answer["rejectedLogRecords"] == "1"
    assert "U+0000" in answer["errorMessage"]
    assert settled(dsn, RECORDS - 1) == RECORDS - 1


def test_a_full_spool_answers_503_with_retry_after(start_collector, pg_server: str) -> None:
    unreachable = pg_server.replace("/postgres?", "/no_such_database?")  # nothing drains the spool
    port = start_with_otlp(
        start_collector,
        "--dsn",
        unreachable,
        "--set",
        "spool.max_bytes=200000",
        "--set",
        "spool.segment_bytes=50000",
    )
    statuses = []
    for _ in range(40):
        statuses.append(post(port, LOGS["json"])[0])
        if statuses[-1] == 503:
            break
    assert statuses[0] == 200
    assert statuses[-1] == 503


def test_a_metric_name_longer_than_an_event_type_may_be_is_refused_alone() -> None:
    from datetime import UTC, datetime

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint

    from hookdb.collector.intake import otlp

    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    for name in ("ok", "n" * 257):
        scope.metrics.append(Metric(name=name, gauge=Gauge(data_points=[NumberDataPoint(as_int=1)])))
    batch = otlp.decode_metrics(request.SerializeToString(), otlp.PROTOBUF, received_at=datetime.now(UTC))
    assert [p.name for p in batch.points] == ["ok"]
    assert batch.rejected == 1
