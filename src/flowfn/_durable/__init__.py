"""Durable runs: the journal, the checkpoint stores, the cache and pausing for input.

Importing this wing plugs the journal into the engine (``flowfn._engine.hooks``): the hooks
a durable run installs, ``detached``, and ``run(checkpoint=...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._engine import hooks
from .journal import current, detached, run_durable

if TYPE_CHECKING:  # the journal is what the engine's RunHooks describe
    from collections.abc import Callable

    _current: Callable[[], hooks.RunHooks | None] = current
    _detached: hooks.Detach = detached

hooks.plug(current=current, detached=detached, run_durable=run_durable)
