"""One batch, three processes: a run shared through PostgreSQL and two helpers (docs/durable.md).

Ninety questions go to a fake LLM: anyio.sleep stands in for the remote call and the answers
are made up (no network, no API key). The run starts with share=True; two helpers, started
with `flowfn runs work URL RUN_ID --target examples/shared_batch.py:flow`, take their share of
the items. limit=12 calls at once and per_second=40 starts hold for the three processes
together. It prints how many answers each process gave.
Run: python examples/shared_batch.py postgresql://user@host/db [asyncio|trio]"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import uuid
from typing import Any

import anyio

from flowfn import Flow, node, parallel_batch


@node
def load(shared: dict[str, Any]) -> None:
    shared["questions"] = [f"question {i}" for i in range(90)]


@parallel_batch(items="questions", into="answers", limit=12, per_second=40, retries=2)
async def ask_llm(question: str) -> dict[str, Any]:
    await anyio.sleep(0.1)  # the remote call
    return {"question": question, "answer": f"42 ({question})", "pid": os.getpid()}


@node
def report(shared: dict[str, Any]) -> None:
    by_process = collections.Counter(answer["pid"] for answer in shared["answers"])
    shared["report"] = {
        "answers": len(shared["answers"]),
        "by process": {("run" if pid == os.getpid() else f"helper {pid}"): n
                       for pid, n in sorted(by_process.items())},
    }  # fmt: skip


load >> ask_llm >> report
flow = Flow(load)


def main(backend: str = "asyncio", url: str | None = None) -> dict[str, Any]:
    url = url or os.environ.get("FLOWFN_TEST_POSTGRES")
    if not url:
        raise SystemExit("give a postgresql:// URL: python examples/shared_batch.py URL")
    run_id = f"questions-{uuid.uuid4().hex[:8]}"
    helper = [sys.executable, "-m", "flowfn", "runs", "work", url, run_id, "--backend", backend]
    helper += ["--target", f"{os.path.abspath(__file__)}:flow"]
    helpers = [subprocess.Popen(helper, stdout=subprocess.DEVNULL) for _ in range(2)]
    shared: dict[str, Any] = {}
    try:  # helpers started before the run wait for it; they return once it ends
        flow.run(shared, checkpoint=url, run_id=run_id, share=True, backend=backend)
    finally:
        for process in helpers:
            process.wait(timeout=60)
    print(shared["report"])
    return shared


if __name__ == "__main__":
    url, backend = ([*sys.argv[1:], None, None][:2]) if len(sys.argv) > 1 else (None, None)
    main(backend or "asyncio", url)
