"""The batches dead delivery processes held (``delivery.crashes``, sans-io): sent again alone, split until
the record that kills a process stands alone, and only that record given up; every batch completes once."""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from hookdb.collector.delivery.crashes import GIVE_UP_AFTER, SPLIT_PARTS, Crashes, Done
from hookdb.collector.delivery.pipeline import Batch
from hookdb.collector.spool.segments import Position


class Rec(NamedTuple):
    end: Position
    body: int  # the record's number


def batches(sizes: list[int]) -> list[Batch[Rec]]:
    out, n = [], 0
    for seq, size in enumerate(sizes):
        out.append(Batch([Rec(Position(0, n + i + 1), n + i) for i in range(size)], seq))
        n += size
    return out


@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    killers=st.sets(st.integers(0, 200), max_size=4),
    innocent=st.sets(st.integers(-400, 8), max_size=6),
    first_held=st.integers(1, 8),
)
def test_only_the_records_that_kill_are_given_up_and_every_batch_completes_once(
    sizes: list[int], killers: set[int], innocent: set[int], first_held: int
) -> None:
    """A process dies whenever it holds a killer, and once (for reasons of its own) for each batch number in
    ``innocent``; the first process held ``first_held`` batches at once."""
    made = batches(sizes)
    crashes = Crashes[Rec]()
    done: list[Done] = []
    given_up: list[int] = []
    settled: set[int] = set()  # records committed or given up
    spared: set[int] = set()
    deaths = 0

    def fatal(batch: Batch[Rec]) -> bool:
        if any(r.body in killers for r in batch.items):
            return True
        if batch.seq in innocent and batch.seq not in spared:
            spared.add(batch.seq)
            return True
        return False

    def completes(found: Done | None) -> None:
        if found is not None:
            # Only once every record of the batch is in (or given up) may the checkpoint pass it.
            assert {r.body for r in made[found.seq].items} <= settled
            done.append(found)

    def commit(batch: Batch[Rec]) -> None:
        settled.update(r.body for r in batch.items)
        completes(crashes.committed(batch.seq, batch.end, len(batch.items)))

    def die(held: list[Batch[Rec]]) -> None:
        nonlocal deaths
        deaths += 1
        for lost in crashes.died(held):
            given_up.extend(r.body for r in lost.items)
            settled.update(r.body for r in lost.items)
            completes(crashes.given_up(lost))

    held = made[:first_held]
    if any(map(fatal, held)):
        die(held)
    else:
        for batch in held:
            commit(batch)
    for batch in made[first_held:]:
        die([batch]) if fatal(batch) else commit(batch)
    while (batch := crashes.take()) is not None:
        assert deaths < 10_000
        die([batch]) if fatal(batch) else commit(batch)
    total = sum(sizes)
    assert sorted(given_up) == sorted(k for k in killers if k < total)
    assert sorted(d.seq for d in done) == [b.seq for b in made]
    assert {d.seq: (d.end, d.records) for d in done} == {b.seq: (b.end, len(b.items)) for b in made}
    assert crashes.queued == 0


def test_a_batch_held_with_others_is_sent_again_whole_and_a_single_record_needs_two_deaths_alone() -> None:
    a, b = batches([3, 1])
    crashes = Crashes[Rec]()
    assert crashes.died([a, b]) == []  # which of the two is unknown: each goes again, whole and alone
    assert crashes.take() is a
    assert crashes.take() is b
    assert crashes.take() is None
    assert crashes.died([b]) == []  # once alone: maybe the process's own death
    assert crashes.take() is b
    assert GIVE_UP_AFTER == 2
    assert crashes.died([b]) == [b]  # twice: given up
    assert crashes.given_up(b) == Done(b.seq, b.end, 1)


def test_a_convicted_batch_is_split_in_even_parts_and_completes_when_its_last_part_commits() -> None:
    (a,) = batches([20])
    crashes = Crashes[Rec]()
    assert crashes.died([a]) == []
    parts = [crashes.take() for _ in range(SPLIT_PARTS)]
    assert crashes.take() is None
    assert all(p is not None and p.seq < 0 for p in parts)
    assert [[r.body for r in p.items] for p in parts if p is not None] == [
        [0, 1], [2, 3, 4], [5, 6], [7, 8, 9], [10, 11], [12, 13, 14], [15, 16], [17, 18, 19]
    ]  # fmt: skip
    *others, last = [p for p in parts if p is not None]
    assert crashes.committed(last.seq, last.end, 3) is None
    assert [crashes.committed(p.seq, p.end, len(p.items)) for p in others[:-1]] == [None] * 6
    assert crashes.committed(others[-1].seq, others[-1].end, 2) == Done(a.seq, a.end, 20)


def test_a_batch_of_fewer_records_than_parts_is_split_in_single_records() -> None:
    (a,) = batches([3])
    crashes = Crashes[Rec]()
    assert crashes.died([a]) == []
    parts = [crashes.take() for _ in range(3)]
    assert crashes.take() is None
    assert [[r.body for r in p.items] for p in parts if p is not None] == [[0], [1], [2]]
