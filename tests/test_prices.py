"""The price table and the cost of one request: exact, never a guess (collector/prices.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookdb.collector import prices
from hookdb.collector.prices import PriceError, Tokens, cost_usd, normalise, split_cache_creation

FIXTURES = Path(__file__).parent / "fixtures" / "claude-code-2.1.332"


def _fixture_requests() -> list[tuple[str, Tokens]]:
    """The fixture transcript's requests, once each, read without the code under test."""
    seen: dict[tuple[str, str], tuple[str, Tokens]] = {}
    for line in (FIXTURES / "session-bash-write.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") != "assistant":
            continue
        u = entry["message"]["usage"]
        five_m, one_h = split_cache_creation(
            u["cache_creation_input_tokens"],
            u["cache_creation"]["ephemeral_5m_input_tokens"],
            u["cache_creation"]["ephemeral_1h_input_tokens"],
        )
        tokens = Tokens(u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], five_m, one_h)
        seen[(entry["message"]["id"], entry["requestId"])] = (entry["message"]["model"], tokens)
    return list(seen.values())


def _cost_state() -> dict:
    last = (FIXTURES / "session-bash-write.jsonl").read_text().splitlines()[-1]
    return json.loads(last, parse_float=Decimal)


def test_the_fixture_session_costs_what_claude_code_says_to_the_micro_dollar():
    requests = _fixture_requests()
    assert len(requests) == 3
    costs = [cost_usd(model, tokens) for model, tokens in requests]
    total = sum(costs, Decimal(0))
    state = _cost_state()
    assert state["totalCostUSD"] == Decimal("0.0643872")
    # Exactly, not just to the micro-dollar: the table's decimals reproduce Claude Code's arithmetic.
    assert total == state["totalCostUSD"]
    assert total == state["modelUsage"]["claude-sonnet-4-5"]["costUSD"]


def test_each_fixture_request_costs_what_claude_codes_otlp_event_reported():
    logs = json.loads((FIXTURES / "otlp" / "v1-logs.json").read_text())
    reported = []
    for record in logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"]:
        attrs = {a["key"]: next(iter(a["value"].values())) for a in record["attributes"]}
        if attrs["event.name"] == "api_request":
            reported.append(Decimal(str(attrs["cost_usd"])).quantize(Decimal("1e-9")))
    computed = [cost_usd(m, t).quantize(Decimal("1e-9")) for m, t in _fixture_requests()]
    # The OTLP run scripted the same three turns: same tokens, so the same costs.
    assert computed == reported


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),
        ("claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4-5"),
        ("Claude-Opus-4-7", "claude-opus-4-7"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("us.anthropic.claude-opus-4-7-v1", "claude-opus-4-7"),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0",
            "claude-haiku-4-5",
        ),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        (" claude-opus-5-5 ", "claude-opus-5-5"),
    ],
)
def test_model_names_are_normalised_to_the_tables(name, normal):
    assert normalise(name) == normal
    assert prices.price_of(name) is not None


@pytest.mark.parametrize(
    "model",
    ["claude-sonnet-4-5", "claude-opus-4-1", "claude-opus-4-5", "claude-opus-4-6", "claude-haiku-4-5"],
)
def test_the_models_claude_code_uses_are_priced(model):
    assert cost_usd(model, Tokens(input=1_000_000)) is not None


@pytest.mark.parametrize("model", ["gpt-5", "claude-unknown-9", "", "<synthetic>", None])
def test_an_unknown_model_costs_unknown_not_zero(model):
    assert cost_usd(model, Tokens(input=1000, output=1000)) is None


def test_fast_mode_is_unknown_rather_than_mispriced():
    assert cost_usd("claude-opus-4-6", Tokens(input=10), speed="fast") is None
    assert cost_usd("claude-opus-4-6", Tokens(input=10), speed="standard") == Decimal("0.00005")


def test_us_only_inference_costs_a_tenth_more_and_an_unknown_region_is_unknown():
    tokens = Tokens(input=100_000, output=10_000)
    assert cost_usd("claude-opus-4-7", tokens, geo="") == cost_usd("claude-opus-4-7", tokens, geo="global")
    assert cost_usd("claude-opus-4-7", tokens, geo="us") == Decimal("0.825")
    assert cost_usd("claude-opus-4-7", tokens, geo="mars") is None


