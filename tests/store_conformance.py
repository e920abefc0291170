"""What every checkpoint store must do, whatever keeps its runs: one suite, run on each store by
tests/test_store_conformance.py (as LangGraph runs one suite on each of its checkpointers).

A store's test class subclasses :class:`StoreConformance` and gives the fixture ``make``: a
function returning a new store object on the same database each time it is called (with the
serializer given, pickle when None), so that reopening, and a second store object on the same
runs, are both tested.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any

import pytest

from flowfn import (
    BatchInfo,
    CheckpointStore,
    Flow,
    FlowError,
    JSONSerializer,
    PickleSerializer,
    Serializer,
    batch,
    node,
)
from flowfn._durable.store import Record

MakeStore = Callable[..., Any]


def begin(store: Any, run_id: str = "r", shape: str = "shape") -> Any:
    return store.begin(run_id, flow="Flow", shape=shape, initial=b"start", target=None)


def chunk(*pairs: tuple[int, Any]) -> bytes:
    """A chunk of items as the journal sends it: (indices, results), pickled."""
    return pickle.dumps([[i for i, _ in pairs], [r for _, r in pairs]])


def lengths_flow(log: list[str], fail: set[str]) -> Flow:
    @node
    def load(shared: dict[str, Any]) -> None:
        log.append("load")
        shared["docs"] = ["a", "bb", "ccc", "dddd"]

    @batch(items="docs", into="lengths")
    def length(doc: str) -> int:
        log.append(f"length {doc}")
        if doc in fail:
            raise ValueError(f"cannot measure {doc}")
        return len(doc)

    load >> length
    return Flow(load)


class StoreConformance:
    """The checkpoint protocol's promises; ``make`` is given by each store's subclass."""

    def test_is_a_checkpoint_store(self, make: MakeStore) -> None:
        assert isinstance(make(), CheckpointStore)

    def test_begin_claims_a_run_until_release(self, make: MakeStore) -> None:
        store, other = make(), make()
        assert begin(store) is None  # a new run
        with pytest.raises(FlowError, match=r"run 'r' .*already running in this process"):
            begin(other)
        assert begin(other, "another") is None  # other runs are free
        other.release("another")
        store.release("r")
        saved = begin(other)
        assert saved is not None
        assert (saved.status, saved.shape, saved.initial) == ("running", "shape", b"start")
        other.release("r")

    def test_a_save_is_all_or_nothing(self, make: MakeStore) -> None:
        store = make()
        begin(store)
        good = Record("items", 0, (1,), items=chunk((0, 1)), count=1)
        broken = Record("step", 1, (0,), (0,), "default", object(), node="x")  # type: ignore[arg-type]
        with pytest.raises(Exception):  # noqa: B017, PT011 - each driver refuses it its own way
            store.save("r", [good, broken])
        store.release("r")
        reader = make()
        saved = begin(reader)
        reader.release("r")
        assert saved.items == {}
        assert saved.last is None

    def test_the_latest_record_items_owners_and_total_come_back(self, make: MakeStore) -> None:
        store = make()
        begin(store)
        started = Record(
            "progress", 1, (1,), (0, 1), None, b"s1", done=False, node="work", total=10,
            owners='{"k": [1]}',
        )  # fmt: skip
        store.save("r", [Record("step", 0, (0,), (0,), "default", b"s0", node="load"), started])
        store.save("r", [Record("items", 0, (1,), items=chunk((0, 0), (1, 1)), count=2)])
        store.save("r", [Record("items", 0, (1,), items=chunk((2, 4)), count=1)])
        assert store.batches("r") == [BatchInfo((1,), "work", 3, 10, False)]
        store.finish("r", "failed", "ValueError: no", None)
        store.release("r")

        reader = make()
        saved = begin(reader)
        reader.release("r")
        assert saved.last == Record(
            "progress", 1, (1,), (0, 1), None, b"s1", done=False, node="work", owners='{"k": [1]}'
        )
        assert saved.items == {(1,): [chunk((0, 0), (1, 1)), chunk((2, 4))]}
        assert saved.status == "failed"
        assert [step[1:] for step in make().steps("r")] == [
            ((0,), "load", "default", True),
            ((1,), "work", None, False),
        ]

    def test_finish_records_the_status_and_runs_lists_them(self, make: MakeStore) -> None:
        store = make()
        for run_id in ("a", "b", "c"):
            begin(store, run_id)
        store.save("a", [Record("step", 0, (0,), (0,), "default", b"x", node="load")])
        store.finish("a", "done", None, b"result")
        store.finish("b", "failed", "KeyError: ", None)  # an exception without a message
        store.release("a")
        store.release("b")
        runs = {run.run_id: run for run in make().runs()}
        assert list(runs) == ["a", "b", "c"]  # oldest first
        assert (runs["a"].status, runs["a"].state, runs["a"].steps) == ("done", "finished", 1)
        assert (runs["b"].state, runs["b"].error) == ("failed", "KeyError")
        assert runs["c"].state == "live"
        assert runs["c"].holder is not None
        store.release("c")
        assert {run.run_id: run.state for run in make().runs()}["c"] == "crashed"
        reader = make()
        again = begin(reader, "a")  # a finished run given again stays finished
        reader.release("a")
        assert (again.status, again.detail) == ("done", b"result")

    def test_the_cache_keeps_values_until_they_expire(self, make: MakeStore) -> None:
        store = make()
        begin(store)
        now = time.time()
        store.save(
            "r",
            [
                Record("cache", 0, (), shared=b"forever", node="k1"),
                Record("cache", 0, (), shared=b"soon", node="k2", expires=now + 10),
            ],
        )
        store.save("r", [Record("cache", 0, (), shared=b"newer", node="k1")])
        store.release("r")
        reader = make()
        assert reader.cache_get("k1", now) == b"newer"
        assert reader.cache_get("k2", now) == b"soon"
        assert reader.cache_get("k2", now + 20) is None
        assert reader.cache_get("missing", now) is None

    def test_delete_and_prune(self, make: MakeStore) -> None:
        store = make()
        for run_id, status in (("a", "done"), ("b", "failed"), ("c", "done")):
            begin(store, run_id)
            store.save(run_id, [Record("items", 0, (1,), items=chunk((0, 1)), count=1)])
            store.finish(run_id, status, None, None)
            store.release(run_id)
        begin(store, "live")
        later = time.time() + 7200
        assert store.prune(3600) == []  # all fresh
        assert store.prune(3600, status="finished", now=later) == ["a", "c"]
        assert [run.run_id for run in store.runs()] == ["b", "live"]
        with pytest.raises(FlowError, match="a live run is not deleted"):
            make().delete("live")
        assert store.prune(3600, now=later) == ["b"]  # the live run is kept
        assert make().delete("b") is False
        store.release("live")
        assert make().delete("live") is True
        assert store.runs() == []

    @pytest.mark.parametrize("serializer", [JSONSerializer, PickleSerializer])
    def test_a_run_resumes_with_its_serializer_and_another_is_refused(
        self, make: MakeStore, serializer: type[Serializer]
    ) -> None:
        log: list[str] = []
        fail = {"dddd"}
        flow = lengths_flow(log, fail)
        with pytest.raises(ValueError, match="cannot measure dddd"):
            flow.run({}, checkpoint=make(serializer()), run_id="j")
        fail.clear()
        shared: dict[str, Any] = {}
        flow.run(shared, checkpoint=make(serializer()), run_id="j")
        assert shared["lengths"] == [1, 2, 3, 4]
        assert (log.count("load"), log.count("length a"), log.count("length dddd")) == (1, 1, 2)
        other = PickleSerializer if serializer is JSONSerializer else JSONSerializer
        with pytest.raises(FlowError, match=f"saved with the '{serializer.name}' serializer"):
            flow.run({}, checkpoint=make(other()), run_id="j")

    def test_json_refuses_what_it_cannot_save(self, make: MakeStore) -> None:
        @node
        def keep(shared: dict[str, Any]) -> None:
            shared["when"] = object()

        with pytest.raises(FlowError, match="'when'"):
            Flow(keep).run({}, checkpoint=make(JSONSerializer()), run_id="x")

    def test_a_run_of_another_shape_is_refused(self, make: MakeStore) -> None:
        flow = lengths_flow([], set())
        flow.run({}, checkpoint=make(), run_id="s")

        @node
        def other(shared: dict[str, Any]) -> None:
            shared["x"] = 1

        with pytest.raises(FlowError, match="made by a flow of another shape"):
            Flow(other).run({}, checkpoint=make(), run_id="s")
        shared: dict[str, Any] = {}
        flow.run(shared, checkpoint=make(), run_id="s")  # the same flow: its saved result
        assert shared["lengths"] == [1, 2, 3, 4]
