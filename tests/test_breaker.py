"""The write circuit breaker, driven with injected time and injected randomness."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from pg import StoppablePostgres

from hookdb.client import Emitter
from hookdb.collector.delivery.breaker import Breaker, Permit, Reason, State, Transition

from conftest import migrate, wait_for, wait_for_rows

T0 = 1000.0
SEED = {"open_seconds": 300.0, "max_open_seconds": 3600.0}  # the seed's fixed 5 minutes, growing to an hour
TIMED_OUT = "<any message about the probe>"
RANDOMS = st.sampled_from([0.0, 0.5, 1 - 2**-53]) | st.floats(0, 1, exclude_max=True)


def grant(breaker: Breaker, now: float) -> Permit:
    permit = breaker.acquire(now)
    assert permit is not None
    return permit


def fail_times(breaker: Breaker, n: int, now: float) -> None:
    for _ in range(n):
        breaker.failure(grant(breaker, now), now, error="boom")


def probe(breaker: Breaker, now: float) -> Permit:
    permit = grant(breaker, now)
    assert permit.is_probe
    return permit


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker and a simple model side by side; they must agree after every step.

    The model tracks permits by epoch (the number of state changes when each was granted) instead of the
    breaker's set of live serials: a permit counts iff it was granted in the current epoch and not yet
    reported.
    """

    permits = Bundle("permits")

    @initialize(
        failures=st.integers(1, 3),
        open_seconds=st.sampled_from([1.0, 10.0, 300.0]),
        backoff=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
        cap_factor=st.sampled_from([1.0, 2.5, 8.0]),
        jitter=st.sampled_from([0.0, 0.1, 0.5]),
        probe_timeout=st.sampled_from([0.5, 30.0]),
        r=RANDOMS,
    )
    def start(
        self,
        failures: int,
        open_seconds: float,
        backoff: float,
        cap_factor: float,
        jitter: float,
        probe_timeout: float,
        r: float,
    ) -> None:
        self.cfg = {
            "failures": failures,
            "open_seconds": open_seconds,
            "backoff": backoff,
            "max_open_seconds": open_seconds * cap_factor,
            "jitter": jitter,
            "probe_timeout_seconds": probe_timeout,
        }
        self.r = r  # what the injected random() returns; the set_random rule changes it
        self.breaker = Breaker(**self.cfg, random=lambda: self.r)
        self.now = T0
        # the model
        self.state: State = "closed"
        self.fails = 0
        self.reopens = 0
        self.last_error: str | None = None
        self.opened_at = 0.0
        self.open_until = 0.0
        self.probe_deadline = 0.0
        self.epoch = 0
        self.granted: dict[int, tuple[int, bool]] = {}  # serial -> (epoch, is_probe)
        self.latest: Permit | None = None
        self.reported: set[int] = set()
        self.expected: list[Transition] = []
        self.last_to: State = "closed"

    # --- the model

    def move(self, to: State, reason: Reason) -> None:
        self.expected.append(Transition(self.state, to, self.now, reason))
        self.state = to
        self.epoch += 1

    def open(self, reason: Reason) -> None:
        self.reopens = self.reopens + 1 if self.state == "half_open" else 0
        cap = self.cfg["max_open_seconds"]
        base = min(self.cfg["open_seconds"] * self.cfg["backoff"] ** self.reopens, cap)
        period = min(base * (1 + self.cfg["jitter"] * (2 * self.r - 1)), cap)
        self.opened_at = self.now
        self.open_until = self.now + period
        self.move("open", reason)

    def timeout(self) -> None:
        if self.state == "half_open" and self.now >= self.probe_deadline:
            self.fails += 1
            self.last_error = TIMED_OUT
            self.open("probe_timed_out")

    def counts(self, permit: Permit) -> bool:
        return self.granted[permit.serial][0] == self.epoch and permit.serial not in self.reported

    # --- time and randomness

    @rule(dt=st.sampled_from([0.0, 1e-9]) | st.floats(0, 50) | st.floats(0, 5000))
    def advance(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.state != "closed")
    @rule(offset=st.sampled_from([-1e-6, 0.0, 1e-6]))
    def advance_to_boundary(self, offset: float) -> None:
        target = (self.open_until if self.state == "open" else self.probe_deadline) + offset
        self.now = max(self.now, target)

    @rule(r=RANDOMS)
    def set_random(self, r: float) -> None:
        self.r = r

    # --- the breaker's API

    @rule(target=permits)
    def acquire(self) -> Any:
        self.timeout()
        was = self.state
        permit = self.breaker.acquire(self.now)
        if was == "closed":
            assert permit is not None
            assert not permit.is_probe
        elif was == "open" and self.now >= self.open_until:
            assert permit is not None
            assert permit.is_probe
            self.move("half_open", "open_elapsed")
            self.probe_deadline = self.now + self.cfg["probe_timeout_seconds"]
        else:
            assert permit is None  # open and waiting, or a probe is already out
            return multiple()
        assert permit.serial not in self.granted
        self.granted[permit.serial] = (self.epoch, permit.is_probe)
        self.latest = permit
        return permit

    @rule(permit=permits, error=st.none() | st.sampled_from(["refused", "timeout"]))
    def fail(self, permit: Permit, error: str | None) -> None:
        self.timeout()
        counted = self.counts(permit)
        self.reported.add(permit.serial)
        self.breaker.failure(permit, self.now, error=error)
        if not counted:
            return
        self.fails += 1
        self.last_error = error
        if self.state == "half_open":
            assert permit.is_probe
            self.open("probe_failed")
        elif self.fails >= self.cfg["failures"]:
            self.open("failures")

    @rule(permit=permits)
    def succeed(self, permit: Permit) -> None:
        self.timeout()
        counted = self.counts(permit)
        self.reported.add(permit.serial)
        self.breaker.success(permit, self.now)
        if not counted:
            return
        self.fails = 0
        self.last_error = None
        if self.state == "half_open":
            assert permit.is_probe
            self.reopens = 0
            self.move("closed", "probe_succeeded")

    @precondition(lambda self: self.latest is not None)
    @rule(ok=st.booleans())
    def report_the_latest(self, ok: bool) -> None:
        """The bundle draws any permit; this reaches the probe's outcome (and thresholds) more often."""
        assert self.latest is not None
        if ok:
            self.succeed(self.latest)
        else:
            self.fail(self.latest, "latest")

    @rule()
    def poll(self) -> None:
        self.timeout()
        self.breaker.poll(self.now)

    # --- invariants

    @invariant()
    def agrees_with_the_model(self) -> None:
        b = self.breaker
        assert b.state == self.state
        assert b.consecutive_failures == self.fails
        if self.last_error is TIMED_OUT:
            assert isinstance(b.last_error, str)
            assert "probe" in b.last_error
        else:
            assert b.last_error == self.last_error
        assert b.reopens == self.reopens
        if self.state == "open":
            assert b.open_until is not None
            assert math.isclose(b.open_until, self.open_until, rel_tol=1e-12)
            self.open_until = b.open_until  # adopt its last bit, so boundary rules can hit it exactly
            assert b.retry_at(self.now) == (self.open_until if self.now < self.open_until else None)
        else:
            assert b.open_until is None
            assert b.retry_at(self.now) == (self.probe_deadline if self.state == "half_open" else None)

    @invariant()
    def the_open_period_is_within_its_bounds(self) -> None:
        if self.state == "open":
            period = self.open_until - self.opened_at
            low = self.cfg["open_seconds"] * (1 - self.cfg["jitter"])
            assert low * (1 - 1e-12) <= period <= self.cfg["max_open_seconds"] * (1 + 1e-12)

    @invariant()
    def at_most_one_probe_is_out_and_only_in_half_open(self) -> None:
        out = [
            serial
            for serial, (epoch, is_probe) in self.granted.items()
            if is_probe and epoch == self.epoch and serial not in self.reported
        ]
        assert len(out) == (1 if self.state == "half_open" else 0)

    @invariant()
    def transitions_are_reported_once_and_chain(self) -> None:
        got = self.breaker.transitions()
        assert got == self.expected
        for t in got:
            assert t.from_state == self.last_to != t.to_state
            self.last_to = t.to_state
        assert self.last_to == self.breaker.state
        assert self.breaker.transitions() == []
        self.expected = []


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=100, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase


def test_consecutive_failures_open_it() -> None:
    breaker = Breaker(random=lambda: 0.5, **SEED)
    fail_times(breaker, 4, T0)
    assert breaker.state == "closed"
    assert breaker.transitions() == []
    fail_times(breaker, 1, T0 + 1)
    assert breaker.state == "open"
    assert breaker.transitions() == [Transition("closed", "open", T0 + 1, "failures")]
    assert breaker.open_until == T0 + 1 + 300
    assert breaker.consecutive_failures == 5
    assert breaker.last_error == "boom"
    assert breaker.acquire(T0 + 300) is None
    assert breaker.retry_at(T0 + 300) == T0 + 301


def test_a_success_resets_the_count() -> None:
    breaker = Breaker()
    fail_times(breaker, 4, T0)
    breaker.success(grant(breaker, T0), T0)
    assert breaker.consecutive_failures == 0
    assert breaker.last_error is None
    fail_times(breaker, 4, T0)
    assert breaker.state == "closed"
    assert breaker.retry_at(T0) is None


def test_concurrent_permits_each_count_and_a_success_among_them_resets() -> None:
    breaker = Breaker(failures=3)
    a, b, c, d = (grant(breaker, T0) for _ in range(4))
    breaker.failure(a, T0)
    breaker.failure(b, T0)
    breaker.success(c, T0)
    breaker.failure(d, T0)
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 1


