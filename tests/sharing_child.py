"""A shared batch run in child processes by tests/test_postgres_sharing.py.

    python sharing_child.py run URL RUN_ID BACKEND      # the run, share=True; prints the store
    python sharing_child.py help URL RUN_ID BACKEND     # a helper (flowfn.work); prints its count
    python sharing_child.py single PATH RUN_ID BACKEND  # the same run in one process (SQLite)

Configured by the environment (the same in every process): SHARING_ITEMS, SHARING_LIMIT,
SHARING_RATE (per_second), SHARING_SLEEP (seconds per item), SHARING_LOG (a folder),
SHARING_LIMITER (a named limiter's "concurrency,per_second"). Each item
appends ``s INDEX TIME`` when it starts and ``e INDEX TIME`` when it ends to the file
``PID.log`` in SHARING_LOG (one write each: a SIGKILL loses no line). While a file named
``hold`` exists in that folder, items wait (checking every 20 ms) before they end, unless
SHARING_BLOCK (seconds) makes them block their process that long instead.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import flowfn
from flowfn import Flow, node, parallel_batch

ITEMS = int(os.environ.get("SHARING_ITEMS", "100"))
LIMIT = int(os.environ.get("SHARING_LIMIT", "40"))
RATE = float(os.environ.get("SHARING_RATE", "2000"))
SLEEP = float(os.environ.get("SHARING_SLEEP", "0.001"))
BLOCK = float(os.environ.get("SHARING_BLOCK", "0"))  # seconds an item blocks its process
LOG = Path(os.environ.get("SHARING_LOG", "."))
# "CONCURRENCY,PER_SECOND" (either may be empty): the items share flowfn.Limiter(name="api").
_LIMITER = os.environ.get("SHARING_LIMITER", "")
_concurrency, _, _per_second = _LIMITER.partition(",")
API = (
    flowfn.Limiter(
        int(_concurrency) if _concurrency else None,
        per_second=float(_per_second) if _per_second else None,
        name="api",
    )
    if _LIMITER
    else None
)
_log = None


def log(kind: str, index: int) -> None:
    global _log
    if _log is None:
        _log = (LOG / f"{os.getpid()}.log").open("a", buffering=1)
    _log.write(f"{kind} {index} {time.time():.6f}\n")


@node
def start(shared: dict[str, Any]) -> None:
    shared["xs"] = list(range(ITEMS))


@parallel_batch(items="xs", into="ys", limit=LIMIT, per_second=RATE, limiter=API)
async def triple(x: int) -> int:
    log("s", x)
    if BLOCK:  # this process claims little while it is blocked, and never holds items
        time.sleep(BLOCK)
    await anyio.sleep(SLEEP)
    while not BLOCK and (LOG / "hold").exists():
        await anyio.sleep(0.02)
    log("e", x)
    return 3 * x + 1


@node
def total(shared: dict[str, Any]) -> None:
    shared["total"] = sum(shared["ys"])


flow = Flow(start)
start >> triple >> total


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test that waits in vain asks
    mode, where, run_id, backend = sys.argv[1:5]
    if mode == "help":
        print(json.dumps(flowfn.work(where, run_id, flow, backend=backend)))
        return
    shared: dict[str, Any] = {}
    flow.run(shared, checkpoint=where, run_id=run_id, share=mode == "run", backend=backend)
    print(json.dumps(shared))


if __name__ == "__main__":
    main()
