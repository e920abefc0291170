"""RateLimit on a clock the test moves: slots, give-backs and oversleepers."""

from __future__ import annotations

import pytest

from flowfn._engine.retry import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("flowfn._engine.retry.time.monotonic", clock)
    return clock


@pytest.mark.usefixtures("clock")
def test_slots_are_spaced_by_the_interval() -> None:
    limit = RateLimit(10)
    slots = [limit._book() for _ in range(3)]
    assert [round(delay, 6) for _, delay in slots] == [0.0, 0.1, 0.2]
    assert limit.pending == 2


@pytest.mark.usefixtures("clock")
def test_a_waiter_that_gives_up_frees_its_slot() -> None:
    limit = RateLimit(10)
    limit._book()
    slot, delay = limit._book()
    assert round(delay, 6) == 0.1
    limit._settle(slot, used=False)  # cancelled while waiting
    assert limit.pending == 0
    assert round(limit.delay(), 6) == 0.1  # only the slot actually taken counts


def test_an_overslept_waiter_does_not_open_a_burst(clock: Clock) -> None:
    """A waiter still pending after its slot passed (the loop was busy) made every new
    attempt start at once."""
    limit = RateLimit(10)
    limit._book()  # starts now
    late_slot, _ = limit._book()  # waits 0.1 s ...
    clock.now += 0.3  # ... but the loop was blocked for 0.3 s and it has not woken yet
    delays = [round(limit._book()[1], 6) for _ in range(3)]
    assert delays == [0.0, 0.1, 0.2]
    limit._settle(late_slot, used=True)
    assert limit.pending == 2
