"""A scratch dict per run: ``flowfn.local()``, or a step parameter named ``local``.

Concurrent runs of a sub-flow (the items of a parallel batch flow) share one shared store,
so two runs writing the same key race: the last write wins (the seeds' warning). Each run
of a flow (``run``/``run_async``) and each item of a batch flow gets its own ``local`` dict
instead: steps of that run pass values to each other there, and a ``@batch(flow=...)`` /
``@parallel_batch(flow=...)`` collects every run's dict, in item order, for its ``post``
(or into ``shared[into]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from ._errors import FlowError

__all__ = ["enter_local", "fresh_local", "leave_local", "local"]

_scratch: ContextVar[dict[str, Any] | None] = ContextVar("flowfn_local", default=None)


def local() -> dict[str, Any]:
    """The scratch dict of the run (or batch-flow item) this code is part of.

    Raises ``FlowError`` outside a run.
    """
    scratch = _scratch.get()
    if scratch is None:
        raise FlowError(
            "flowfn.local() is the scratch dict of a running flow: call it from a step "
            "while the flow runs (or take a parameter named 'local')"
        )
    return scratch


def enter_local() -> tuple[Token[dict[str, Any] | None], dict[str, Any]]:
    """Start a fresh scratch dict (the fast form of :func:`fresh_local`, for the engine)."""
    scratch: dict[str, Any] = {}
    return _scratch.set(scratch), scratch


def leave_local(token: Token[dict[str, Any] | None]) -> None:
    _scratch.reset(token)


@contextmanager
def fresh_local() -> Iterator[dict[str, Any]]:
    """Give the code inside this block its own empty scratch dict, and yield it."""
    scratch: dict[str, Any] = {}
    token = _scratch.set(scratch)
    try:
        yield scratch
    finally:
        _scratch.reset(token)