def test_published_rates_per_million_tokens():
    tenth = 100_000  # a tenth of a million: below every long-context threshold
    assert cost_usd("claude-sonnet-4-5", Tokens(input=tenth)) == Decimal("0.3")
    assert cost_usd("claude-sonnet-4-5", Tokens(output=1_000_000)) == 15
    assert cost_usd("claude-sonnet-4-5", Tokens(cache_read=tenth)) == Decimal("0.03")
    assert cost_usd("claude-sonnet-4-5", Tokens(cache_write_5m=tenth)) == Decimal("0.375")
    assert cost_usd("claude-sonnet-4-5", Tokens(cache_write_1h=tenth)) == Decimal("0.6")
    assert cost_usd("claude-opus-4-1", Tokens(input=tenth, output=tenth)) == 9
    assert cost_usd("claude-opus-4-7", Tokens(input=tenth, output=tenth)) == 3
    assert cost_usd("claude-opus-5-5", Tokens(input=tenth, output=tenth)) == Decimal("2.4")
    assert cost_usd("claude-haiku-4-5", Tokens(input=tenth, output=tenth)) == Decimal("0.6")


def test_cache_write_rates_follow_the_published_multipliers():
    """A typo guard: 1-hour writes cost 2× input, 5-minute writes 1.25×, reads ≤ 0.1× (Haiku 3 aside)."""
    for model, entries in prices.PRICES.items():
        for price in entries:
            for rates in filter(None, (price.base, price.long_context)):
                assert rates.cache_write_1h == 2 * rates.input, model
                if model != "claude-3-haiku":
                    assert rates.cache_write_5m == Decimal("1.25") * rates.input, model
                    assert rates.cache_read <= rates.input / 10, model


def test_long_context_tier_prices_every_token_of_a_long_request():
    at_threshold = Tokens(input=150_000, cache_read=50_000, output=1000)
    beyond = Tokens(input=150_000, cache_read=50_000, cache_write_1h=1, output=1000)
    assert cost_usd("claude-sonnet-4-5", at_threshold) == Decimal("0.45") + Decimal("0.015") + Decimal(
        "0.015"
    )
    assert cost_usd("claude-sonnet-4-5", beyond) == (
        Decimal("0.9") + Decimal("0.03") + Decimal("0.0225") + Decimal("0.000012")
    )
    # Haiku 5.5 bills by prompt length from 100K tokens; Sonnet 4.6 has no long-context tier.
    assert cost_usd("claude-haiku-5-5", Tokens(input=100_001)) == Decimal("0.0500005")
    assert cost_usd("claude-haiku-5-5", Tokens(input=100_000)) == Decimal("0.01")
    assert cost_usd("claude-sonnet-4-6", Tokens(input=400_000)) == Decimal("1.2")


def test_a_request_is_priced_at_the_rates_of_its_day():
    tokens = Tokens(cache_read=1_000_000)
    before = datetime(2026, 10, 6, 23, tzinfo=UTC)
    after = datetime(2026, 10, 7, 1, tzinfo=UTC)
    assert cost_usd("claude-sonnet-5-5", tokens, at=before) == Decimal("0.20")
    assert cost_usd("claude-sonnet-5-5", tokens, at=after) == Decimal("0.10")


@pytest.mark.parametrize(
    ("total", "e5m", "e1h", "split"),
    [
        (11872, 0, 0, (11872, 0)),  # Claude Code's usage: a breakdown of zeros is all 5-minute writes
        (1000, 400, 600, (400, 600)),
        (1000, None, 600, (400, 600)),
        (1000, None, None, (1000, 0)),
        (None, 300, 700, (300, 700)),
        (None, None, None, (0, 0)),
        (0, 0, 0, (0, 0)),
        (500, 0, 800, (0, 800)),  # a breakdown larger than its total: the breakdown is the finer account
    ],
)
def test_cache_creation_splits_into_5m_and_1h(total, e5m, e1h, split):
    assert split_cache_creation(total, e5m, e1h) == split


