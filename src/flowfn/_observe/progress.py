"""Progress bars for batches (rich, tqdm or text), and printing and logging above them.

:class:`Progress` is an observer (``run(progress=True)`` adds one); :func:`echo`,
:class:`EchoHandler` and :class:`LinesAboveBars` send text above the bars a run draws on
a terminal, from any thread.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TextIO

from .._engine.errors import FlowError
from .._engine.events import Event

__all__ = ["EchoHandler", "LinesAboveBars", "Progress", "echo"]


@dataclass
class _Bar:
    total: int | None
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    retries: int = 0
    failed_branches: list[str] = field(default_factory=list)  # of a Parallel node, by name
    ended: bool = False  # finished or stopped: no ETA any more
    drawn: float = 0.0
    handle: Any = None  # the renderer's own bar: a tqdm, a rich task id

    def rate(self) -> float | None:
        """Items per second so far, once an item has finished (until then it is unknown)."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if self.done and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds until the last item, while the batch runs and its rate and total are known."""
        rate = self.rate()
        if self.ended or rate is None or self.total is None or self.done >= self.total:
            return None
        return (self.total - self.done) / rate

    def counts(self) -> str:
        """``"1 failed (weather), 2 retries"``: the failures (naming failed branches) and
        the retries of the items so far."""
        names = f" ({', '.join(self.failed_branches)})" if self.failed_branches else ""
        retries = "1 retry" if self.retries == 1 else f"{self.retries} retries"
        return f"{self.failed} failed{names}, {retries}"

    def speed(self) -> str:
        """``"3.1 items/s, ETA 0:04"``: the rate and, while it runs, the time left."""
        rate, eta = self.rate(), self.eta()
        shown = "? items/s" if rate is None else f"{rate:.1f} items/s"
        return shown if eta is None else f"{shown}, ETA {_clock(eta)}"


Renderer = Literal["auto", "rich", "tqdm", "text"]

# Guards the bars, the shared rich displays and _showing: events arrive on the thread that
# runs the flow (or its sub-flows' threads), echo() and prints from any thread. Never held
# while text is handed to tqdm: a thread inside tqdm.write holds tqdm's lock when its
# print reaches flowfn, and the two locks taken in both orders would deadlock.
_lock = threading.RLock()

# A run refused at its start (this Progress shows another): its run_end is not ours.
_refused: ContextVar[Progress | None] = ContextVar("flowfn_refused_progress", default=None)


