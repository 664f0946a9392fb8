"""The read API's routes: authentication, parameters, answers and errors; the web page's files.

Every ``/api`` request needs ``Authorization: Bearer <token>``; the token's digest names the tenant.
Errors are JSON (``{"error", "detail"}``): 400 for a parameter the API cannot use (named), 401 without
a valid token, 404 for a session the tenant does not have, 503 with ``Retry-After`` while the database
cannot answer, 500 (logged, without a trace in the answer) for anything else.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import trio
from msgspec import UNSET
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookdb.collector.api import export, models, openapi, queries
from hookdb.collector.api.feed import Feed
from hookdb.collector.api.models import BadParameter, Error, Query
from hookdb.collector.api.reader import Reader, Unavailable, unavailable
from hookdb.collector.config import ApiSection
from hookdb.collector.intake.tenancy import TokenTenants
from hookdb.collector.ops import logs

log = logs.get("hookdb.api")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_SESSION_ID = 512
EXPORT_PAGE = 500  # timeline events per query of an export (the events endpoint's largest page)
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]

_encode = msgspec.json.Encoder(decimal_format="number").encode


class _Unauthorized(Exception):
    pass


class SecurityHeaders:
    """Adds the content security policy (agent-written text must never run as script) to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _next_page(
    tenant: str, session_id: str, page: models.EventPage, conn: asyncpg.Connection
) -> models.EventPage:
    """The export's next page of events after ``page``."""
    assert page.next_cursor is not None
    after = models.EventQuery(limit=EXPORT_PAGE, cursor=page.next_cursor)
    return await queries.events(conn, tenant, session_id, after)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        _encode(body),
        status,
        headers={"cache-control": "no-store", **(headers or {})},
        media_type="application/json",
    )


def error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    return json_response(Error(error=error, detail=detail), status, headers)


def _range(start: datetime | Any, end: datetime | Any) -> tuple[datetime, datetime]:
    """A query's [from, to): to defaults to now, from to STATS_DAYS before to."""
    end = datetime.now(UTC) if end is UNSET else end
    try:
        start = end - timedelta(days=queries.STATS_DAYS) if start is UNSET else start
    except OverflowError:
        raise BadParameter(f"to: too early for the default from ({queries.STATS_DAYS} days before)") from None
    if start >= end:
        raise BadParameter("from: must be before to")
    return start, end


Endpoint = Callable[[Request, str, Any], Awaitable[Response]]


