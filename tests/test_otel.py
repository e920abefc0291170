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


def orphans(exporter: InMemorySpanExporter) -> list[str]:
    """Spans whose parent never reached the exporter (a span left open)."""
    spans = exporter.get_finished_spans()
    ids = {span.context.span_id for span in spans}
    return [span.name for span in spans if span.parent and span.parent.span_id not in ids]


@pytest.mark.anyio
async def test_a_failed_batch_ends_its_span_and_item_retries_are_on_the_items() -> None:
    @parallel_batch(items=lambda shared: range(4), limit=4, retries=1)
    async def work(i: int) -> int:
        if i == 1:
            raise ValueError("item 1 is bad")
        await anyio.sleep(5 if i else 0)  # item 0 ends; 2 and 3 are cancelled by the failure
        return i

    spans_tracer, exporter = tracer()
    with pytest.raises(ValueError, match="item 1 is bad"):
        await Flow(work).run_async({}, on_event=OTelObserver(spans_tracer))
    assert orphans(exporter) == []
    parents = tree(exporter)
    assert parents["batch Flow/work"] == "node Flow/work"
    assert parents["item Flow/work[1]"] == "batch Flow/work"
    spans = {span.name: span for span in exporter.get_finished_spans()}
    batch = spans["batch Flow/work"]
    assert batch.status.status_code is StatusCode.ERROR
    assert batch.attributes is not None
    assert batch.attributes["flowfn.stopped"] is True
    failed = spans["item Flow/work[1]"]
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["flowfn.retry", "flowfn.fallback", "exception"]
    assert failed.events[0].attributes == {
        "flowfn.attempt": 0,
        "flowfn.item": 1,
        "exception.type": "ValueError",
        "exception.message": "item 1 is bad",
    }
    assert [e.name for e in spans["node Flow/work"].events] == ["exception"]  # not the retries
    assert spans["item Flow/work[0]"].status.status_code is StatusCode.UNSET


@pytest.mark.anyio
async def test_a_cancelled_run_ends_every_span() -> None:
    @parallel_batch(items=lambda shared: range(3), limit=3)
    async def work(i: int) -> None:
        await anyio.sleep(5)

    spans_tracer, exporter = tracer()
    with anyio.move_on_after(0.05) as scope:
        await Flow(work).run_async({}, on_event=OTelObserver(spans_tracer))
    assert scope.cancelled_caught
    assert orphans(exporter) == []
    names = {span.name for span in exporter.get_finished_spans()}
    assert {"flowfn run Flow", "node Flow/work", "batch Flow/work"} <= names


@pytest.mark.anyio
async def test_retries_of_a_batch_flow_run_are_on_that_run_s_span() -> None:
    @node
    async def step(shared: dict[str, Any], k: int) -> None:
        if k == 1:
            raise ValueError("bad run")

    @parallel_batch(flow=Flow(step), retries=1, errors="collect")
    def fan(shared: dict[str, Any]) -> list[dict[str, int]]:
        return [{"k": 0}, {"k": 1}]

    spans_tracer, exporter = tracer()
    await Flow(fan).run_async({}, on_event=OTelObserver(spans_tracer))
    assert orphans(exporter) == []
    spans = {span.name: span for span in exporter.get_finished_spans()}
    run = spans["item Flow/fan[1]"]
    retries = [e for e in run.events if e.name in ("flowfn.retry", "flowfn.fallback")]
    assert [(e.name, e.attributes["flowfn.item"]) for e in retries] == [  # type: ignore[index]
        ("flowfn.retry", 1),
        ("flowfn.fallback", 1),
    ]
    assert run.status.status_code is StatusCode.ERROR
    assert not [e for e in spans["item Flow/fan[0]"].events if e.name == "flowfn.retry"]
    assert not [e for e in spans["node Flow/fan"].events if e.name == "flowfn.retry"]