@given(
    total=st.integers(0, 10**9),
    one_hour=st.integers(0, 10**9),
)
def test_cache_creation_split_keeps_every_token(total, one_hour):
    one_hour = min(one_hour, total)
    five_m, one_h = split_cache_creation(total, 0, one_hour)
    assert five_m + one_h == total
    assert one_h == one_hour


_counts = st.integers(0, 12_000)
_tokens = st.builds(Tokens, _counts, _counts, _counts, _counts, _counts)


@given(a=_tokens, b=_tokens, model=st.sampled_from(sorted(prices.PRICES)))
def test_cost_adds_up_across_requests_within_a_tier(a, b, model):
    both = Tokens(*(x + y for x, y in zip(a, b, strict=True)))
    cost_a, cost_b, cost_both = (cost_usd(model, t) for t in (a, b, both))
    assert cost_a is not None
    assert cost_a >= 0
    # Under 100K-token prompts every model is in its base tier, where cost is linear in tokens.
    assert cost_both == cost_a + cost_b


def test_overrides_replace_rates_and_keep_the_rest():
    table = prices.table({"claude-sonnet-4-5-20250929": {"input": 2.5, "output": "12"}})
    assert cost_usd("claude-sonnet-4-5", Tokens(input=100_000), prices=table) == Decimal("0.25")
    assert cost_usd("claude-sonnet-4-5", Tokens(output=1_000_000), prices=table) == 12
    assert cost_usd("claude-sonnet-4-5", Tokens(cache_read=100_000), prices=table) == Decimal("0.03")
    # The long-context tier is kept; the built-in table is untouched.
    assert cost_usd("claude-sonnet-4-5", Tokens(input=300_000), prices=table) == Decimal("1.8")
    assert cost_usd("claude-sonnet-4-5", Tokens(input=100_000)) == Decimal("0.3")


def test_an_override_prices_a_model_the_table_does_not_know():
    rates = {"input": 1, "output": 2, "cache_read": 0.1, "cache_write_5m": 1.25, "cache_write_1h": 2}
    table = prices.table({"claude-new-6": rates | {"long_context": {"above": 10, "input": 4}}})
    assert cost_usd("claude-new-6-20270101", Tokens(input=10, output=1), prices=table) == Decimal("0.000012")
    # Beyond 10 tokens of prompt the long-context rates apply; those not given are the base ones.
    assert cost_usd("claude-new-6", Tokens(input=11, output=1), prices=table) == Decimal("0.000046")
    assert cost_usd("claude-new-6", Tokens(input=1), prices=prices.PRICES) is None


def test_an_override_applies_on_every_day():
    table = prices.table({"claude-sonnet-5-5": {"cache_read": "0.15"}})
    for day in (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)):
        assert cost_usd("claude-sonnet-5-5", Tokens(cache_read=1_000_000), prices=table, at=day) == Decimal(
            "0.15"
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"claude-sonnet-4-5": {"inptu": 3}}, "unknown field"),
        ({"claude-new-6": {"input": 3}}, "lacks 'output'"),
        ({"claude-sonnet-4-5": {"input": -1}}, "non-negative"),
        ({"claude-sonnet-4-5": {"input": "three"}}, "not a number"),
        ({"claude-sonnet-4-5": {"input": "NaN"}}, "non-negative"),
        ({"claude-sonnet-4-5": {"input": True}}, "must be a number"),
        ({"claude-sonnet-4-5": {"input": [3]}}, "must be a number"),
        ({"claude-sonnet-4-5": {"long_context": 5}}, "must be a table"),
        ({"claude-sonnet-4-5": {"long_context": {"input": 6}}}, "above must be a token count"),
        ({"claude-sonnet-4-5": {"long_context": {"above": 1, "outptu": 6}}}, "unknown long_context field"),
    ],
)
def test_a_bad_override_is_one_clear_error(overrides, message):
    with pytest.raises(PriceError, match=message):
        prices.table(overrides)


def test_override_floats_are_the_decimals_written():
    table = prices.table({"claude-haiku-4-5": {"cache_write_5m": 1.1}})
    assert table["claude-haiku-4-5"][-1].base.cache_write_5m == Decimal("1.1")
