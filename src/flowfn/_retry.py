"""How long to wait between attempts, and how often attempts may start."""

from __future__ import annotations

import random
import time

import anyio
from typing_extensions import TypedDict

__all__ = ["RateLimit", "RetryOptions", "retry_delay"]


class RetryOptions(TypedDict, total=False):
    """Keyword options every retrying node takes (classes and decorators alike)."""

    backoff: float  # multiply the wait by this after each failed attempt (>= 1)
    max_wait: float | None  # never wait longer than this between attempts
    jitter: float  # spread each wait by this fraction, e.g. 0.1 = +-10%
    timeout: float | None  # seconds one attempt (one item) may take, async work only
    per_second: float | None  # at most this many attempts start per second


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
    A waiter that is cancelled gives its slot up to nobody (the limit stays conservative).
    """

    __slots__ = ("_interval", "_next", "per_second")

    def __init__(self, per_second: float) -> None:
        if not per_second > 0:
            raise ValueError(f"per_second must be > 0, got {per_second!r}")
        self.per_second = per_second
        self._interval = 1.0 / per_second
        self._next = -float("inf")

    def _reserve(self) -> float:
        # time.monotonic, not the event loop's clock: one node may run under many loops.
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self._interval
        return start - now

    async def wait(self) -> None:
        delay = self._reserve()
        if delay > 0:
            await anyio.sleep(delay)

    def wait_sync(self) -> None:
        delay = self._reserve()
        if delay > 0:
            time.sleep(delay)

    def __repr__(self) -> str:
        return f"RateLimit(per_second={self.per_second})"
