"""Model prices: the one table of what a Claude API request costs, and the function that prices one.

Used where no source reported a cost (older transcripts, backfill, other sources). Prices are Anthropic's
published list prices in USD per million tokens (platform.claude.com/docs/en/about-claude/pricing, read
2026-12-01), as :class:`~decimal.Decimal` so a sum of requests is exact: Claude Code's own totals are
reproduced to the micro-dollar. A model the table does not know costs ``None`` (unknown), never 0; so does
a request priced in a way the table cannot tell (fast mode, an unknown inference region).

Pure: no I/O. The config's override mapping is passed in (:func:`table`), not read here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

MTOK = Decimal(1_000_000)


class PriceError(ValueError):
    """A price override that cannot be used: unknown field, missing rate, or not a non-negative number."""


class Rates(NamedTuple):
    """USD per million tokens of each kind, for one tier of one model."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal


class Price(NamedTuple):
    """One model's price: its base rates and, where Anthropic bills one, a long-context tier.

    A request whose prompt (input + cache read + cache write tokens) exceeds ``long_context_above`` pays
    the ``long_context`` rates on every token, output included.
    """

    base: Rates
    long_context_above: int | None = None
    long_context: Rates | None = None
    since: date | None = None
    """The first day these rates apply; an earlier request takes the model's previous entry."""


class Tokens(NamedTuple):
    """A request's token counts, cache writes split by lifetime (see :func:`split_cache_creation`)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0


_GEO_FACTOR = {"": Decimal(1), "global": Decimal(1), "us": Decimal("1.1")}

PriceTable = Mapping[str, tuple[Price, ...]]
"""Normalised model name → its prices, oldest first."""


def _r(inp: str, out: str, read: str, w5m: str, w1h: str) -> Rates:
    return Rates(Decimal(inp), Decimal(out), Decimal(read), Decimal(w5m), Decimal(w1h))


_OPUS_4 = Price(_r("15", "75", "1.50", "18.75", "30"))
_OPUS_45 = Price(_r("5", "25", "0.50", "6.25", "10"))
_SONNET_4 = Price(
    _r("3", "15", "0.30", "3.75", "6"),
    long_context_above=200_000,
    long_context=_r("6", "22.50", "0.60", "7.50", "12"),
)
_SONNET = Price(_r("3", "15", "0.30", "3.75", "6"))
_FABLE_5 = Price(_r("10", "50", "1", "12.50", "20"))
_FABLE_51 = Price(_r("10", "50", "0.25", "12.50", "20"))

PRICES: PriceTable = {
    "claude-fable-5-1": (_FABLE_51,),
    "claude-mythos-5-1": (_FABLE_51,),
    "claude-fable-5": (_FABLE_5,),
    "claude-mythos-5": (_FABLE_5,),
    "claude-opus-5-5": (Price(_r("4", "20", "0.20", "5", "8")),),
    "claude-opus-5": (_OPUS_45,),
    "claude-opus-4-8": (_OPUS_45,),
    "claude-opus-4-7": (_OPUS_45,),
    "claude-opus-4-6": (_OPUS_45,),
    "claude-opus-4-5": (_OPUS_45,),
    "claude-opus-4-1": (_OPUS_4,),
    "claude-opus-4": (_OPUS_4,),
    "claude-3-opus": (_OPUS_4,),
    "claude-sonnet-5-5": (
        Price(_r("2", "10", "0.20", "2.50", "4")),
        # Anthropic halved Sonnet 5.5's cache reads on 2026-10-07.
        Price(_r("2", "10", "0.10", "2.50", "4"), since=date(2026, 10, 7)),
    ),
    "claude-sonnet-5": (Price(_r("2", "10", "0.20", "2.50", "4")),),
    "claude-sonnet-4-6": (_SONNET,),
    "claude-sonnet-4-5": (_SONNET_4,),
    "claude-sonnet-4": (_SONNET_4,),
    "claude-3-7-sonnet": (_SONNET,),
    "claude-3-5-sonnet": (_SONNET,),
    "claude-haiku-5-5": (
        Price(
            _r("0.10", "0.50", "0.01", "0.125", "0.20"),
            long_context_above=100_000,
            long_context=_r("0.50", "2.50", "0.05", "0.625", "1"),
        ),
    ),
    "claude-haiku-4-5": (Price(_r("1", "5", "0.10", "1.25", "2")),),
    "claude-3-5-haiku": (Price(_r("0.80", "4", "0.08", "1", "1.6")),),
    "claude-3-haiku": (Price(_r("0.25", "1.25", "0.03", "0.30", "0.50")),),
}

# Provider wrappers around the model name: a Bedrock ARN's path, a region/provider prefix
# (``us.anthropic.``), Bedrock's ``-v1:0`` and Vertex's ``@20250929`` version, Claude Code's ``[1m]``
# context marker, and a dated (``-20250929``) or ``-latest`` suffix. None of them changes the price.
_PREFIX = re.compile(r"^(?:[a-z]{2,4}\.)?anthropic\.")
_SUFFIX = re.compile(r"(?:\[[^\]]*\])|(?:-v\d+(?::\d+)?$)|(?:@.*$)")
_DATED = re.compile(r"-(?:\d{8}|latest)$")
_ZERO = re.compile(r"^(claude-(?:opus|sonnet|haiku)-\d+)-0$")


def normalise(model: str) -> str:
    """The table's name for ``model``: ``claude-sonnet-4-5-20250929`` → ``claude-sonnet-4-5``."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = _PREFIX.sub("", name)
    name = _SUFFIX.sub("", name)
    name = _DATED.sub("", name)
    return _ZERO.sub(r"\1", name)


