"""``flowfn.work``: a helper of a run shared through PostgreSQL (see persistence/_sharing.py).

Here, not in ``flowfn.persistence``, so that ``import flowfn`` never needs psycopg: the
sharing module is imported when a helper starts, or a run with ``share=True`` begins (this
module plugs that into the journal, which the sharing module builds on)."""

from __future__ import annotations

from typing import Any

from . import journal

__all__ = ["work", "work_async"]


def _share_batches(store: Any, root: Any, run_id: str) -> Any:
    from ..persistence._sharing import Sharing

    return Sharing.of(store, root, run_id)


journal.share_batches = _share_batches


def work(checkpoint: Any, run_id: str, flow: Any, **options: Any) -> int:
    """Help run ``run_id`` (started with ``share=True`` on a Postgres checkpoint): run items
    of its shared parallel batches in this process until the run ends; returns how many.
    ``options``: ``serializer=`` (the run's), ``backend=`` (``"asyncio"`` or ``"trio"``).
    See docs/durable.md, "Across machines"."""
    from ..persistence._sharing import work as work_

    return work_(checkpoint, run_id, flow, **options)


async def work_async(checkpoint: Any, run_id: str, flow: Any, **options: Any) -> int:
    """:func:`work` in the running event loop."""
    from ..persistence._sharing import work_async as work_async_

    return await work_async_(checkpoint, run_id, flow, **options)
