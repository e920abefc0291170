"""A long batch killed halfway and resumed: checkpoints in SQLite (docs/durable.md).

Sixty documents are summarised by a fake LLM (anyio.sleep stands in for the API), eight at a
time. It runs "nightly" with `flowfn run --checkpoint` in a child process, kills it (SIGKILL)
once 16 summaries are recorded, and resumes it here: only documents whose summary was not
recorded run again. It prints the checkpoint and the `flowfn runs` commands to look into it.
Run: python examples/resume_batch.py [asyncio|trio] [async|sync] (sync: see docs/durable.md)"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from flowfn import Flow, SQLiteStore, node, parallel_batch


@node
def load(shared: dict[str, Any]) -> None:
    shared["docs"] = [f"document {i}" for i in range(60)]


@parallel_batch(items="docs", into="summaries", limit=8)
async def summarise(doc: str, shared: dict[str, Any]) -> str:
    await anyio.sleep(0.2)  # the LLM call
    # One line per call, to the file named in shared (so resumes log there too).
    with open(shared.get("calls_log", os.devnull), "a") as log:
        log.write(doc + "\n")
    return f"summary of {doc}"


@node
def report(shared: dict[str, Any]) -> None:
    shared["report"] = f"{len(shared['summaries'])} summaries"


load >> summarise >> report
flow = Flow(load)


def kill_halfway(backend: str, db: str, durability: str = "async") -> None:
    """`flowfn run` this flow as run "nightly" of ``db``; SIGKILL it at 16 summaries."""
    first = json.dumps({"calls_log": db + ".calls.log"})
    args = ["--backend", backend, "--checkpoint", db, "--run-id", "nightly", "--shared", first]
    args += ["--durability", durability]
    child = subprocess.Popen([sys.executable, "-m", "flowfn", "run", f"{__file__}:flow", *args])
    while not os.path.exists(db) or sum(run.items for run in SQLiteStore(db).runs()) < 16:
        time.sleep(0.05)
    child.kill()
    child.wait()


def main(backend: str = "asyncio", checkpoint: str | None = None, durability: Any = "async") -> Any:
    db = checkpoint or os.path.join(tempfile.mkdtemp(prefix="flowfn-"), "runs.db")
    print(f"checkpoint: {db}")
    kill_halfway(backend, db, durability)
    log = Path(db + ".calls.log")  # one line per LLM call
    before = len(log.read_text().splitlines())
    print(f"killed the first run after {before} LLM calls")
    shared: dict[str, Any] = {"calls_log": str(log)}
    flow.run(shared, backend=backend, checkpoint=db, run_id="nightly", durability=durability)
    calls = log.read_text().splitlines()
    shared["calls"], shared["again"] = len(calls), len(calls) - len(set(calls))
    print(f"resumed: {shared['calls'] - before} LLM calls now ({shared['again']} made again)")
    print(f"look into it: flowfn runs list {shlex.quote(db)}")
    print(f"              flowfn runs show {shlex.quote(db)} nightly")
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio", None, *sys.argv[2:3])
