"""Pausing a durable run for input: ``answer = flowfn.ask(question)`` inside a step.

The first time a step asks, the run stops with its state saved and ``run`` returns
:class:`Paused`, which lists the questions. Running again with the same ``run_id`` and
``answers={question.id: answer, ...}`` (in this process or another) resumes the run; the
step runs again from its start, and this time ``ask`` returns the answer.

In a batch, each item may ask: the other items go on, and the run pauses at the end of the
batch with every question asked by then (the finished items are recorded). A question is
identified by the step that asks it and its payload: items of one batch that ask the same
question share its answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._engine.errors import FlowError
from .._engine.hooks import PauseRequest
from .._engine.hooks import where as _where

__all__ = ["PauseRequest", "Paused", "PauseRun", "Question", "ask", "question_id"]


class Question:
    """A question a paused run waits for: answer it with ``answers={question.id: ...}``."""

    __slots__ = ("id", "item", "node", "payload")

    def __init__(self, id: str, payload: Any, node: str, item: int | None) -> None:
        self.id, self.payload, self.node, self.item = id, payload, node, item

    def __repr__(self) -> str:
        item = "" if self.item is None else f" item={self.item}"
        return f"<Question {self.id} from {self.node!r}{item}: {self.payload!r:.60}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Question) and (self.id, self.payload, self.node, self.item) == (
            other.id,
            other.payload,
            other.node,
            other.item,
        )

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> Any:
        return (Question, (self.id, self.payload, self.node, self.item))


class Paused:
    """What ``run``/``run_async`` return when the run paused: its ``run_id`` and the
    ``questions`` it waits for. Resume with ``run(..., run_id=paused.run_id,
    answers={q.id: answer for q in paused.questions})``."""

    __slots__ = ("questions", "run_id")

    def __init__(self, run_id: str, questions: list[Question]) -> None:
        self.run_id, self.questions = run_id, questions

    def __repr__(self) -> str:
        return f"<Paused run {self.run_id!r}: {len(self.questions)} question(s)>"


class PauseRun(BaseException):
    """A batch ends with items that asked: the run stops, waiting for their answers."""

    def __init__(self, questions: list[Question]) -> None:
        super().__init__(f"paused with {len(questions)} question(s)")
        self.questions = questions


def question_id(position: tuple[int, ...], payload: Any) -> str:
    import hashlib
    import pickle

    try:
        text = pickle.dumps(payload, protocol=4)
    except Exception:
        text = repr(payload).encode()
    digest = hashlib.sha256(repr(position).encode() + b"|" + text).hexdigest()[:12]
    return f"q-{digest}"


def ask(question: Any) -> Any:
    """Pause the durable run this step is part of until ``question`` is answered, and
    return the answer (see docs/durable.md).

    Without ``checkpoint=`` there is nowhere to keep the run while it waits: ``FlowError``.
    """
    from .cache import caching

    journal = caching.get()
    if journal is None:
        raise FlowError(
            "flowfn.ask() pauses the run until it is answered, so the run must be durable: "
            "run the flow with checkpoint='runs.db' (and a run_id to resume it by)"
        )
    position = _where.get()[0]
    qid = question_id(position, question)
    answers: Mapping[str, Any] = journal.answers
    if qid in answers:
        return answers[qid]
    raise PauseRequest(Question(qid, question, journal.step_name(position), None))
