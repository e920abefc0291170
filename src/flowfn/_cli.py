"""The ``flowfn`` command: run a flow, or draw it, from the command line.

    flowfn run examples/translate.py:flow --shared '{"text": "Hi", ...}' --backend trio
    flowfn graph examples/cake_factory.py:flow -o cake_factory.png
    flowfn run examples/resume_batch.py:flow --checkpoint runs.db --run-id nightly
    flowfn runs list runs.db
    flowfn runs show runs.db nightly
    flowfn runs resume runs.db nightly --trust

TARGET names a flow (or a node) at the top level of a module or a file:
``package.module:name`` or ``path/to/file.py:name``. A mistake in the command (a missing
module, file or name, something that is not a flow, bad JSON, no Graphviz) ends with one
line on stderr and exit code 2; an exception raised by the flow itself is not caught, so
its traceback shows, with flowfn's notes naming the node.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from ._durable.pause import Paused
from ._durable.store import JSONSerializer, PickleSerializer, RunInfo, Serializer, SQLiteStore
from ._engine.backend import BACKENDS
from ._engine.errors import FlowError
from ._engine.flows import Flow
from ._engine.nodes import BaseNode
from ._observe.observers import LogObserver, RunSummary
from ._observe.progress import EchoHandler, LinesAboveBars

if TYPE_CHECKING:
    from typing import TypeAlias

    from ._durable.journal import Durability
    from .persistence.postgres import PostgresStore

    _RunsStore: TypeAlias = "SQLiteStore | PostgresStore"  # what the runs commands open

__all__ = ["UsageError", "command", "load_target", "main"]

FORMATS = ("mermaid", "dot", "png", "svg", "pdf")
_RENDERED = ("png", "svg", "pdf")  # drawn by Graphviz's dot into a file
_SUFFIX_FORMATS = {
    ".png": "png",
    ".svg": "svg",
    ".pdf": "pdf",
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".md": "mermaid",
    ".txt": "mermaid",
}
_EXAMPLE = '\'{"name": "Ada"}\''  # a JSON object, quoted for the shell
_FILE_MODULE = "flowfn_target_"  # the module name a flow file is loaded under


class UsageError(Exception):
    """A mistake in the command: reported as ``flowfn: error: ...`` and exit code 2."""


def command() -> None:
    """The ``flowfn`` program (console script and ``python -m flowfn``): :func:`main` with
    the process's arguments, exiting with its code. Only the program, never an in-process
    call of :func:`main`, lets a second Ctrl-C end the process at once."""
    global _as_program
    _as_program = True
    raise SystemExit(main())


_as_program = False


def main(argv: list[str] | None = None) -> int:
    """Run the ``flowfn`` command with ``argv`` (default ``sys.argv[1:]``); the exit code.

    0 on success, 2 for a mistake in the command (one line on stderr), 130 after Ctrl-C
    (one line on stderr). argparse's own usage errors exit with 2 too, by raising
    ``SystemExit``.
    """
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"flowfn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's exit code for SIGINT
        print("flowfn: interrupted (KeyboardInterrupt)", file=sys.stderr)
        _wait_for_steps_in_threads()
        return 130
    except BrokenPipeError:  # `flowfn run ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit flush does not fail again
        return 0
    except Exception as exc:  # raised by the flow: one line, unless --traceback
        if getattr(args, "traceback", False):
            raise
        print(f"flowfn: {one_line(exc)}", file=sys.stderr)
        return 1


def _wait_for_steps_in_threads() -> None:
    """After Ctrl-C: a sync step running in a worker thread cannot be stopped, and Python
    waits for it before exiting. Say so, and let a second Ctrl-C quit at once (without
    the traceback Python's own wait would print)."""
    import signal
    import threading

    def quit_now(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):  # os._exit flushes nothing
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)

    if _as_program:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            signal.signal(signal.SIGINT, quit_now)
    busy = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]
    deadline = time.monotonic() + 0.2  # idle worker threads end with the event loop
    for thread in busy:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in busy):
        print(
            "flowfn: waiting for steps still running in worker threads (threads cannot be "
            "interrupted); Ctrl-C again to quit at once",
            file=sys.stderr,
        )


def one_line(exc: BaseException) -> str:
    """``exc`` in one line: its public type name, message and flowfn's notes."""
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{_public_module(kind)}.{name}"
    message = " ".join(str(exc).split())
    notes = [" ".join(str(n).split()) for n in getattr(exc, "__notes__", ())]
    return f"{name}: {message}" + (f" ({'; '.join(notes)})" if notes else "")


