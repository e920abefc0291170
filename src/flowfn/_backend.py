"""Starting an event loop for ``run()``: which backend, and refusing to nest one."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ._errors import FlowError

__all__ = ["BACKENDS", "running_async_library", "start_event_loop"]

T = TypeVar("T")
BACKENDS = ("asyncio", "trio")


def running_async_library() -> str | None:
    """``"asyncio"`` or ``"trio"`` if this thread is inside that event loop, else ``None``."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    # While another thread still imports trio, its module is there half made; this thread
    # cannot be inside a trio run then.
    in_trio_run = getattr(getattr(sys.modules.get("trio"), "lowlevel", None), "in_trio_run", None)
    if in_trio_run is not None and in_trio_run():
        return "trio"
    return None


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
