"""Workers elsewhere: worker processes (``workers="process"``) and remote executors
(``workers=executor``, ``flowfn.ray.RayWorkers``).

Importing this wing plugs them into the engine (``flowfn._engine.hooks``). The process
pool's module (and :mod:`multiprocessing` with it) is imported on the first item sent to
a process, not by ``import flowfn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._engine import hooks
from .remote import remote_workers


async def run_in_process(fn: Callable[..., Any], *args: Any) -> Any:
    """See :func:`flowfn._workers.processes.run_in_process`."""
    from .processes import run_in_process as run

    return await run(fn, *args)


hooks.plug(remote_workers=remote_workers, run_in_process=run_in_process)