def _public_module(kind: type) -> str:
    """The module users import ``kind`` from: the shortest package that exports it
    (``json.JSONDecodeError``, not ``json.decoder.JSONDecodeError``); a flow file's own
    module by its file's name."""
    module = kind.__module__
    if module.startswith(_FILE_MODULE):
        return module.removeprefix(_FILE_MODULE)
    parts = module.split(".")
    for end in range(1, len(parts)):
        package = sys.modules.get(".".join(parts[:end]))
        if package is not None and getattr(package, kind.__qualname__, None) is kind:
            return ".".join(parts[:end])
    return "flowfn" if module.startswith("flowfn._") else module


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowfn", description="Run a flowfn flow, or draw it as a picture."
    )
    parser.add_argument("--version", action="version", version=f"flowfn {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target_help = "the flow: module:name, path/to/file.py:name, or workflow.json with --nodes"

    run = commands.add_parser(
        "run", help="run a flow, then print its shared store and last action as JSON"
    )
    run.add_argument("target", metavar="TARGET", help=target_help)
    _add_nodes_option(run)
    run.add_argument(
        "--backend", choices=BACKENDS, help="the event loop (default: asyncio, if one is needed)"
    )
    run.add_argument(
        "--shared",
        metavar="JSON",
        help="the shared store, a JSON object: inline, @FILE to read it from a file, or - to "
        "read it from standard input",
    )
    run.add_argument(
        "--params",
        metavar="JSON",
        help="the flow's params, a JSON object: inline, @FILE or - (standard input)",
    )
    run.add_argument(
        "--progress", action="store_true", help="show a progress bar per batch (on stderr)"
    )
    run.add_argument(
        "--summary", action="store_true", help="print a per-node run summary (on stderr)"
    )
    _add_output_options(run)
    run.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="record the run in this SQLite file, so that it can be resumed (docs/durable.md)",
    )
    run.add_argument(
        "--run-id", metavar="ID", help="the run's name in the checkpoint (resumes it if there)"
    )
    _add_durable_options(run)
    run.add_argument(
        "--share",
        action="store_true",
        help="share the run's parallel batches with helpers (flowfn runs work; a postgresql:// "
        "--checkpoint)",
    )
    run.set_defaults(handler=_run_command)

    _add_runs_commands(commands, target_help)

    graph = commands.add_parser("graph", help="draw a flow as Mermaid, DOT or PNG")
    graph.add_argument("target", metavar="TARGET", help=target_help)
    _add_nodes_option(graph)
    graph.add_argument(
        "--format",
        choices=FORMATS,
        help="mermaid (default), dot, or png, svg, pdf (these need Graphviz and -o); by "
        "default taken from -o's suffix (.png, .svg, .pdf; .dot, .gv; .mmd, .mermaid, .md, .txt)",
    )
    graph.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    graph.set_defaults(handler=_graph_command)
    return parser


def _add_runs_commands(commands: Any, target_help: str) -> None:
    runs = commands.add_parser(
        "runs", help="list, show, resume, delete or prune the runs in a checkpoint file"
    )
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    listing = runs_commands.add_parser("list", help="one line per run (reads, never writes)")
    listing.add_argument("checkpoint", metavar="FILE")
    listing.add_argument("--json", action="store_true", help="a JSON array, one object per run")
    listing.set_defaults(handler=_runs_list)
    show = runs_commands.add_parser(
        "show", help="a run's state, batches, questions, error and steps (reads, never writes)"
    )
    show.add_argument("checkpoint", metavar="FILE")
    show.add_argument("run_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="a JSON object")
    show.set_defaults(handler=_runs_show)
    resume = runs_commands.add_parser("resume", help="run a run again from where it stopped")
    resume.add_argument("checkpoint", metavar="FILE")
    resume.add_argument("run_id", metavar="ID")
    resume.add_argument(
        "--target", metavar="TARGET", help=f"{target_help} (or --trust: the one it started with)"
    )
    _add_nodes_option(resume)
    resume.add_argument(
        "--trust",
        action="store_true",
        help="take the target and serializer recorded in FILE (importing the target and "
        "loading a pickle run code: only for files you trust)",
    )
    resume.add_argument(
        "--backend", choices=BACKENDS, help="the event loop (default: the one it started with)"
    )
    resume.add_argument("--progress", action="store_true", help="show a progress bar per batch")
    _add_output_options(resume)
    resume.add_argument(
        "--answers",
        metavar="JSON",
        help='answers to a paused run\'s questions, a JSON object: \'{"q-1a2b...": "yes"}\'',
    )
    _add_durable_options(resume, resuming=True)
    resume.set_defaults(handler=_runs_resume)
    delete = runs_commands.add_parser("delete", help="delete a run (not a live one)")
    delete.add_argument("checkpoint", metavar="FILE")
    delete.add_argument("run_id", metavar="ID")
    delete.set_defaults(handler=_runs_delete)
    prune = runs_commands.add_parser(
        "prune", help="delete the runs not updated for a while (live runs are kept)"
    )
    prune.add_argument("checkpoint", metavar="FILE")
    prune.add_argument(
        "--older-than",
        metavar="AGE",
        required=True,
        help="how long since a run was last updated: 30s, 15m, 12h, 7d or 2w",
    )
    prune.add_argument(
        "--status", choices=_PRUNABLE, help="only the runs in this state (default: any)"
    )
    prune.set_defaults(handler=_runs_prune)
    _add_sharing_commands(runs_commands, target_help)


def _add_sharing_commands(runs_commands: Any, target_help: str) -> None:
    work = runs_commands.add_parser(
        "work", help="help a run started with --share: run items of its shared batches here"
    )
    work.add_argument("checkpoint", metavar="URL")
    work.add_argument("run_id", metavar="ID")
    work.add_argument("--target", metavar="TARGET", required=True, help=target_help)
    _add_nodes_option(work)
    work.add_argument("--backend", choices=BACKENDS, help="the event loop (default: asyncio)")
    work.add_argument(
        "--serializer", choices=tuple(_SERIALIZERS), help="the run's serializer (default: pickle)"
    )
    work.set_defaults(handler=_runs_work)
    cancel = runs_commands.add_parser(
        "cancel", help="cancel a shared run: its process and helpers stop their items"
    )
    cancel.add_argument("checkpoint", metavar="URL")
    cancel.add_argument("run_id", metavar="ID")
    cancel.set_defaults(handler=_runs_cancel)


def _add_nodes_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--nodes",
        metavar="MODULE",
        help="for a workflow.json TARGET: the module (or path/to/file.py) whose decorated "
        "functions and node classes are the node types (docs/ir.md)",
    )


