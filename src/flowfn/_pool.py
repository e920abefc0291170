"""The bounded worker pool every parallel batch runs on.

``limit`` workers pull ``(index, item)`` pairs from one shared iterator and write each
result into its slot, so results come back in input order while at most ``limit`` items
are in flight and at most ``limit`` items have been pulled ahead. No coroutine is created
before a worker is free for it, so a million-item batch costs memory in proportion to
``limit``, not to the number of items.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

import anyio

from ._errors import add_note

__all__ = ["DEFAULT_LIMIT", "BatchResults", "Errors", "check_errors", "check_limit", "map_ordered"]

Errors = Literal["fail_fast", "collect"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_LIMIT = 1000
"""Default number of items a parallel batch runs at once.

Batches of up to ``DEFAULT_LIMIT`` items behave exactly as PocketFlow's ``asyncio.gather``
(every item may run at once); larger batches are streamed through that many workers
instead of starting one task per item. Pass ``limit=None`` for no bound at all.
"""


def check_limit(limit: object, owner: str) -> int | None:
    """Return ``limit`` if it is a valid concurrency limit, else raise a ``ValueError``."""
    if limit is None or (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1):
        return limit
    raise ValueError(f"{owner}: limit must be a positive int or None (no bound), got {limit!r}")


class BatchResults(list[Any]):
    """The results of a batch run with ``errors="collect"``: one entry per item, in order,
    where a failed item's entry is its exception. ``errors`` maps index -> exception."""

    @property
    def errors(self) -> dict[int, BaseException]:
        return {i: r for i, r in enumerate(self) if isinstance(r, BaseException)}

    @property
    def failed(self) -> int:
        return sum(isinstance(r, BaseException) for r in self)

    @property
    def succeeded(self) -> int:
        return len(self) - self.failed

    def values(self) -> list[Any]:
        """The results of the items that succeeded, in order."""
        return [r for r in self if not isinstance(r, BaseException)]

    def summary(self) -> str:
        return f"{self.succeeded} of {len(self)} items succeeded, {self.failed} failed"


def check_errors(errors: object, owner: str) -> Errors:
    if errors in ("fail_fast", "collect"):
        return errors
    raise ValueError(f"{owner}: errors must be 'fail_fast' or 'collect', got {errors!r}")


async def map_ordered(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    limit: int | None = DEFAULT_LIMIT,
    where: str = "parallel batch",
    errors: Errors = "fail_fast",
) -> list[R]:
    """Await ``fn(item)`` for every item, at most ``limit`` at once, results in input order.

    On error: the first exception raised by ``fn`` (or by iterating ``items``) cancels every
    other item still running and is re-raised as it is, not wrapped in an exception group,
    with a note ``"flowfn: item <i> of <where>"``. On cancellation from outside, every
    worker is cancelled and the cancellation propagates; no task outlives this call.
    With ``errors="collect"`` every item runs: a failing item's exception (with its note)
    takes its place in the results, returned as :class:`BatchResults`.
    """
    collect = errors == "collect"
    pending: Iterator[tuple[int, T]] = enumerate(items)
    results: list[Any] = []
    failure: list[BaseException] = []

    def fail(exc: BaseException, what: str) -> None:
        if not failure:
            add_note(exc, f"flowfn: {what} of {where}")
            failure.append(exc)
            tg.cancel_scope.cancel()

    def pull() -> tuple[int, T] | None:
        try:
            pair = next(pending)
        except StopIteration:
            return None
        except Exception as exc:
            fail(exc, f"iterating the items (after item {len(results) - 1})")
            return None
        results.append(None)
        return pair

    async def work(index: int, item: T) -> None:
        while True:
            try:
                results[index] = await fn(item)
            except Exception as exc:
                if not collect:
                    fail(exc, f"item {index}")
                    return
                add_note(exc, f"flowfn: item {index} of {where}")
                results[index] = exc
            # A failure elsewhere stops the pulling even if ``fn`` never reaches a checkpoint.
            if failure:
                return
            pair = pull()
            if pair is None:
                return
            index, item = pair

    async with anyio.create_task_group() as tg:
        started = 0
        while limit is None or started < limit:
            pair = pull()
            if pair is None:
                break
            tg.start_soon(work, *pair)
            started += 1
    if failure:
        raise failure[0]
    return BatchResults(results) if collect else results
