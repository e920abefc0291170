"""Exceptions flowfn raises itself, and the notes it adds to the ones it passes on."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Any

__all__ = [
    "FlowEndsWarning",
    "FlowError",
    "add_note",
    "asyncio_under_trio",
    "keep_others",
    "node_name",
    "other_errors",
    "warn_at_caller",
]


class FlowError(Exception):
    """A flow or node was built or called in a way flowfn cannot run.

    The message names the node and says what to change. Exceptions raised by *your* code
    are never wrapped in a ``FlowError``: they reach the caller as they are, with a note
    (``exc.__notes__``) naming the node, and the item index for batch items.
    """


class FlowEndsWarning(UserWarning):
    """A flow ended because a node returned an action it has no successor for.

    The message names the node, the action ("default" for ``None``), the flow and the
    actions the node does have, with a close match if there is one. Silence it for one
    node by ending the flow on purpose (``node - "done" >> None``); make it an error for
    one flow with ``Flow(start, strict=True)``, or everywhere with a warnings filter
    (``warnings.simplefilter("error", flowfn.FlowEndsWarning)``, or pytest's
    ``-W error::flowfn.FlowEndsWarning``). Flows from :mod:`flowfn.compat` warn with
    PocketFlow's own text and category instead.
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


def other_errors(exc: BaseException) -> tuple[BaseException, ...]:
    """The failures that came after ``exc`` in the same batch, and were not raised.

    When a parallel item fails, flowfn raises that first failure as itself and cancels
    its siblings; a sibling that fails too before it stops (in the same instant, or in its
    own clean-up) is not lost: its exception, with its notes, is here, in the order the
    failures happened, and a note on ``exc`` counts and names them. Empty for any other
    exception.
    """
    others = getattr(exc, "__flowfn_others__", ())
    return tuple(others) if isinstance(others, tuple) else ()


def keep_others(first: BaseException, others: list[BaseException]) -> None:
    """Make ``others`` reachable from ``first`` (see :func:`other_errors`), with a note."""
    if not others:
        return
    with contextlib.suppress(AttributeError):  # an exception type with __slots__: the note
        first.__flowfn_others__ = (*other_errors(first), *others)  # type: ignore[attr-defined]
    shown = "; ".join(f"{_where(e)}{type(e).__name__}: {e}" for e in others[:5])
    more = f"; and {len(others) - 5} more" if len(others) > 5 else ""
    count = f"{len(others)} more failure{'s' if len(others) > 1 else ''}"
    add_note(
        first,
        f"flowfn: {count} after this one, not raised: {shown}{more} "
        f"(flowfn.other_errors(exc) has them)",
    )


