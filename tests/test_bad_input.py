"""Bad input gets a clear error, as early as it can be found, naming the function."""

from __future__ import annotations

import math
from typing import Any

import pytest

from flowfn import AsyncNode, BatchNode, Flow, FlowError, Node, batch, node, parallel_batch

pytestmark = pytest.mark.anyio


# -- batch items ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["fr", b"fr"])
def test_items_that_are_a_string_are_refused(value: Any) -> None:
    @batch(items="lang", into="out")
    def translate(lang: str) -> str:
        return lang

    with pytest.raises(TypeError, match=r"translate: .*items .*'lang'.* got (str|bytes)") as e:
        Flow(translate).run({"lang": value})
    assert "a list" in str(e.value)


async def test_parallel_items_that_are_a_string_are_refused(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: "abc", into="out")
    async def each(letter: str) -> str:
        return letter

    with pytest.raises(TypeError, match=r"each: .* got str 'abc'"):
        await Flow(each).run_async({})


def test_a_class_batch_node_whose_prep_returns_a_string_is_refused() -> None:
    class Letters(BatchNode):
        def prep(self, shared: Any) -> Any:
            return "abc"

    with pytest.raises(TypeError, match=r"Letters: .* got str 'abc'"):
        Letters().run({})


def test_items_given_as_a_list_says_a_key_or_a_function() -> None:
    with pytest.raises(TypeError, match=r"items= must be a shared-store key .* or a function"):

        @batch(items=["fr", "de"])  # type: ignore[arg-type]
        def translate(lang: str) -> str:
            return lang


def test_an_async_items_function_is_refused_when_decorating() -> None:
    async def languages(shared: Any) -> list[str]:
        return ["fr"]

    with pytest.raises(TypeError, match="translate: items= must be a sync function"):

        @batch(items=languages)
        def translate(lang: str) -> str:
            return lang


# -- numeric options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("wait", math.nan, "wait must be a finite number >= 0"),
        ("wait", "1", "wait must be a finite number >= 0"),
        ("wait", math.inf, "wait must be a finite number >= 0"),
        ("backoff", math.nan, "backoff must be a finite number >= 1"),
        ("backoff", 0.5, "backoff must be a finite number >= 1"),
        ("max_wait", math.nan, "max_wait must be a finite number >= 0 or None"),
        ("max_wait", -1, "max_wait must be a finite number >= 0 or None"),
        ("jitter", math.nan, "jitter must be a number from 0 to 1"),
        ("jitter", True, "jitter must be a number from 0 to 1"),
        ("timeout", math.nan, "timeout must be a finite number > 0 or None"),
        ("timeout", "5", "timeout must be a finite number > 0 or None"),
        ("timeout", 0, "timeout must be a finite number > 0 or None"),
        ("per_second", math.nan, "per_second must be a finite number > 0 or None"),
        ("per_second", math.inf, "per_second must be a finite number > 0 or None"),
        ("per_second", 0, "per_second must be a finite number > 0 or None"),
    ],
)
@pytest.mark.parametrize("decorator", [node, batch, parallel_batch])
def test_bad_numeric_options_are_refused_naming_the_function(
    decorator: Any, option: str, value: Any, message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=f"^fetch_page: {message}, got {value!r}"):

        @decorator(**{option: value})
        def fetch_page(item: Any) -> None:
            pass


def test_bad_numeric_options_on_a_class_name_the_class() -> None:
    class Fetch(Node):
        pass

    with pytest.raises(ValueError, match=r"^Fetch: wait must be a finite number >= 0, got nan"):
        Fetch(wait=math.nan)


def test_the_name_option_names_the_node_in_option_errors() -> None:
    with pytest.raises(ValueError, match=r"^download: per_second must be"):

        @node(name="download", per_second=-1)
        def fetch(shared: Any) -> None:
            pass


# -- process workers -----------------------------------------------------------------------


def test_a_nested_function_with_process_workers_is_refused_when_decorating() -> None:
    with pytest.raises(TypeError, match=r"crunch.*workers='process'.*module level"):

        @node(workers="process")
        def crunch(n: int) -> int:
            return n


def test_a_lambda_with_process_workers_is_refused_when_decorating() -> None:
    square = lambda n: n * n  # noqa: E731 - the point: a lambda has no importable name
    with pytest.raises(TypeError, match=r"<lambda>.*workers='process'.*def"):
        parallel_batch(items="xs", workers="process")(square)