def test_the_probe_after_the_open_period_closes_it_on_success() -> None:
    breaker = Breaker(failures=1, random=lambda: 0.5, **SEED)
    fail_times(breaker, 1, T0)
    assert breaker.acquire(T0 + 299.9) is None
    permit = probe(breaker, T0 + 300)
    assert breaker.state == "half_open"
    assert breaker.acquire(T0 + 301) is None  # one probe at a time
    breaker.success(permit, T0 + 302)
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 0
    assert breaker.reopens == 0
    assert breaker.transitions() == [
        Transition("closed", "open", T0, "failures"),
        Transition("open", "half_open", T0 + 300, "open_elapsed"),
        Transition("half_open", "closed", T0 + 302, "probe_succeeded"),
    ]
    assert not grant(breaker, T0 + 302).is_probe


def test_probe_failures_double_the_period_up_to_the_cap() -> None:
    breaker = Breaker(failures=1, open_seconds=300, max_open_seconds=3600, random=lambda: 0.5)
    fail_times(breaker, 1, 0.0)
    now = 0.0
    periods = []
    for _ in range(6):
        assert breaker.open_until is not None
        periods.append(breaker.open_until - now)
        now = breaker.open_until
        breaker.failure(probe(breaker, now), now, error="still down")
    assert periods == [300, 600, 1200, 2400, 3600, 3600]
    assert breaker.reopens == 6
    assert breaker.consecutive_failures == 7
    breaker.success(probe(breaker, now + 3600), now + 3600)
    fail_times(breaker, 1, now + 4000)
    assert breaker.open_until == now + 4000 + 300  # a success forgets the backoff


def test_jitter_spreads_the_period_but_never_past_the_cap() -> None:
    low = Breaker(failures=1, jitter=0.1, random=lambda: 0.0, **SEED)
    fail_times(low, 1, 0.0)
    assert low.open_until == pytest.approx(270)
    high = Breaker(failures=1, open_seconds=3000, max_open_seconds=3200, jitter=0.1, random=lambda: 0.99)
    fail_times(high, 1, 0.0)
    assert high.open_until == 3200
    constant = Breaker(failures=1, backoff=1.0, jitter=0.0, **SEED)
    fail_times(constant, 1, 0.0)
    constant.failure(probe(constant, 300), 300)
    assert constant.open_until == 600


def test_a_hung_probe_times_out_and_reopens() -> None:
    breaker = Breaker(failures=1, random=lambda: 0.5, **SEED)
    fail_times(breaker, 1, 0.0)
    permit = probe(breaker, 300)
    assert breaker.retry_at(310) == 330
    breaker.poll(329.9)
    assert breaker.state == "half_open"
    breaker.poll(330)
    assert breaker.state == "open"
    assert breaker.open_until == 330 + 600
    assert breaker.last_error is not None
    assert breaker.transitions()[-1] == Transition("half_open", "open", 330, "probe_timed_out")
    breaker.success(permit, 331)  # too late: ignored
    assert breaker.state == "open"
    assert breaker.open_until == 930
    assert breaker.transitions() == []


def test_acquire_also_notices_a_hung_probe() -> None:
    breaker = Breaker(failures=1, random=lambda: 0.5, **SEED)
    fail_times(breaker, 1, 0.0)
    probe(breaker, 300)
    assert breaker.acquire(1000) is None
    assert breaker.state == "open"
    assert breaker.open_until == 1600


def test_a_probe_result_after_its_deadline_is_ignored_even_without_a_poll() -> None:
    breaker = Breaker(failures=1, random=lambda: 0.5, **SEED)
    fail_times(breaker, 1, 0.0)
    permit = probe(breaker, 300)
    breaker.success(permit, 330)
    assert breaker.state == "open"
    assert [t.reason for t in breaker.transitions()] == ["failures", "open_elapsed", "probe_timed_out"]


