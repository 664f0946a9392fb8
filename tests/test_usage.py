"""The usage ledger's values and merge rules: one record per request, however many sources saw it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookdb.collector.prices import Tokens
from hookdb.collector.store import usage
from hookdb.collector.store.usage import MAIN, merge, observe, totals

T0 = datetime(2026, 12, 1, 7, 54, 43, tzinfo=UTC)
REQ1 = Tokens(input=2140, output=96, cache_read=0, cache_write_5m=11872)
REQ2 = Tokens(input=214, output=143, cache_read=11872, cache_write_5m=180)


def _seen(source, tokens=REQ1, *, reported=None, request="req_1", model="claude-sonnet-4-5", **kw):
    return observe(
        tenant=kw.pop("tenant", "acme"),
        session=kw.pop("session", "s1"),
        request_id=request,
        source=source,
        at=kw.pop("at", T0),
        model=model,
        tokens=tokens,
        reported_cost_usd=reported,
        **kw,
    )


def test_observe_prices_what_was_not_reported():
    computed = _seen("transcript")
    assert (computed.cost_usd, computed.cost_source) == (Decimal("0.05238"), "computed")
    reported = _seen("otlp", reported=0.05238)
    assert (reported.cost_usd, reported.cost_source) == (Decimal("0.05238"), "reported")
    unknown = _seen("transcript", model="claude-next-9")
    assert (unknown.cost_usd, unknown.cost_source) == (None, "unknown")
    assert computed.sources == {"transcript"}
    assert computed.agent == MAIN


def test_a_reported_float_cost_is_the_decimal_it_meant():
    assert usage.reported_cost(0.0070236000000000005) == Decimal("0.0070236")
    assert usage.reported_cost(0.0049835999999999995) == Decimal("0.0049836")
    assert usage.reported_cost(0) == 0


@pytest.mark.parametrize("nonsense", [float("inf"), float("nan"), -0.01, 1e300, 1_000_000, "lots"])
def test_what_cannot_be_a_cost_is_not_reported_but_computed(nonsense):
    assert usage.reported_cost(nonsense) is None
    record = _seen("otlp", reported=nonsense)
    assert (record.cost_usd, record.cost_source) == (Decimal("0.05238"), "computed")


def test_the_same_request_from_two_sources_is_one_record_with_the_reported_cost():
    merged = merge(_seen("transcript"), _seen("otlp", reported=0.05238, at=T0 + timedelta(milliseconds=4)))
    assert merged.sources == {"transcript", "otlp"}
    assert merged.cost_source == "reported"
    assert merged.cost_usd == Decimal("0.05238")
    assert merged.alt == ()  # they agree
    assert merged.at == T0
    assert usage.ledger([_seen("transcript"), _seen("otlp", reported=0.05238)]).keys() == {
        ("acme", "s1", "req_1")
    }


def test_disagreeing_figures_keep_the_reported_ones_and_record_the_other():
    transcript = _seen("transcript", REQ2)
    otlp = _seen("otlp", REQ1, reported=0.05238)
    merged = merge(transcript, otlp)
    assert (merged.input_tokens, merged.cost_usd, merged.cost_source) == (
        2140,
        Decimal("0.05238"),
        "reported",
    )
    assert [(a.source, a.figures) for a in merged.alt] == [("transcript", transcript.figures)]
    assert merged.by_source() == {"transcript": transcript.figures, "otlp": otlp.figures}
    assert merge(otlp, transcript) == merged


def test_model_names_that_mean_the_same_model_agree():
    merged = merge(_seen("transcript", model="claude-sonnet-4-5-20250929"), _seen("otlp", reported=0.05238))
    assert merged.alt == ()
    assert merged.model == "claude-sonnet-4-5"


def test_a_computed_cost_outranks_an_unknown_one():
    known = _seen("transcript")
    unknown = _seen("sdk", model=None)
    merged = merge(unknown, known)
    assert (merged.model, merged.cost_source) == ("claude-sonnet-4-5", "computed")
    assert [a.source for a in merged.alt] == ["sdk"]


def test_a_subagent_named_by_any_source_is_the_requests_agent():
    merged = merge(_seen("otlp", reported=0.05238), _seen("transcript", agent="a1b2", agent_type="Explore"))
    assert (merged.agent, merged.agent_type) == ("a1b2", "Explore")


@pytest.mark.parametrize("field", ["tenant", "session", "request"])
def test_records_of_different_requests_do_not_merge(field):
    other = _seen("otlp", **{field: "other"})
    with pytest.raises(ValueError, match="different requests"):
        merge(_seen("transcript"), other)


_sources = st.sampled_from(["transcript", "otlp", "sdk"])
_figures = st.fixed_dictionaries(
    {
        "tokens": st.builds(
            Tokens, st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000)
        ),
        "reported": st.one_of(st.none(), st.decimals(0, 5, places=7)),
        "model": st.sampled_from(["claude-sonnet-4-5", "claude-opus-4-7", "claude-next-9", None]),
        "agent": st.sampled_from([MAIN, "a1", "a2"]),
        "at": st.integers(0, 10).map(lambda s: T0 + timedelta(seconds=s)),
    }
)
# Each source says one thing about a request: a few sources, each once, in any order.
_observations = st.lists(st.tuples(_sources, _figures), min_size=1, max_size=3, unique_by=lambda o: o[0])


def _record(observation):
    source, f = observation
    return _seen(source, f["tokens"], reported=f["reported"], model=f["model"], agent=f["agent"], at=f["at"])


@given(_observations)
def test_merging_does_not_depend_on_order_or_repetition(observations):
    records = [_record(o) for o in observations]
    results = {reduce(merge, order) for order in itertools.permutations(records)}
    assert len(results) == 1
    (merged,) = results
    assert merge(merged, merged) == merged
    for record in records:
        assert merge(merged, record) == merged  # a retried source adds nothing
    assert merged.sources == {o[0] for o in observations}
    # What each source said survives, and the kept figures are one source's own.
    said = merged.by_source()
    assert all(said[source].claim() == _record((source, f)).figures.claim() for source, f in observations)
    assert merged.figures.claim() in {r.figures.claim() for r in records}
    best = max(records, key=lambda r: r.figures.rank())
    assert merged.cost_source == best.cost_source


@given(st.lists(st.tuples(st.sampled_from(["r1", "r2", "r3"]), _sources, _figures), max_size=12))
def test_totals_count_each_request_once(observations):
    records = [
        _seen(source, f["tokens"], reported=f["reported"], model=f["model"], request=r)
        for r, source, f in observations
    ]
    once = list(usage.ledger(records).values())
    got = totals(records + records)
    assert got.requests == len({r for r, _, _ in observations})
    assert got.input_tokens == sum(r.input_tokens for r in once)
    assert got.cache_creation_5m_tokens == sum(r.cache_creation_5m_tokens for r in once)
    known = [r.cost_usd for r in once if r.cost_usd is not None]
    assert got.cost_usd == (sum(known) if known else None)
    assert got.unpriced_requests == len(once) - len(known)
    assert totals(list(reversed(records))) == totals(records)


def test_session_totals():
    records = [
        _seen("transcript", REQ1, request="r1"),
        _seen("otlp", REQ1, request="r1", reported=0.05238),
        _seen("transcript", REQ2, request="r2"),
        _seen(
            "transcript",
            Tokens(input=10, output=99_000),
            request="r3",
            model="claude-haiku-4-5",
            agent="sub1",
        ),
    ]
    got = totals(records)
    assert got.requests == 3
    assert (got.input_tokens, got.output_tokens) == (2140 + 214 + 10, 96 + 143 + 99_000)
    assert (got.cache_read_tokens, got.cache_creation_5m_tokens, got.cache_creation_1h_tokens) == (
        11872,
        12052,
        0,
    )
    assert got.cost_usd == Decimal("0.05238") + Decimal("0.0070236") + Decimal("0.49501")
    assert got.cost_source == "computed"  # the weakest of reported and computed
    # The subagent's model did the most tokens, but the session's main model is the main agent's.
    assert got.main_model == "claude-sonnet-4-5"
    assert got.models == ("claude-haiku-4-5", "claude-sonnet-4-5")
    agents = usage.by_agent(records)
    assert set(agents) == {MAIN, "sub1"}
    assert agents["sub1"].main_model == "claude-haiku-4-5"
    assert agents[MAIN].requests == 2


def test_an_unknown_cost_makes_the_total_a_lower_bound_not_zero():
    got = totals(
        [_seen("transcript", request="r1"), _seen("transcript", request="r2", model="claude-next-9")]
    )
    assert (got.cost_usd, got.cost_source, got.unpriced_requests) == (Decimal("0.05238"), "unknown", 1)
    nothing_known = totals([_seen("transcript", model="claude-next-9")])
    assert (nothing_known.cost_usd, nothing_known.cost_source) == (None, "unknown")
    assert totals([]) == usage.Totals()


def test_records_round_trip_through_msgspec():
    record = merge(_seen("transcript", REQ2), _seen("otlp", reported=0.05238))
    encoded = msgspec.json.encode(record)
    assert msgspec.json.decode(encoded, type=usage.UsageRecord) == record
