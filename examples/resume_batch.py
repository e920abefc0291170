"""A long batch killed halfway and resumed: checkpoints in SQLite (docs/durable.md).

Sixty documents are summarised by a fake LLM (anyio.sleep and a fixed answer stand in for
the API), eight at a time, with checkpoint= and a run_id. The script first runs the flow in
a child process and kills it with SIGKILL once the checkpoint holds 16 summaries, then
resumes the same run here: only the documents whose summary was not recorded run again.
Run: python examples/resume_batch.py [asyncio|trio]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from flowfn import Flow, SQLiteStore, node, parallel_batch

# One line per LLM call; main() puts it beside the checkpoint, so runs at once keep apart.
CALLS = Path(tempfile.gettempdir(), "flowfn-resume-calls.log")


@node
def load(shared: dict[str, Any]) -> None:
    shared["docs"] = [f"document {i}" for i in range(60)]


@parallel_batch(items="docs", into="summaries", limit=8)
async def summarise(doc: str) -> str:
    await anyio.sleep(0.2)  # the LLM call
    with CALLS.open("a") as log:
        log.write(doc + "\n")
    return f"summary of {doc}"


@node
def report(shared: dict[str, Any]) -> None:
    shared["report"] = f"{len(shared['summaries'])} summaries"


load >> summarise >> report
flow = Flow(load)


def main(backend: str = "asyncio", checkpoint: str | None = None) -> dict[str, Any]:
    global CALLS
    db = checkpoint or os.path.join(tempfile.mkdtemp(), "runs.db")
    CALLS = Path(db + ".calls.log")
    CALLS.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, __file__, backend, "--child", db])
    while not os.path.exists(db) or sum(run.items for run in SQLiteStore(db).runs()) < 16:
        time.sleep(0.05)  # let it summarise some documents, then pull the plug
    child.kill()
    child.wait()
    before = len(CALLS.read_text().splitlines()) if CALLS.exists() else 0
    print(f"killed the first run after {before} LLM calls")
    shared: dict[str, Any] = {}
    flow.run(shared, backend=backend, checkpoint=db, run_id="nightly")
    after = len(CALLS.read_text().splitlines()) - before
    print(f"resumed: {after} LLM calls now, {60 - after} summaries from the checkpoint")
    print(shared["report"], "|", shared["summaries"][0], "...", shared["summaries"][-1])
    shared["calls"] = before + after
    return shared


if __name__ == "__main__":
    if "--child" in sys.argv:  # the first run, killed by the parent
        CALLS = Path(sys.argv[3] + ".calls.log")
        flow.run({}, backend=sys.argv[1], checkpoint=sys.argv[3], run_id="nightly")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")
