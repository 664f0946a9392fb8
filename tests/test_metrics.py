"""Metrics helpers against prometheus_client itself."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

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