def _add_durable_options(command: argparse.ArgumentParser, resuming: bool = False) -> None:
    started = " (default: the one it started with)"
    command.add_argument(
        "--durability",
        choices=("async", "sync"),
        help="async: records committed in groups as they come; sync: a step or item counts "
        "as finished once its record is committed" + (started if resuming else " (default: async)"),
    )
    command.add_argument(
        "--serializer",
        choices=tuple(_SERIALIZERS),
        help="how values are saved: pickle (any Python value; loading one runs code) or json "
        "(plain data, safe to load from anywhere)"
        + (
            " (default: with --trust, the one it started with)"
            if resuming
            else " (default: pickle)"
        ),
    )


# -- run --------------------------------------------------------------------------------


def _add_output_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the result JSON here; the flow's own output then stays on stdout "
        "(without -o, stdout holds the result JSON alone and the flow prints to stderr)",
    )
    command.add_argument(
        "--traceback", action="store_true", help="on an error, show the whole traceback"
    )
    command.add_argument(
        "--log", action="store_true", help="log every step to stderr (flowfn.LogObserver)"
    )


@contextlib.contextmanager
def _flow_output(args: argparse.Namespace) -> Iterator[None]:
    """While the flow runs: its prints go to stderr, above any progress bars (stdout is for
    the result JSON alone), unless the result goes to a file; --log logs to stderr."""
    if args.log:
        # Through EchoHandler, so that log lines go above --progress bars, not through them.
        handler = EchoHandler()
        handler.setFormatter(logging.Formatter("flowfn: %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.output is not None:
        yield
        return
    # Whole lines of what it prints go above the --progress bars (on stderr too).
    above_bars = LinesAboveBars(sys.stderr)
    try:
        with contextlib.redirect_stdout(above_bars):
            yield
    finally:
        above_bars.flush()


def _observers(args: argparse.Namespace, *more: Any) -> list[Any] | None:
    observers = [o for o in more if o is not None]
    if args.log:
        observers.append(LogObserver())
    return observers or None


def _run_command(args: argparse.Namespace) -> int:
    """``flowfn run``: load, run, print ``{"action": ..., "shared": {...}}`` as JSON."""
    if args.shared == "-" and args.params == "-":
        raise UsageError("--shared - and --params - both read standard input: give one @FILE")
    shared = {} if args.shared is None else _json_object(*_read_json(args.shared, "--shared"))
    params = None if args.params is None else _json_object(*_read_json(args.params, "--params"))
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageError("--backend trio needs trio: pip install 'flowfn[trio]'")
    node = load_target(args.target, args.nodes)
    flow = node if isinstance(node, Flow) else Flow(node)  # a node runs with its successors
    if params is not None:
        flow.set_params(params)
    summary = RunSummary() if args.summary else None
    checkpoint = None
    if args.checkpoint is not None:
        serializer = _SERIALIZERS[args.serializer or "pickle"]()
        checkpoint = _open_store(args.checkpoint, target=args.target, serializer=serializer)
    else:
        for option in ("run_id", "durability", "serializer"):
            if getattr(args, option) is not None:
                name = "--" + option.replace("_", "-")
                raise UsageError(f"{name} is about a run in a checkpoint: add --checkpoint FILE")
    with _flow_output(args):
        action = flow.run(
            shared,
            backend=args.backend,
            progress=args.progress,
            on_event=_observers(args, summary),
            checkpoint=checkpoint,
            run_id=args.run_id,
            durability=args.durability,
            share=args.share,
        )
    if summary is not None:
        print(summary, file=sys.stderr)
    _print_result(action, shared, args.output)
    return 0


def _print_result(action: Any, shared: Any, output: str | None = None) -> None:
    if isinstance(action, Paused):  # waiting for answers: what to answer, and how
        questions = [
            {"id": q.id, "question": q.payload, "node": q.node, "item": q.item}
            for q in action.questions
        ]
        result: dict[str, Any] = {"paused": action.run_id, "questions": questions}
    else:
        result = {"action": action, "shared": shared}
    text = json.dumps(_jsonable(result), indent=2, default=_json_default, ensure_ascii=False)
    if output is None:
        print(text)
        return
    try:
        Path(output).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output!r}: {exc.strerror or exc}") from None


def _read_json(value: str, option: str) -> tuple[str, str]:
    """The JSON text an option names, as curl and the GitHub CLI read it: ``-`` reads
    standard input, ``@FILE`` a file, anything else is the JSON itself; with the name to
    give it in errors (``--shared @input.json``)."""
    if value == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError(f"{option} - reads JSON from standard input: pipe it in")
        return sys.stdin.read(), f"{option} - (standard input)"
    if not value.startswith("@"):
        return value, option
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8"), f"{option} {value}"
    except FileNotFoundError:
        where = f"no file {str(path)!r} (looked in {os.getcwd()})"
        raise UsageError(f"{option} {value}: {where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UsageError(f"{option} {value}: cannot read {str(path)!r}: {reason}") from None


# The notes flowfn puts on an item's or a node's exception (names are reprs: '...' or "...").
_NAME = r"""(?:'.*'|".*")"""
_ITEM_NOTE = re.compile(
    rf"flowfn: (?:item (?P<item>\d+)|branch (?P<branch>{_NAME})) of .*? (?P<node>{_NAME})$"
)
_NODE_NOTE = re.compile(rf"flowfn: in node (?P<node>{_NAME}) of flow {_NAME}$")


def _json_default(value: Any) -> Any:
    """How the result JSON holds what JSON cannot: an exception (a failure kept by
    ``errors="collect"``) as an object, anything else as its repr."""
    if isinstance(value, BaseException):
        return _error_object(value)
    return repr(value)


def _error_object(exc: BaseException) -> dict[str, Any]:
    """``{"error": "ValueError", "message": ..., "node": ..., "item": ...}``: the type (as
    users import it), the message, and the node and item flowfn's notes name (``None`` when
    unknown); a failed branch of a Parallel node adds ``"branch"``."""
    name = type(exc).__qualname__
    if type(exc).__module__ != "builtins":
        name = f"{_public_module(type(exc))}.{name}"
    found: dict[str, Any] = {"error": name, "message": str(exc), "node": None, "item": None}
    for note in getattr(exc, "__notes__", ()):  # the innermost first: where it failed
        item = _ITEM_NOTE.match(str(note))
        if item is not None:
            found["node"] = ast.literal_eval(item["node"])
            if item["branch"] is None:
                found["item"] = int(item["item"])
            else:
                found["branch"] = ast.literal_eval(item["branch"])
            break
        in_node = _NODE_NOTE.match(str(note))
        if in_node is not None and found["node"] is None:
            found["node"] = ast.literal_eval(in_node["node"])
    return found


# -- runs -------------------------------------------------------------------------------


_SERIALIZERS: dict[str, type[Serializer]] = {"pickle": PickleSerializer, "json": JSONSerializer}
_PRUNABLE = ("finished", "failed", "interrupted", "paused", "crashed", "cancelled")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _open_store(checkpoint: str, **options: Any) -> _RunsStore:
    """The store ``checkpoint`` names: a ``postgresql://`` (or ``postgres://``) URL, or an
    SQLite file. Every ``runs`` command opens its store here."""
    if checkpoint.startswith(("postgresql://", "postgres://")):
        try:
            from .persistence.postgres import PostgresStore
        except FlowError as exc:  # psycopg is missing
            raise UsageError(str(exc)) from None
        try:
            return PostgresStore(checkpoint, **options)
        except ValueError as exc:  # a malformed URL, a lease that is no number
            raise UsageError(str(exc)) from None
    return SQLiteStore(checkpoint, **options)


def _shown(checkpoint: str) -> str:
    """``checkpoint`` as it may be printed: a URL without its password (its options kept,
    so that a printed command still names the same schema)."""
    if not checkpoint.startswith(("postgresql://", "postgres://")):
        return checkpoint
    from .persistence.postgres import _redacted

    return _redacted(checkpoint, options=True)


def _password_note(checkpoint: str) -> str:
    """Said after a printed command whose URL lost its password, else nothing."""
    if not checkpoint.startswith(("postgresql://", "postgres://")):
        return ""
    from .persistence.postgres import _secrets

    if not _secrets(checkpoint):
        return ""
    return " (the URL's password is left out: libpq takes it from PGPASSWORD or ~/.pgpass)"


def _inspect(path: str) -> _RunsStore:
    """The checkpoint ``path``, opened read-only: inspecting never writes into it, and
    never unpickles anything from it. A ``UsageError`` if it is not a readable checkpoint."""
    store = _open_store(path, read_only=True)
    try:
        store.runs()
    except FlowError as exc:
        raise UsageError(str(exc)) from None
    return store


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _runs_list(args: argparse.Namespace) -> int:
    """``flowfn runs list FILE``: one line per run, oldest first, under a header."""
    runs = _inspect(args.checkpoint).runs()
    if args.json:
        print(json.dumps([run._asdict() for run in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs in {_shown(args.checkpoint)}")
        return 0
    header = ("RUN ID", "STATE", "UPDATED", "FLOW", "STEPS", "ITEMS", "ERROR")
    rows = [
        (run.run_id, run.state, _when(run.updated), run.flow, str(run.steps), str(run.items),
         run.error or "")
        for run in runs
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


def _run_info(store: _RunsStore, run_id: str) -> RunInfo:
    runs = store.runs()
    for run in runs:
        if run.run_id == run_id:
            return run
    known = ", ".join(run.run_id for run in runs) or "none"
    where = str(getattr(store, "path", store))
    raise UsageError(f"no run {run_id!r} in {where!r} (its runs: {known})")


def _resume_command(checkpoint: str, run: RunInfo) -> str:
    """The command that resumes ``run`` as it was started, with every value spelled out
    (nothing is taken from the file unless the user says so)."""
    from shlex import quote

    parts = ["flowfn", "runs", "resume", quote(_shown(checkpoint)), quote(run.run_id)]
    parts += ["--target", quote(run.target) if run.target else "<module:name>"]
    parts += ["--serializer", quote(run.serializer)]
    if run.backend:
        parts += ["--backend", quote(run.backend)]
    if run.durability:
        parts += ["--durability", quote(run.durability)]
    return " ".join(parts)


def _state_line(run: RunInfo) -> str:
    if run.state == "live":
        return f"live ({run.holder or 'another process'})"
    if run.state == "crashed":
        return "crashed (recorded as running, but no process holds it)"
    return run.state


def _runs_show(args: argparse.Namespace) -> int:
    """``flowfn runs show FILE ID``: the run's state, batches, questions, error and steps."""
    store = _inspect(args.checkpoint)
    run = _run_info(store, args.run_id)
    with _readable(store):
        steps = store.steps(run.run_id)
        batches = store.batches(run.run_id)
        questions = store.questions(run.run_id) if run.state == "paused" else None
    resume = None if run.state in ("live", "finished") else _resume_command(args.checkpoint, run)
    if args.json:
        shown = {
            **run._asdict(),
            "step_records": [
                {"position": list(position), "node": node, "action": action, "done": done}
                for _, position, node, action, done in steps
            ],
            "batches": [{**b._asdict(), "position": list(b.position)} for b in batches],
            "questions": questions,
            "resume": resume,
        }
        print(json.dumps(_jsonable(shown), indent=2, default=repr))
        return 0
    print(f"run {run.run_id}: {_state_line(run)}, flow {run.flow}, started {_when(run.created)}")
    how = f"serializer {run.serializer}"
    if run.backend:
        how += f", backend {run.backend}, durability {run.durability or 'async'}"
    print(f"target: {run.target or '(not recorded)'} ({how})")
    if run.error:
        ended = run.state in ("failed", "interrupted", "cancelled")
        print(f"{'error' if ended else 'last error'}: {run.error}")
    _print_steps(steps, batches)
    if run.state == "paused":
        _print_questions(questions, resume, args.checkpoint, run)
    elif resume is not None:
        print(f"resume with: {resume}{_password_note(args.checkpoint)}")
    return 0


@contextlib.contextmanager
def _readable(store: _RunsStore) -> Iterator[None]:
    try:
        yield
    except FlowError as exc:
        raise UsageError(str(exc)) from None


def _print_steps(steps: list[tuple[Any, ...]], batches: list[Any]) -> None:
    in_batches = {tuple(batch.position) for batch in batches}
    for _, position, node, action, done in steps:
        if not done and tuple(position) in in_batches:
            continue  # a batch in progress: its own line below says how far it is
        place = ".".join(str(step) for step in position) or "-"
        what = f"-> {action or 'default'}" if done else "(in progress)"
        print(f"  step {place:<8} {node} {what}")
    for batch in batches:
        place = ".".join(str(step) for step in batch.position) or "-"
        if batch.finished:
            counted = "all items finished"
        else:
            known = "?" if batch.total is None else str(batch.total)
            counted = f"{batch.recorded} of {known} items recorded"
        print(f"  batch {place:<7} {batch.node}: {counted}")


def _print_questions(
    questions: list[dict[str, Any]] | None, resume: str | None, checkpoint: str, run: RunInfo
) -> None:
    if questions is None:
        print("  (its questions are kept only serialised, in a checkpoint of format 1)")
    for question in questions or ():
        node, item = question["node"], question["item"]
        where = node if item is None else f"{node}, item {item}"
        payload = json.dumps(_jsonable(question["question"]), default=repr)
        print(f"  question {question['id']} ({where}): {payload}")
    print(
        f"waiting for answers: {resume} --answers '{{\"<question id>\": ...}}'"
        f"{_password_note(checkpoint)}"
    )


def _runs_resume(args: argparse.Namespace) -> int:
    """``flowfn runs resume FILE ID``: run it again; it goes on where it stopped."""
    run = _run_info(_inspect(args.checkpoint), args.run_id)
    target = args.target or (run.target if args.trust else None)
    # A JSON checkpoint is safe to load from anywhere; a pickle runs code.
    trusted = args.trust or run.serializer == "json"
    serializer = args.serializer or (run.serializer if trusted else None)
    if target is None or serializer is None:
        raise UsageError(_untrusted(args.checkpoint, run))
    if serializer not in _SERIALIZERS:
        raise UsageError(
            f"run {run.run_id!r} was saved with the {serializer!r} serializer, which the "
            f"command line does not know; resume it from Python with that serializer"
        )
    backend = args.backend or run.backend
    durability = args.durability or run.durability
    _check_recorded(args.checkpoint, run, backend, durability)
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageError("this run is on trio, which is not installed: pip install 'flowfn[trio]'")
    node = load_target(target, args.nodes)
    flow = node if isinstance(node, Flow) else Flow(node)
    answers = None if args.answers is None else _json_object(args.answers, "--answers")
    store = _open_store(args.checkpoint, target=target, serializer=_SERIALIZERS[serializer]())
    with _readable(store):  # can it be written (read-only, full disk)? before importing
        store.runs()
    shared: dict[str, Any] = {}
    with _flow_output(args):
        action = flow.run(
            shared,
            backend=backend,
            progress=args.progress,
            on_event=_observers(args),
            checkpoint=store,
            run_id=run.run_id,
            answers=answers,
            durability=cast("Durability | None", durability),
            share=run.share,  # as it started: its helpers may be waiting
        )
    _print_result(action, shared, args.output)
    return 0


def _check_recorded(
    checkpoint: str, run: RunInfo, backend: str | None, durability: str | None
) -> None:
    """A ``UsageError`` if the backend or durability to resume with (the run's own, unless
    given) is not one flowfn knows: a file changed by hand, or by another program."""
    for what, value, known in (
        ("backend", backend, ("asyncio", "trio")),
        ("durability", durability, ("async", "sync")),
    ):
        if value is not None and value not in known:
            raise UsageError(
                f"run {run.run_id!r} in {_shown(checkpoint)!r} records {what} {value!r}, "
                f"which flowfn does not know ({' or '.join(known)}); the file was changed "
                f"by hand or by another program: give --{what} yourself"
            )


def _untrusted(checkpoint: str, run: RunInfo) -> str:
    """Why ``runs resume`` will not take the target and serializer from the file alone."""
    command = _resume_command(checkpoint, run) + _password_note(checkpoint)
    where = _shown(checkpoint)
    if run.target is None:
        return (
            f"run {run.run_id!r} records no target (it was started from Python, with a flow "
            f"that is not at the top level of a module): name its flow, as in `{command}`"
        )
    return (
        f"run {run.run_id!r} in {where!r} records target {run.target!r} and serializer "
        f"{run.serializer!r}; resuming imports that target and loads the file's values, "
        f"which runs code. If you trust {where!r}, add --trust; or give them yourself: "
        f"{command}"
    )


def _writable(path: str) -> _RunsStore:
    """The checkpoint ``path`` for deleting runs: checked read-only first, so a file that
    is not a checkpoint is reported, not turned into one."""
    _inspect(path)
    return _open_store(path)


def _runs_delete(args: argparse.Namespace) -> int:
    """``flowfn runs delete FILE ID``: delete a run that is not live."""
    store = _writable(args.checkpoint)
    try:
        deleted = store.delete(args.run_id)
    except FlowError as exc:
        raise UsageError(str(exc)) from None
    if not deleted:
        _run_info(store, args.run_id)  # says which runs there are
    print(f"deleted run {args.run_id} from {_shown(args.checkpoint)}")
    return 0


def _runs_prune(args: argparse.Namespace) -> int:
    """``flowfn runs prune FILE --older-than AGE [--status S]``: delete old runs."""
    age = _age(args.older_than)
    store = _writable(args.checkpoint)
    try:
        deleted = store.prune(age, status=args.status)
    except FlowError as exc:
        raise UsageError(str(exc)) from None
    what = f"{args.status} runs" if args.status else "runs"
    if not deleted:
        print(f"no {what} older than {args.older_than} in {_shown(args.checkpoint)}")
        return 0
    print(f"deleted {len(deleted)} {what} older than {args.older_than}: {', '.join(deleted)}")
    return 0


def _postgres_url(checkpoint: str, command: str) -> str:
    if not checkpoint.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"flowfn runs {command} works on runs shared through PostgreSQL (run --share "
            f"--checkpoint postgresql://...); {checkpoint!r} is not a postgresql:// URL"
        )
    _open_store(checkpoint)  # a clear error if psycopg is missing or the URL is malformed
    return checkpoint


def _runs_work(args: argparse.Namespace) -> int:
    """``flowfn runs work URL ID --target T``: run items of a shared run until it ends."""
    from .persistence import work

    url = _postgres_url(args.checkpoint, "work")
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageError("--backend trio needs trio: pip install 'flowfn[trio]'")
    flow = load_target(args.target, args.nodes)
    serializer = _SERIALIZERS[args.serializer or "pickle"]()
    ran = work(url, args.run_id, flow, serializer=serializer, backend=args.backend or "asyncio")
    print(f"ran {ran} items of run {args.run_id}")
    return 0


def _runs_cancel(args: argparse.Namespace) -> int:
    """``flowfn runs cancel URL ID``: cancel a running shared run."""
    from .persistence import cancel

    url = _postgres_url(args.checkpoint, "cancel")
    try:
        cancelled = cancel(url, args.run_id)
    except FlowError as exc:
        raise UsageError(str(exc)) from None
    if not cancelled:
        raise UsageError(f"run {args.run_id!r} in {_shown(url)} is not running")
    print(f"cancelled run {args.run_id} in {_shown(url)}")
    return 0


def _age(text: str) -> float:
    """``7d`` (s, m, h, d, w) in seconds, or a ``UsageError``."""
    number, unit = text[:-1], text[-1:]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _AGE_UNITS or value < 0:
        raise UsageError(
            f"--older-than {text!r} must be a number and a unit, s, m, h, d or w: 30s, 15m, "
            f"12h, 7d, 2w"
        )
    return value * _AGE_UNITS[unit]


def _json_object(text: str, option: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or a ``UsageError`` saying what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON ({exc}): {text!r:.60}") from None
    if not isinstance(value, dict):
        raise UsageError(
            f"{option} must be a JSON object, such as {_EXAMPLE}, "
            f"got a JSON {_json_type(value)}: {text!r:.60}"
        )
    return value


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), "null")


def _jsonable(value: Any, _path: frozenset[int] = frozenset()) -> Any:
    """``value`` made printable by ``json.dumps(..., default=repr)``: mapping keys that JSON
    cannot hold (tuples, ...) become their repr, and a container inside itself ``"<cycle>"``.
    """
    if not isinstance(value, (Mapping, list, tuple)):
        return value
    if id(value) in _path:
        return "<cycle>"
    path = _path | {id(value)}
    if isinstance(value, Mapping):
        return {_json_key(key): _jsonable(item, path) for key, item in value.items()}
    return [_jsonable(item, path) for item in value]


def _json_key(key: Any) -> Any:
    return key if key is None or isinstance(key, (str, int, float, bool)) else repr(key)


# -- graph ------------------------------------------------------------------------------


def _graph_command(args: argparse.Namespace) -> int:
    """``flowfn graph``: print or write the flow's picture as Mermaid, DOT or PNG."""
    from ._observe.graph import to_dot, to_mermaid

    fmt = args.format or _format_of(args.output)
    if fmt in _RENDERED and not args.output:
        raise UsageError(f"--format {fmt} writes a file: add -o FILE.{fmt}")
    node = load_target(args.target, args.nodes)
    if fmt in _RENDERED:
        _render(to_dot(node), args.output, fmt)
        return 0
    text = to_mermaid(node) if fmt == "mermaid" else to_dot(node)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    return 0


def _format_of(output: str | None) -> str:
    """The picture format ``-o FILE`` asks for by its suffix (Mermaid text without -o)."""
    if output is None:
        return "mermaid"
    suffix = Path(output).suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    known = ", ".join(sorted(_SUFFIX_FORMATS))
    what = f"a {suffix!r} file" if suffix else "a file without a suffix"
    raise UsageError(
        f"-o {output!r}: flowfn does not know what to write into {what}; "
        f"name the file with one of {known}, or give --format"
    )


def _version() -> str:
    from . import __version__

    return __version__


def _render(dot_text: str, path: str, fmt: str) -> None:
    """Render ``dot_text`` to the ``fmt`` (png, svg, pdf) file ``path`` with Graphviz."""
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(
            f"--format {fmt} needs Graphviz's `dot` command, which is not on PATH: install "
            f"Graphviz (apt-get install graphviz; brew install graphviz on macOS), or write "
            f"DOT text with --format dot and render it elsewhere"
        )
    done = subprocess.run(
        [dot, f"-T{fmt}", "-o", path], input=dot_text.encode(), capture_output=True, check=False
    )
    message = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        last = message.splitlines()[-1] if message else "no message"
        raise UsageError(f"dot could not write {path!r} (exit code {done.returncode}): {last}")
    if message:  # warnings: the picture is written, but say what Graphviz complained about
        print(message, file=sys.stderr)


# -- loading TARGET ---------------------------------------------------------------------


def load_target(target: str, nodes: str | None = None) -> BaseNode:
    """The flow or node that ``target`` (``module:name`` or ``path/to/file.py:name``) names,
    or the flow a workflow document ``target`` (``*.json``) describes, its node types taken
    from the module ``nodes`` (a module name or a .py path; the only code imported).

    ``name`` may be dotted (``module:Factory.flow``). A file is run as a module (its
    ``if __name__ == "__main__"`` block does not run) with its folder first on
    ``sys.path``, as ``python file.py`` would have it; a module is imported with the
    current folder on ``sys.path``. Raises ``UsageError`` naming what is missing.
    """
    if target.endswith(".json"):
        return _load_document(target, nodes)
    if nodes is not None:
        raise UsageError(f"--nodes is for a workflow.json TARGET, not {target!r}")
    where, colon, name = target.rpartition(":")
    if not colon or not where or not name:
        raise UsageError(
            f"TARGET {target!r} must be module:name or path/to/file.py:name, "
            f"for example examples/translate.py:flow"
        )
    module = _import_file(where) if _is_path(where) else _import_module(where, name)
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{where} has no attribute {name!r}; {_what_is_there(module)}")
        obj = getattr(obj, part)
    if not isinstance(obj, BaseNode):
        raise UsageError(f"{target} is {_describe(obj)}, not a flow or a node: {_fix(obj)}")
    return obj


def _load_document(target: str, nodes: str | None) -> BaseNode:
    from ._dsl.decorators import FunctionBatchFlow, FunctionNode
    from ._dsl.ir import from_ir

    if nodes is None:
        raise UsageError(
            f"{target} is a workflow document: add --nodes MODULE, the module whose decorated "
            f"functions are its node types"
        )
    module = _import_file(nodes) if _is_path(nodes) else _import_module(nodes, "NAME")
    registry = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, (FunctionNode, FunctionBatchFlow))
        or (
            isinstance(value, type)
            and issubclass(value, BaseNode)
            and value.__module__ == module.__name__
        )
    }
    if not Path(target).is_file():
        raise UsageError(f"no file {target!r} (looked in {os.getcwd()})")
    try:
        return from_ir(target, nodes=registry)
    except FlowError as exc:
        raise UsageError(f"{exc} (node types from {nodes})") from None


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _import_file(where: str) -> ModuleType:
    path = Path(where)
    if not path.is_file():
        hint = "" if where.endswith(".py") else "; a file's path ends in .py"
        raise UsageError(f"no file {where!r} (looked in {os.getcwd()}){hint}")
    name = _FILE_MODULE + path.stem  # not the stem: a file named json.py would shadow json
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {where!r} as Python: name a .py file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # so pickle, dataclasses and typing find the module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        del sys.modules[name]
        raise UsageError(f"importing {where!r} failed: {exc}; install it") from None
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_module(where: str, name: str) -> ModuleType:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` has it; console scripts do not
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (where == exc.name or where.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {where!r}: check the spelling, install it, or run flowfn "
                f"from the folder that holds it (for a file, write path/to/file.py:{name})"
            ) from None
        raise UsageError(f"importing {where!r} failed: {exc}; install it") from None


def _what_is_there(module: ModuleType) -> str:
    names = [key for key, value in vars(module).items() if isinstance(value, BaseNode)]
    if not names:
        return "it defines no flow or node at the top level"
    return f"its flows and nodes: {', '.join(names)}"


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    if isinstance(obj, ModuleType):
        return f"the module {obj.__name__}"
    return f"a {type(obj).__name__}"


def _fix(obj: Any) -> str:
    if isinstance(obj, type) and issubclass(obj, BaseNode):
        return f"name an instance, for example `flow = Flow({obj.__name__}())` in the module"
    if inspect.isroutine(obj):
        return "decorate the function with @node, or name the flow that holds it"
    return "name a Flow, a node, or a function decorated with @node"
