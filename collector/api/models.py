"""What the read API accepts and answers: one msgspec type per shape, also the source of ``/openapi.json``."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect
from msgspec import UNSET, UnsetType

from hookdb.collector import classification as cls

Status = Literal[tuple(sorted(cls.VALID_SESSION_STATUSES))]  # type: ignore[valid-type]
Limit = Annotated[int, msgspec.Meta(ge=1, le=200, description="Items per page (at most 200).")]
EventLimit = Annotated[int, msgspec.Meta(ge=1, le=500, description="Events per page (at most 500).")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Cursor = Annotated[
    str, msgspec.Meta(max_length=4096, description="The next_cursor of the previous page, as given.")
]
Instant = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 date-time with a UTC offset.")]
Project = Annotated[
    str, msgspec.Meta(min_length=1, max_length=512, description="The last component of the session's cwd.")
]
SearchText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description='Full-text search (web search syntax: words, "a phrase", or, -word), English stemming.',
    ),
]
MAX_DOLLARS = Decimal(10) ** 12
Dollars = Annotated[
    Decimal,
    msgspec.Meta(
        description="US dollars, a decimal (an inclusive bound).",
        extra_json_schema={"minimum": -int(MAX_DOLLARS), "maximum": int(MAX_DOLLARS)},
    ),
]
DOLLAR_PLACES = 12


class BadParameter(ValueError):
    """A request parameter the API cannot use; the message names it."""


def checked_text(name: str, value: str) -> str:
    """``value`` if PostgreSQL can hold it as text (no NUL, valid Unicode), else :class:`BadParameter`."""
    if "\x00" in value:
        raise BadParameter(f"{name}: must not contain NUL")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadParameter(f"{name}: not valid Unicode") from None
    return value


def _utc(name: str, value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BadParameter(f"{name}: out of range") from None


def _check_dollars(name: str, value: Decimal) -> None:
    """A cost bound PostgreSQL compares exactly: finite, at most a trillion, at most 12 decimal places."""
    if not value.is_finite():
        raise BadParameter(f"{name}: not a finite decimal")
    if abs(value) > MAX_DOLLARS:
        raise BadParameter(f"{name}: beyond ±{MAX_DOLLARS:,}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -DOLLAR_PLACES:
        raise BadParameter(f"{name}: more than {DOLLAR_PLACES} decimal places")


# -- Query parameters ------------------------------------------------------------------------------------


class Query(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Query parameters. One left out is ``UNSET``: nothing in a query string can mean ``None``."""

    def __post_init__(self) -> None:
        # Errors name the parameter as the query string spells it ("from", not from_).
        for name, spelled in zip(self.__struct_fields__, self.__struct_encode_fields__, strict=True):
            value = getattr(self, name)
            if isinstance(value, str):
                checked_text(spelled, value)
            elif isinstance(value, datetime):
                setattr(self, name, _utc(spelled, value))


class SessionQuery(Query):
    """``GET /api/sessions``: filters and the page position."""

    limit: Limit = 50
    cursor: Cursor | UnsetType = UNSET
    q: SearchText | UnsetType = UNSET
    status: list[Status] = msgspec.field(default_factory=list)
    model: Text | UnsetType = UNSET
    agent_type: Text | UnsetType = UNSET
    project: Project | UnsetType = UNSET
    cost_min: Dollars | UnsetType = UNSET
    cost_max: Dollars | UnsetType = UNSET
    started_after: Instant | UnsetType = UNSET
    started_before: Instant | UnsetType = UNSET

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("cost_min", "cost_max"):
            value = getattr(self, name)
            if value is not UNSET:
                _check_dollars(name, value)
        if self.cost_min is not UNSET and self.cost_max is not UNSET and self.cost_min > self.cost_max:
            raise BadParameter("cost_min: greater than cost_max")
        if self.q is not UNSET and not self.q.strip():
            raise BadParameter("q: nothing to search for")


class DetailQuery(Query):
    """``GET /api/sessions/{id}``: how many timeline events come with the session."""

    events_limit: EventLimit = 100


class EventQuery(Query):
    """``GET /api/sessions/{id}/events``: a page of the timeline, oldest first."""

    limit: EventLimit = 100
    cursor: Cursor | UnsetType = UNSET


class ExportQuery(Query):
    """``GET /api/sessions/{id}/export``: the whole session as JSON or as a Markdown document."""

    format: Literal["json", "md"] = "json"


class StatsQuery(Query):
    """``GET /api/sessions/stats``: the time range (by session start), the last 30 days by default."""

    from_: Instant | UnsetType = msgspec.field(default=UNSET, name="from")
    to: Instant | UnsetType = UNSET


