"""Issue 20, "found on the way" (items 17-22): a failed merge, a consumer's exception from a
stream, an unpicklable result on Dask, option errors of batch flows, OpenTelemetry spans."""

from __future__ import annotations

from typing import Any

import pytest

from flowfn import AsyncFlow, Flow, FlowError, Parallel, node

# -- 17: a merge= that fails changes nothing --------------------------------------------------


@node
async def sets_a(shared: dict[str, Any]) -> None:
    shared["a"] = 1
    shared["log"].append("a")


@node
async def sets_b(shared: dict[str, Any]) -> None:
    shared["b"] = 2
    shared["log"].append("b")


@pytest.mark.anyio
async def test_a_merge_function_that_raises_leaves_the_store_as_it_was() -> None:
    def merge(key: str, original: Any, values: list[Any]) -> Any:
        if key == "log":
            original.extend(x for v in values for x in v[len(original) :])  # in place
            return original
        if key == "b":
            raise ValueError("no rule for b")
        return values[-1]

    shared: dict[str, Any] = {"a": 0, "b": 0, "log": ["start"]}
    with pytest.raises(ValueError, match="no rule for b") as caught:
        await AsyncFlow(Parallel(sets_a, sets_b, merge=merge, into="actions")).run_async(shared)
    assert shared == {"a": 0, "b": 0, "log": ["start"]}
    assert any("merging shared['b']" in n for n in getattr(caught.value, "__notes__", []))


def test_a_refused_append_merge_leaves_the_store_as_it_was_in_a_sync_flow() -> None:
    @node
    def scores(shared: dict[str, Any]) -> None:
        shared["log"].append("scores")
        shared["score"] = 3

    shared: dict[str, Any] = {"log": [], "score": 0}
    with pytest.raises(FlowError, match="merge='append'"):
        Flow(Parallel(sets_a, scores, merge="append")).run(shared)
    assert shared == {"log": [], "score": 0}


# -- 18: the consumer's exception is what `async with flow.stream(...)` raises ----------------


@pytest.mark.anyio
async def test_a_consumers_exception_survives_a_failing_clean_up_of_the_flow() -> None:
    import anyio

    from flowfn import emit, other_errors

    @node
    async def talk(shared: dict[str, Any]) -> None:
        try:
            await emit("hello")
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("clean-up failed")

    async def consume() -> None:
        async with AsyncFlow(talk).stream({}) as output:
            async for value in output:
                assert value == "hello"
                raise ValueError("the consumer failed")

    with pytest.raises(ValueError, match="the consumer failed") as caught:
        await consume()
    (other,) = other_errors(caught.value)
    assert isinstance(other, RuntimeError)
    assert str(other) == "clean-up failed"
    assert any("RuntimeError: clean-up failed" in n for n in caught.value.__notes__)


@pytest.mark.anyio
async def test_a_flows_own_failure_is_still_raised_from_a_stream() -> None:
    from flowfn import emit, other_errors

    @node
    async def fails(shared: dict[str, Any]) -> None:
        await emit(1)
        raise KeyError("the flow failed")

    seen: list[Any] = []

    async def consume() -> None:
        async with AsyncFlow(fails).stream({}) as output:
            async for value in output:
                seen.append(value)

    with pytest.raises(KeyError, match="the flow failed") as caught:
        await consume()
    assert seen == [1]
    assert other_errors(caught.value) == ()
