"""OpenTelemetry spans of a run, checked with the SDK's in-memory exporter."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from flowfn import AsyncFlow, Flow, node, parallel_batch
from flowfn.otel import OTelObserver


def tracer() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def tree(exporter: InMemorySpanExporter) -> dict[str, str | None]:
    """Each span's name and its parent's name."""
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    return {span.name: (by_id[span.parent.span_id].name if span.parent else None) for span in spans}


@pytest.mark.anyio
async def test_spans_nest_as_the_run_does_with_concurrent_items() -> None:
    @node
    def load(shared: dict[str, Any]) -> None:
        shared["n"] = 0

    @node
    async def work(shared: dict[str, Any], i: int) -> str:
        await anyio.sleep(0.001 * (3 - i))  # the runs finish out of order
        return "done"

    @parallel_batch(flow=Flow(work), limit=3)
    def fan(shared: dict[str, Any]) -> list[dict[str, int]]:
        return [{"i": i} for i in range(3)]

    @parallel_batch(items=lambda shared: [1, 2], into="out")
    async def double(x: int) -> int:
        return 2 * x

    load >> fan >> double
    flow = AsyncFlow(load)
    flow.name = "pipeline"
    spans_tracer, exporter = tracer()
    await flow.run_async({}, on_event=OTelObserver(spans_tracer))

    parents = tree(exporter)
    assert parents["flowfn run pipeline"] is None
    assert parents["node pipeline/load"] == "flowfn run pipeline"
    assert parents["node pipeline/fan"] == "flowfn run pipeline"
    assert parents["batch pipeline/fan"] == "node pipeline/fan"
    for i in range(3):
        assert parents[f"item pipeline/fan[{i}]"] == "batch pipeline/fan"
        assert parents[f"node pipeline/fan[{i}]/Flow"] == f"item pipeline/fan[{i}]"
        assert parents[f"node pipeline/fan[{i}]/Flow/work"] == f"node pipeline/fan[{i}]/Flow"
    assert parents["item pipeline/double[1]"] == "batch pipeline/double"
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["node pipeline/fan[2]/Flow/work"].attributes["flowfn.action"] == "done"
    assert spans["item pipeline/fan[1]"].attributes["flowfn.item"] == 1
    assert spans["batch pipeline/fan"].attributes["flowfn.total"] == 3


@pytest.mark.anyio
async def test_failures_and_retries_are_on_the_spans() -> None:
    attempts: list[int] = []

    @node(retries=1)
    async def flaky(shared: dict[str, Any]) -> None:
        attempts.append(1)
        raise ConnectionError("down")

    spans_tracer, exporter = tracer()
    with pytest.raises(ConnectionError):
        await Flow(flaky).run_async({}, on_event=OTelObserver(spans_tracer))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    step = spans["node Flow/flaky"]
    assert step.status.status_code is StatusCode.ERROR
    assert [e.name for e in step.events] == ["flowfn.retry", "flowfn.fallback", "exception"]
    assert step.events[0].attributes["flowfn.attempt"] == 0
    assert spans["flowfn run Flow"].status.status_code is StatusCode.ERROR
    assert len(attempts) == 2
