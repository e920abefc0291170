"""Checkpoint stores beyond the built-in SQLite one, each behind its own extra.

``from flowfn.persistence import PostgresStore`` (``pip install 'flowfn[postgres]'``): durable
runs kept in PostgreSQL, shared by processes on many machines. The store modules are imported
only when asked for, so ``import flowfn`` never needs their drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._durable.work import work, work_async

if TYPE_CHECKING:
    from ._sharing import RunCancelled
    from .postgres import PostgresStore

__all__ = ["PostgresStore", "RunCancelled", "cancel", "work", "work_async"]


def cancel(checkpoint: Any, run_id: str) -> bool:
    """Cancel a shared run: its process and helpers stop their items at their next
    checkpoint, and it ends in the state ``cancelled``. False if it is not running."""
    from ._sharing import cancel as cancel_

    return cancel_(checkpoint, run_id)


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    if name == "RunCancelled":
        from ._sharing import RunCancelled

        return RunCancelled
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
