"""The OTLP/HTTP receiver: Claude Code's native telemetry (``POST /v1/logs``, ``POST /v1/metrics``) as events.

Bodies in ``http/protobuf`` or ``http/json`` (``Content-Encoding: gzip`` undone, within the size limit),
decoded by ``intake.otlp``. Every log record and every metric data point becomes one event of source
``claude-code-otel`` in the spool, with an id derived from the record, so a retried export is the same
events: log records typed by ``event.name`` with their attributes as payload; metric points typed by the
metric's name, their attributes as payload and the point under ``otel.metric``. ``api_request`` records feed
the usage ledger when the sink projects them (``store.ledger``).

Tenancy, durability and backpressure as for HTTP hooks: the bearer tokens of ``[http_hooks.tokens]``
decide the tenant on the headers alone (``401`` otherwise), ``413`` for a body over the limit, ``503``
with ``Retry-After`` while the spool is full, and ``200`` only once the events are in the spool, with the
OTLP ``partial_success`` naming the records refused (a record PostgreSQL cannot store, one too large for a
spool entry). A body that is no export request is ``400`` (``415`` for another content type).
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec
import trio
from google.protobuf import json_format, message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookdb.client.records import RECORD_HEADER_SIZE
from hookdb.collector import prices
from hookdb.collector.intake import otlp
from hookdb.collector.intake.admission import built_entry
from hookdb.collector.intake.tenancy import TokenTenants
from hookdb.collector.ops import http, logs, metrics
from hookdb.collector.spool.entry import EPOCH, from_ns
from hookdb.collector.spool.segments import Spool

log = logs.get("hookdb.otlp_http")

RETRY_AFTER_SECONDS = "5"
_encode = msgspec.json.Encoder().encode


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An OTLP error answer: ``google.rpc.Status``'s ``code`` and ``message``, as JSON whatever the request's
    encoding (the body of an error is optional in OTLP; JSON is what a person reading a log can use)."""
    return Response(_encode({"code": status, "message": detail}), status, headers, media_type=http.JSON)


