"""Native HTTP hooks: Claude Code POSTs hook JSON to the collector, sparing a process start per event.

``POST /v1/hooks/<source>`` with ``Authorization: Bearer <token>``; the token decides the tenant (TCP has
no peer credentials, so nothing else may). Events go through the same admission and spool as the
socket's, and the answer comes only once the event is spooled: ``200 {}`` (no effect on the agent),
``401`` for a missing or unknown token, ``413`` for a body over the limit, ``503`` with ``Retry-After``
while the spool is full, ``400`` for a body that is not a JSON object.
"""

from __future__ import annotations

import re
import time

import msgspec

from hookdb.client.records import RECORD_HEADER_SIZE
from hookdb.client.wire import ProtocolError, encode_envelope, new_event_id
from hookdb.collector.intake.admission import admit
from hookdb.collector.intake.tenancy import Grant, TokenTenants
from hookdb.collector.ops import logs, metrics
from hookdb.collector.ops.http import Handler, Request, Response
from hookdb.collector.spool.segments import Spool

log = logs.get("hookdb.hooks_http")

PATH = re.compile(r"/v1/hooks/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\Z")
RETRY_AFTER_SECONDS = "5"
_decode_hook = msgspec.json.Decoder(dict[str, object]).decode


def _json(status: int, body: dict[str, object], headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, msgspec.json.encode(body), headers=headers or [])


def handler(spool: Spool, tokens: TokenTenants) -> Handler:
    """Serve hook POSTs for the tenants of ``tokens``."""

    async def handle(request: Request) -> Response:
        match = PATH.match(request.path)
        if match is None:
            return _json(404, {"error": "not found"})
        if request.method != "POST":
            return _json(405, {"error": "POST hook JSON here"})
        tenant = tokens.tenant(request.headers.get("authorization", ""))
        if tenant is None:
            metrics.events_rejected.labels("peer_not_allowed").inc()
            return _json(401, {"error": "a valid bearer token is required"}, [("www-authenticate", "Bearer")])
        try:
            hook = _decode_hook(request.body)
        except msgspec.MsgspecError as exc:
            metrics.events_rejected.labels("bad_payload").inc()
            return _json(400, {"error": f"the body is not a JSON object: {exc}"})
        received_at_ns = time.time_ns()
        event_type, session_id = hook.get("hook_event_name"), hook.get("session_id")
        body = encode_envelope(
            event_id=new_event_id(),
            occurred_at_ns=received_at_ns,
            source=match.group(1),
            event_type=event_type if isinstance(event_type, str) and event_type else "Unknown",
            session_id=session_id if isinstance(session_id, str) and session_id else None,
            tenant=None,
            payload=request.body,
        )
        try:
            entry, _ = admit(body, None, Grant(tenant, frozenset({tenant})), received_at_ns)
        except ProtocolError as exc:
            metrics.events_rejected.labels(exc.reason).inc()
            log.warning("frame.rejected", reason=exc.reason, detail=exc.detail, source="http")
            return _json(400, {"error": exc.reason, "detail": exc.detail})
        if not spool.has_room(len(entry) + RECORD_HEADER_SIZE):  # answer now rather than hold the agent
            return _json(
                503, {"error": "the collector's spool is full"}, [("retry-after", RETRY_AFTER_SECONDS)]
            )
        await spool.wait_durable(await spool.append([entry]))
        metrics.events_received.inc()
        return Response(200, b"{}")

    return handle
