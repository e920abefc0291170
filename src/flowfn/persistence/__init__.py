"""Checkpoint stores beyond the built-in SQLite one, each behind its own extra.

``from flowfn.persistence import PostgresStore`` (``pip install 'flowfn[postgres]'``): durable
runs kept in PostgreSQL, shared by processes on many machines. The store modules are imported
only when asked for, so ``import flowfn`` never needs their drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = ["PostgresStore", "cancel", "work", "work_async"]


def work(checkpoint: Any, run_id: str, flow: Any, **options: Any) -> int:
    """Help run ``run_id`` (started with ``share=True`` on a Postgres checkpoint): run items
    of its shared parallel batches in this process until the run ends; returns how many.
    ``options``: ``serializer=`` (the run's), ``backend=`` (``"asyncio"`` or ``"trio"``).
    See docs/durable.md, "Across machines"."""
    from ._sharing import work as work_

    return work_(checkpoint, run_id, flow, **options)


async def work_async(checkpoint: Any, run_id: str, flow: Any, **options: Any) -> int:
    """:func:`work` in the running event loop."""
    from ._sharing import work_async as work_async_

    return await work_async_(checkpoint, run_id, flow, **options)


def cancel(checkpoint: Any, run_id: str) -> bool:
    """Cancel a shared run: its process and helpers stop their items at their next
    checkpoint, and it ends in the state ``cancelled``. False if it is not running."""
    from ._sharing import cancel as cancel_

    return cancel_(checkpoint, run_id)


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
