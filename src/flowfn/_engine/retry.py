"""How long to wait between attempts, and how often attempts may start."""

from __future__ import annotations

import math
import random
import threading
import time

import anyio
from typing_extensions import TypedDict

__all__ = ["RateLimit", "RetryOptions", "check_policy", "retry_delay"]


class RetryOptions(TypedDict, total=False):
    """Keyword options every retrying node takes (classes and decorators alike)."""

    backoff: float  # multiply the wait by this after each failed attempt (>= 1)
    max_wait: float | None  # never wait longer than this between attempts
    jitter: float  # spread each wait by this fraction, e.g. 0.1 = +-10%
    timeout: float | None  # seconds one attempt (one item) may take, async work only
    per_second: float | None  # at most this many attempts start per second


def _number(owner: str, name: str, value: object, rule: str, ok: bool, optional: bool) -> None:
    """Raise unless ``value`` is a real number (not a bool, not NaN) for which ``ok`` holds."""
    if optional and value is None:
        return
    what = f"{owner}: {name} must be {rule}{' or None' if optional else ''}, got {value!r}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(what)
    if not ok:
        raise ValueError(what)


def check_policy(
    owner: str,
    *,
    wait: object,
    backoff: object,
    max_wait: object,
    jitter: object,
    timeout: object,
    per_second: object,
) -> None:
    """Refuse, naming ``owner``, any retry option that is no usable number (NaN, inf where
    a finite number is needed, a string, a bool, out of range)."""

    def finite(value: object, low: float, strict: bool = False) -> bool:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return value > low if strict else value >= low

    _number(owner, "wait", wait, "a finite number >= 0", finite(wait, 0), False)
    _number(owner, "backoff", backoff, "a finite number >= 1", finite(backoff, 1), False)
    _number(owner, "max_wait", max_wait, "a finite number >= 0", finite(max_wait, 0), True)
    jitter_ok = finite(jitter, 0) and jitter <= 1  # type: ignore[operator]
    _number(owner, "jitter", jitter, "a number from 0 to 1", jitter_ok, False)
    _number(owner, "timeout", timeout, "a finite number > 0", finite(timeout, 0, True), True)
    ok = finite(per_second, 0, True)
    _number(owner, "per_second", per_second, "a finite number > 0", ok, True)


def retry_delay(
    failed_attempt: int, wait: float, backoff: float, max_wait: float | None, jitter: float
) -> float:
    """Seconds to wait after the 0-based ``failed_attempt``: ``wait * backoff**failed_attempt``,
    at most ``max_wait``, then spread by ``jitter`` (a fraction: 0.1 means +-10%)."""
    delay = wait * backoff**failed_attempt if backoff != 1 else wait
    if max_wait is not None and delay > max_wait:
        delay = max_wait
    if jitter:
        delay *= 1 + random.uniform(-jitter, jitter)
    return max(delay, 0.0)


class RateLimit:
    """Lets at most ``per_second`` attempts start per second, evenly spaced.

    One instance is shared by every copy of its node, so the limit holds across items,
    retries and concurrent runs of the same flow: the quota of the API behind the node.
    Each waiter books the next free slot; a waiter that is cancelled (or interrupted)
    before its slot comes gives the slot back, so a cancelled run leaves no booked time
    behind for the next one.
    """

    __slots__ = ("_granted", "_interval", "_lock", "_pending", "per_second")

    def __init__(self, per_second: float) -> None:
        if not per_second > 0:
            raise ValueError(f"per_second must be > 0, got {per_second!r}")
        self.per_second = per_second
        self._interval = 1.0 / per_second
        self._granted = -float("inf")  # the latest slot an attempt started in
        self._pending: list[float] = []  # slots booked by waiters, in booking order
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """How many waiters hold a booked slot that has not come yet."""
        return len(self._pending)

    def delay(self) -> float:
        """Seconds an attempt starting now would wait for its slot (books nothing)."""
        with self._lock:
            now = time.monotonic()
            return self._next_slot(now) - now

    def _next_slot(self, now: float) -> float:
        # After the latest slot booked or taken: a waiter that overslept its slot (the loop
        # was busy) must not let new attempts start at once, one after another.
        last = max(self._granted, self._pending[-1]) if self._pending else self._granted
        return max(now, last + self._interval)

    def _book(self) -> tuple[float, float]:
        # time.monotonic, not the event loop's clock: one node may run under many loops
        # (and its sync attempts in many threads: hence the lock).
        with self._lock:
            now = time.monotonic()
            slot = self._next_slot(now)
            if slot > now:
                self._pending.append(slot)
            else:
                self._granted = slot
            return slot, slot - now

    def _settle(self, slot: float, used: bool) -> None:
        """The waiter for ``slot`` is done waiting: it starts now, or it gave up."""
        with self._lock:
            self._pending.remove(slot)
            if used:
                self._granted = max(self._granted, slot)

    async def wait(self) -> None:
        slot, delay = self._book()
        if delay > 0:
            try:
                await anyio.sleep(delay)
            except BaseException:
                self._settle(slot, used=False)
                raise
            self._settle(slot, used=True)

    def wait_sync(self) -> None:
        slot, delay = self._book()
        if delay > 0:
            try:
                time.sleep(delay)
            except BaseException:
                self._settle(slot, used=False)
                raise
            self._settle(slot, used=True)

    def __repr__(self) -> str:
        return f"RateLimit(per_second={self.per_second}, pending={self.pending})"
