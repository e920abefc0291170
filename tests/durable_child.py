"""A durable flow run in a child process by tests/test_durable.py.

    python durable_child.py DB RUN_ID LOG BACKEND [--kill-at N] [--fail-at N] [--slow]

``--slow`` holds the squares until a file named ``release`` appears beside LOG.

Every step and item appends a line to LOG before it works; with ``--kill-at N`` the
process kills itself (SIGKILL) on the Nth line, with ``--fail-at N`` that call raises.
On success the final shared store is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from flowfn import Flow, node, parallel_batch

ITEMS = 12
args: argparse.Namespace


def log(what: str) -> None:
    with Path(args.log).open("a") as f:
        f.write(what + "\n")
        f.flush()
    calls = len(Path(args.log).read_text().splitlines())
    if calls == args.kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if calls == args.fail_at:
        raise RuntimeError(f"failed at call {calls}: {what}")


@node
def start(shared: dict[str, Any]) -> None:
    log("start")
    shared["n"] = ITEMS
    shared["cubes"] = {}


@parallel_batch(items=lambda shared: range(shared["n"]), into="squares", limit=3)
async def square(i: int) -> int:
    log(f"square {i}")
    if args.slow:  # held until the test lets it go (a file named "release" beside LOG)
        with anyio.move_on_after(60):
            while not Path(args.log).with_name("release").exists():
                await anyio.sleep(0.02)
    await anyio.sleep(0.002)
    return i * i


@node
async def cube(shared: dict[str, Any], i: int) -> None:
    log(f"cube {i}")
    await anyio.sleep(0.002)
    shared["cubes"][str(i)] = i**3  # keyed by item: a run that is redone writes the same


@parallel_batch(flow=Flow(cube), limit=3)
def cubes(shared: dict[str, Any]) -> list[dict[str, int]]:
    return [{"i": i} for i in range(shared["n"])]


@node
def add(shared: dict[str, Any]) -> None:
    log("add")
    shared["sum"] = sum(shared["squares"]) + sum(shared["cubes"].values())


@node
def double(shared: dict[str, Any]) -> None:
    log("double")
    shared["double"] = shared["sum"] * 2


start >> square >> cubes >> add >> double
flow = Flow(start)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("run_id")
    parser.add_argument("log")
    parser.add_argument("backend")
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--fail-at", type=int, default=0)
    parser.add_argument("--slow", action="store_true")
    args = parser.parse_args()
    shared: dict[str, Any] = {}
    try:
        flow.run(shared, checkpoint=args.db, run_id=args.run_id, backend=args.backend)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    print(json.dumps(shared, sort_keys=True))
