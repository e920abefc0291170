"""Translate one text into several languages at once, then save every translation to a file.

``@parallel_batch(items="languages", into="translations", limit=3)`` asks the model once per
language, at most three requests at a time, and stores the answers in input order; a ``@node``
then writes them to ``<out_dir>/<language>.txt`` (a sync function: it runs in a worker thread).
There is no LLM here: ``call_llm`` waits with ``anyio.sleep`` and returns canned, deterministic
translations. Run: python examples/translate.py [asyncio|trio]
"""

import sys
from pathlib import Path
from typing import Any

import anyio

from flowfn import Flow, echo, node, parallel_batch

Shared = dict[str, Any]
OUT_DIR = Path(__file__).parent / "out" / "translations"
CANNED = {
    "Spanish": "Hola, bienvenido a flowfn!",
    "French": "Bonjour, bienvenue dans flowfn !",
    "German": "Hallo, willkommen bei flowfn!",
    "Italian": "Ciao, benvenuto in flowfn!",
    "Portuguese": "Ola, bem-vindo ao flowfn!",
}


async def call_llm(prompt: str) -> str:
    """A stand-in for an async LLM API: a short wait, then a canned, deterministic answer."""
    language = prompt.split(":")[0].removeprefix("Translate into ")
    await anyio.sleep(0.005 * len(language))  # some languages "take longer" than others
    return CANNED.get(language, f"[{language}] {prompt.split(': ', 1)[1]}")


@parallel_batch(items="languages", into="translations", limit=3)
async def translate(language: str, shared: Shared) -> str:
    echo(f"  -> asking for {language}")
    answer = await call_llm(f"Translate into {language}: {shared['text']}")
    echo(f"  <- {language}: {answer}")
    return answer


@node
def save(shared: Shared) -> None:
    out_dir = Path(shared["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    shared["files"] = []
    for language, translation in zip(shared["languages"], shared["translations"], strict=True):
        path = out_dir / f"{language.lower()}.txt"
        path.write_text(translation + "\n", encoding="utf-8")
        shared["files"].append(str(path))
        echo(f"Saved {language:<10} -> {path}")


translate >> save
flow = Flow(translate)  # `flowfn run examples/translate.py:flow --shared '{...}'` runs it


def main(backend: str = "asyncio", out_dir: str | Path = OUT_DIR) -> dict[str, Any]:
    languages = list(CANNED)
    shared: Shared = {"text": "Hello, welcome to flowfn!", "languages": languages}
    shared["out_dir"] = str(out_dir)
    print(f"--- Translating {shared['text']!r} into {len(languages)} languages ({backend}) ---")
    flow.run(shared, backend=backend)
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")
