"""What sharing a batch across processes gives and costs (``run(share=True)`` and helpers).

    python benchmarks/sharing.py postgresql://user@host/db [--repeat 3]

1. Throughput on CPU-bound items (5 ms of CPU each, 1500 items, ``limit=1000``: no bound):
   items per second of one process with an SQLite checkpoint (no sharing), of the shared run
   alone on Postgres, and of the shared run with one helper (two processes). The target is
   two processes >= 1.7x one (SQLite). The machine's cores bound what two processes can do.
2. Coordination CPU per item on 20,000 no-op items: the CPU time (every thread) of the run's
   process when shared, minus the same run on the same Postgres checkpoint not shared,
   divided by the items: claims, lease renewals, records. The target is <= 0.5 ms.

Each measurement runs in fresh processes (medians of ``--repeat``); each run in a schema of
its own, dropped afterwards. ``. .ci/postgres`` starts a throwaway server and sets
``FLOWFN_TEST_POSTGRES``, the default URL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import flowfn
from flowfn import Flow, parallel_batch

CPU_ITEMS, NOOP_ITEMS, BURN = 1500, 20_000, 0.005


def burn_flow() -> Flow:
    @parallel_batch(items=lambda shared: range(CPU_ITEMS), into="out", limit=1000)
    async def burn(x: int) -> int:
        until = time.thread_time() + BURN
        while time.thread_time() < until:
            pass
        return x

    return Flow(burn)


def noop_flow() -> Flow:
    @parallel_batch(items=lambda shared: range(NOOP_ITEMS), into="out", limit=1000)
    async def noop(x: int) -> int:
        return x

    return Flow(noop)


FLOWS = {"burn": burn_flow, "noop": noop_flow}


def run_once(kind: str, checkpoint: str, share: bool) -> dict[str, float]:
    """Wall and CPU seconds of one run, in this process."""
    flow = FLOWS[kind]()
    shared: dict[str, Any] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    flow.run(shared, checkpoint=checkpoint, run_id="bench", share=share)
    took = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    assert len(shared["out"]) == (CPU_ITEMS if kind == "burn" else NOOP_ITEMS)
    return took


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)


def measure(url: str, kind: str, how: str) -> dict[str, float]:
    """One measurement in fresh processes: ``how`` is sqlite, postgres (not shared), shared
    (the run alone) or helped (the run and one helper)."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as folder:
        where = os.path.join(folder, "runs.db") if how == "sqlite" else f"{url}?schema={schema}"
        helper = child("--help-run", where, kind) if how == "helped" else None
        if helper is not None:
            time.sleep(1.0)  # the helper is up and listening
        share = how in ("shared", "helped")
        out = child("--run", where, kind, str(share)).communicate()[0]
        if helper is not None:
            helper.communicate(timeout=60)
    if how != "sqlite":
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return dict(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("FLOWFN_TEST_POSTGRES"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--run", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--help-run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        where, kind, share = args.run
        print(json.dumps(run_once(kind, where, share == "True")))
        return
    if args.help_run:
        where, kind = args.help_run
        print(flowfn.work(where, "bench", FLOWS[kind]()))
        return
    if not args.url:
        parser.error("give a postgresql:// URL (or set FLOWFN_TEST_POSTGRES: . .ci/postgres)")
    walls: dict[str, list[float]] = {"sqlite": [], "shared": [], "helped": []}
    cpus: dict[str, list[float]] = {"postgres": [], "shared": []}
    for _ in range(args.repeat):
        for how in walls:
            walls[how].append(measure(args.url, "burn", how)["wall"])
        for how in cpus:
            cpus[how].append(measure(args.url, "noop", how)["cpu"])
    rates = {how: CPU_ITEMS / statistics.median(times) for how, times in walls.items()}
    print(f"{CPU_ITEMS} items of {BURN * 1000:g} ms CPU each, medians of {args.repeat}:")
    print(f"  one process, SQLite checkpoint   {rates['sqlite']:7.1f} items/s")
    print(f"  shared run alone (Postgres)      {rates['shared']:7.1f} items/s")
    print(
        f"  shared run + 1 helper            {rates['helped']:7.1f} items/s "
        f"({rates['helped'] / rates['sqlite']:.2f}x one process; target >= 1.7x)"
    )
    plain, shared = (statistics.median(cpus[how]) for how in ("postgres", "shared"))
    per_item = (shared - plain) / NOOP_ITEMS * 1000
    print(f"{NOOP_ITEMS:,} no-op items, CPU of the run's process, medians of {args.repeat}:")
    print(f"  Postgres checkpoint, not shared  {plain:6.2f} s")
    print(f"  shared                           {shared:6.2f} s")
    print(f"  coordination per item            {per_item:6.3f} ms (target <= 0.5 ms)")


if __name__ == "__main__":
    main()
