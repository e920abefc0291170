"""Summarise a folder of text files: a sub-flow per file, run in parallel, branching on actions.

``@parallel_batch(flow=..., limit=3)`` lists the files and runs the sub-flow per file. Its ``route``
node reads the file and returns an action; ``route - "long" >> summarize`` (and ``"short"``,
``"empty"``) sends each file to its own step. No LLM here: ``summarize`` waits with ``anyio.sleep``
and answers deterministically. Run: python examples/summarize_files.py [asyncio|trio]
"""

import sys
from pathlib import Path
from typing import Any

import anyio

from flowfn import Flow, node, parallel_batch

OUT_DIR, LONG = Path(__file__).parent / "out" / "documents", 10  # LONG: more words than this
DOCS = {
    "anyio.txt": "AnyIO runs async code on asyncio or trio. It has task groups and cancel scopes.",
    "pocketflow.txt": "PocketFlow builds LLM apps from small nodes. Flows follow their actions.",
    "todo.txt": "Buy flour, eggs and sugar.",
    "blank.txt": "",
}


@node
async def route(shared: dict[str, Any], file: str) -> str:
    text = shared["texts"][file] = await anyio.Path(shared["folder"], file).read_text()
    words = len(text.split())
    action = shared["routes"][file] = "empty" if not words else "long" if words > LONG else "short"
    print(f"  [{file}] {words} words -> {action}")
    return action


@node
async def summarize(shared: dict[str, Any], file: str) -> None:
    text = shared["texts"][file]
    await anyio.sleep(0.02)  # a fake LLM call: a short wait, then a deterministic answer
    shared["summaries"][file] = f"{text.split('. ')[0]}. ({len(text.split())} words)"


@node
def keep(shared: dict[str, Any], file: str) -> None:
    shared["summaries"][file] = shared["texts"][file].strip()


@node
def skip(shared: dict[str, Any], file: str) -> None:
    shared["summaries"][file] = "(empty file)"


route - "long" >> summarize
route - "short" >> keep
route - "empty" >> skip


@parallel_batch(flow=Flow(route), limit=3)
def each_file(shared: dict[str, Any]) -> list[dict[str, Any]]:
    shared["files"] = sorted(path.name for path in Path(shared["folder"]).glob("*.txt"))
    return [{"file": file} for file in shared["files"]]


@each_file.post
def report(shared: dict[str, Any], files: list[dict[str, Any]], exec_res: None) -> None:
    shared["report"] = "\n".join(f"{f}: {shared['summaries'][f]}" for f in shared["files"])
    print(f"--- {len(files)} files summarised ---\n{shared['report']}")


def main(backend: str = "asyncio", folder: str | Path = OUT_DIR) -> dict[str, Any]:
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():  # a few small files to summarise
        (Path(folder) / name).write_text(text, encoding="utf-8")
    shared: dict[str, Any] = {"folder": str(folder), "texts": {}, "routes": {}, "summaries": {}}
    Flow(each_file).run(shared, backend=backend)
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")
