"""A sans-io decoder of OTLP/HTTP export requests: Claude Code's native telemetry as typed events.

``POST /v1/logs`` and ``POST /v1/metrics`` bodies, in ``http/protobuf`` (decoded by the OpenTelemetry
project's own ``opentelemetry-proto`` classes) or ``http/json`` (OTLP's JSON mapping: lowerCamelCase keys,
64-bit integers as strings, trace and span ids as hex), become the same values either way:

- every log record an :class:`OtelEvent` (source ``claude-code-otel``, type from ``event.name``, session
  from ``session.id``, time from ``event.timestamp``, the attributes as payload), whose id is derived from
  the record itself so a retried export is the same event;
- every ``api_request`` record also a :class:`~hookdb.collector.store.usage.UsageRecord` (cost reported);
- every metric data point a :class:`MetricPoint`, with an id derived the same way.

A body that cannot be read at all raises :class:`OtlpError`; a record that cannot be stored (a NUL in a
string, which PostgreSQL text cannot hold) is refused alone and counted, for the OTLP partial-success reply.
Pure: no I/O, no clock — the caller passes the tenant and when the request arrived.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec
from google.protobuf import json_format, message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from hookdb.collector import prices
from hookdb.collector.store import usage

SOURCE = "claude-code-otel"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_LABEL = 256
"""The longest event type or session id an event may carry, as for every other intake."""

# Fixed forever: changing it would give every record already stored a new id.
_NAMESPACE = uuid.UUID("5d0c7f8e-4c1b-5a63-9a8e-7b0f1e2d3c4b")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The OTLP JSON mapping writes these bytes fields as hex; protobuf's own JSON mapping expects base64.
_HEX_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})
# The token counts of a claude_code.api_request event.
_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
)


class OtlpError(Exception):
    """A body that is not an OTLP export request of the kind posted; ``status`` is the HTTP answer."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


class OtelEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One OTLP log record as a hookdb event."""

    event_id: uuid.UUID
    occurred_at: datetime
    source: str = SOURCE
    event_type: str
    session_id: str | None
    payload: dict[str, Any]
    """The record's attributes, ``{key: value}``."""
    body: Any = None
    resource: dict[str, Any] = {}
    scope: str | None = None


MetricKind = Literal["gauge", "sum", "histogram", "exponential_histogram", "summary"]


class MetricPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One data point of one OTLP metric."""

    point_id: uuid.UUID
    name: str
    kind: MetricKind
    unit: str | None
    temporality: Literal["delta", "cumulative"] | None
    monotonic: bool | None
    start: datetime | None
    at: datetime
    value: float | int | None
    """A number point's value; a histogram's or summary's sum."""
    count: int | None
    """A histogram's or summary's count."""
    session_id: str | None
    attributes: dict[str, Any]
    resource: dict[str, Any] = {}
    scope: str | None = None


class LogsBatch(NamedTuple):
    events: list[OtelEvent]
    usage: list[usage.UsageRecord]
    rejected: int
    """Log records refused, for ``partial_success.rejected_log_records``."""
    error: str | None
    """Why the first refused record was refused, for ``partial_success.error_message``."""


class MetricsBatch(NamedTuple):
    points: list[MetricPoint]
    rejected: int
    """Data points refused, for ``partial_success.rejected_data_points``."""
    error: str | None


class _Refused(Exception):
    """One record that cannot be kept; the rest of the request can."""


def decode_logs(
    body: bytes,
    content_type: str,
    *,
    tenant: str,
    received_at: datetime,
    price_table: prices.PriceTable = prices.PRICES,
) -> LogsBatch:
    """Decode an ``ExportLogsServiceRequest`` body into events and the usage records its requests give."""
    request = _parse(body, content_type, ExportLogsServiceRequest)
    events: list[OtelEvent] = []
    records: list[usage.UsageRecord] = []
    rejected, error = 0, None
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            try:
                context = _context(resource_logs.resource, scope_logs.scope)
            except _Refused as exc:
                rejected += len(scope_logs.log_records)
                error = error or str(exc)
                continue
            for record in scope_logs.log_records:
                try:
                    event = _event(record, context, received_at)
                except _Refused as exc:
                    rejected += 1
                    error = error or str(exc)
                    continue
                events.append(event)
                if event.event_type == "api_request":
                    record_usage = usage_of(event, tenant, price_table)
                    if record_usage is not None:
                        records.append(record_usage)
    return LogsBatch(events, records, rejected, error)


