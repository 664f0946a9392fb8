"""The batching policy, driven with injected time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hookdb.collector.delivery.batcher import Batcher


@given(
    sizes=st.lists(st.integers(0, 500), max_size=200),
    max_items=st.integers(1, 20),
    max_bytes=st.integers(1, 1000),
)
def test_every_item_leaves_once_in_order_and_batches_respect_the_caps(
    sizes: list[int], max_items: int, max_bytes: int
) -> None:
    batcher: Batcher[int] = Batcher(max_items=max_items, max_bytes=max_bytes, linger=1.0)
    out: list[list[int]] = []
    for i, size in enumerate(sizes):
        out.extend(batcher.add(i, size, now=0.0))
        assert len(batcher) < max_items
    out.append(batcher.take())
    assert [i for batch in out for i in batch] == list(range(len(sizes)))
    for batch in out:
        assert len(batch) <= max_items
        weight = sum(sizes[i] for i in batch)
        assert weight <= max_bytes or len(batch) == 1  # an oversize item travels alone


def test_deadline_is_linger_after_the_first_item_of_the_open_batch() -> None:
    batcher: Batcher[str] = Batcher(max_items=3, max_bytes=100, linger=0.2)
    assert batcher.deadline() is None
    assert batcher.add("a", 1, now=10.0) == []
    assert batcher.add("b", 1, now=10.1) == []
    assert batcher.deadline() == 10.2
    assert batcher.add("c", 1, now=10.15) == [["a", "b", "c"]]
    assert batcher.deadline() is None
    batcher.add("d", 1, now=11.0)
    assert batcher.deadline() == 11.2


def test_an_item_that_would_overflow_the_bytes_closes_the_open_batch_first() -> None:
    batcher: Batcher[str] = Batcher(max_items=10, max_bytes=100, linger=1.0)
    batcher.add("small", 60, now=0.0)
    assert batcher.add("big", 150, now=0.5) == [["small"], ["big"]]
    assert len(batcher) == 0