def _where(exc: BaseException) -> str:
    """``"item 3: "`` from the note flowfn put on ``exc``, if any."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith("flowfn: item "):
            return note[len("flowfn: ") :].split(" of ", 1)[0] + ": "
    return ""


ASYNCIO_UNDER_TRIO = (
    "flowfn: this error comes from asyncio-only code (asyncio.sleep, asyncio.get_running_loop, "
    "a library built on asyncio) running under trio, where no asyncio event loop exists, so it "
    "fails the same way on every attempt (flowfn did not retry it). Await anyio.sleep(...) and "
    "anyio's other calls, which run on both, or run the flow on asyncio (backend='asyncio'); "
    "see 'asyncio code under trio' in docs/compat.md"
)


def asyncio_under_trio(exc: BaseException, *, on_trio: bool | None = None) -> bool:
    """Whether ``exc`` is asyncio-only code failing under trio for want of an asyncio event
    loop (a ``RuntimeError`` raised in asyncio, or saying it found no event loop, or trio's
    ``TypeError`` for an await that yielded to asyncio, as ``asyncio.sleep(0)`` does); if so,
    it gets a note saying what to do, once. ``on_trio``: whether the run was on trio
    (default: whether this thread is inside a trio run now)."""
    if not isinstance(exc, (RuntimeError, TypeError)):
        return False
    if ASYNCIO_UNDER_TRIO in getattr(exc, "__notes__", ()):
        return True
    if on_trio is None:
        on_trio = running_async_library() == "trio"
    if not on_trio or not _from_asyncio(exc):
        return False
    add_note(exc, ASYNCIO_UNDER_TRIO)
    return True


def _from_asyncio(exc: RuntimeError | TypeError) -> bool:
    if isinstance(exc, TypeError):  # trio's words for a bare yield from asyncio code
        return "unrecognized yield message" in str(exc)
    asyncio = sys.modules.get("asyncio")
    folder = os.path.dirname(asyncio.__file__) + os.sep if asyncio and asyncio.__file__ else None
    trace = exc.__traceback__
    while trace is not None and folder is not None:
        if trace.tb_frame.f_code.co_filename.startswith(folder):
            return True
        trace = trace.tb_next
    message = str(exc)
    return "event loop" in message or "inside a task" in message


# Frames in these packages' folders are the engine's or the event loop's, never the user's.
_ENGINE_PACKAGES = ("flowfn", "anyio", "asyncio", "trio", "outcome", "concurrent.futures")


def warn_at_caller(message: str, category: type[Warning], *, about: object = None) -> None:
    """Warn from the innermost frame that is neither flowfn's nor its event loop's.

    That frame is the user's: the ``flow.run(...)`` call, or the coroutine that awaits
    ``run_async``, so the warning's file and line point at code the user can change. When
    flowfn's command line ran the flow, nothing above it is the user's: the warning points
    at where ``about`` (a node) is defined instead.
    """
    engine = tuple(
        os.path.dirname(module.__file__) + os.sep
        for name in _ENGINE_PACKAGES
        if (module := sys.modules.get(name)) is not None and module.__file__
    )
    frame, level, by_cli = sys._getframe(1), 1, False
    while frame.f_back is not None and frame.f_code.co_filename.startswith(engine):
        by_cli = by_cli or frame.f_code.co_filename.endswith(f"{os.sep}flowfn{os.sep}_cli.py")
        frame, level = frame.f_back, level + 1
    defined = _defined_at(about) if by_cli else None
    if defined is None:
        warnings.warn(message, category, stacklevel=level + 1)
        return
    filename, line, namespace = defined
    warnings.warn_explicit(
        message,
        category,
        filename,
        line,
        module=namespace.get("__name__"),
        registry=namespace.setdefault("__warningregistry__", {}),
    )


def _defined_at(node: object, depth: int = 0) -> tuple[str, int, dict[str, Any]] | None:
    """File, line and module namespace of the user's code that defines ``node``: its
    function, its class, or for a flow, its start node's."""
    import functools
    import inspect

    start = getattr(node, "start_node", None)
    if start is not None and depth < 8:
        return _defined_at(start, depth + 1)
    target: Any = getattr(node, "fn", None) or node
    while isinstance(target, functools.partial):
        target = target.func
    function = inspect.unwrap(target) if callable(target) else None
    if inspect.isfunction(function):
        code = function.__code__
        return code.co_filename, code.co_firstlineno, function.__globals__
    cls = target if inspect.isclass(target) else type(target)
    module = sys.modules.get(cls.__module__)
    try:
        filename = inspect.getsourcefile(cls)
        _, line = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return None
    package = os.path.dirname(__file__) + os.sep
    if filename is None or module is None or filename.startswith(package):
        return None  # flowfn's own class: no better place than the caller's
    return filename, line, vars(module)


def running_async_library() -> str | None:
    """``"asyncio"`` or ``"trio"`` if this thread is inside that event loop, else ``None``."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    # While another thread still imports trio, its module is there half made; this thread
    # cannot be inside a trio run then.
    in_trio_run = getattr(getattr(sys.modules.get("trio"), "lowlevel", None), "in_trio_run", None)
    if in_trio_run is not None and in_trio_run():
        return "trio"
    return None