UsageGroup = Literal["day", "model", "project", "agent"]


class UsageQuery(Query):
    """``GET /api/usage``: ledger requests in a time range (by when each was made), grouped one way."""

    group: UsageGroup = "day"
    from_: Instant | UnsetType = msgspec.field(default=UNSET, name="from")
    to: Instant | UnsetType = UNSET


class NoQuery(Query):
    """An endpoint that takes no parameters."""


# -- Answers ---------------------------------------------------------------------------------------------


class SnippetPart(msgspec.Struct, kw_only=True):
    text: str  # plain text, never markup
    match: bool  # a word the search matched


class Snippet(msgspec.Struct, kw_only=True):
    """What a search matched in a session: up to two fragments (joined by " … ") of one document."""

    kind: str  # prompt, reply, tool_input, tool_output or report
    parts: list[SnippetPart]


class SessionCard(msgspec.Struct, kw_only=True):
    session_id: str
    title: str | None  # the first prompt on one line, cut at TITLE_CHARS
    project: str | None  # the last component of cwd
    git_branch: str | None  # when the first prompt's event carries one (git_branch or gitBranch)
    status: str
    model: str | None
    agent_type: str | None
    cwd: str | None
    source: str | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    status_at: datetime | None
    event_count: int
    subagent_count: int
    report_count: int
    cost_usd: Decimal | None
    cost_source: str | None  # reported, computed or unknown (the weakest of its requests'); None: no ledger
    input_tokens: int | None  # token totals of the session's ledger requests, by kind
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_creation_5m_tokens: int | None
    cache_creation_1h_tokens: int | None
    models: list[str]  # every model its requests used
    qa_score: Decimal | None
    word_count: int | None
    end_reason: str | None
    duration_ms: float  # from started_at to ended_at, or to updated_at while there is no end
    snippet: Snippet | UnsetType = UNSET  # only when the list was searched (q)


class SessionPage(msgspec.Struct, kw_only=True):
    sessions: list[SessionCard]
    next_cursor: str | None
    # Searched (q): how many of the tenant's events search cannot find yet, their documents deferred while
    # delivery was behind (store/search_backlog.py); made as soon as delivery is idle.
    search_pending: int | UnsetType = UNSET


class Report(msgspec.Struct, kw_only=True):
    path: str
    report_type: str
    content: str  # written by an agent: untrusted markdown
    word_count: int
    written_at: datetime
    sha256: str


class AgentState(msgspec.Struct, kw_only=True):
    agent_id: str
    agent_type: str | None
    path: str
    content: str
    updated_at: datetime


class TimelineEvent(msgspec.Struct, kw_only=True):
    event_id: str
    occurred_at: datetime
    event_type: str
    tool_name: str | None
    tool_use_id: str | None
    duration_ms: float | None  # from PreToolUse to its PostToolUse(Failure), on both
    paired_event_id: str | None
    payload: Any  # the hook input as stored (large strings stand as {"$hookdb.blob": sha256})
    # Only when the payload is too odd to restore (collector/api/payloads.py): why, and that it is as stored.
    payload_unrendered: str | UnsetType = UNSET


class EventPage(msgspec.Struct, kw_only=True):
    events: list[TimelineEvent]
    next_cursor: str | None


class Tokens(msgspec.Struct, kw_only=True):
    """Tokens by kind, as the ledger counts them."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_5m_tokens: int
    cache_creation_1h_tokens: int


class ApiRequest(Tokens, kw_only=True):
    """One model API request of the usage ledger."""

    request_id: str
    agent: str  # "main", or the subagent's id
    agent_type: str | None
    model: str | None
    cost_usd: Decimal | None  # None when unknown, never 0
    cost_source: str  # reported, computed or unknown
    at: datetime
    sources: list[str]  # transcript, otlp, sdk


class UsageTotals(Tokens, kw_only=True):
    """Ledger requests summed: tokens by kind and in all, the cost of those priced, how many were not."""

    requests: int
    tokens: int
    cost_usd: Decimal
    unpriced: int  # requests whose cost is unknown (not counted in cost_usd)


class AgentUsage(UsageTotals, kw_only=True):
    """A session's usage by one agent: the main one, or a subagent."""

    agent: str
    agent_type: str | None


class SessionDetail(msgspec.Struct, kw_only=True):
    session: SessionCard
    reports: list[Report]
    agent_states: list[AgentState]
    agents: list[AgentUsage]  # main first, then subagents by their first request
    requests: list[ApiRequest]  # the ledger, oldest first
    events: EventPage


