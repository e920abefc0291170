"""Starting an event loop for ``run()``: which backend, and refusing to nest one."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .errors import FlowError, running_async_library

__all__ = ["BACKENDS", "running_async_library", "start_event_loop", "waker"]

T = TypeVar("T")
BACKENDS = ("asyncio", "trio")


def start_event_loop(
    fn: Callable[..., Awaitable[T]], *args: Any, backend: str | None, who: str
) -> T:
    """Run ``fn(*args)`` in a new event loop of ``backend`` (default ``"asyncio"``).

    Raises ``FlowError`` if this thread already runs an event loop: a loop cannot be
    nested, so the caller must ``await`` the async form instead.
    """
    backend = "asyncio" if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"{who}: backend must be one of {BACKENDS}, got {backend!r}")
    running = running_async_library()
    if running is not None:
        raise FlowError(
            f"{who}.run() was called inside a running {running} event loop, which cannot "
            f"start another one: use `await {who}.run_async(shared)` there instead."
        )
    if backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            raise FlowError(
                f"{who}: backend='trio' needs trio; install it with `pip install 'flowfn[trio]'`."
            ) from None
    return anyio.run(fn, *args, backend=backend)


def waker() -> Callable[[Callable[[], object]], None]:
    """A function that any thread may call to run a callback on this event loop's thread."""
    if "trio" in sys.modules:
        import trio

        if trio.lowlevel.in_trio_run():
            token = trio.lowlevel.current_trio_token()

            def run_soon(callback: Callable[[], object]) -> None:
                with contextlib.suppress(trio.RunFinishedError):  # nobody waits any more
                    token.run_sync_soon(callback)

            return run_soon
    import asyncio

    loop = asyncio.get_running_loop()

    def call_soon(callback: Callable[[], object]) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    return call_soon
