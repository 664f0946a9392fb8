"""The usage ledger's values and rules: one record per model API request, however many sources saw it.

A request is keyed by tenant, session and request id (``requestId`` in transcripts, ``request_id`` in
Claude Code's OTLP events). Sources (transcripts, OTLP, the Agent SDK) each tell what the request used and
cost; :func:`merge` folds what they say into one record, so a request seen twice is counted once. When
their figures disagree the record keeps the best-founded ones — a cost Claude Code *reported* over one
*computed* from the price table over an *unknown* one — and keeps what each other source said in ``alt``.

**The Agent SDK** (source ``sdk``) tells a session's usage per model, not per request: its
``ResultMessage`` has ``model_usage`` (and ``total_cost_usd``, ``usage``). Each model becomes one *summary*
record with request id ``sdk:<model>`` (:func:`sdk_request_id`; ``sdk:*`` when the SDK names no model),
the session's usage of that model so far: a later result of the same session is the same record again
(the fuller count wins, as for every source). The rule against double counting: **a session's summary
records count only while the session has no per-request record** (from its transcript or OTLP). Those
describe the same requests one by one, so once there is one, the session's summaries are not counted,
whichever came first (:func:`countable`; the store's session totals apply it in SQL, and every reader
that sums ``usage_ledger`` rows must too: the rows stay, as what the SDK said, to check the others
against). The SDK runs Claude Code, whose transcript the collector reads at ``Stop``: the summaries are
what counts when nothing else told the usage (a transcript not readable, an SDK session without hooks).

Pure: no I/O, no database. The store writes what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import msgspec

from hookdb.collector import prices

Source = Literal["transcript", "otlp", "sdk"]
CostSource = Literal["reported", "computed", "unknown"]
MAIN = "main"
"""The agent of a request made by the session's own conversation, not by a subagent."""

SDK_PREFIX = "sdk:"
"""The request ids of the Agent SDK's per-model summary records."""

_COST_RANK = {"unknown": 0, "computed": 1, "reported": 2}
# Reported costs come as binary floats (0.0070236000000000005); a tenth of a nano-dollar is far below
# any price step and removes that noise, so two sources reporting the same cost agree exactly.
_COST_QUANTUM = Decimal("1e-10")
_MAX_COST = Decimal(1_000_000)


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """What one source says one request used and cost."""

    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cost_usd: Decimal | None = None
    cost_source: CostSource = "unknown"

    @property
    def tokens(self) -> tuple[int, int, int, int, int]:
        """Input, output, cache-read, cache-write 5 m and 1 h tokens."""
        return (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_creation_5m_tokens,
            self.cache_creation_1h_tokens,
        )

    def claim(self) -> tuple:
        """The figures without where the cost came from: two sources agree when their claims are equal."""
        return (None if self.model is None else prices.normalise(self.model), *self.tokens, self.cost_usd)

    def rank(self) -> tuple:
        """A total order: reported over computed over unknown cost, then the fuller count, then content."""
        tokens = self.tokens
        return (
            _COST_RANK[self.cost_source],
            self.model is not None,
            sum(tokens),
            tokens,
            Decimal(-1) if self.cost_usd is None else self.cost_usd,
            self.model or "",
        )


def _figures_of(value: Figures) -> dict[str, Any]:
    """The :class:`Figures` fields of ``value`` (a :class:`UsageRecord` is Figures with an identity)."""
    return {name: getattr(value, name) for name in Figures.__struct_fields__}


class Alt(msgspec.Struct, frozen=True, kw_only=True):
    """What one source said about a request when it disagreed with the record's figures."""

    source: Source
    figures: Figures


class UsageRecord(Figures, frozen=True, kw_only=True):
    """One model API request in the ledger: who made it, when, which sources saw it, and the figures kept."""

    tenant: str
    session: str
    request_id: str
    agent: str = MAIN
    """``main``, or the subagent's id."""
    agent_type: str | None = None
    at: datetime
    sources: frozenset[Source]
    alt: tuple[Alt, ...] = ()
    """Each source whose figures disagreed with the ones kept, with what it said; sorted by source."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.tenant, self.session, self.request_id)

    @property
    def figures(self) -> Figures:
        """The figures kept, without the request's identity."""
        return Figures(**_figures_of(self))

    def by_source(self) -> dict[Source, Figures]:
        """What each source said: its ``alt`` entry, or the record's own figures when it agreed."""
        said = {a.source: a.figures for a in self.alt}
        return {s: said.get(s, self.figures) for s in self.sources}


def reported_cost(value: float | Decimal | str) -> Decimal | None:
    """A cost a source reported, as the exact decimal it meant (float noise rounded off).

    ``None`` for what cannot be a request's cost: not a finite number, negative, or a million dollars
    or more.
    """
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    if not cost.is_finite() or not 0 <= cost < _MAX_COST:
        return None
    return cost.quantize(_COST_QUANTUM).normalize()


def observe(
    *,
    tenant: str,
    session: str,
    request_id: str,
    source: Source,
    at: datetime,
    model: str | None,
    tokens: prices.Tokens,
    reported_cost_usd: float | Decimal | None = None,
    agent: str = MAIN,
    agent_type: str | None = None,
    price_table: prices.PriceTable = prices.PRICES,
    speed: str | None = None,
    geo: str | None = None,
) -> UsageRecord:
    """One source's record of one request: its reported cost, else one computed from the price table."""
    cost = None if reported_cost_usd is None else reported_cost(reported_cost_usd)
    if cost is not None:
        cost_source = "reported"
    else:
        cost = prices.cost_usd(model, tokens, prices=price_table, at=at, speed=speed, geo=geo)
        cost_source = "unknown" if cost is None else "computed"
    return UsageRecord(
        tenant=tenant,
        session=session,
        request_id=request_id,
        agent=agent,
        agent_type=agent_type,
        model=model,
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        cache_read_tokens=tokens.cache_read,
        cache_creation_5m_tokens=tokens.cache_write_5m,
        cache_creation_1h_tokens=tokens.cache_write_1h,
        cost_usd=cost,
        cost_source=cost_source,
        at=at,
        sources=frozenset((source,)),
    )


