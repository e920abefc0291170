"""What a Postgres checkpoint costs against an SQLite one: 100,000 no-op items in a parallel
batch (limit 1000), checkpointed, on asyncio.

    python benchmarks/postgres.py postgresql://user@host/db [--repeat 5]

Each run is a fresh process (alternating SQLite, Postgres; medians), timing ``flow.run`` only:
SQLite writes a new file in a temporary folder, Postgres a new schema (dropped afterwards),
made before the clock starts, as a database's schema is made once (about 20 ms), not per run.
The target is a Postgres-checkpointed run at most 3x the SQLite one. ``. .ci/postgres``
starts a throwaway server and sets ``FLOWFN_TEST_POSTGRES``, the default URL.
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

from flowfn import Flow, parallel_batch

ITEMS = 100_000


def items_flow() -> Flow:
    @parallel_batch(items=lambda shared: range(ITEMS), into="out", limit=1000)
    async def noop(x: int) -> int:
        return x

    return Flow(noop)


def one(store: str, url: str) -> float:
    """Seconds of one checkpointed run, in this process."""
    flow = items_flow()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = (
            os.path.join(folder, "runs.db") if store == "sqlite" else f"{url}?schema={schema}"
        )
        if store == "postgres":  # its schema and tables exist: made once per database
            from flowfn.persistence import PostgresStore

            made = PostgresStore(checkpoint)
            made.runs()
            made.close()
        shared: dict[str, list[int]] = {}
        started = time.perf_counter()
        flow.run(shared, checkpoint=checkpoint, run_id="bench")
        took = time.perf_counter() - started
    assert len(shared["out"]) == ITEMS
    if store == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("FLOWFN_TEST_POSTGRES"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.url:
        parser.error("give a postgresql:// URL (or set FLOWFN_TEST_POSTGRES: . .ci/postgres)")
    if args.one:
        print(json.dumps(one(args.one, args.url)))
        return
    times: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    for _ in range(args.repeat):
        for store in times:
            out = subprocess.run(
                [sys.executable, __file__, args.url, "--one", store],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            times[store].append(json.loads(out))
    sqlite, postgres = (statistics.median(times[s]) for s in ("sqlite", "postgres"))
    print(f"{ITEMS:,} checkpointed no-op items (parallel batch, limit 1000), medians of "
          f"{args.repeat}:")  # fmt: skip
    print(f"  SQLite    {sqlite:6.2f} s")
    print(f"  Postgres  {postgres:6.2f} s   {postgres / sqlite:.2f}x SQLite (target <= 3x)")


if __name__ == "__main__":
    main()