# -- class nodes -------------------------------------------------------------------------


def test_a_sync_node_with_an_async_exec_is_refused_with_advice() -> None:
    with pytest.raises(TypeError, match=r"Fetch\.exec is an async def.*AsyncNode.*exec_async"):

        class Fetch(Node):
            async def exec(self, prep_res: Any) -> Any:  # type: ignore[override]
                return 1


def test_a_sync_node_returning_a_coroutine_is_an_error_not_a_stored_coroutine() -> None:
    async def fetch() -> int:
        return 1

    class Fetch(Node):
        def exec(self, prep_res: Any) -> Any:
            return fetch()  # forgot the await (and the AsyncNode)

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["result"] = exec_res

    shared: dict[str, Any] = {}
    with pytest.raises(FlowError, match=r"node 'Fetch': exec returned a coroutine.*AsyncNode"):
        Fetch().run(shared)
    assert shared == {}


def test_async_nodes_with_async_phases_are_fine() -> None:
    class Fetch(AsyncNode):
        async def exec_async(self, prep_res: Any) -> Any:
            return 1

    assert Fetch().max_retries == 1


# -- failing sources -----------------------------------------------------------------------


def broken_source() -> Any:
    yield "a"
    yield "b"
    raise OSError("disk gone")


def test_a_sequential_batch_whose_source_fails_names_the_last_item() -> None:
    @batch(items=lambda shared: broken_source(), into="out")
    def each(item: str) -> str:
        return item

    with pytest.raises(OSError, match="disk gone") as caught:
        Flow(each).run({})
    assert "flowfn: iterating the items (after item 1) of batch node 'each'" in (
        caught.value.__notes__
    )


async def test_an_async_sequential_batch_whose_source_fails_names_the_last_item(
    anyio_backend: str,
) -> None:
    @batch(items=lambda shared: broken_source(), into="out")
    async def each(item: str) -> str:
        return item

    with pytest.raises(OSError, match="disk gone") as caught:
        await Flow(each).run_async({})
    assert "flowfn: iterating the items (after item 1) of batch node 'each'" in (
        caught.value.__notes__
    )


def test_a_source_failing_before_its_first_item_says_so() -> None:
    def nothing() -> Any:
        raise OSError("no disk")
        yield

    @batch(items=lambda shared: nothing(), into="out")
    def each(item: str) -> str:
        return item

    with pytest.raises(OSError, match="no disk") as caught:
        Flow(each).run({})
    assert "flowfn: iterating the items of batch node 'each'" in caught.value.__notes__


def test_booleans_are_no_attempt_counts() -> None:
    with pytest.raises(TypeError, match="Node: max_retries is the number of attempts"):
        Node(max_retries=True)
    with pytest.raises(TypeError, match="fetch: retries must be an int >= 0, got True"):

        @node(retries=True)
        def fetch(shared: Any) -> None:
            pass


def test_a_coroutine_from_a_sync_exec_is_not_retried() -> None:
    calls: list[int] = []

    async def fetch() -> int:
        return 1

    class Fetch(Node):
        def exec(self, prep_res: Any) -> Any:
            calls.append(1)
            return fetch()

        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            return "fallback"

    with pytest.raises(FlowError, match="exec returned a coroutine"):
        Fetch(max_retries=3).run({})
    assert calls == [1]


def test_unknown_decorator_options_say_what_was_meant() -> None:
    from flowfn import node, parallel_batch

    with pytest.raises(
        TypeError, match=r"the decorators take retries= .*max_retries=3 is retries=2"
    ):
        node(max_retries=3)(lambda shared: None)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"timout=: did you mean timeout=\?"):
        parallel_batch(items="xs", timout=1.0)(lambda x: x)  # type: ignore[call-overload]


def test_parallel_options_on_batch_say_where_they_belong() -> None:
    with pytest.raises(TypeError) as caught:

        @batch(items="xs", errors="collect", limt=3)
        def work(x: int) -> int:
            return x

    message = str(caught.value)
    assert "errors= is for @parallel_batch" in message
    assert "did you mean errors" not in message
    assert "did you mean limit=" not in message  # @batch takes no limit=
