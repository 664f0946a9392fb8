"""The spool checkpoint under concurrent writers: it moves only over batches committed without a gap.

Batches are numbered as the batcher makes them; writers commit them in any order. A batch committed ahead
of an earlier one waits here until every batch before it is committed (or dead-lettered), so the checkpoint
never passes an event that is not in PostgreSQL: after a crash, everything from the checkpoint on is
delivered again, and a duplicate adds no row. Sans-io: no spool, no clock.
"""

from __future__ import annotations

from typing import NamedTuple

from hookdb.collector.spool.segments import Position


class Advance(NamedTuple):
    """How far the checkpoint may move: up to ``upto``, over ``records`` records."""

    upto: Position
    records: int


class Commits:
    """Numbers the batches in order and turns their commits, in any order, into checkpoint advances."""

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0  # the first batch not yet committed
        self._done: dict[int, Advance] = {}  # committed, waiting for an earlier batch

    def issue(self) -> int:
        """The number of the next batch made."""
        self._issued += 1
        return self._issued - 1

    def committed(self, seq: int, upto: Position, records: int) -> Advance | None:
        """Batch ``seq`` (ending at ``upto``, of ``records`` records) is committed: how far the checkpoint
        moves now, over it and every batch after it already committed; ``None`` while one before it is
        not."""
        if not (self._next <= seq < self._issued) or seq in self._done:
            raise ValueError(f"batch {seq} was not issued or is committed already")
        self._done[seq] = Advance(upto, records)
        last, total = None, 0
        while (ready := self._done.pop(self._next, None)) is not None:
            last, total = ready.upto, total + ready.records
            self._next += 1
        return None if last is None else Advance(last, total)

    @property
    def waiting(self) -> int:
        """Batches committed ahead of an earlier one."""
        return len(self._done)
