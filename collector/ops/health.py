"""The collector's observability endpoints: ``/metrics``, ``/healthz``, ``/readyz``, ``/health/db``."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hookdb.collector.delivery.breaker import Breaker
from hookdb.collector.ops import metrics
from hookdb.collector.ops.http import Handler, Request, Response
from hookdb.collector.spool.segments import Spool


@dataclass
class Health:
    """What the endpoints report; the daemon updates ``ready`` and the delivery updates ``db_ok``."""

    breaker: Breaker
    spool: Spool
    ready: bool = False
    db_ok: bool = False  # the last write (or connection check) succeeded
    oldest_pending_ns: int | None = None  # received_at of the first event of the batch being delivered


def _json(status: int, body: object) -> Response:
    return Response(status, msgspec.json.encode(body))


def handler(health: Health) -> Handler:
    """The request handler serving ``health``."""

    async def handle(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method not allowed"})
        if request.path == "/metrics":
            metrics.refresh(health.spool, health.oldest_pending_ns)
            return Response(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            return _json(200, {"status": "alive"})
        if request.path == "/readyz":
            return _json(200 if health.ready else 503, {"ready": health.ready})
        if request.path == "/health/db":
            state = health.breaker.state
            healthy = state == "closed" and health.db_ok
            return _json(
                200 if healthy else 503,
                {
                    "status": "ok" if healthy else "unavailable",
                    "breaker": state,
                    "consecutive_failures": health.breaker.consecutive_failures,
                    "last_error": health.breaker.last_error,
                    "spool": {
                        "pending_records": health.spool.pending_records,
                        "pending_bytes": health.spool.pending_bytes,
                    },
                },
            )
        return _json(404, {"error": "not found"})

    return handle