def _ns(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


def entry(
    *,
    tenant: str,
    event_id: uuid.UUID,
    occurred_at: datetime,
    event_type: str,
    session_id: str | None,
    payload: dict[str, Any],
    received_at_ns: int,
) -> bytes:
    """The spool entry of one OTLP record (nothing to validate again: the decoder typed every field)."""
    return built_entry(
        tenant=tenant,
        event_id=event_id,
        occurred_at_ns=_ns(occurred_at),
        source=otlp.SOURCE,
        event_type=event_type,
        session_id=session_id,
        tool_name=None,
        payload=_encode(payload),
        received_at_ns=received_at_ns,
    )


def _context(resource: dict[str, Any], scope: str | None) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if resource:
        extras["otel.resource"] = resource
    if scope:
        extras["otel.scope.name"] = scope
    return extras


def log_entries(batch: otlp.LogsBatch, tenant: str, received_at_ns: int) -> list[bytes]:
    """One entry per log record; the record's own attributes win over the ``otel.*`` context keys."""
    found = []
    for event in batch.events:
        payload = _context(event.resource, event.scope)
        if event.body is not None:
            payload["otel.body"] = event.body
        found.append(
            entry(
                tenant=tenant,
                event_id=event.event_id,
                occurred_at=event.occurred_at,
                event_type=event.event_type,
                session_id=event.session_id,
                payload=payload | event.payload,
                received_at_ns=received_at_ns,
            )
        )
    return found


def metric_entries(batch: otlp.MetricsBatch, tenant: str, received_at_ns: int) -> list[bytes]:
    """One entry per data point, typed by its metric's name."""
    found = []
    for point in batch.points:
        metric = {
            "name": point.name,
            "kind": point.kind,
            "unit": point.unit,
            "temporality": point.temporality,
            "monotonic": point.monotonic,
            "start": None if point.start is None else point.start.isoformat(),
            "value": point.value,
            "count": point.count,
        }
        payload = _context(point.resource, point.scope) | {"otel.metric": metric}
        found.append(
            entry(
                tenant=tenant,
                event_id=point.point_id,
                occurred_at=point.at,
                event_type=point.name,
                session_id=point.session_id,
                payload=payload | point.attributes,
                received_at_ns=received_at_ns,
            )
        )
    return found


class _TooLarge(Exception):
    pass


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body undone, refused (:class:`_TooLarge`) as soon as it grows past ``limit`` bytes."""
    inflate = zlib.decompressobj(wbits=31)
    out = inflate.decompress(body, limit + 1)
    if len(out) > limit or inflate.unconsumed_tail:
        raise _TooLarge
    if not inflate.eof:
        raise zlib.error("truncated gzip stream")
    return out


def app(
    spool: Spool,
    tokens: TokenTenants,
    *,
    max_body: int,
    body_seconds: float,
    max_entry: int,
    price_table: prices.PriceTable = prices.PRICES,
) -> Starlette:
    """Serve OTLP/HTTP exports for the tenants of ``tokens``: bodies up to ``max_body`` bytes (also once
    inflated), each read within ``body_seconds``; a record whose event exceeds ``max_entry`` is refused."""

    async def export(
        request: Request,
        decode: Callable[[bytes, str, str, datetime], Any],
        to_entries: Callable[[Any, str, int], list[bytes]],
        response: Callable[[int, str | None], message.Message],
    ) -> Response:
        content_type = request.headers.get("content-type", "")
        protobuf = content_type.split(";", 1)[0].strip().lower() == otlp.PROTOBUF
        tenant = tokens.tenant(request.headers.get("authorization", ""))
        if tenant is None:
            metrics.events_rejected.labels("peer_not_allowed").inc()
            return http.Refusal(
                b'{"error": "a valid bearer token is required"}', 401, {"www-authenticate": "Bearer"}
            )
        body = await http.read_body(request, max_body, body_seconds)
        if isinstance(body, Response):
            return body
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            try:
                body = gunzip(body, max_body)
            except _TooLarge:
                return Response(http.TOO_LARGE, 413, media_type=http.JSON)
            except zlib.error as exc:
                metrics.events_rejected.labels("bad_payload").inc()
                return _error(400, f"the gzip body cannot be inflated: {exc}")
        elif encoding != "identity":
            return _error(415, f"content encoding {encoding!r} is neither gzip nor identity")
        received_at_ns = time.time_ns()
        try:
            # Off the trio thread: a large export takes a while to decode.
            batch = await trio.to_thread.run_sync(decode, body, content_type, tenant, from_ns(received_at_ns))
        except otlp.OtlpError as exc:
            metrics.events_rejected.labels("bad_payload").inc()
            return _error(exc.status, str(exc))
        rejected, error = batch.rejected, batch.error
        entries = []
        for item in to_entries(batch, tenant, received_at_ns):
            if len(item) > max_entry:
                rejected += 1
                error = error or f"a record is larger than the {max_entry} bytes an event may be"
            else:
                entries.append(item)
        if rejected:
            metrics.events_rejected.labels("bad_payload").inc(rejected)
            log.warning("otlp.records_refused", path=request.url.path, refused=rejected, error=error)
        if entries:
            size = sum(len(e) + RECORD_HEADER_SIZE for e in entries)
            if not spool.has_room(size):  # answer now rather than hold the exporter
                return _error(503, "the collector's spool is full", {"retry-after": RETRY_AFTER_SECONDS})
            await spool.wait_durable(await spool.append(entries))
            metrics.events_received.inc(len(entries))
        answer = response(rejected, error)
        if protobuf:
            return Response(answer.SerializeToString(), media_type=otlp.PROTOBUF)
        return Response(json_format.MessageToJson(answer, indent=None).encode(), media_type=http.JSON)

    def logs_response(rejected: int, error: str | None) -> message.Message:
        answer = ExportLogsServiceResponse()
        if rejected:
            answer.partial_success.rejected_log_records = rejected
            answer.partial_success.error_message = error or ""
        return answer

    def metrics_response(rejected: int, error: str | None) -> message.Message:
        answer = ExportMetricsServiceResponse()
        if rejected:
            answer.partial_success.rejected_data_points = rejected
            answer.partial_success.error_message = error or ""
        return answer

    def decode_logs(body: bytes, content_type: str, tenant: str, at: datetime) -> otlp.LogsBatch:
        return otlp.decode_logs(body, content_type, tenant=tenant, received_at=at, price_table=price_table)

    def decode_metrics(body: bytes, content_type: str, tenant: str, at: datetime) -> otlp.MetricsBatch:
        return otlp.decode_metrics(body, content_type, received_at=at)

    async def logs_route(request: Request) -> Response:
        return await export(request, decode_logs, log_entries, logs_response)

    async def metrics_route(request: Request) -> Response:
        return await export(request, decode_metrics, metric_entries, metrics_response)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not found: POST to /v1/logs or /v1/metrics")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, "POST OTLP export requests here")

    return Starlette(
        routes=[
            Route("/v1/logs", logs_route, methods=["POST"]),
            Route("/v1/metrics", metrics_route, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: not_allowed, 500: http.internal_error},
    )
