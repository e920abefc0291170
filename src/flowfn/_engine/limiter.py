"""One limit shared by several nodes: ``limiter=flowfn.Limiter(8, per_second=5)``.

An API quota is a property of the API, not of one node: every node (and every item, retry
and concurrent run) that calls the same API must share it. A :class:`Limiter` given to
several nodes' ``limiter=`` option lets at most ``concurrency`` of their attempts run at
once and at most ``per_second`` start per second. An anyio ``CapacityLimiter`` is accepted
in its place. The slot is taken before the attempt starts and given back when it ends,
whichever way it ends (result, exception, timeout, cancellation).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.lowlevel import RunVar

from .retry import RateLimit, check_policy

__all__ = ["Limiter", "check_limiter", "limited"]

# anyio's CapacityLimiter belongs to one event loop: one per loop and Limiter.
_capacity: RunVar[weakref.WeakKeyDictionary[Limiter, anyio.CapacityLimiter]] = RunVar(
    "flowfn_limiters"
)


class Limiter:
    """At most ``concurrency`` attempts in flight and ``per_second`` starts per second,
    across every node given this limiter (None: no bound of that kind).

    ``concurrency`` holds within one event loop (a run, or all the runs you await in one
    loop); ``per_second`` holds across the whole process. Given a ``name``, in a run shared
    through PostgreSQL (``run(..., share=True)``), both hold across every process on the
    checkpoint's schema together (see docs/durable.md, "Many processes, one batch").
    """

    __slots__ = ("__weakref__", "_rate", "concurrency", "name", "per_second")

    def __init__(
        self,
        concurrency: int | None = None,
        *,
        per_second: float | None = None,
        name: str | None = None,
    ) -> None:
        label = f"Limiter({name!r})" if name else "Limiter"
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            raise ValueError(f"{label}: concurrency must be an int >= 1, got {concurrency!r}")
        check_policy(
            label,
            wait=0,
            backoff=1.0,
            max_wait=None,
            jitter=0.0,
            timeout=None,
            per_second=per_second,
        )
        if concurrency is None and per_second is None:
            raise ValueError(f"{label}: give concurrency=, per_second=, or both")
        self.concurrency, self.per_second, self.name = concurrency, per_second, name
        self._rate = None if per_second is None else RateLimit(per_second)

    def _limiter(self) -> anyio.CapacityLimiter | None:
        if self.concurrency is None:
            return None
        try:
            limiters = _capacity.get()
        except LookupError:
            limiters = weakref.WeakKeyDictionary()
            _capacity.set(limiters)
        limiter = limiters.get(self)
        if limiter is None:
            limiter = limiters[self] = anyio.CapacityLimiter(self.concurrency)
        return limiter

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the code inside: wait for capacity, then for the rate."""
        limiter = self._limiter()
        if limiter is None:
            assert self._rate is not None
            await self._rate.wait()
            yield
            return
        async with limiter:
            if self._rate is not None:
                await self._rate.wait()
            yield

    def __repr__(self) -> str:
        name = "" if self.name is None else f"{self.name!r}, "
        return f"Limiter({name}concurrency={self.concurrency}, per_second={self.per_second})"


def check_limiter(limiter: object, owner: str) -> Limiter | anyio.CapacityLimiter | None:
    """``limiter`` if it is a :class:`Limiter` or an anyio ``CapacityLimiter``."""
    if limiter is None or isinstance(limiter, (Limiter, anyio.CapacityLimiter)):
        return limiter
    raise TypeError(
        f"{owner}: limiter= takes a flowfn.Limiter(concurrency, per_second=...) or an "
        f"anyio.CapacityLimiter, got {limiter!r}"
    )


def limited(limiter: Limiter | anyio.CapacityLimiter) -> Any:
    """The async context manager that holds one of ``limiter``'s slots."""
    return limiter.slot() if isinstance(limiter, Limiter) else limiter
