"""Ready-made observers for ``run(on_event=...)``: logging and a run summary (progress bars
are in :mod:`flowfn._observe.progress`)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from .._engine.events import Event

__all__ = ["LogObserver", "NodeStats", "RunSummary"]

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
                ("branch", event.branch),
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
    #: The events it adds up (the run makes no others for it: see ``Event`` kinds).
    kinds = frozenset(
        ("run_end", "node_end", "node_error", "retry", "item_end", "item_error", "fallback")
    )

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