def decode_metrics(body: bytes, content_type: str, *, received_at: datetime) -> MetricsBatch:
    """Decode an ``ExportMetricsServiceRequest`` body into its data points."""
    request = _parse(body, content_type, ExportMetricsServiceRequest)
    points: list[MetricPoint] = []
    rejected, error = 0, None
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            try:
                context = _context(resource_metrics.resource, scope_metrics.scope)
            except _Refused as exc:
                rejected += sum(len(_data(m).data_points) for m in scope_metrics.metrics if _data(m))
                error = error or str(exc)
                continue
            for metric in scope_metrics.metrics:
                data = _data(metric)
                if data is None:
                    continue
                for point in data.data_points:
                    try:
                        points.append(_point(metric, data, point, context, received_at))
                    except _Refused as exc:
                        rejected += 1
                        error = error or str(exc)
    return MetricsBatch(points, rejected, error)


class _Context(NamedTuple):
    """What a record shares with the others of its resource and scope."""

    resource: dict[str, Any]
    scope: str | None
    identity: bytes
    """The resource and scope as they were sent: part of each record's identity."""


def _context(resource: Any, scope: Any) -> _Context:
    _check_storable(scope.name, "scope name")
    return _Context(
        resource=_attributes(resource.attributes),
        scope=scope.name or None,
        identity=_framed(
            resource.SerializeToString(deterministic=True), scope.SerializeToString(deterministic=True)
        ),
    )


def _data(metric: Any) -> Any:
    kind = metric.WhichOneof("data")
    return None if kind is None else getattr(metric, kind)


def _point(metric: Any, data: Any, point: Any, context: _Context, received_at: datetime) -> MetricPoint:
    kind = metric.WhichOneof("data")
    _check_storable(metric.name, "metric name")
    if len(metric.name) > MAX_LABEL:
        raise _Refused(f"metric name longer than {MAX_LABEL} characters")
    _check_storable(metric.unit, "metric unit")
    attributes = _attributes(point.attributes)
    # A point's identity includes its metric's name, unit and kind, not the metric's other points.
    head = metrics_pb2.Metric(name=metric.name, unit=metric.unit).SerializeToString(deterministic=True)
    return MetricPoint(
        point_id=_identity(
            context.identity, head, kind.encode(), point.SerializeToString(deterministic=True)
        ),
        name=metric.name,
        kind=kind,
        unit=metric.unit or None,
        temporality=_temporality(data),
        monotonic=data.is_monotonic if kind == "sum" else None,
        start=_nanos(point.start_time_unix_nano) if point.start_time_unix_nano else None,
        at=_nanos(point.time_unix_nano) if point.time_unix_nano else received_at,
        value=_point_value(kind, point),
        count=None if kind in ("gauge", "sum") else point.count,
        session_id=_label(attributes.get("session.id")),
        attributes=attributes,
        resource=context.resource,
        scope=context.scope,
    )


M = TypeVar("M", bound=message.Message)


