"""The write circuit breaker: the collector's one shared answer to "may we write to PostgreSQL now?".

A pure state machine (no I/O, no clock, no logging); the caller supplies the time, in monotonic seconds.
The I/O layer asks ``acquire(now)`` before every batch write, reports the outcome with ``success`` or
``failure`` and the very ``Permit`` it got, and drains ``transitions()`` after each call to log and count
every state change exactly once.

- ``closed``: every write is allowed; ``failures`` consecutive failed writes open the breaker.
- ``open``: nothing is allowed until ``open_until``; the first ``acquire`` at or after it moves to
  ``half_open`` and grants one probe.
- ``half_open``: exactly one probe is out and nothing else is granted. Its success closes the breaker; its
  failure, or no answer within ``probe_timeout_seconds``, opens it again for a longer period.

Only reports for permits that still count change anything. A closed-state permit stops counting once its
outcome is reported or the breaker opens; the probe stops counting once reported or timed out. So a late
result (a write granted before the breaker opened, a probe that already timed out) is ignored.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]
Reason = Literal["failures", "open_elapsed", "probe_succeeded", "probe_failed", "probe_timed_out"]


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to write one batch. Report its outcome once, with this very object."""

    serial: int
    is_probe: bool


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, at the ``now`` of the call that made it. ``reason`` is a fixed label for metrics."""

    from_state: State
    to_state: State
    at: float
    reason: Reason


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class Breaker:
    """Stops batch writes after repeated failures and lets one probe through per (growing) open period.

    The open period is ``open_seconds * backoff ** reopens`` capped at ``max_open_seconds``, where
    ``reopens`` counts the probes that failed in a row; then multiplied by a jitter factor in
    ``[1 - jitter, 1 + jitter)`` (from ``random()``, in ``[0, 1)``) so that collectors started together do
    not probe together; then capped at ``max_open_seconds`` again: jitter never lengthens past the cap.
    A probe that succeeds forgets the backoff. The defaults (2 s doubling up to 5 minutes) make a database
    restart of a few seconds cost seconds, while a long outage is still probed only every 5 minutes.

    Every permit should be reported once; a closed-state permit never reported is forgotten (it costs one
    int) when the breaker next opens.
    """

    def __init__(
        self,
        *,
        failures: int = 5,
        open_seconds: float = 2.0,
        backoff: float = 2.0,
        max_open_seconds: float = 300.0,
        jitter: float = 0.1,
        probe_timeout_seconds: float = 30.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not (isinstance(failures, int) and not isinstance(failures, bool) and failures >= 1):
            raise ValueError(f"failures must be an integer >= 1, got {failures!r}")
        _positive("open_seconds", open_seconds)
        if not (math.isfinite(backoff) and backoff >= 1.0):
            raise ValueError(f"backoff must be a finite number >= 1.0, got {backoff!r}")
        _positive("max_open_seconds", max_open_seconds)
        if max_open_seconds < open_seconds:
            raise ValueError(
                f"max_open_seconds ({max_open_seconds!r}) must be >= open_seconds ({open_seconds!r})"
            )
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        _positive("probe_timeout_seconds", probe_timeout_seconds)
        self.failures = failures
        self.open_seconds = open_seconds
        self.backoff = backoff
        self.max_open_seconds = max_open_seconds
        self.jitter = jitter
        self.probe_timeout_seconds = probe_timeout_seconds
        self._random = random
        self._state: State = "closed"
        self._serial = 0
        self._live: set[int] = set()  # serials whose outcome still counts; in half_open, just the probe
        self._failures = 0
        self._reopens = 0
        self._period = open_seconds  # before jitter: open_seconds * backoff ** reopens, capped
        self._open_until: float | None = None
        self._probe_deadline = 0.0
        self._transitions: list[Transition] = []
        self.last_error: str | None = None  # of the latest counted failure; None after a counted success

    @property
    def state(self) -> State:
        return self._state

    @property
    def open_until(self) -> float | None:
        """When an open breaker will grant its probe; ``None`` unless open."""
        return self._open_until

    @property
    def consecutive_failures(self) -> int:
        """Counted failures (probe timeouts included) since the last counted success."""
        return self._failures

    @property
    def reopens(self) -> int:
        """How many probes in a row have failed: the backoff exponent of the current open period."""
        return self._reopens

    def acquire(self, now: float) -> Permit | None:
        """Grant a write (``None``: none now). An open breaker whose period is over grants its one probe."""
        self.poll(now)
        if self._state == "closed":
            return self._grant(is_probe=False)
        if self._state == "open" and self._open_until is not None and now >= self._open_until:
            self._open_until = None
            self._probe_deadline = now + self.probe_timeout_seconds
            self._move("half_open", now, "open_elapsed")
            return self._grant(is_probe=True)
        return None

    def success(self, permit: Permit, now: float) -> None:
        """Report that ``permit``'s write succeeded; ignored unless the permit still counts."""
        self.poll(now)
        if permit.serial not in self._live:
            return
        self._live.discard(permit.serial)
        self._failures = 0
        self.last_error = None
        if self._state == "half_open":
            self._reopens = 0
            self._period = self.open_seconds
            self._move("closed", now, "probe_succeeded")

    def failure(self, permit: Permit, now: float, error: str | None = None) -> None:
        """Report that ``permit``'s write failed; ignored unless the permit still counts."""
        self.poll(now)
        if permit.serial not in self._live:
            return
        self._live.discard(permit.serial)
        self._failures += 1
        self.last_error = error
        if self._state == "half_open":
            self._open(now, "probe_failed")
        elif self._failures >= self.failures:
            self._open(now, "failures")

    def poll(self, now: float) -> None:
        """Apply the passage of time: a probe unanswered at its deadline counts as failed.

        ``acquire``, ``success`` and ``failure`` poll first, so whether a probe timed out depends only on
        the times passed in, never on how often the caller polls.
        """
        if self._state == "half_open" and now >= self._probe_deadline:
            self._failures += 1
            self.last_error = f"probe unanswered after {self.probe_timeout_seconds:g}s"
            self._open(now, "probe_timed_out")

    def retry_at(self, now: float) -> float | None:
        """When ``acquire`` may grant again (``None``: now). Pure: does not poll.

        In half_open this is the probe's deadline (once passed, ``poll`` reopens the breaker); the probe's
        report may end the wait sooner.
        """
        if self._state == "half_open":
            return self._probe_deadline
        if self._open_until is not None and now < self._open_until:
            return self._open_until
        return None

    def transitions(self) -> list[Transition]:
        """Take the state changes since the last call, oldest first: drain after every call, log each once."""
        taken, self._transitions = self._transitions, []
        return taken

    def _grant(self, *, is_probe: bool) -> Permit:
        self._serial += 1
        self._live.add(self._serial)
        return Permit(self._serial, is_probe)

    def _open(self, now: float, reason: Reason) -> None:
        if self._state == "half_open":  # from closed, both are at their reset values
            self._reopens += 1
            self._period = min(self._period * self.backoff, self.max_open_seconds)
        factor = 1.0 + self.jitter * (2.0 * self._random() - 1.0)
        self._open_until = now + min(self._period * factor, self.max_open_seconds)
        self._live.clear()  # every outstanding permit becomes stale
        self._move("open", now, reason)

    def _move(self, to: State, now: float, reason: Reason) -> None:
        self._transitions.append(Transition(self._state, to, now, reason))
        self._state = to
