"""Ready-made observers for ``run(on_event=...)``: logging, a run summary, progress bars."""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ._events import Event

__all__ = ["LogObserver", "NodeStats", "Progress", "RunSummary"]

_ITEM_INDEX = re.compile(r"\[\d+\]")
_LEVELS = {
    "retry": logging.WARNING,
    "fallback": logging.WARNING,
    "node_error": logging.ERROR,
    "item_error": logging.WARNING,
    "node_end": logging.INFO,
    "batch_end": logging.INFO,
    "run_end": logging.INFO,
}


class LogObserver:
    """Logs every event through :mod:`logging` (logger ``"flowfn"`` by default).

    Errors, retries and fallbacks log at WARNING/ERROR, ends of nodes, batches and runs at
    INFO, starts and items at DEBUG.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("flowfn")

    def __call__(self, event: Event) -> None:
        level = _LEVELS.get(event.kind, logging.DEBUG)
        if not self.logger.isEnabledFor(level):
            return
        details = [
            f"{name}={value}"
            for name, value in (
                ("item", event.item),
                ("attempt", event.attempt),
                ("action", event.action),
                ("total", event.total),
            )
            if value is not None
        ]
        if event.duration is not None:
            details.append(f"took={event.duration:.3f}s")
        if event.error is not None:
            details.append(f"error={event.error!r}")
        self.logger.log(level, "%s %s %s", event.kind, event.where, " ".join(details))

    def __repr__(self) -> str:
        return f"LogObserver(logger={self.logger.name!r})"


@dataclass
class NodeStats:
    """What one node did in a run: steps, retries, failures and time."""

    calls: int = 0
    retries: int = 0
    failures: int = 0
    items: int = 0
    item_failures: int = 0
    total_time: float = 0.0
    max_time: float = 0.0


@dataclass
class RunSummary:
    """An observer that adds up, per node (``where``: flow path and name, the runs of a
    batch flow taken together), its calls, retries, failures, batch items and time.
    ``print(summary)`` shows a table."""

    nodes: dict[str, NodeStats] = field(default_factory=dict)
    duration: float | None = None

    def __call__(self, event: Event) -> None:
        if event.kind == "run_end":
            self.duration = event.duration
            return
        if event.kind in ("run_start", "node_start", "batch_start", "item_start"):
            return
        stats = self.nodes.setdefault(_ITEM_INDEX.sub("", event.where), NodeStats())
        if event.kind in ("node_end", "node_error"):
            stats.calls += 1
            stats.failures += event.kind == "node_error"
            stats.total_time += event.duration or 0.0
            stats.max_time = max(stats.max_time, event.duration or 0.0)
        elif event.kind == "retry":
            stats.retries += 1
        elif event.kind in ("item_end", "item_error"):
            stats.items += 1
            stats.item_failures += event.kind == "item_error"

    def __str__(self) -> str:
        width = max((len(where) for where in self.nodes), default=4)
        lines = [
            f"{'node':<{width}}  calls  retries  failures  items  failed  total s   max s",
        ]
        for where, s in self.nodes.items():
            lines.append(
                f"{where:<{width}}  {s.calls:5}  {s.retries:7}  {s.failures:8}  {s.items:5}  "
                f"{s.item_failures:6}  {s.total_time:7.3f}  {s.max_time:6.3f}"
            )
        if self.duration is not None:
            lines.append(f"run took {self.duration:.3f} s")
        return "\n".join(lines)


@dataclass
class _Bar:
    total: int | None
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    drawn: float = 0.0
    tqdm: object | None = None


class Progress:
    """Progress bars for batches and parallel batches: done/total, failures and rate.

    Uses ``tqdm`` when it is installed and ``stream`` is a terminal (``pip install
    'flowfn[progress]'``), else a text line redrawn in place (``\\r``) on a terminal, at
    most ``per_second`` times a second per batch; without a terminal, one final line per
    batch. A batch stopped by a failure or a cancellation gets its final line too, with the
    failed item counted. To print while bars are shown, use :func:`flowfn.echo` (or this
    observer's :meth:`write`): the text goes above the bars instead of through them.
    Correct under concurrency: events arrive on the event loop's thread, one at a time.
    """

    def __init__(
        self, stream: TextIO | None = None, *, per_second: float = 10, use_tqdm: bool | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = 1.0 / per_second
        self.bars: dict[str, _Bar] = {}
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if use_tqdm is None:
            use_tqdm = tty and _tqdm_installed()
        self.use_tqdm, self.tty = use_tqdm, tty

    def write(self, text: str) -> None:
        """Print ``text`` (a line) above the bars being drawn, and draw them again."""
        if self.use_tqdm and self.bars:
            from tqdm import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]

            tqdm.write(text, file=self.stream)
            return
        if self.tty and self.bars:
            self.stream.write("\r\033[K")  # clear the bar's line, then put it back below
        self.stream.write(text + "\n")
        if self.tty:
            for where, bar in self.bars.items():
                self._draw(where, bar)
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind == "run_start":
            _showing.append(self)
        elif kind == "run_end":
            for where, bar in list(self.bars.items()):  # stopped early: say where it got to
                self._finish(where, bar, stopped=True)
            self.bars.clear()
            if self in _showing:
                _showing.remove(self)
        elif kind == "batch_start":
            bar = self.bars[event.where] = _Bar(event.total)
            if self.use_tqdm:
                from tqdm import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]

                bar.tqdm = tqdm(total=event.total, desc=event.where, file=self.stream)
        elif kind in ("item_end", "item_error"):
            current = self.bars.get(event.where)
            if current is None:
                return
            current.done += 1
            current.failed += kind == "item_error"
            if current.tqdm is not None:
                current.tqdm.update(1)  # type: ignore[attr-defined]
                if kind == "item_error":
                    current.tqdm.set_postfix(failed=current.failed)  # type: ignore[attr-defined]
            elif self.tty and time.monotonic() - current.drawn >= self.interval:
                self._draw(event.where, current)
        elif kind == "batch_end":
            finished = self.bars.pop(event.where, None)
            if finished is not None:
                self._finish(event.where, finished)

    def _finish(self, where: str, bar: _Bar, stopped: bool = False) -> None:
        if bar.tqdm is not None:
            bar.tqdm.close()  # type: ignore[attr-defined]
        else:
            self._draw(where, bar, final=True, stopped=stopped)

    def line(self, where: str, bar: _Bar) -> str:
        """The text of one plain-text bar: ``"where: 40% 2/5 done, 0 failed, 3.1 items/s"``."""
        elapsed = max(time.monotonic() - bar.started, 1e-9)
        total = "?" if bar.total is None else str(bar.total)
        percent = f" {100 * bar.done / bar.total:3.0f}%" if bar.total else ""
        return (
            f"{where}:{percent} {bar.done}/{total} done, {bar.failed} failed, "
            f"{bar.done / elapsed:.1f} items/s"
        )

    def _draw(self, where: str, bar: _Bar, final: bool = False, stopped: bool = False) -> None:
        bar.drawn = time.monotonic()
        text = self.line(where, bar) + (" (stopped)" if stopped else "")
        if self.tty:
            self.stream.write(f"\r{text}" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# The Progress observers of the runs going on, newest last: where echo() prints.
_showing: list[Progress] = []


def echo(*values: object, sep: str = " ") -> None:
    """``print(*values)`` that does not garble progress bars: with a run showing bars
    (``progress=True`` or a :class:`Progress` observer), the line goes above them;
    otherwise to stdout."""
    text = sep.join(str(value) for value in values)
    if _showing:
        _showing[-1].write(text)
    else:
        print(text)


def _tqdm_installed() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
