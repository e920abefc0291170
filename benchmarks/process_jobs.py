"""A CPU-bound batch on worker processes, for the ``process_restart`` workload.

In a module of its own, imported only by that workload, so that the other workloads (and
PocketFlow's) do not import flowfn for it.
"""

from __future__ import annotations

import time
from typing import Any

from flowfn import Flow, parallel_batch


@parallel_batch(items=lambda shared: range(10), into="started", workers="process", limit=10)
def cpu_job(item: int) -> float:
    started = time.time()  # wall clock: comparable across processes
    sum(i * i for i in range(20_000))
    return started


def first_item_after_restart(backend: str) -> float:
    """Seconds from the start of a second ``Flow.run()`` to the start of its first item."""
    Flow(cpu_job).run({}, backend=backend)  # the first run starts the worker processes
    shared: dict[str, Any] = {}
    began = time.time()
    Flow(cpu_job).run(shared, backend=backend)  # a new event loop
    return min(shared["started"]) - began
