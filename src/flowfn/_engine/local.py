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

from .errors import FlowError

__all__ = ["Scratch", "enter_local", "fresh_local", "leave_local", "local", "wrote_it"]


class Scratch(dict[str, Any]):
    """A run's scratch dict: a plain dict to the steps, which also remembers (in
    ``written``) the shared-store keys that this run's ``into=`` nodes wrote, so that a node
    re-visited by a loop may replace its own value and nothing else."""

    __slots__ = ("written",)
    written: dict[str, tuple[object, object]]

    def __reduce__(self) -> Any:
        return (Scratch, (dict(self),))


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


def wrote_it(key: str, writer: object, current: object) -> bool:
    """True if ``writer`` (an ``into=`` node's function binding) wrote ``shared[key]`` in
    this run and ``current`` is still the value it wrote (nobody wrote over it since)."""
    scratch = _scratch.get()
    written = getattr(scratch, "written", None)
    entry = None if written is None else written.get(key)
    return entry is not None and entry[0] is writer and entry[1] is current


def note_written(key: str, writer: object, value: object) -> None:
    scratch = _scratch.get()
    if isinstance(scratch, Scratch):
        try:
            scratch.written[key] = (writer, value)
        except AttributeError:
            scratch.written = {key: (writer, value)}


def enter_local(
    written: dict[str, tuple[object, object]] | None = None,
) -> tuple[Token[dict[str, Any] | None], Scratch]:
    """Start a fresh scratch dict (the fast form of :func:`fresh_local`, for the engine);
    ``written``: what a failed attempt of the same run wrote through ``into=``, carried over
    so that the retry may replace it."""
    scratch = Scratch()
    if written is not None:
        scratch.written = dict(written)
    return _scratch.set(scratch), scratch


def leave_local(token: Token[dict[str, Any] | None]) -> None:
    _scratch.reset(token)


@contextmanager
def fresh_local() -> Iterator[dict[str, Any]]:
    """Give the code inside this block its own empty scratch dict, and yield it."""
    scratch = Scratch()
    token = _scratch.set(scratch)
    try:
        yield scratch
    finally:
        _scratch.reset(token)
