"""The batching policy: when a run of events becomes a batch. Pure; the caller supplies the time."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Closes a batch at ``max_items`` items, ``max_bytes`` bytes, or ``linger`` seconds after its first item.

    A single item larger than ``max_bytes`` still forms a batch of its own: size caps never refuse data.
    """

    def __init__(self, *, max_items: int, max_bytes: int, linger: float) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.linger = linger
        self._items: list[T] = []
        self._bytes = 0
        self._opened_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, size: int, now: float) -> list[list[T]]:
        """Add an item; return the batches it closes (none, one, or two).

        An item that would push the open batch past ``max_bytes`` closes that batch first; a batch
        that reaches either cap closes at once. Afterwards the open batch is under both caps.
        """
        items = self._items
        if items and self._bytes + size <= self.max_bytes:  # the usual case, in as few steps as it takes
            items.append(item)
            self._bytes += size
            if len(items) < self.max_items and self._bytes < self.max_bytes:
                return []
            return [self.take()]
        closed = []
        if items:
            closed.append(self.take())
        self._opened_at = now
        self._items.append(item)
        self._bytes += size
        if len(self._items) >= self.max_items or self._bytes >= self.max_bytes:
            closed.append(self.take())
        return closed

    def deadline(self) -> float | None:
        """When the open batch must be closed by time, or ``None`` when there is none."""
        return self._opened_at + self.linger if self._items else None

    def take(self) -> list[T]:
        """Close and return the open batch (possibly empty)."""
        items, self._items, self._bytes = self._items, [], 0
        return items
