"""Checkpoint stores beyond the built-in SQLite one, each behind its own extra.

``from flowfn.persistence import PostgresStore`` (``pip install 'flowfn[postgres]'``): durable
runs kept in PostgreSQL, shared by processes on many machines. The store modules are imported
only when asked for, so ``import flowfn`` never needs their drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = ["PostgresStore"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
