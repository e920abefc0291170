"""OpenTelemetry traces of flow runs: ``run(shared, on_event=OTelObserver())``.

Extra ``flowfn[otel]`` (``opentelemetry-api`` only: configure an SDK and an exporter in
your application, and the spans go wherever it sends them). One span per run, per step
(a node, a nested flow), per batch and per batch item, nested as the run nests them, also
when items run concurrently (each item's span has its own parent: the batch's span, and a
batch flow's item holds the steps of that run)::

    from opentelemetry import trace
    from flowfn.otel import OTelObserver

    flow.run(shared, on_event=OTelObserver())  # spans of the global tracer provider

Attributes: ``flowfn.node``, ``flowfn.path`` (the flows around it), ``flowfn.item`` (an
item's index), ``flowfn.branch`` (the name of a ``Parallel`` branch, whose span is ``branch
<flow>/<parallel>/<branch>``), ``flowfn.action`` (what a step returned), ``flowfn.total``
(a batch's item count, when known); retries and fallbacks are span events with
``flowfn.attempt`` and the error (on the item's span for a batch item); a failed step, item
or run has status ERROR and the exception recorded. A batch stopped by a failure ends with
its node, and whatever a failure or a cancellation left open ends with the run, with
``flowfn.stopped`` set.

While a step's or an item's code runs, its span is the current span (and the run's span
around the whole run), on asyncio and trio alike, also in the worker threads that run sync
functions: spans that code starts itself (an instrumented HTTP client, an LLM SDK,
``tracer.start_as_current_span``) nest under it, in the run's trace. Functions sent to
other processes (``workers="process"``, Dask, Ray) do not see it.
"""

from __future__ import annotations

import re
from contextvars import Token
from typing import Any

from ._engine.events import Event

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Status, StatusCode
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "flowfn.otel needs OpenTelemetry: pip install 'flowfn[otel]' (opentelemetry-api)"
    ) from exc

__all__ = ["OTelObserver"]

_RUN_OF_BATCH_FLOW = re.compile(r"^(?P<name>.*)\[(?P<index>\d+)\]$")


class OTelObserver:
    """An observer that makes OpenTelemetry spans of a run; see the module documentation.

    ``tracer`` (or ``tracer_provider``) picks where spans go; by default the global
    tracer provider's ``"flowfn"`` tracer. Use one observer per run at a time.
    """

    def __init__(self, tracer: Any = None, *, tracer_provider: Any = None) -> None:
        if tracer is None:
            tracer = trace.get_tracer("flowfn", tracer_provider=tracer_provider)
        self.tracer = tracer
        self._open: dict[tuple[Any, ...], Span] = {}
        # The tokens that made a run's, step's or item's span current, by span key.
        self._current: dict[tuple[Any, ...], Token[Context]] = {}
        self._root: tuple[str, ...] = ()

    def __call__(self, event: Event) -> None:
        key: tuple[Any, ...]
        kind = event.kind
        if kind == "run_start":
            self._root = (event.node,)
            self._start(("run",), f"flowfn run {event.node}", None, event, True)
        elif kind == "run_end":
            # Spans a failure or a cancellation left open end first, children before parents.
            for key in reversed([key for key in self._open if key != ("run",)]):
                self._end(key, event, stopped=True)
            self._end(("run",), event)
            # Spans left current by steps a failure or cancellation stopped are dropped:
            # their tasks are gone, and the run's token already restored what was current.
            self._current.clear()
        elif kind == "node_start":
            key = ("node", event.path, event.node)
            self._start(key, f"node {event.where}", self._parent_of(event.path), event, True)
        elif kind in ("node_end", "node_error"):
            # A batch that failed ends with its node (the engine sends it no batch_end).
            self._end(("batch", event.path, event.node), event, stopped=True)
            self._end(("node", event.path, event.node), event)
        elif kind == "batch_start":
            parent = self._open.get(("node", event.path, event.node))
            key = ("batch", event.path, event.node)
            self._start(key, f"batch {event.where}", parent, event)
        elif kind == "batch_end":
            self._end(("batch", event.path, event.node), event)
        elif kind == "item_start":
            parent = self._open.get(("batch", event.path, event.node))
            key = ("item", event.path, event.node, event.item)
            self._start(key, _item_span_name(event), parent, event, True)
        elif kind in ("item_end", "item_error"):
            self._end(("item", event.path, event.node, event.item), event)
        elif kind in ("retry", "fallback"):
            span = (
                self._open.get(("item", event.path, event.node, event.item))
                or self._open.get(("node", event.path, event.node))
                or self._open.get(("run",))
            )
            if span is not None:
                attributes: dict[str, Any] = {"flowfn.attempt": event.attempt or 0}
                if event.item is not None:
                    attributes["flowfn.item"] = event.item
                if event.error is not None:
                    attributes["exception.type"] = type(event.error).__qualname__
                    attributes["exception.message"] = str(event.error)
                span.add_event(f"flowfn.{kind}", attributes)

    def _parent_of(self, path: tuple[str, ...]) -> Span | None:
        """The span a step at ``path`` belongs to: the run's, a nested flow step's, or the
        item span of the batch flow run it is part of."""
        if not path or path == self._root:
            return self._open.get(("run",))
        last = path[-1]
        match = _RUN_OF_BATCH_FLOW.match(last)
        if match is not None:
            key = ("item", path[:-1], match["name"], int(match["index"]))
            span = self._open.get(key)
            if span is not None:
                return span
        return self._open.get(("node", path[:-1], last)) or self._open.get(("run",))

    def _start(
        self,
        key: tuple[Any, ...],
        name: str,
        parent: Span | None,
        event: Event,
        current: bool = False,
    ) -> None:
        """Start the span of ``key``; ``current``: make it the current span until it ends
        (the event comes from the task that then runs the step's or item's code, and its
        end from the same task: the token is reset where it was set)."""
        context = None if parent is None else trace.set_span_in_context(parent)
        attributes: dict[str, Any] = {
            "flowfn.node": event.node,
            "flowfn.path": "/".join(event.path),
        }
        if event.item is not None:
            attributes["flowfn.item"] = event.item
        if event.branch is not None:
            attributes["flowfn.branch"] = event.branch
        if event.total is not None:
            attributes["flowfn.total"] = event.total
        span = self._open[key] = self.tracer.start_span(
            name, context=context, attributes=attributes
        )
        if current:
            self._current[key] = otel_context.attach(trace.set_span_in_context(span))

    def _end(self, key: tuple[Any, ...], event: Event, stopped: bool = False) -> None:
        span = self._open.pop(key, None)
        token = self._current.pop(key, None)
        if token is not None and not stopped:
            # Reset in the task that set it (a stopped span's task may be gone).
            otel_context.detach(token)
        if span is None:
            return
        if stopped:
            span.set_attribute("flowfn.stopped", True)
        if event.action is not None and not stopped:
            span.set_attribute("flowfn.action", event.action)
        if event.error is not None:
            span.record_exception(event.error)
            span.set_status(
                Status(StatusCode.ERROR, f"{type(event.error).__name__}: {event.error}")
            )
        span.end()


def _item_span_name(event: Event) -> str:
    """``item flow/batch[3]``, or for a branch of a Parallel node ``branch flow/fetch/weather``."""
    if event.branch is not None:
        return f"branch {event.where}/{event.branch}"
    return f"item {event.where}[{event.item}]"