def split_cache_creation(
    total: int | None, ephemeral_5m: int | None, ephemeral_1h: int | None
) -> tuple[int, int]:
    """Cache-write tokens as ``(5m, 1h)`` from a usage block's total and its per-lifetime breakdown.

    What the breakdown does not name as 1-hour is a 5-minute write, the API's default: Claude Code reports
    ``cache_creation_input_tokens`` with a breakdown of zeros, and bills those as 5-minute writes.
    """
    one_hour = max(ephemeral_1h or 0, 0)
    if total is None:
        return max(ephemeral_5m or 0, 0), one_hour
    return max(total - one_hour, ephemeral_5m or 0, 0), one_hour


def price_of(model: str, *, prices: PriceTable = PRICES, at: datetime | None = None) -> Price | None:
    """The price of ``model`` on the day of ``at`` (its latest when ``None``), or ``None`` if unknown."""
    entries = prices.get(normalise(model))
    if not entries:
        return None
    if at is None:
        return entries[-1]
    current = None
    for entry in entries:
        if entry.since is None or entry.since <= at.date():
            current = entry
    return current


def cost_usd(
    model: str | None,
    tokens: Tokens,
    *,
    prices: PriceTable = PRICES,
    at: datetime | None = None,
    speed: str | None = None,
    geo: str | None = None,
) -> Decimal | None:
    """What one request cost in USD, exactly, or ``None`` when the table cannot tell.

    ``speed`` and ``geo`` are the usage block's ``speed`` and ``inference_geo``. Fast mode has its own
    prices, which this table does not hold, so a fast request is unknown rather than mispriced; US-only
    inference costs 1.1× every rate, and a region this table does not know is unknown.
    """
    factor = _GEO_FACTOR.get(geo or "")
    if model is None or speed == "fast" or factor is None:
        return None
    price = price_of(model, prices=prices, at=at)
    if price is None:
        return None
    rates = price.base
    prompt = tokens.input + tokens.cache_read + tokens.cache_write_5m + tokens.cache_write_1h
    if (
        price.long_context is not None
        and price.long_context_above is not None
        and prompt > price.long_context_above
    ):
        rates = price.long_context
    total = (
        tokens.input * rates.input
        + tokens.output * rates.output
        + tokens.cache_read * rates.cache_read
        + tokens.cache_write_5m * rates.cache_write_5m
        + tokens.cache_write_1h * rates.cache_write_1h
    )
    return total * factor / MTOK


_RATE_FIELDS = Rates._fields
_LONG_FIELDS = frozenset(_RATE_FIELDS) | {"above"}


def table(
    overrides: Mapping[str, Mapping[str, object]] | None = None, *, base: PriceTable = PRICES
) -> PriceTable:
    """``base`` with the config's overrides applied: ``{model: {input, output, cache_read, …}}``.

    A model's override replaces all its prices, whatever day a request is priced for: an operator's price
    is what they want every computed cost to use. Fields it leaves out keep the
    built-in rate; a model the table does not know must give all five rates. An optional ``long_context``
    mapping (``above`` plus rates) sets the long-context tier; rates it leaves out are the model's
    long-context rates, or its base rates when it had no such tier.
    """
    result = dict(base)
    for model, fields in (overrides or {}).items():
        name = normalise(model)
        unknown = set(fields) - {*_RATE_FIELDS, "long_context"}
        if unknown:
            raise PriceError(f"price override for {model!r}: unknown field(s) {', '.join(sorted(unknown))}")
        known = base.get(name)
        current = known[-1] if known else None
        rates = _rates(model, fields, current.base if current else None)
        above, long_rates = (current.long_context_above, current.long_context) if current else (None, None)
        if "long_context" in fields:
            above, long_rates = _long_context(model, fields["long_context"], long_rates or rates)
        result[name] = (Price(rates, long_context_above=above, long_context=long_rates),)
    return result


def _rates(model: str, fields: Mapping[str, object], default: Rates | None) -> Rates:
    values = {}
    for field in _RATE_FIELDS:
        if field in fields:
            values[field] = _decimal(model, field, fields[field])
        elif default is not None:
            values[field] = getattr(default, field)
        else:
            raise PriceError(f"price override for unknown model {model!r} lacks {field!r}")
    return Rates(**values)


def _long_context(model: str, spec: object, default: Rates | None) -> tuple[int, Rates]:
    if not isinstance(spec, Mapping):
        raise PriceError(f"price override for {model!r}: long_context must be a table")
    unknown = set(spec) - _LONG_FIELDS
    if unknown:
        raise PriceError(
            f"price override for {model!r}: unknown long_context field(s) {', '.join(sorted(unknown))}"
        )
    above = spec.get("above")
    if not isinstance(above, int) or isinstance(above, bool) or above < 0:
        raise PriceError(f"price override for {model!r}: long_context.above must be a token count")
    return above, _rates(model, {k: v for k, v in spec.items() if k != "above"}, default)


def _decimal(model: str, field: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise PriceError(f"price override for {model!r}: {field} must be a number of USD per million tokens")
    try:
        # Through str, so a TOML float 3.75 is the decimal 3.75, not its binary neighbour.
        amount = Decimal(str(value))
    except InvalidOperation:
        raise PriceError(f"price override for {model!r}: {field} = {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PriceError(f"price override for {model!r}: {field} = {value!r} must be a non-negative number")
    return amount