class Progress:
    """Progress bars for batches and parallel batches: done/total, failures, retries, rate
    (items/s) and, once the rate is known, the time left (ETA).

    ``renderer="auto"`` draws on a terminal with ``rich`` when it is installed (``pip
    install 'flowfn[rich]'``), else ``tqdm`` (``flowfn[progress]``), else a text line
    redrawn in place (``\\r``); without a terminal, one final text line per batch.
    ``"rich"``, ``"tqdm"`` or ``"text"`` asks for one (an :class:`ImportError` naming the
    extra if it is missing). Bars are redrawn at most ``per_second`` times a second.

    A finished batch leaves one final line; a batch stopped by a failure or a cancellation
    gets it too, ``(stopped)``, with the failed item counted. To print while bars are
    shown, use :func:`flowfn.echo` (or this observer's :meth:`write`), and to log,
    :class:`flowfn.EchoHandler`: the text goes above the bars instead of through them.
    Safe to use from worker threads while the flow runs; runs that draw rich bars on the
    same stream at once share one display. Starts no thread of its own. One Progress shows
    one run at a time: a run that starts while it shows another gets a
    :class:`~flowfn.FlowError` (``progress=True`` makes a Progress per run).
    """

    #: The events it draws from: no step starts or ends, so its runs walk at full speed.
    kinds = frozenset(
        ("run_start", "run_end", "batch_start", "batch_end", "item_end", "item_error")
    ) | {"retry", "node_error"}

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        per_second: float = 10,
        renderer: Renderer = "auto",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = 1.0 / per_second
        self.bars: dict[str, _Bar] = {}
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.renderer = _pick(renderer, self.tty)
        self._display: _RichDisplay | None = None  # while this run's rich bars are shown

    def __repr__(self) -> str:
        return f"Progress(renderer={self.renderer!r}, bars={len(self.bars)})"

    def write(self, text: str) -> None:
        """Print ``text`` (a line) above the bars being drawn, and draw them again."""
        if self.renderer == "tqdm" and self.bars:
            from tqdm import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]

            tqdm.write(text, file=self.stream)  # under tqdm's own lock, never flowfn's
            return
        with _lock:
            display = self._display
            if display is not None:
                # Under flowfn's lock too: a bar that finishes meanwhile (printed, then taken
                # out of the live area) must not interleave with this print, or rich's live
                # area loses track of its height and a finished bar's row is erased.
                display.print(text)
                return
            if self.tty and self.bars:
                self.stream.write("\r\033[K")  # clear the bar's line, then put it back below
            self.stream.write(text + "\n")
            if self.tty:
                for where, bar in list(self.bars.items()):
                    self._draw(where, bar)
            self.stream.flush()

    def __call__(self, event: Event) -> None:
        with _lock:
            self._on(event)

    def _on(self, event: Event) -> None:
        kind = event.kind
        if kind in ("item_end", "item_error"):
            current = self.bars.get(event.where)
            if current is None:
                return
            current.done += 1
            if kind == "item_error":
                current.failed += 1
                if event.branch is not None:
                    current.failed_branches.append(event.branch)
            if self.renderer == "tqdm":
                current.handle.update(1)
                if kind == "item_error":
                    _tqdm_counts(current)
            elif self.tty and time.monotonic() - current.drawn >= self.interval:
                self._draw(event.where, current)
        elif kind == "retry":
            retried = self._bar_of(event.where)
            if retried is not None:
                retried.retries += 1
                if self.renderer == "tqdm":
                    _tqdm_counts(retried)
        elif kind == "batch_start":
            bar = self.bars[event.where] = _Bar(event.total)
            self._start(event.where, bar)
        elif kind in ("batch_end", "node_error"):  # a failed batch ends with its node
            finished = self.bars.pop(event.where, None)
            if finished is not None:
                self._finish(event.where, finished, stopped=kind == "node_error")
        elif kind == "run_start":
            if self in _showing:
                _refused.set(self)
                raise FlowError(
                    f"{event.node}: this Progress already shows another run that has not "
                    f"ended. Give each run its own Progress() (progress=True does); a run "
                    f"nested in a step of that run reports to it without on_event="
                )
            _showing.append(self)
        elif kind == "run_end":
            if _refused.get() is self:  # the end of the run refused above: not ours
                _refused.set(None)
                return
            try:
                for where, bar in list(self.bars.items()):  # stopped early: say so
                    self._finish(where, bar, stopped=True)
            finally:  # even if the terminal went away: nothing of this run stays behind
                self.bars.clear()
                self._release_display()
                if self in _showing:
                    _showing.remove(self)

    def line(self, where: str, bar: _Bar) -> str:
        """The text of one plain-text bar:
        ``"where: 40% 2/5 done, 0 failed, 1 retry, 3.1 items/s, ETA 0:01"`` (no ETA once
        the batch has ended, ``? items/s`` until an item has finished)."""
        total = "?" if bar.total is None else str(bar.total)
        percent = f" {100 * bar.done / bar.total:3.0f}%" if bar.total else ""
        return f"{where}:{percent} {bar.done}/{total} done, {bar.counts()}, {bar.speed()}"

    def _bar_of(self, where: str) -> _Bar | None:
        """The bar a retry at ``where`` counts for: its own batch's, else the nearest batch
        around it (a step in a batch flow's run ``fan[2]/Flow/step`` counts for ``fan``)."""
        while where:
            bar = self.bars.get(where) or self.bars.get(_RUN_INDEX.sub("", where))
            if bar is not None:
                return bar
            where = where.rpartition("/")[0]
        return None

    def _live(self) -> bool:
        """Whether bars are being drawn on a terminal right now (text must go above them)."""
        return self._display is not None or (self.tty and bool(self.bars))

    def _start(self, where: str, bar: _Bar) -> None:
        if self.renderer == "tqdm":
            from tqdm import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]

            # tqdm shows the rate (items/s) and the ETA itself; the counts go in its postfix.
            bar.handle = tqdm(total=bar.total, desc=where, file=self.stream, unit=" items")
            _tqdm_counts(bar, refresh=False)
        elif self.renderer == "rich":
            if self._display is None:
                self._display = _RichDisplay.acquire(self.stream)
            bar.handle = self._display.add(where, bar.total)

    def _finish(self, where: str, bar: _Bar, stopped: bool = False) -> None:
        bar.ended = True
        if self.renderer == "tqdm":
            if stopped:
                bar.handle.set_description(f"{where} (stopped)", refresh=False)
            bar.handle.close()
        elif self._display is not None:
            self._display.finish(bar.handle, where, bar, stopped)
            if not self.bars:
                self._release_display()
        else:
            self._draw(where, bar, final=True, stopped=stopped)

    def _draw(self, where: str, bar: _Bar, final: bool = False, stopped: bool = False) -> None:
        bar.drawn = time.monotonic()
        if self._display is not None:
            self._display.update(bar.handle, bar, self.interval)
            return
        text = self.line(where, bar) + (" (stopped)" if stopped else "")
        if self.tty:
            # Clear to the end of the line: a shorter line (the ETA gone) leaves no residue.
            self.stream.write(f"\r{text}\033[K" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _release_display(self) -> None:
        display, self._display = self._display, None
        if display is not None:
            display.release()


class _RichDisplay:
    """One rich live display per stream, shared by the runs drawing bars on it. Running
    bars are drawn live; a finished one is printed above them, once, and leaves the live
    area (so a long run does not pile up rows). Called with ``_lock`` held."""

    _by_stream: ClassVar[dict[int, _RichDisplay]] = {}

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.users, self.refreshed = stream, 0, 0.0
        self.progress = _rich_progress(stream)
        self.progress.start()

    @classmethod
    def acquire(cls, stream: TextIO) -> _RichDisplay:
        display = cls._by_stream.get(id(stream))
        if display is None:
            display = cls._by_stream[id(stream)] = cls(stream)
        display.users += 1
        return display

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            del self._by_stream[id(self.stream)]
            self.progress.stop()  # transient: the live area goes; the printed rows stay

    def add(self, where: str, total: int | None) -> Any:
        from rich.markup import escape

        return self.progress.add_task(escape(where), total=total, counts="", speed="")

    def update(self, task: Any, bar: _Bar, interval: float) -> None:
        self.progress.update(task, completed=bar.done, counts=bar.counts(), speed=bar.speed())
        now = time.monotonic()
        if now - self.refreshed >= interval:  # one limit for the display, not per bar
            self.refreshed = now
            self.progress.refresh()

    def finish(self, task: Any, where: str, bar: _Bar, stopped: bool) -> None:
        from rich.markup import escape

        name = escape(where + (" (stopped)" if stopped else ""))
        self.progress.update(
            task, completed=bar.done, counts=bar.counts(), speed=bar.speed(), description=name
        )
        row = [t for t in self.progress.tasks if t.id == task]
        self.progress.console.print(self.progress.make_tasks_table(row))
        self.progress.remove_task(task)

    def print(self, text: str) -> None:
        self.progress.console.print(
            text, markup=False, highlight=False, emoji=False, soft_wrap=True
        )


_RUN_INDEX = re.compile(r"\[\d+\]$")  # a batch flow's run: ``fan[2]`` belongs to ``fan``


def _tqdm_counts(bar: _Bar, refresh: bool = True) -> None:
    """The failures (naming failed branches) and retries in a tqdm bar's postfix."""
    failed = str(bar.failed)
    if bar.failed_branches:
        failed += f" ({', '.join(bar.failed_branches)})"
    bar.handle.set_postfix(failed=failed, retries=bar.retries, refresh=refresh)


def _clock(seconds: float) -> str:
    """``"0:04"``, ``"12:30"``, ``"2:05:09"``: a duration as a clock shows it."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _pick(renderer: str, tty: bool) -> str:
    if renderer == "auto":
        if not tty:
            return "text"
        return next((name for name in ("rich", "tqdm") if _installed(name)), "text")
    if renderer in ("rich", "tqdm"):
        if not _installed(renderer):
            extra = "rich" if renderer == "rich" else "progress"
            raise ImportError(
                f"Progress(renderer={renderer!r}) needs {renderer}: "
                f"pip install 'flowfn[{extra}]' (or pip install {renderer})"
            )
        return renderer
    if renderer == "text":
        return renderer
    raise ValueError(
        f"Progress: renderer must be 'auto', 'rich', 'tqdm' or 'text', got {renderer!r}"
    )


def _rich_progress(stream: TextIO) -> Any:
    """A rich Progress that draws only when told to: no refresh thread, no stdout capture."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    return RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        # flowfn's own counts, rate and ETA, as the text and tqdm bars show them (rich's
        # columns would estimate the rate their own way, and know nothing of retries).
        TextColumn("{task.fields[counts]}", markup=False),
        TextColumn("{task.fields[speed]}", markup=False),
        console=Console(file=stream),
        auto_refresh=False,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )


# The Progress observers of the runs going on, newest last.
_showing: list[Progress] = []


def _drawing(stream: object = None) -> Progress | None:
    """The newest run's Progress drawing bars on a terminal right now (on ``stream``, if
    given), if any. Takes no lock: a snapshot is enough to choose where a line goes."""
    return next(
        (p for p in reversed(list(_showing)) if p._live() and stream in (None, p.stream)),
        None,
    )


def echo(*values: object, sep: str = " ") -> None:
    """``print(*values)`` that does not garble progress bars: while a run draws bars on a
    terminal (``progress=True`` or a :class:`Progress` observer), the line goes above them;
    otherwise to stdout. Safe to call from worker threads."""
    text = sep.join(str(value) for value in values)
    progress = _drawing()
    if progress is not None:
        progress.write(text)
    else:
        print(text)


class LinesAboveBars(io.TextIOBase):
    """A text stream for ``contextlib.redirect_stdout``: while a run draws progress bars,
    each whole line written to it goes above them (as :func:`echo` does); otherwise text
    goes straight to ``target``. ``flowfn run --progress`` sends the flow's prints here."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self._partial = ""
        self._partial_lock = threading.Lock()  # only around the buffer: never while writing

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        written = len(text)
        progress = _drawing()
        with self._partial_lock:
            if progress is None:
                text, self._partial = self._partial + text, ""
                lines = None
            else:
                *lines, self._partial = (self._partial + text).split("\n")
        if lines is None:
            self.target.write(text)
        else:
            for line in lines:
                progress.write(line)  # type: ignore[union-attr]
        return written

    def flush(self) -> None:
        if _drawing() is None:
            with self._partial_lock:
                text, self._partial = self._partial, ""
            if text:
                self.target.write(text)
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.target.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.target.errors

    @property
    def buffer(self) -> Any:
        """The target's binary stream (bytes written there do not go above the bars)."""
        self.flush()
        return self.target.buffer


class EchoHandler(logging.Handler):
    """A :mod:`logging` handler that writes each record above the progress bars while a run
    draws them on its stream (as :func:`flowfn.echo` does), else to ``stream`` (stderr by
    default). Safe to use from any thread.

    ``logging.basicConfig(handlers=[flowfn.EchoHandler()])`` keeps log lines and bars apart;
    ``flowfn run --log --progress`` uses it.
    """

    def __init__(self, stream: TextIO | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and write it above the bars, or to the stream."""
        try:
            text = self.format(record)
            stream = self.stream if self.stream is not None else sys.stderr
            progress = _drawing(stream)
            if progress is not None:
                progress.write(text)
            else:
                stream.write(text + "\n")
                stream.flush()
        except Exception:
            self.handleError(record)

    def __repr__(self) -> str:
        return f"EchoHandler(level={logging.getLevelName(self.level)})"


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
