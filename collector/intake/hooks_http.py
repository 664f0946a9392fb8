"""Native HTTP hooks: Claude Code POSTs hook JSON to the collector, sparing a process start per event.

``POST /v1/hooks/<source>`` with ``Authorization: Bearer <token>``; the token decides the tenant (TCP has
no peer credentials, so nothing else may). Events go through the same admission and spool as the
socket's, and the answer comes only once the event is spooled: ``200 {}`` (no effect on the agent),
``401`` for a missing or unknown token (decided on the headers, before any of the body is read), ``413``
for a body over ``http_hooks.max_body_bytes`` (one over the frame limit but under it is stored with its
largest strings replaced by markers), ``408`` for a body that takes too long, ``503`` with
``Retry-After`` while the spool is full, ``400`` for a body that is not a JSON object.
"""

from __future__ import annotations

import re
import time

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hookdb.client.oversize import shrink
from hookdb.client.records import RECORD_HEADER_SIZE
from hookdb.client.wire import ProtocolError
from hookdb.collector.intake.admission import admit_hook
from hookdb.collector.intake.tenancy import TokenTenants
from hookdb.collector.ops import http, logs, metrics
from hookdb.collector.spool.segments import Spool

log = logs.get("hookdb.hooks_http")

PREFIX = "/v1/hooks/"
SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
RETRY_AFTER_SECONDS = "5"
FRAME_OVERHEAD = 1024  # the envelope around a payload: ids, labels, times


def _json(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type=http.JSON)


def app(spool: Spool, tokens: TokenTenants, *, max_body: int, max_frame: int, body_seconds: float) -> ASGIApp:
    """Serve hook POSTs for the tenants of ``tokens``: bodies up to ``max_body`` bytes, each read within
    ``body_seconds``; one too big for a ``max_frame`` frame is stored with its largest strings replaced
    by markers (``hookdb.client.oversize``), never dropped."""
    budget = max_frame - FRAME_OVERHEAD

    async def hook(request: Request, source: str) -> Response:
        # The headers decide before any of the body is read: a stranger's body costs nothing.
        tenant = tokens.tenant(request.headers.get("authorization", ""))
        if tenant is None:
            metrics.events_rejected.labels("peer_not_allowed").inc()
            return http.Refusal(
                b'{"error": "a valid bearer token is required"}', 401, {"www-authenticate": "Bearer"}
            )
        payload = await http.read_body(request, max_body, body_seconds)
        if isinstance(payload, Response):
            return payload
        if len(payload) > budget:
            payload = await trio.to_thread.run_sync(shrink, payload, budget)
        try:
            entry = admit_hook(payload, source, tenant, time.time_ns())
        except ProtocolError as exc:
            metrics.events_rejected.labels(exc.reason).inc()
            log.warning("frame.rejected", reason=exc.reason, detail=exc.detail, source="http")
            return _json(400, {"error": exc.reason, "detail": exc.detail})
        if not spool.has_room(len(entry) + RECORD_HEADER_SIZE):  # answer now rather than hold the agent
            return _json(
                503, {"error": "the collector's spool is full"}, {"retry-after": RETRY_AFTER_SECONDS}
            )
        await spool.wait_durable(await spool.append([entry]))
        metrics.events_received.inc()
        return Response(b"{}", media_type=http.JSON)

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        # One route: dispatched here rather than by a Starlette router and its middleware stack, which
        # cost the hot path of every hook more than the rest of the handling (py-spy).
        if scope["type"] != "http":
            return
        source = scope["path"].removeprefix(PREFIX)
        if source == scope["path"] or SOURCE.match(source) is None:
            response: Response = _json(404, {"error": "not found"})
        elif scope["method"] != "POST":
            response = _json(405, {"error": "POST hook JSON here"}, {"allow": "POST"})
        else:
            request = Request(scope, receive)
            try:
                response = await hook(request, source)
            except Exception as exc:
                response = await http.internal_error(request, exc)
        await response(scope, receive, send)

    return http.WholeRequest(serve)  # answered from the request alone: in the connection's task