class Api:
    def __init__(self, reader: Reader, feed: Feed, settings: ApiSection) -> None:
        self._reader = reader
        self._feed = feed
        self._settings = settings
        self._tokens = TokenTenants(settings.tokens)
        self._retry_after = {"retry-after": str(settings.retry_after_seconds)}
        self._openapi = _encode(openapi.document())
        self._problem: str | None = None  # the reason of the last 503, until a request succeeds again

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index),
            Route("/openapi.json", self.openapi),
            Route("/api/sessions", self._endpoint(models.SessionQuery, self.list_sessions)),
            Route("/api/sessions/stats", self._endpoint(models.StatsQuery, self.stats)),
            Route("/api/usage", self._endpoint(models.UsageQuery, self.usage)),
            Route("/api/sessions/stream", self._endpoint(models.NoQuery, self.stream)),
            # Session ids are any text, "/" included (sent as %2F, which arrives decoded).
            Route("/api/sessions/{session_id:path}/events", self._endpoint(models.EventQuery, self.events)),
            Route("/api/sessions/{session_id:path}/export", self._endpoint(models.ExportQuery, self.export)),
            Route("/api/sessions/{session_id:path}", self._endpoint(models.DetailQuery, self.detail)),
            Mount("/static", StaticFiles(directory=WEB_DIR)),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(SecurityHeaders)],
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]
        )

    # -- Plumbing ----------------------------------------------------------------------------------------

    def _endpoint(
        self, query_type: type[Query], handle: Endpoint
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                tenant = self._tenant(request)
                query = models.parse(query_type, request.query_params.multi_items())
                response = await handle(request, tenant, query)
            except _Unauthorized:
                return error_response(
                    401, "unauthorized", "a valid bearer token is required", {"www-authenticate": "Bearer"}
                )
            except BadParameter as exc:
                return error_response(400, "bad_request", str(exc))
            except Exception as exc:
                problem = unavailable(exc)
                if problem is None:
                    log.exception("api.failed", path=request.url.path)
                    return error_response(500, "internal", "the API failed; the server log says why")
                return self._unavailable(problem)
            if self._problem is not None and response.status_code < 500:
                log.info("api.database_available", after=self._problem)
                self._problem = None
            return response

        return endpoint

    def _unavailable(self, problem: Unavailable) -> Response:
        if problem.error != self._problem:  # logged once per outage (and per change of reason)
            log.warning("api.database_unavailable", error=problem.error, detail=problem.detail)
            self._problem = problem.error
        return error_response(503, problem.error, problem.detail, self._retry_after)

    def _tenant(self, request: Request) -> str:
        tenant = self._tokens.tenant(request.headers.get("authorization", ""))
        if tenant is None:
            raise _Unauthorized
        return tenant

    @staticmethod
    def _session_id(request: Request) -> str:
        session_id = models.checked_text("session_id", request.path_params["session_id"])
        if len(session_id) > MAX_SESSION_ID:
            raise BadParameter(f"session_id: longer than {MAX_SESSION_ID} characters")
        return session_id

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error_response(exc.status_code, error, exc.detail)

    # -- Pages -------------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def openapi(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")

    # -- The API -----------------------------------------------------------------------------------------

    async def list_sessions(self, request: Request, tenant: str, query: models.SessionQuery) -> Response:
        page = await self._reader.read(tenant, lambda conn: queries.list_sessions(conn, tenant, query))
        return json_response(page)

    async def detail(self, request: Request, tenant: str, query: models.DetailQuery) -> Response:
        session_id = self._session_id(request)
        events = models.EventQuery(limit=query.events_limit)
        (card, requests), reports, states, timeline = await self._reader.read_together(
            tenant,
            [
                lambda conn: _card_and_requests(conn, tenant, session_id),
                lambda conn: queries.reports(conn, tenant, session_id),
                lambda conn: queries.agent_states(conn, tenant, session_id),
                lambda conn: queries.events(conn, tenant, session_id, events),
            ],
        )
        if card is None:
            return error_response(404, "not_found", "no such session")
        return json_response(
            models.SessionDetail(
                session=card,
                reports=reports,
                agent_states=states,
                agents=queries.agents(requests),
                requests=requests,
                events=timeline,
            )
        )

    async def events(self, request: Request, tenant: str, query: models.EventQuery) -> Response:
        session_id = self._session_id(request)
        card, page = await self._reader.read_together(
            tenant,
            [
                lambda conn: queries.session_card(conn, tenant, session_id),
                lambda conn: queries.events(conn, tenant, session_id, query),
            ],
        )
        if card is None:
            return error_response(404, "not_found", "no such session")
        return json_response(page)

    async def export(self, request: Request, tenant: str, query: models.ExportQuery) -> Response:
        """The session with its whole timeline as a file: the card, reports, agent states and the first
        page of events read in one snapshot, then the timeline streamed on, a page per transaction (keyset
        pages: no event twice, none left out), so a long session never sits in memory whole."""
        session_id = self._session_id(request)
        pages = models.EventQuery(limit=EXPORT_PAGE)
        (card, requests), reports, states, first = await self._reader.read_together(
            tenant,
            [
                lambda conn: _card_and_requests(conn, tenant, session_id),
                lambda conn: queries.reports(conn, tenant, session_id),
                lambda conn: queries.agent_states(conn, tenant, session_id),
                lambda conn: queries.events(conn, tenant, session_id, pages),
            ],
        )
        if card is None:
            return error_response(404, "not_found", "no such session")
        head = models.SessionExport(
            session=card,
            reports=reports,
            agent_states=states,
            agents=queries.agents(requests),
            requests=requests,
            exported_at=datetime.now(UTC),
            events=[],
        )
        writer = export.MarkdownWriter() if query.format == "md" else export.JsonWriter()

        async def body() -> AsyncIterator[bytes]:
            yield writer.head(head)
            page = first
            while True:
                yield writer.page(page.events)
                if page.next_cursor is None:
                    break
                try:
                    page = await self._reader.read(
                        tenant, functools.partial(_next_page, tenant, session_id, page)
                    )
                except Exception as exc:
                    problem = unavailable(exc)
                    if problem is None:
                        log.exception("api.export_failed", session_id=session_id[:200])
                    else:
                        log.warning("api.export_cut", error=problem.error, detail=problem.detail)
                    yield writer.cut()
                    return
            yield writer.end()

        return StreamingResponse(
            body(),
            media_type="text/markdown" if query.format == "md" else "application/json",
            headers={
                "cache-control": "no-store",
                "content-disposition": export.content_disposition(session_id, query.format),
            },
        )

    async def stats(self, request: Request, tenant: str, query: models.StatsQuery) -> Response:
        start, end = _range(query.from_, query.to)
        return json_response(
            await self._reader.read(tenant, lambda conn: queries.stats(conn, tenant, start, end))
        )

    async def usage(self, request: Request, tenant: str, query: models.UsageQuery) -> Response:
        start, end = _range(query.from_, query.to)
        return json_response(
            await self._reader.read(tenant, lambda conn: queries.usage(conn, tenant, query.group, start, end))
        )

    async def stream(self, request: Request, tenant: str, query: models.NoQuery) -> Response:
        if not self._feed.available:
            return self._unavailable(Unavailable(self._feed.problem.error, self._feed.problem.detail))
        heartbeat = self._settings.heartbeat_seconds

        async def body() -> AsyncIterator[bytes]:
            with self._feed.subscribe(tenant) as inbox:
                yield b"retry: 2000\n: live\n\n"
                while True:
                    message = b": ping\n\n"  # unless something happens before the heartbeat is due
                    with trio.move_on_after(heartbeat):
                        try:
                            message = await inbox.receive()
                        except trio.EndOfChannel:
                            return
                    yield message  # never inside the cancel scope: it must not span a yield

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )


async def _card_and_requests(conn: asyncpg.Connection, tenant: str, session_id: str) -> tuple[Any, list[Any]]:
    """The card and the ledger, on one connection: a detail takes no more connections than
    ``api.pool_size`` allows at least (4), so a pooler with that many server connections never deadlocks."""
    return await queries.session_card(conn, tenant, session_id), await queries.requests(
        conn, tenant, session_id
    )
