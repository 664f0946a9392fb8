"""Metrics helpers against prometheus_client itself."""

from __future__ import annotations

import msgspec
import pytest
from prometheus_client import CollectorRegistry, Histogram

from hookdb.collector.ops import metrics
from hookdb.collector.ops.metrics import observe_many


def test_observe_many_counts_exactly_as_observe_one_by_one() -> None:
    """On the bounds, between them and beyond the last: the same buckets, count and sum as ``observe``."""
    buckets = (0.01, 0.05, 1, 10)
    amounts = [0.0, 0.01, 0.0100001, 0.03, 0.05, 0.5, 1.0, 3.0, 10.0, 11.0, 1e9, 0.03, 0.03]
    registry = CollectorRegistry()
    one = Histogram("one_by_one", "observe", buckets=buckets, registry=registry)
    many = Histogram("all_at_once", "observe_many", buckets=buckets, registry=registry)
    for amount in amounts:
        one.observe(amount)
    observe_many(many, amounts)
    observe_many(many, [])

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        metric = next(m for m in registry.collect() if m.name == name)
        return [
            (s.name.removeprefix(name), s.labels, s.value) for s in metric.samples if "created" not in s.name
        ]

    assert samples("all_at_once") == samples("one_by_one")
    assert samples("one_by_one")[-2][2] == len(amounts)  # the _count: the test looks at real figures


def test_what_a_delivery_process_counted_adds_up_in_the_collector() -> None:
    """``changes`` of a process's readings, ``add``-ed here, count as the same increments made here: each
    counter (labelled or not), each histogram bucket and sum."""
    before = metrics.readings()
    metrics.events_persisted.inc(3)
    metrics.db_errors.labels("08").inc(2)
    metrics.usage_tokens.labels("claude-x", "input", "otel").inc(120)
    metrics.batch_size.observe(30)
    metrics.observe_many(metrics.commit_latency, [0.02, 0.3, 7.0])
    after = metrics.readings()
    deltas = metrics.changes(before, after)
    assert metrics.changes(after, after) == []
    metrics.add(msgspec.msgpack.decode(msgspec.msgpack.encode(deltas), type=list[metrics.Delta]))
    again = metrics.changes(after, metrics.readings())  # the same increments, once more (floats: the sums
    assert [d[:3] for d in again] == [d[:3] for d in deltas]  # are differences of running totals)
    assert [d.amount for d in again] == pytest.approx([d.amount for d in deltas])
    sum_part = len(metrics.commit_latency._buckets)  # a histogram's sum follows its buckets
    added = metrics.commit_latency._sum.get() - before[("hookdb_event_commit_latency_seconds", (), sum_part)]
    assert added == pytest.approx(2 * 7.32)
