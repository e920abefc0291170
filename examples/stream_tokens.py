"""Streaming an LLM's tokens while the flow runs, under one API quota shared by two nodes.

A fake LLM (anyio.sleep and fixed text stand in for the API) answers three questions at
once, then writes a title for each answer. Both nodes call "the same API", so they share
one flowfn.Limiter: at most two calls in flight and ten starts a second, across both.
Each answer's tokens are emitted as they come (await flowfn.emit), and the caller prints
them live with flow.stream(); the output is what an LLM chat UI would show.
Run: python examples/stream_tokens.py [asyncio|trio]
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import anyio

from flowfn import AsyncFlow, Limiter, emit, parallel_batch

API = Limiter(2, per_second=10, name="llm api")
REPLIES = {
    "What is anyio?": "An async library that runs on asyncio or trio.",
    "What is a flow?": "Steps wired together by actions.",
    "Why stream?": "So the reader sees words as they come.",
}


def short(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters between words (never mid-word)."""
    return textwrap.shorten(text, width, placeholder=" …")


async def fake_llm(prompt: str, who: str) -> str:
    """The 'API': streams the reply word by word, tagged with who asked."""
    words = REPLIES.get(prompt, f"A title for: {short(prompt, 24)}").split()
    for word in words:
        await anyio.sleep(0.01)
        await emit((who, word))
    return " ".join(words)


@parallel_batch(items="questions", into="answers", limit=3, limiter=API)
async def answer(question: str) -> str:
    return await fake_llm(question, question)


@parallel_batch(items="answers", into="titles", limit=3, limiter=API)
async def title(text: str) -> str:
    return await fake_llm(text, f"title: {short(text, 13)}")


answer >> title
flow = AsyncFlow(answer)


async def run(backend: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    shared: dict[str, Any] = {"questions": list(REPLIES)}
    seen: list[tuple[str, str]] = []
    async with flow.stream(shared) as output:
        async for who, word in output:
            seen.append((who, word))
            print(f"[{who:>20}] {word}")
    return shared, seen


def main(backend: str = "asyncio") -> dict[str, Any]:
    shared, seen = anyio.run(run, backend, backend=backend)
    print(f"{len(seen)} tokens streamed; answers: {shared['answers']}")
    shared["tokens"] = seen
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")
