"""Exceptions flowfn raises itself, and the notes it adds to the ones it passes on."""

from __future__ import annotations

__all__ = ["FlowError", "add_note", "node_name"]


class FlowError(Exception):
    """A flow or node was built or called in a way flowfn cannot run.

    The message names the node and says what to change. Exceptions raised by *your* code
    are never wrapped in a ``FlowError``: they reach the caller as they are, with a note
    (``exc.__notes__``) naming the node, and the item index for batch items.
    """


def node_name(node: object) -> str:
    """The name flowfn uses for ``node`` in notes, errors and reprs."""
    name = getattr(node, "name", None)
    return name if isinstance(name, str) and name else type(node).__name__


def add_note(exc: BaseException, note: str) -> None:
    """Attach ``note`` to ``exc`` (PEP 678), also on Python 3.10 where ``add_note`` is missing."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            exc.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)
