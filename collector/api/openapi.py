"""``/openapi.json``: the read API described from the same msgspec types that parse and answer it."""

from __future__ import annotations

from typing import Any

import msgspec

from hookdb.collector.api import models

REF = "#/components/schemas/{name}"

# path → (summary, query parameters, answer (None: an event stream), error statuses besides 400/401/503)
_OPERATIONS: dict[str, tuple[str, type[models.Query], type | None, tuple[int, ...]]] = {
    "/api/sessions": (
        "Sessions, newest first: keyset pages, filtered by status, model, agent type, project (the last "
        "component of cwd), cost range (inclusive; sessions without a cost are left out) and start time; "
        'with `q`, full-text search (PostgreSQL, English stemming, web search syntax: words, "a phrase", '
        "`or`, `-word`) of prompts, assistant messages, tool inputs and outputs (their first 4,096 "
        "or 1,024 characters) and reports, combined with every filter and the pages: each card then has "
        "a `snippet`, plain text parts of what matched with the matched words flagged (`match`). A `q` of "
        "only stop words matches nothing.",
        models.SessionQuery,
        models.SessionPage,
        (),
    ),
    "/api/sessions/stats": (
        "Counts by status, cost, QA score distribution, models, sessions (by status) and events per day, "
        "for sessions started in [from, to); the ledger's cost and tokens per day and model, per model and "
        "per project for requests made in the range; tool calls by tool with failure rate and p50/p95.",
        models.StatsQuery,
        models.Stats,
        (),
    ),
    "/api/usage": (
        "Cost and tokens of the usage ledger's requests made in [from, to) (the last 30 days by default), "
        "grouped by `day` (UTC), `model`, `project` (the last component of the session's cwd) or `agent` "
        "(`main`, or a subagent's type); requests of unknown cost are counted in `unpriced`, not as 0.",
        models.UsageQuery,
        models.Usage,
        (),
    ),
    "/api/sessions/stream": (
        "Server-Sent Events: `session` (data: Change) for new sessions and changed cards; `unavailable` "
        "and `available` when the feed loses or regains the database.",
        models.NoQuery,
        None,
        (),
    ),
    "/api/sessions/{session_id}": (
        "One session with its reports, agent states and the first page of its timeline.",
        models.DetailQuery,
        models.SessionDetail,
        (404,),
    ),
    "/api/sessions/{session_id}/events": (
        "A page of a session's timeline, oldest first; tool calls paired by tool_use_id with durations.",
        models.EventQuery,
        models.EventPage,
        (404,),
    ),
    "/api/sessions/{session_id}/export": (
        "The whole session as a file (Content-Disposition: attachment): `format=json` is the detail with "
        "every event of the timeline instead of its first page; `format=md` a Markdown document of its "
        "facts, reports and timeline (a tool call on one line with its command or path).",
        models.ExportQuery,
        models.SessionExport,
        (404,),
    ),
}
# Answers that come as a download (Content-Disposition), and the other media types they may come in.
_DOWNLOADS = {"/api/sessions/{session_id}/export": {"text/markdown": {"schema": {"type": "string"}}}}
_ERRORS = {
    400: "A parameter the API cannot use; `detail` names it.",
    401: "No valid bearer token.",
    404: "No such session in the token's tenant.",
    503: "The database cannot answer now; try again after `Retry-After` seconds.",
}


def document() -> dict[str, Any]:
    answers = [answer for _, _, answer, _ in _OPERATIONS.values() if answer is not None]
    queries = [query for _, query, _, _ in _OPERATIONS.values()]
    _, components = msgspec.json.schema_components(
        [*answers, models.Change, models.Error, *queries], ref_template=REF
    )
    components = _decimals_as_numbers(components)
    query_components = {query.__name__: components.pop(query.__name__) for query in queries}
    paths = {}
    for path, (summary, query, answer, extra) in _OPERATIONS.items():
        parameters = [
            _query_parameter(name, schema)
            for name, schema in query_components[query.__name__].get("properties", {}).items()
        ]
        if "{session_id}" in path:
            parameters.insert(
                0,
                {
                    "name": "session_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 512},
                },
            )
        ok = (
            {"text/event-stream": {"schema": {"type": "string"}}}
            if answer is None
            else {"application/json": {"schema": {"$ref": REF.format(name=answer.__name__)}}}
        )
        responses: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
        if path in _DOWNLOADS:
            ok.update(_DOWNLOADS[path])
            responses["200"]["headers"] = {
                "Content-Disposition": {"required": True, "schema": {"type": "string"}}
            }
        for status in (400, 401, *extra, 503):
            responses[str(status)] = _error(status)
        paths[path] = {"get": {"summary": summary, "parameters": parameters, "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "hookdb read API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _decimals_as_numbers(schema: Any) -> Any:
    """The API writes decimals (costs, scores) as JSON numbers with their exact digits, not strings."""
    if isinstance(schema, dict) and schema.get("type") == "string" and schema.get("format") == "decimal":
        return {**{key: value for key, value in schema.items() if key != "format"}, "type": "number"}
    if isinstance(schema, dict):
        return {key: _decimals_as_numbers(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_decimals_as_numbers(value) for value in schema]
    return schema


def _query_parameter(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if schema.get("type") == "array":
        parameter |= {"style": "form", "explode": True}
    return parameter


def _error(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(name="Error")}}},
    }
    if status == 503:
        answer["headers"] = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}}
    if status == 401:
        answer["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    return answer
