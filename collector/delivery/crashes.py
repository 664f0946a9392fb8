"""Batches a delivery process died holding: sent again one at a time, split until what kills a process
stands alone, and that record dead-lettered — so an event that kills its process (say, a payload whose
decoding a memory limit does not allow) costs only itself, not a crash loop that stalls the checkpoint.

A batch that was the only one its process held when it died is *convicted*: one of its records may be at
fault. Convicted, a batch of several records is split in ``SPLIT_PARTS`` parts (so a record at fault in a
batch of 2,000 stands alone after four deaths, not eleven: each death may cost a restart, or
``database.delivery_hung_seconds`` for a hang); a single record convicted twice is
given up (dead-lettered, and counted as delivered). Batches held with others are *suspects*: each is sent
again on its own, so the next death tells which it was. A process killed for reasons of its own (an
operator, an out-of-memory kill for another's sake) costs a split or two, never an event: a record is
dead-lettered only after two deaths with nothing else in its process.

The parts of a split batch carry numbers of their own (negative: never the batcher's); the batch counts as
committed once every part is. Sans-io: no processes, no spool, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from typing import Generic

from hookdb.collector.delivery.pipeline import Batch, T
from hookdb.collector.spool.segments import Position

GIVE_UP_AFTER = 2  # deaths with a single record alone in its process
SPLIT_PARTS = 8  # parts a convicted batch is split in


@dataclass
class _Whole:
    """A batch of the batcher's that was split: committed once ``remaining`` parts are."""

    seq: int
    end: Position
    records: int
    remaining: int


@dataclass(frozen=True)
class Done:
    """A batch of the batcher's whose records are all committed (or given up): the checkpoint may move."""

    seq: int
    end: Position
    records: int


class Crashes(Generic[T]):
    """The batches dead processes held, and how each is sent again."""

    def __init__(self) -> None:
        self._queue: deque[Batch[T]] = deque()  # to be sent alone, in order
        self._wholes: dict[int, _Whole] = {}  # part → the batch it is a part of
        self._deaths: dict[int, int] = {}  # a batch's (or part's) deaths alone in its process
        self._next_part = -1

    @property
    def queued(self) -> int:
        """Batches waiting to be sent on their own."""
        return len(self._queue)

    def take(self) -> Batch[T] | None:
        """The next batch to send, alone in its process: nothing else may be sent to that process until it
        is answered."""
        return self._queue.popleft() if self._queue else None

    def died(self, held: list[Batch[T]]) -> list[Batch[T]]:
        """A process died holding ``held`` (in the order they were sent): queue them to be sent again;
        return the single-record batches given up, to dead-letter and then report with :meth:`given_up`."""
        if len(held) != 1:
            self._queue.extend(held)
            return []
        batch = held[0]
        deaths = self._deaths[batch.seq] = self._deaths.get(batch.seq, 0) + 1
        if len(batch.items) == 1:
            if deaths >= GIVE_UP_AFTER:
                return [batch]
            self._queue.append(batch)
            return []
        whole = self._wholes.pop(batch.seq, None) or _Whole(batch.seq, batch.end, len(batch.items), 1)
        self._deaths.pop(batch.seq, None)
        parts = min(SPLIT_PARTS, len(batch.items))
        whole.remaining += parts - 1  # one part becomes several
        cuts = [len(batch.items) * i // parts for i in range(parts + 1)]
        for start, stop in pairwise(cuts):
            part = Batch(batch.items[start:stop], self._next_part)
            self._next_part -= 1
            self._wholes[part.seq] = whole
            self._queue.append(part)
        return []

    def committed(self, seq: int, end: Position, records: int) -> Done | None:
        """Batch (or part) ``seq`` is committed: the batch of the batcher's it completes, if any."""
        self._deaths.pop(seq, None)
        whole = self._wholes.pop(seq, None)
        if whole is None:
            return Done(seq, end, records)
        whole.remaining -= 1
        return Done(whole.seq, whole.end, whole.records) if whole.remaining == 0 else None

    def given_up(self, batch: Batch[T]) -> Done | None:
        """A batch :meth:`died` gave up was dead-lettered: it counts as committed."""
        return self.committed(batch.seq, batch.end, len(batch.items))