class SessionExport(msgspec.Struct, kw_only=True):
    """What the detail answers, with the whole timeline instead of its first page (``events`` last: the
    export streams it page by page after the rest)."""

    session: SessionCard
    reports: list[Report]
    agent_states: list[AgentState]
    agents: list[AgentUsage]
    requests: list[ApiRequest]
    exported_at: datetime
    events: list[TimelineEvent]


class QaBucket(msgspec.Struct, kw_only=True):
    min: int
    max: int
    count: int


class QaScores(msgspec.Struct, kw_only=True):
    count: int
    mean: Decimal | None
    buckets: list[QaBucket]


class ModelStats(msgspec.Struct, kw_only=True):
    model: str | None
    sessions: int
    cost_usd: Decimal


class DayStats(msgspec.Struct, kw_only=True):
    day: str  # YYYY-MM-DD, UTC
    sessions: int
    events: int
    by_status: dict[str, int]  # the day's sessions by status
    tokens: int  # of the ledger requests made that day
    cost_usd: Decimal


class UsageGroupTotals(UsageTotals, kw_only=True):
    key: str | None  # the day (YYYY-MM-DD, UTC), model, project or agent; None: not known


class DayModelUsage(UsageTotals, kw_only=True):
    day: str  # YYYY-MM-DD, UTC
    model: str | None


class ToolStats(msgspec.Struct, kw_only=True):
    """Tool calls (PreToolUse) of one tool, each paired with its PostToolUse(Failure) by tool_use_id."""

    tool: str | None
    calls: int
    failures: int  # ended by PostToolUseFailure
    failure_rate: float  # failures among the calls that ended
    # Durations of the calls that ended, estimated from log-spaced buckets (8 per doubling, each bucket's
    # calls spread evenly from its least to its greatest): exact while each bucket holds one duration or
    # at most two calls, else off by less than a bucket's width (9%).
    p50_ms: float | None
    p95_ms: float | None


class Usage(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """``GET /api/usage``: ledger requests made in [from, to), grouped."""

    group: str
    from_: datetime
    to: datetime
    total: UsageTotals
    groups: list[UsageGroupTotals]  # by cost, then tokens, highest first (days oldest first)


class Stats(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    from_: datetime
    to: datetime
    sessions: int
    events: int
    by_status: dict[str, int]
    cost_usd: Decimal
    qa_scores: QaScores
    models: list[ModelStats]
    per_day: list[DayStats]
    usage: UsageTotals  # ledger requests made in the range (by when each was made)
    usage_by_day_model: list[DayModelUsage]
    usage_by_model: list[UsageGroupTotals]
    usage_by_project: list[UsageGroupTotals]
    tools: list[ToolStats]  # calls of sessions started in the range, most used first


class Change(msgspec.Struct, kw_only=True):
    """A live stream ``session`` event: a session that is new, or whose card changed."""

    kind: Literal["new", "update"]
    session: SessionCard


class Error(msgspec.Struct, kw_only=True):
    error: str
    detail: str


@functools.cache
def _fields(query: type[Query]) -> dict[str, msgspec.structs.FieldInfo]:
    return {f.encode_name: f for f in msgspec.structs.fields(query)}


_INTEGER = re.compile(r"-?[0-9]{1,18}\Z")


def parse(query: type[Query], items: list[tuple[str, str]]) -> Any:
    """Query-string pairs into ``query``; repeated names only where the field is a list.

    Strict: only integer fields take digits as numbers (a lax conversion would read ``0.5`` as a date).
    """
    fields = _fields(query)
    raw: dict[str, Any] = {}
    for name, value in items:
        field = fields.get(name)
        if field is None:
            raise BadParameter(f"{checked_text('parameter', name)[:64]}: unknown parameter")
        kind = msgspec.inspect.type_info(field.type)
        while isinstance(kind, msgspec.inspect.Metadata):  # Annotated[...] constraints around the type
            kind = kind.type
        if isinstance(kind, msgspec.inspect.IntType) and _INTEGER.match(value):
            raw_value: Any = int(value)
        else:
            raw_value = value
        if isinstance(kind, msgspec.inspect.ListType):
            raw.setdefault(name, []).append(raw_value)
        elif name in raw:
            raise BadParameter(f"{name}: given more than once")
        else:
            raw[name] = raw_value
    try:
        return msgspec.convert(raw, query)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `$")
        name = where.rstrip("`").lstrip(".").split("[")[0]
        raise BadParameter(f"{name}: {problem}" if name else problem) from None
