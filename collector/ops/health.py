"""The collector's observability endpoints: ``/metrics``, ``/healthz``, ``/readyz``, ``/health/db``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookdb.collector.delivery.breaker import State
from hookdb.collector.ops import http, metrics
from hookdb.collector.spool.segments import Spool


class BreakerStatus(Protocol):
    """What the endpoints tell of the write breaker: delivery's ``Breaker``, or the delivery processes' as
    one (``processes.BreakerView``)."""

    @property
    def state(self) -> State: ...

    @property
    def consecutive_failures(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...


@dataclass
class Health:
    """What the endpoints report; the daemon updates ``ready`` and the delivery updates ``db_ok``."""

    breaker: BreakerStatus
    spool: Spool
    ready: bool = False
    db_ok: bool = False  # the last write (or connection check) succeeded
    oldest_pending_ns: int | None = None  # received_at of the first event of the batch being delivered
    # Whether batches made now defer their search documents (pipeline.SearchDeferral), asked afresh.
    search_deferred: Callable[[], bool] = bool


def _json(status: int, body: object) -> Response:
    return Response(msgspec.json.encode(body), status, media_type="application/json")


def app(health: Health) -> Starlette:
    """The endpoints serving ``health``."""

    async def metrics_page(request: Request) -> Response:
        metrics.refresh(health.spool, health.oldest_pending_ns, health.search_deferred())
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def alive(request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def ready(request: Request) -> Response:
        return _json(200 if health.ready else 503, {"ready": health.ready})

    async def database(request: Request) -> Response:
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
                "search_deferred": health.search_deferred(),
            },
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.method not in ("GET", "HEAD"):  # every path is read-only: a write is 405 anywhere
            return _json(405, {"error": "method not allowed"})
        return _json(404, {"error": "not found"})

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _json(405, {"error": "method not allowed"})

    routes = [
        Route("/metrics", metrics_page, methods=["GET"]),  # HEAD too, as Starlette adds it to GET
        Route("/healthz", alive, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
        Route("/health/db", database, methods=["GET"]),
    ]
    return Starlette(
        routes=routes, exception_handlers={404: not_found, 405: not_allowed, 500: http.internal_error}
    )