def test_stale_results_are_ignored() -> None:
    breaker = Breaker(failures=2, random=lambda: 0.5, **SEED)
    early = grant(breaker, 0.0)
    late = grant(breaker, 0.0)
    fail_times(breaker, 2, 1.0)
    opened = breaker.open_until
    breaker.failure(early, 2.0, error="stale")  # granted before it opened
    assert breaker.open_until == opened
    assert breaker.consecutive_failures == 2
    assert breaker.last_error == "boom"
    permit = probe(breaker, 301.0)
    breaker.failure(late, 302.0)  # in half_open: still stale
    assert breaker.state == "half_open"
    breaker.success(permit, 303.0)
    breaker.failure(late, 304.0)  # in the next closed period: still stale
    breaker.failure(permit, 305.0)  # reported twice: the second report is stale
    assert breaker.consecutive_failures == 0
    assert breaker.state == "closed"
    again = grant(breaker, 306.0)
    breaker.failure(again, 306.0)
    breaker.failure(again, 306.0)
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures": 0}, "failures"),
        ({"failures": 2.5}, "failures"),
        ({"failures": True}, "failures"),
        ({"open_seconds": 0}, "open_seconds"),
        ({"open_seconds": math.nan}, "open_seconds"),
        ({"backoff": 0.5}, "backoff"),
        ({"backoff": math.inf}, "backoff"),
        ({"max_open_seconds": 1}, "max_open_seconds"),
        ({"max_open_seconds": math.inf}, "max_open_seconds"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.0}, "jitter"),
        ({"probe_timeout_seconds": -1}, "probe_timeout_seconds"),
    ],
)
def test_the_constructor_rejects_out_of_range_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Breaker(**kwargs)


def test_the_defaults() -> None:
    breaker = Breaker()
    assert (breaker.failures, breaker.open_seconds, breaker.backoff) == (5, 2.0, 2.0)
    assert (breaker.max_open_seconds, breaker.jitter, breaker.probe_timeout_seconds) == (300.0, 0.1, 30.0)
    assert breaker.state == "closed"
    assert breaker.open_until is None
    assert breaker.last_error is None


def closed_again_after(breaker: Breaker, back_at: float) -> float:
    """Drive ``breaker`` as delivery does through an outage that ends at ``back_at``: when it closes."""
    now = 0.0
    while breaker.state != "closed" or now < back_at:
        permit = breaker.acquire(now)
        if permit is None:
            now = breaker.retry_at(now) or now + 1.0
        elif now >= back_at:
            breaker.success(permit, now)
        else:
            breaker.failure(permit, now, error="connection refused")
            now += 0.0 if breaker.state == "open" else 1.0  # retry_seconds between closed-state retries
    return now


def test_by_default_a_short_restart_costs_seconds_and_a_long_outage_is_probed_every_5_minutes() -> None:
    fast = Breaker(random=lambda: 0.5)
    fail_times(fast, 5, 0.0)
    assert fast.open_until == 2.0
    assert closed_again_after(Breaker(random=lambda: 0.99), back_at=7.0) - 7.0 <= 4.5
    slow = Breaker(failures=1, random=lambda: 0.5)
    fail_times(slow, 1, 0.0)
    now, periods = 0.0, []
    while len(periods) < 10:
        assert slow.open_until is not None
        periods.append(slow.open_until - now)
        now = slow.open_until
        slow.failure(probe(slow, now), now, error="still down")
    assert periods == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    slow.success(probe(slow, now + 300), now + 300)
    fail_times(slow, 1, now + 400)
    assert slow.open_until == now + 402  # the probe's success forgot the backoff


def test_a_3_second_postgresql_restart_delays_delivery_by_seconds(
    private_pg: StoppablePostgres, start_collector: Any, socket_path: Path
) -> None:
    migrate(private_pg.dsn)
    # Two failures open the breaker, so it is surely open during the restart (the default open period).
    collector = start_collector("--dsn", private_pg.dsn, "--set", "breaker.failures=2", use_dsn=False)
    with Emitter(str(socket_path), ack=True, timeout=5) as emitter:
        emitter.emit("PreToolUse", {"n": 0})
        assert wait_for_rows(private_pg.dsn, 1, timeout=30) == 1
        private_pg.stop()
        stopped = time.monotonic()
        while time.monotonic() - stopped < 3:
            emitter.emit("PreToolUse", {"n": 1})
            time.sleep(0.1)
        wait_for(lambda: any(e["to_state"] == "open" for e in collector.events("breaker.transition")), 10)
        assert emitter.outboxed == emitter.lost == 0  # every event is in the spool
        private_pg.start()
        back = time.monotonic()
        assert wait_for_rows(private_pg.dsn, emitter.sent, timeout=60) == emitter.sent
        assert time.monotonic() - back < 15  # the seed's fixed 300 s open period would wait minutes