def merge(a: UsageRecord, b: UsageRecord) -> UsageRecord:
    """One record of a request from two records of it: commutative, idempotent, and order-free.

    The record's figures are the highest-ranked any source gave, whatever order records merge in, and
    every source that said something else is kept in ``alt``. Each source says one thing about a request
    (should it say two, its higher-ranked one is kept, and its ``alt`` may then depend on the order).
    The request happened at the earliest time any source saw it; its agent is a subagent when any
    source names one.
    """
    if a.key != b.key:
        raise ValueError(f"cannot merge usage of different requests: {a.key} and {b.key}")
    said: dict[Source, Figures] = a.by_source()
    for source, figures in b.by_source().items():
        mine = said.get(source)
        if mine is None or figures.rank() > mine.rank():
            said[source] = figures
    best = max(said.values(), key=Figures.rank)
    alt = tuple(Alt(source=s, figures=f) for s, f in sorted(said.items()) if f.claim() != best.claim())
    agents = sorted({a.agent, b.agent} - {MAIN})
    agent_types = sorted({a.agent_type, b.agent_type} - {None})
    return UsageRecord(
        tenant=a.tenant,
        session=a.session,
        request_id=a.request_id,
        agent=agents[0] if agents else MAIN,
        agent_type=agent_types[0] if agent_types else None,
        **_figures_of(best),
        at=min(a.at, b.at),
        sources=a.sources | b.sources,
        alt=alt,
    )


def ledger(records: Iterable[UsageRecord]) -> dict[tuple[str, str, str], UsageRecord]:
    """Every request once: records of the same request merged, keyed by (tenant, session, request id)."""
    merged: dict[tuple[str, str, str], UsageRecord] = {}
    for record in records:
        seen = merged.get(record.key)
        merged[record.key] = record if seen is None else merge(seen, record)
    return merged


class Totals(msgspec.Struct, frozen=True, kw_only=True):
    """What a set of requests (a session, one of its agents) used and cost."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cost_usd: Decimal | None = None
    """The sum of the known costs; ``None`` when no request's cost is known."""
    cost_source: CostSource = "unknown"
    """The weakest among the requests: ``unknown`` when any cost is (``cost_usd`` is then a lower bound)."""
    unpriced_requests: int = 0
    main_model: str | None = None
    """The model that did most of the main agent's work (by tokens), else of all agents'."""
    models: tuple[str, ...] = ()


def sdk_request_id(model: str | None) -> str:
    """The request id of the Agent SDK's summary record of ``model`` in a session."""
    return SDK_PREFIX + (model or "*")


def is_summary(record: UsageRecord) -> bool:
    """Whether ``record`` is an Agent SDK summary (a session's usage of one model), not one request."""
    return record.request_id.startswith(SDK_PREFIX)


def countable(records: Iterable[UsageRecord]) -> list[UsageRecord]:
    """``records`` without the summaries of sessions that have per-request records (see the module)."""
    records = list(records)
    detailed = {(r.tenant, r.session) for r in records if not is_summary(r)}
    return [r for r in records if not (is_summary(r) and (r.tenant, r.session) in detailed)]


def totals(records: Iterable[UsageRecord]) -> Totals:
    """The totals of a set of records; records of the same request count once, summaries by
    :func:`countable`."""
    merged = countable(ledger(records).values())
    if not merged:
        return Totals()
    known = [r.cost_usd for r in merged if r.cost_usd is not None]
    weakest = min((r.cost_source for r in merged), key=_COST_RANK.__getitem__)
    return Totals(
        requests=len(merged),
        input_tokens=sum(r.input_tokens for r in merged),
        output_tokens=sum(r.output_tokens for r in merged),
        cache_read_tokens=sum(r.cache_read_tokens for r in merged),
        cache_creation_5m_tokens=sum(r.cache_creation_5m_tokens for r in merged),
        cache_creation_1h_tokens=sum(r.cache_creation_1h_tokens for r in merged),
        cost_usd=sum(known, Decimal(0)) if known else None,
        cost_source=weakest,
        unpriced_requests=len(merged) - len(known),
        main_model=_main_model([r for r in merged if r.agent == MAIN] or merged),
        models=tuple(sorted({r.model for r in merged if r.model is not None})),
    )


def by_agent(records: Iterable[UsageRecord]) -> dict[str, Totals]:
    """Totals per agent: ``main`` and each subagent."""
    groups: dict[str, list[UsageRecord]] = {}
    for record in countable(ledger(records).values()):
        groups.setdefault(record.agent, []).append(record)
    return {agent: totals(group) for agent, group in sorted(groups.items())}


def _main_model(records: list[UsageRecord]) -> str | None:
    work: dict[str, int] = {}
    for r in records:
        if r.model is not None:
            work[r.model] = work.get(r.model, 0) + _tokens(r)
    # Most tokens first; the name breaks a tie so the answer does not depend on the order of records.
    return min(work, key=lambda m: (-work[m], m)) if work else None


def _tokens(r: UsageRecord) -> int:
    return (
        r.input_tokens
        + r.output_tokens
        + r.cache_read_tokens
        + r.cache_creation_5m_tokens
        + r.cache_creation_1h_tokens
    )