def _parse(body: bytes, content_type: str, kind: Callable[[], M]) -> M:
    media = content_type.split(";", 1)[0].strip().lower()
    request = kind()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except message.DecodeError as exc:
            raise OtlpError(f"body is not a protobuf {type(request).__name__}: {exc}") from None
        return request
    if media == JSON:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise OtlpError(f"body is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise OtlpError(f"body is not an OTLP JSON {type(request).__name__} object")
        try:
            # The OTLP spec: receivers ignore fields they do not know.
            return json_format.ParseDict(_hex_to_base64(document), request, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise OtlpError(f"body is not an OTLP JSON {type(request).__name__}: {exc}") from None
    raise OtlpError(f"content type {content_type!r} is neither {PROTOBUF} nor {JSON}", status=415)


def _hex_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _base64_of_hex(k, v) if k in _HEX_FIELDS and isinstance(v, str) else _hex_to_base64(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_to_base64(v) for v in value]
    return value


def _base64_of_hex(field: str, text: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(text)).decode()
    except ValueError:
        raise OtlpError(f"{field} {text[:40]!r} is not hex, as OTLP JSON writes it") from None


def _framed(*parts: bytes) -> bytes:
    # Length-prefixed, so no two different sequences of parts are the same bytes.
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def _identity(*parts: bytes) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, hashlib.sha256(_framed(*parts)).hexdigest())


def _event(record: Any, context: _Context, received_at: datetime) -> OtelEvent:
    payload = _attributes(record.attributes)
    body = _value(record.body) if record.HasField("body") else None
    name = payload.get("event.name") or record.event_name or (body if isinstance(body, str) else None)
    event_type = name if isinstance(name, str) and name else "log"
    _check_storable(event_type, "event name")
    if len(event_type) > MAX_LABEL:
        raise _Refused(f"event name longer than {MAX_LABEL} characters")
    session = _label(payload.get("session.id"))
    if isinstance(payload.get("session.id"), str) and session is None:
        raise _Refused(f"session.id longer than {MAX_LABEL} characters")
    occurred = _timestamp(payload.get("event.timestamp"))
    if occurred is None:
        stamp = record.time_unix_nano or record.observed_time_unix_nano
        occurred = _nanos(stamp) if stamp else received_at
    return OtelEvent(
        event_id=_identity(context.identity, record.SerializeToString(deterministic=True)),
        occurred_at=occurred,
        event_type=event_type,
        session_id=session,
        payload=payload,
        body=body,
        resource=context.resource,
        scope=context.scope,
    )


def usage_of(
    event: OtelEvent, tenant: str, price_table: prices.PriceTable = prices.PRICES
) -> usage.UsageRecord | None:
    """The usage an ``api_request`` event reports, or ``None`` when it names no request or session."""
    a = event.payload
    request_id = a.get("request_id")
    if not isinstance(request_id, str) or not request_id or event.session_id is None:
        return None
    model = a.get("model") if isinstance(a.get("model"), str) else None
    counts = {}
    for name in _COUNTS:
        count = _int(a.get(name))
        if name in a and (count is None or count < 0):
            # Figures that are not token counts would be wrong figures in the ledger: the event alone.
            return None
        counts[name] = count
    five_m, one_h = prices.split_cache_creation(
        counts["cache_creation_tokens"],
        counts["cache_creation_5m_tokens"],
        counts["cache_creation_1h_tokens"],
    )
    cost = a.get("cost_usd")
    # A Decimal when the payload comes back from the store (its decoder reads numbers exactly).
    number = isinstance(cost, int | float | Decimal) and not isinstance(cost, bool)
    return usage.observe(
        tenant=tenant,
        session=event.session_id,
        request_id=request_id,
        source="otlp",
        at=event.occurred_at,
        model=model,
        tokens=prices.Tokens(
            input=counts["input_tokens"] or 0,
            output=counts["output_tokens"] or 0,
            cache_read=counts["cache_read_tokens"] or 0,
            cache_write_5m=five_m,
            cache_write_1h=one_h,
        ),
        reported_cost_usd=cost if number else None,
        price_table=price_table,
        speed="fast" if a.get("speed") == "fast" else None,
    )


def _attributes(pairs: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kv in pairs:
        _check_storable(kv.key, "attribute key")
        result[kv.key] = _value(kv.value)
    return result


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        _check_storable(value.string_value, "string")
        return value.string_value
    if kind == "double_value":
        # JSON (and so jsonb) has no NaN or infinity: keep them as their names.
        return value.double_value if math.isfinite(value.double_value) else str(value.double_value)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _check_storable(text: str, what: str) -> None:
    if "\x00" in text:
        raise _Refused(f"a {what} holds the character U+0000, which PostgreSQL cannot store")


def _label(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_LABEL else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _nanos(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _int(value: Any) -> int | None:
    """A token count: Claude Code sends some as ints and some as decimal strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _temporality(data: Any) -> Literal["delta", "cumulative"] | None:
    temporality = getattr(data, "aggregation_temporality", 0)
    if temporality == metrics_pb2.AGGREGATION_TEMPORALITY_DELTA:
        return "delta"
    if temporality == metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE:
        return "cumulative"
    return None


def _point_value(kind: str, point: Any) -> float | int | None:
    if kind in ("gauge", "sum"):
        which = point.WhichOneof("value")
        return None if which is None else getattr(point, which)
    if kind == "summary" or point.HasField("sum"):
        return point.sum
    return None
