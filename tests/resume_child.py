"""Durable flows of the docs' own idioms, run in a child process by tests/test_resume_exact.py.

    python resume_child.py SCENARIO DB RUN_ID LOG BACKEND [--kill-at N] [--fail-at N]
                           [--durability async|sync]

Every step and item appends a line to LOG before it works; with ``--kill-at N`` the process
kills itself (SIGKILL) on the Nth line, with ``--fail-at N`` that call raises. On success
the final shared store is printed as JSON.

Scenarios:
* ``cook``: parallel.md's idiom: ``@parallel_batch(flow=Flow(cook))`` on a function that
  sets ``shared["cooked"] = {}`` and returns the param dicts; the sub-flow writes
  ``shared["cooked"][k]``.
* ``cook_sync``: the same with sync nodes and ``@batch(flow=...)`` (items one by one).
* ``items``: 200 items of 10 ms in a parallel batch, ``limit=8``; each logs ``start i``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from flowfn import Flow, batch, node, parallel_batch

ORDERS = 20
args: argparse.Namespace


def log(what: str) -> None:
    with Path(args.log).open("a") as f:
        f.write(what + "\n")
    calls = len(Path(args.log).read_text().splitlines())
    if calls == args.kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if calls == args.fail_at:
        raise RuntimeError(f"failed at call {calls}: {what}")


@node
def menu(shared: dict[str, Any]) -> None:
    log("menu")
    shared["prices"] = {str(k): 10 + k for k in range(ORDERS)}


@node
async def cook(shared: dict[str, Any], k: int) -> None:
    log(f"cook {k}")
    await anyio.sleep(0.06)  # long enough that finished orders get recorded before a kill
    shared["cooked"][str(k)] = shared["prices"][str(k)] * 10


@parallel_batch(flow=Flow(cook), limit=3)
def orders(shared: dict[str, Any]) -> list[dict[str, int]]:
    shared["cooked"] = {}
    return [{"k": k} for k in range(ORDERS)]


@node
def cook_now(shared: dict[str, Any], k: int) -> None:
    log(f"cook {k}")
    time.sleep(0.02)
    shared["cooked"][str(k)] = shared["prices"][str(k)] * 10


@batch(flow=Flow(cook_now))
def orders_one_by_one(shared: dict[str, Any]) -> list[dict[str, int]]:
    shared["cooked"] = {}
    return [{"k": k} for k in range(ORDERS)]


@node
def total(shared: dict[str, Any]) -> None:
    log("total")
    shared["total"] = sum(shared["cooked"].values())


@parallel_batch(items=lambda shared: range(200), into="out", limit=8)
async def call(i: int) -> int:
    log(f"start {i}")
    await anyio.sleep(0.01)
    return i * 2


def flows(scenario: str) -> Flow:
    if scenario == "cook":
        menu >> orders >> total
        return Flow(menu)
    if scenario == "cook_sync":
        menu >> orders_one_by_one >> total
        return Flow(menu)
    return Flow(call)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("scenario", "db", "run_id", "log", "backend"):
        parser.add_argument(name)
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--fail-at", type=int, default=0)
    parser.add_argument("--durability", default="async")
    args = parser.parse_args()
    shared: dict[str, Any] = {}
    flow = flows(args.scenario)
    try:
        flow.run(
            shared,
            checkpoint=args.db,
            run_id=args.run_id,
            backend=args.backend,
            durability=args.durability,
        )
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    print(json.dumps(shared, sort_keys=True))
