"""The sans-io OTLP/HTTP decoder: Claude Code's telemetry, protobuf or JSON, as the same events."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from hookdb.collector.intake import otlp
from hookdb.collector.intake.otlp import JSON, PROTOBUF, OtlpError, decode_logs, decode_metrics
from hookdb.collector.store import usage
from hookdb.collector.store.transcripts import FileIdentity, TranscriptTail

FIXTURES = Path(__file__).parent / "fixtures" / "claude-code-2.1.332"
LOGS_JSON = (FIXTURES / "otlp" / "v1-logs.json").read_bytes()
LOGS_PB = (FIXTURES / "otlp" / "v1-logs.pb").read_bytes()
METRICS_JSON = (FIXTURES / "otlp" / "v1-metrics.json").read_bytes()
METRICS_PB = (FIXTURES / "otlp" / "v1-metrics.pb").read_bytes()
RECEIVED = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
# Keys of OTLP JSON, for bodies that are nearly requests.
_JSON_KEYS = [
    "resourceLogs",
    "resourceMetrics",
    "scopeLogs",
    "scopeMetrics",
    "logRecords",
    "metrics",
    "attributes",
    "key",
    "value",
    "stringValue",
    "intValue",
    "arrayValue",
    "kvlistValue",
    "values",
    "timeUnixNano",
    "traceId",
    "body",
    "sum",
    "dataPoints",
    "asDouble",
    "name",
]
EVENT_TYPES = [
    "managed_settings_resolved",
    *["plugin_loaded"] * 3,
    "user_prompt",
    "tool_decision",
    "api_request",
    "assistant_response",
    "tool_result",
    "api_request",
    "tool_decision",
    "tool_result",
    "api_request",
    "assistant_response",
]


def _logs(body: bytes, content_type: str = PROTOBUF) -> otlp.LogsBatch:
    return decode_logs(body, content_type, tenant="acme", received_at=RECEIVED)


def _metrics(body: bytes, content_type: str = PROTOBUF) -> otlp.MetricsBatch:
    return decode_metrics(body, content_type, received_at=RECEIVED)


def _otlp_json(message) -> bytes:
    """``message`` in OTLP's JSON mapping: protobuf's, with enums as numbers and trace/span ids as hex."""

    def hexify(value):
        if isinstance(value, dict):
            return {
                k: base64.b64decode(v).hex() if k in ("traceId", "spanId") else hexify(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [hexify(v) for v in value]
        return value

    return json.dumps(hexify(json_format.MessageToDict(message, use_integers_for_enums=True))).encode()


def _parse_pb(kind, body: bytes):
    message = kind()
    message.ParseFromString(body)
    return message


def _shape(event: otlp.OtelEvent):
    return (event.event_type, event.source, event.scope, sorted(event.payload), sorted(event.resource))


def test_the_json_and_protobuf_fixtures_decode_to_the_same_events():
    """Two runs of the same script, one per protocol: the same events, but for ids, times and sessions."""
    from_json, from_pb = _logs(LOGS_JSON, JSON), _logs(LOGS_PB)
    assert [e.event_type for e in from_json.events] == EVENT_TYPES
    assert [_shape(e) for e in from_json.events] == [_shape(e) for e in from_pb.events]
    assert {e.session_id for e in from_json.events} == {"8cd286ee-7ce9-4b85-b553-27cb41131f9f"}
    assert {e.session_id for e in from_pb.events} == {"e78cdaf4-b5c3-4968-96e1-191036fb7339"}
    assert (from_json.rejected, from_pb.rejected) == (0, 0)
    assert {e.source for e in from_json.events} == {"claude-code-otel"}

    def figures(batch):
        return [(r.figures, r.agent, r.sources) for r in batch.usage]

    assert figures(from_json) == figures(from_pb)


@pytest.mark.parametrize(
    ("kind", "body"), [(ExportLogsServiceRequest, LOGS_PB), (ExportLogsServiceRequest, LOGS_JSON)]
)
def test_one_request_in_either_encoding_is_the_very_same_events(kind, body):
    """The same export request, as protobuf and as OTLP JSON, gives equal events, ids included."""
    message = (
        _parse_pb(kind, body)
        if body is LOGS_PB
        else json_format.Parse(body, kind(), ignore_unknown_fields=True)  # no hex ids in Claude Code's logs
    )
    from_pb = _logs(message.SerializeToString())
    from_json = _logs(_otlp_json(message), JSON)
    assert from_pb == from_json
    assert len(from_pb.events) == 14


def test_metrics_in_either_encoding_are_the_very_same_points():
    message = _parse_pb(ExportMetricsServiceRequest, METRICS_PB)
    assert _metrics(METRICS_PB) == _metrics(_otlp_json(message), JSON)
    from_json, from_pb = _metrics(METRICS_JSON, JSON), _metrics(METRICS_PB)
    assert [(p.name, p.kind, sorted(p.attributes)) for p in from_json.points] == [
        (p.name, p.kind, sorted(p.attributes)) for p in from_pb.points
    ]


def test_decoding_the_same_request_twice_gives_the_same_ids():
    first, again = _logs(LOGS_PB), _logs(LOGS_PB)
    ids = [e.event_id for e in first.events]
    assert ids == [e.event_id for e in again.events]
    assert len(set(ids)) == len(ids)  # three plugin_loaded records with the same time are three events
    points = [p.point_id for p in _metrics(METRICS_PB).points]
    assert points == [p.point_id for p in _metrics(METRICS_PB).points]
    assert len(set(points)) == len(points)


def test_a_different_record_is_a_different_event():
    message = _parse_pb(ExportLogsServiceRequest, LOGS_PB)
    before = _logs(message.SerializeToString()).events
    message.resource_logs[0].scope_logs[0].log_records[6].attributes[0].value.string_value = "someone-else"
    after = _logs(message.SerializeToString()).events
    assert [a.event_id == b.event_id for a, b in zip(before, after, strict=True)] == [True] * 6 + [False] + [
        True
    ] * 7


def test_an_event_is_typed_and_timed_from_claude_codes_attributes():
    event = _logs(LOGS_JSON, JSON).events[6]
    assert event.event_type == "api_request"
    assert event.occurred_at == datetime(2026, 12, 1, 7, 55, 56, 750000, tzinfo=UTC)
    assert event.session_id == "8cd286ee-7ce9-4b85-b553-27cb41131f9f"
    assert event.payload["model"] == "claude-sonnet-4-5"
    assert event.payload["input_tokens"] == 2140
    assert event.payload["anthropic.custom_base_url"] is True
    assert event.body == "claude_code.api_request"
    assert event.resource["service.version"] == "2.1.332"
    assert event.scope == "com.anthropic.claude_code.events"
    assert _logs(LOGS_JSON, JSON).events[0].payload["managed_settings.sources"] == []


def test_api_request_records_feed_the_ledger_with_the_reported_cost():
    records = _logs(LOGS_JSON, JSON).usage
    assert [r.request_id for r in records] == [
        "req_650ca1f031f24ac1b823",
        "req_cbcfe896ac9f44e88331",
        "req_87b1def2cdac493aac72",
    ]
    assert [r.cost_usd for r in records] == [Decimal("0.05238"), Decimal("0.0070236"), Decimal("0.0049836")]
    assert {(r.tenant, r.cost_source, r.agent) for r in records} == {("acme", "reported", usage.MAIN)}
    assert records[0].sources == {"otlp"}
    assert (records[0].cache_creation_5m_tokens, records[0].cache_creation_1h_tokens) == (11872, 0)
    total = usage.totals(records)
    assert total.cost_usd == Decimal("0.0643872")
    assert (total.input_tokens, total.output_tokens, total.cache_read_tokens) == (2450, 251, 23924)


def test_the_three_sources_agree_on_the_fixture_runs_to_the_micro_dollar():
    """Transcript (computed from the price table), OTLP logs (reported) and OTLP metrics, per request."""
    tail = TranscriptTail(tenant="acme", session="s")
    data = (FIXTURES / "session-bash-write.jsonl").read_bytes()
    tail.resume(FileIdentity(1, 1), len(data))
    transcript = tail.feed(data, 0).records
    for batch in (_logs(LOGS_JSON, JSON), _logs(LOGS_PB)):
        reported = batch.usage
        assert [r.figures.claim() for r in transcript] == [r.figures.claim() for r in reported]
    metrics = {(p.name, p.attributes.get("type")): p.value for p in _metrics(METRICS_PB).points}
    total = usage.totals(transcript)
    assert (
        Decimal(str(metrics[("claude_code.cost.usage", None)]))
        == total.cost_usd
        == tail.state.cost_state.total_cost_usd
    )
    assert metrics[("claude_code.token.usage", "input")] == total.input_tokens
    assert metrics[("claude_code.token.usage", "output")] == total.output_tokens
    assert metrics[("claude_code.token.usage", "cacheRead")] == total.cache_read_tokens
    assert metrics[("claude_code.token.usage", "cacheCreation")] == total.cache_creation_5m_tokens


def test_metric_points_are_typed():
    points = {(p.name, p.attributes.get("type")): p for p in _metrics(METRICS_JSON, JSON).points}
    cost = points[("claude_code.cost.usage", None)]
    assert (cost.kind, cost.unit, cost.temporality, cost.monotonic) == ("sum", "USD", "delta", True)
    assert cost.value == pytest.approx(0.0643872)
    assert cost.session_id == "8cd286ee-7ce9-4b85-b553-27cb41131f9f"
    assert cost.start is not None
    assert cost.start < cost.at
    assert cost.count is None
    assert len(points) == 10


def _request(*records: LogRecord) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=list(records))])]
    )


def _attr(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def test_trace_and_span_ids_are_hex_in_json():
    record = LogRecord(
        time_unix_nano=1796111756750000000,
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        attributes=[_attr("event.name", AnyValue(string_value="x"))],
    )
    message = _request(record)
    body = _otlp_json(message)
    assert b'"traceId": "000102030405060708090a0b0c0d0e0f"' in body
    assert _logs(body, JSON) == _logs(message.SerializeToString())


def test_json_64_bit_integers_may_be_numbers_or_strings():
    as_strings = json.loads(LOGS_JSON)
    assert isinstance(as_strings["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["timeUnixNano"], str)

    def numbers(value):
        if isinstance(value, dict):
            return {k: int(v) if k.endswith("UnixNano") else numbers(v) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers(v) for v in value]
        return value

    assert _logs(json.dumps(numbers(as_strings)).encode(), JSON) == _logs(LOGS_JSON, JSON)


def test_a_record_without_claude_codes_attributes_falls_back_to_the_otlp_fields():
    timed = LogRecord(time_unix_nano=1796111756750000000, body=AnyValue(string_value="hello"))
    observed = LogRecord(observed_time_unix_nano=1796111756751000000, event_name="named")
    untimed = LogRecord(attributes=[_attr("event.timestamp", AnyValue(string_value="not a time"))])
    events = _logs(_request(timed, observed, untimed).SerializeToString()).events
    assert [(e.event_type, e.occurred_at, e.session_id) for e in events] == [
        ("hello", datetime(2026, 12, 1, 7, 55, 56, 750000, tzinfo=UTC), None),
        ("named", datetime(2026, 12, 1, 7, 55, 56, 751000, tzinfo=UTC), None),
        ("log", RECEIVED, None),
    ]


def test_attribute_values_of_every_kind_are_json_storable():
    values = AnyValue(
        kvlist_value={
            "values": [
                _attr("b", AnyValue(bytes_value=b"\x01\xff")),
                _attr("nan", AnyValue(double_value=float("nan"))),
                _attr("inf", AnyValue(double_value=float("-inf"))),
                _attr("list", AnyValue(array_value={"values": [AnyValue(int_value=-3), AnyValue()]})),
            ]
        }
    )
    (event,) = _logs(_request(LogRecord(attributes=[_attr("v", values)])).SerializeToString()).events
    assert event.payload == {"v": {"b": "01ff", "nan": "nan", "inf": "-inf", "list": [-3, None]}}
    json.dumps(event.payload, allow_nan=False)


def test_a_record_postgresql_cannot_store_is_refused_alone():
    good = LogRecord(attributes=[_attr("event.name", AnyValue(string_value="ok"))])
    nul = LogRecord(attributes=[_attr("prompt", AnyValue(string_value="a\x00b"))])
    long_name = LogRecord(attributes=[_attr("event.name", AnyValue(string_value="x" * 300))])
    long_session = LogRecord(attributes=[_attr("session.id", AnyValue(string_value="s" * 300))])
    batch = _logs(_request(nul, good, long_name, long_session).SerializeToString())
    assert [e.event_type for e in batch.events] == ["ok"]
    assert batch.rejected == 3
    assert "U+0000" in batch.error


def test_an_api_request_without_a_request_id_or_session_is_an_event_but_no_usage():
    attrs = [
        _attr("event.name", AnyValue(string_value="api_request")),
        _attr("input_tokens", AnyValue(int_value=5)),
    ]
    no_id = LogRecord(attributes=[*attrs, _attr("session.id", AnyValue(string_value="s"))])
    no_session = LogRecord(attributes=[*attrs, _attr("request_id", AnyValue(string_value="r"))])
    batch = _logs(_request(no_id, no_session).SerializeToString())
    assert len(batch.events) == 2
    assert batch.usage == []


def test_an_api_request_without_a_cost_is_priced_or_unknown():
    def api_request(model: str) -> LogRecord:
        return LogRecord(
            attributes=[
                _attr("event.name", AnyValue(string_value="api_request")),
                _attr("session.id", AnyValue(string_value="s")),
                _attr("request_id", AnyValue(string_value=model)),
                _attr("model", AnyValue(string_value=model)),
                _attr("input_tokens", AnyValue(string_value="1000")),  # Claude Code sends some counts as text
                _attr("output_tokens", AnyValue(int_value=100)),
            ]
        )

    batch = _logs(_request(api_request("claude-haiku-4-5"), api_request("claude-next-9")).SerializeToString())
    assert [(r.cost_usd, r.cost_source) for r in batch.usage] == [
        (Decimal("0.0015"), "computed"),
        (None, "unknown"),
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"\xff\xff\xff", PROTOBUF, 400),
        (LOGS_PB[:-5], PROTOBUF, 400),
        (b"not json", JSON, 400),
        (b"[1, 2]", JSON, 400),
        (b'{"resourceLogs": 5}', JSON, 400),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', JSON, 400),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}', JSON, 400),
        (b"\xc3\x28", JSON, 400),
        (b"[" * 100_000, JSON, 400),
        (LOGS_PB, "text/plain", 415),
        (LOGS_PB, "", 415),
    ],
)
def test_a_malformed_body_is_one_clear_error(body, content_type, status):
    with pytest.raises(OtlpError) as raised:
        _logs(body, content_type)
    assert raised.value.status == status
    assert str(raised.value)


def test_content_type_parameters_and_case_are_allowed():
    assert _logs(LOGS_JSON, "Application/JSON; charset=utf-8") == _logs(LOGS_JSON, JSON)
    assert _metrics(METRICS_PB, "application/x-protobuf; proto=x") == _metrics(METRICS_PB)


def test_unknown_json_fields_are_ignored_as_the_otlp_spec_says():
    document = json.loads(LOGS_JSON)
    document["resourceLogs"][0]["somethingNew"] = {"a": 1}
    assert _logs(json.dumps(document).encode(), JSON) == _logs(LOGS_JSON, JSON)


_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20)
_any_value = st.one_of(
    _text.map(lambda s: AnyValue(string_value=s)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats(allow_nan=False).map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.tuples(_text, _any_value), max_size=5), min_size=1, max_size=4),
    st.integers(0, 2**64 - 1),
)
def test_any_request_decodes_alike_from_protobuf_and_json(records, time):
    message = _request(
        *(LogRecord(time_unix_nano=time, attributes=[_attr(k, v) for k, v in attrs]) for attrs in records)
    )
    from_pb = _logs(message.SerializeToString())
    assert from_pb == _logs(_otlp_json(message), JSON)
    assert len(from_pb.events) == len(records)


def test_a_resource_or_scope_postgresql_cannot_store_refuses_its_records_only():
    record = LogRecord(attributes=[_attr("event.name", AnyValue(string_value="ok"))])
    bad_resource = ResourceLogs(
        resource={"attributes": [_attr("host.name", AnyValue(string_value="\x00"))]},
        scope_logs=[ScopeLogs(log_records=[record, record])],
    )
    bad_scope = ResourceLogs(scope_logs=[ScopeLogs(scope={"name": "a\x00"}, log_records=[record])])
    good = ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])
    request = ExportLogsServiceRequest(resource_logs=[bad_resource, bad_scope, good])
    batch = _logs(request.SerializeToString())
    assert (len(batch.events), batch.rejected) == (1, 3)


def test_a_metric_point_postgresql_cannot_store_is_refused_alone():
    message = _parse_pb(ExportMetricsServiceRequest, METRICS_PB)
    metrics = message.resource_metrics[0].scope_metrics[0].metrics
    metrics[1].sum.data_points[0].attributes[0].value.string_value = "\x00"
    batch = _metrics(message.SerializeToString())
    assert (len(batch.points), batch.rejected) == (9, 1)
    assert "U+0000" in batch.error
    message.resource_metrics[0].resource.attributes[0].value.string_value = "\x00"
    assert _metrics(message.SerializeToString()) == otlp.MetricsBatch(
        [], 10, batch.error.replace("string", "string")
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"\xff\xff", PROTOBUF), (b'{"resourceMetrics": {}}', JSON), (METRICS_JSON, "application/xml")],
)
def test_a_malformed_metrics_body_is_one_clear_error(body, content_type):
    with pytest.raises(OtlpError, match=r"ExportMetricsServiceRequest|content type"):
        _metrics(body, content_type)


def test_an_api_request_whose_counts_are_not_token_counts_gives_no_usage():
    def api_request(count: AnyValue) -> LogRecord:
        return LogRecord(
            attributes=[
                _attr("event.name", AnyValue(string_value="api_request")),
                _attr("session.id", AnyValue(string_value="s")),
                _attr("request_id", AnyValue(string_value="r")),
                _attr("model", AnyValue(string_value="claude-haiku-4-5")),
                _attr("output_tokens", count),
            ]
        )

    for count in (AnyValue(int_value=-1), AnyValue(string_value="many"), AnyValue(bool_value=True)):
        batch = _logs(_request(api_request(count)).SerializeToString())
        assert (len(batch.events), batch.usage) == (1, [])
    assert len(_logs(_request(api_request(AnyValue(double_value=7.0))).SerializeToString()).usage) == 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_JSON_KEYS), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200) | _json.map(lambda d: json.dumps(d).encode()), st.sampled_from([JSON, PROTOBUF])
)
def test_any_body_is_decoded_or_refused_with_the_one_error(body, content_type):
    for decode in (_logs, _metrics):
        status = 200
        try:
            decode(body, content_type)
        except OtlpError as exc:
            status = exc.status
        assert status in (200, 400)
