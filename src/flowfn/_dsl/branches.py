"""Parallel branches, then a join: ``start >> Parallel(news, weather) >> summarise``.

A :class:`Parallel` node runs each of its branches (nodes or whole flows) at the same time,
on the same shared store, and returns once all have finished; its successor is the join.

Two branches must not write the same key: each branch sees the store through a view that
remembers which branch set (or deleted) which key, and a second branch setting a key that
another one set is a ``FlowError`` naming both, raised in that branch (not a silent
last-writer-wins). Writes inside a value (``shared["list"].append(x)``) are not seen: give
each branch keys of its own, or use ``merge=``. With ``merge=``, each branch works on a
deep copy of the store instead, and what the branches changed is merged back once all
have finished, by the declared rule:

* ``"update"``: the keys each branch set, written back in branch order (for a key set by
  several branches, the last branch in the list wins, by declaration);
* ``"append"``: for each key holding a list, the elements each branch added to it,
  appended in branch order;
* a function ``merge(key, original, values)`` returning the merged value, where
  ``values`` lists that key's value in each branch that changed it, in branch order.

A failing branch cancels the others and its exception reaches the caller with notes
naming the branch (``errors="collect"`` lets every branch finish; ``into=`` then holds each
branch's action, or its exception). ``limit=`` bounds how many run at once. The actions
the branches return end their branch: the Parallel node itself returns ``"default"`` (a
``None`` action), so the flow goes on at its successor.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from types import EllipsisType
from typing import Any, Literal

from .._engine import hooks
from .._engine.errors import FlowError, add_note, node_name
from .._engine.nodes import BaseNode
from .._engine.pool import DEFAULT_LIMIT, Errors, check_errors, check_limit, map_ordered

__all__ = ["Parallel"]

Merge = Literal["update", "append"] | Callable[[str, Any, list[Any]], Any]
_GONE = object()  # a key a branch deleted


class Parallel(BaseNode):
    """Run ``branches`` (nodes or flows) concurrently on the shared store; go on when all
    have finished. See the module documentation for ``merge=``, ``errors=``, ``limit=``.

    Usable in DSL flows and class flows alike: ``a >> Parallel(b, c) >> d``.
    """

    def __init__(
        self,
        *branches: BaseNode,
        merge: Merge | None = None,
        limit: int | EllipsisType | None = ...,
        errors: Errors = "fail_fast",
        into: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name or "Parallel"
        if len(branches) < 2:
            raise TypeError(
                f"{self.name}: Parallel(...) runs two or more branches at once, got "
                f"{len(branches)}; a single node goes into the flow as it is"
            )
        for branch in branches:
            if not isinstance(branch, BaseNode):
                raise TypeError(
                    f"{self.name}: a branch must be a node or a flow (a BaseNode, or a "
                    f"function decorated with @node), got {branch!r:.60}"
                )
        if merge is not None and merge not in ("update", "append") and not callable(merge):
            raise ValueError(
                f"{self.name}: merge= must be 'update', 'append' or a function "
                f"merge(key, original, values), got {merge!r}"
            )
        if into is not None and not isinstance(into, str):
            raise TypeError(f"{self.name}: into= must be a key (str), got {into!r}")
        self.branches = branches
        self.merge, self.into = merge, into
        self.limit = (
            DEFAULT_LIMIT if isinstance(limit, EllipsisType) else check_limit(limit, self.name)
        )
        self.errors = check_errors(errors, self.name)

    _writes_shared = True  # a durable run records its branches with the shared store
    #: What a ``merge`` function gets among ``values`` for a branch that deleted the key.
    DELETED: Any = _GONE

    def _needs_loop(self) -> bool:
        return True

    def _run(self, shared: Any) -> Any:
        raise RuntimeError(f"Use run_async. ({self.name} runs its branches in an event loop)")

    async def _run_async(self, shared: Any) -> Any:
        if not isinstance(shared, MutableMapping):
            raise TypeError(
                f"{self.name}: parallel branches need a dict-like shared store, "
                f"got {type(shared).__name__}"
            )
        names = self.branch_names()
        if self.merge is None:
            owners: dict[Any, int] = {}
            before: dict[Any, Any] = {}  # each key's value before a branch first wrote it
            stores: list[Any] = [
                _BranchStore(shared, i, owners, before, names, node_name(self))
                for i in range(len(names))
            ]
            self._recorded_store = functools.partial(_finished_part, owners, before)
        else:
            stores = [self._copy(shared) for _ in self.branches]

        async def run(index: int) -> Any:
            branch = self.branches[index]._step_copy()
            branch._step_params(self.params)
            return await branch._run_async(stores[index])

        branches = map_ordered(
            run,
            range(len(self.branches)),
            limit=self.limit,
            where=f"parallel branches {self.name!r}",
            errors=self.errors,
            node=self,
            branches=self.branch_names(),
        )
        if self.merge is None:
            actions = await branches
        else:  # a branch's work is in its copy, which a durable run does not keep: all rerun
            with hooks.detached(keep_key=True):
                actions = await branches
        if self.merge is not None:  # a failed branch (errors="collect") changes nothing
            done = [s for s, a in zip(stores, actions, strict=True) if not isinstance(a, Exception)]
            self._merge_back(shared, done)
        if self.into is not None:
            shared[self.into] = actions
        return None

    def branch_names(self) -> list[str]:
        """The names that notes, events, spans and progress give the branches, in order: each
        branch's node or flow name (``name=``, else its function's or class's name), with
        ``[position]`` added to a name that several branches share."""
        names = [node_name(b) for b in self.branches]
        return [f"{n}[{i}]" if names.count(n) > 1 else n for i, n in enumerate(names)]

    def _copy(self, shared: MutableMapping[Any, Any]) -> dict[Any, Any]:
        try:
            return copy.deepcopy(dict(shared))
        except Exception as exc:
            raise FlowError(
                f"{self.name}: merge= gives each branch a deep copy of the shared store, and "
                f"copying it failed ({type(exc).__name__}: {exc}); keep such values out of "
                f"the store, or drop merge= and let the branches write keys of their own"
            ) from exc

    def _merge_back(self, shared: MutableMapping[Any, Any], copies: list[Any]) -> None:
        """Write what the branches changed into ``shared``: every key is merged first, and
        only then written, so a merge that fails (a rule refused, a ``merge=`` function
        raising) leaves ``shared`` as it was before the branches ran."""
        original = dict(shared)
        changes: list[dict[Any, Any]] = []
        for store in copies:
            changed = {
                k: v for k, v in store.items() if k not in original or _differs(v, original[k])
            }
            changed.update({k: _GONE for k in original if k not in store})
            changes.append(changed)
        keys = [k for change in changes for k in change]
        merged: dict[Any, Any] = {}
        for key in dict.fromkeys(keys):  # each key once, in the order the branches changed them
            values = [change[key] for change in changes if key in change]
            try:
                merged[key] = self._merged(key, original.get(key, _GONE), values)
            except Exception as exc:
                add_note(
                    exc,
                    f"flowfn: merging shared[{key!r}] after the branches of {self.name!r} "
                    f"failed; the shared store was left as it was before them",
                )
                raise
        for key, value in merged.items():
            if value is _GONE:
                shared.pop(key, None)
            else:
                shared[key] = value

    def _merged(self, key: Any, original: Any, values: list[Any]) -> Any:
        if self.merge == "update":
            return values[-1]
        if self.merge == "append":
            start = [] if original is _GONE else original
            if not isinstance(start, list) or not all(isinstance(v, list) for v in values):
                raise FlowError(
                    f"{self.name}: merge='append' appends what each branch added to a list, "
                    f"but shared[{key!r}] is not a list in every branch; give merge= a "
                    f"function for it"
                )
            merged = list(start)
            for value in values:
                if value[: len(start)] != start:
                    raise FlowError(
                        f"{self.name}: merge='append' appends what each branch added to "
                        f"shared[{key!r}], but a branch replaced that list instead of adding "
                        f"to it; give merge= a function for it"
                    )
                merged.extend(value[len(start) :])
            return merged
        assert callable(self.merge)
        # A copy: a function that edits the original in place and then fails must not
        # leave the store half-merged.
        start = None if original is _GONE else copy.deepcopy(original)
        return self.merge(key, start, values)

    def __repr__(self) -> str:
        inside = ", ".join(node_name(b) for b in self.branches)
        return f"<Parallel {self.name!r} branches=[{inside}] successors={list(self.successors)}>"


def _finished_part(
    owners: dict[Any, int], before: dict[Any, Any], shared: Mapping[Any, Any], finished: set[int]
) -> dict[Any, Any]:
    """The shared store as the finished branches left it, without what unfinished ones
    wrote so far: what a durable run records while branches run, so that a resumed branch
    starts from the store it started from the first time."""
    store = dict(shared)
    for key, branch in list(owners.items()):
        if branch not in finished:
            value = before.get(key, _GONE)
            if value is _GONE:
                store.pop(key, None)
            else:
                store[key] = value
    return store


def _differs(new: Any, old: Any) -> bool:
    if new is old:
        return False
    try:
        return bool(new != old)
    except Exception:
        return True


class _BranchStore(MutableMapping[Any, Any]):
    """The shared store as one branch sees it: reads and writes go through; a key set (or
    deleted) by two branches is an error naming both."""

    __slots__ = ("_before", "_branch", "_names", "_owner", "_owners", "_shared")

    def __init__(
        self,
        shared: MutableMapping[Any, Any],
        branch: int,
        owners: dict[Any, int],
        before: dict[Any, Any],
        names: list[str],
        owner: str,
    ) -> None:
        self._shared, self._branch, self._owners, self._before = shared, branch, owners, before
        self._names, self._owner = names, owner

    def _claim(self, key: Any) -> None:
        if key not in self._owners:
            self._before[key] = self._shared.get(key, _GONE)
        first = self._owners.setdefault(key, self._branch)
        if first != self._branch:
            raise FlowError(
                f"{self._owner}: branches {self._names[first]!r} and "
                f"{self._names[self._branch]!r} both write shared[{key!r}]; give each branch "
                f"keys of its own, or Parallel(..., merge=...) to merge copies by a rule"
            )

    def __getitem__(self, key: Any) -> Any:
        return self._shared[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._claim(key)
        self._shared[key] = value

    def __delitem__(self, key: Any) -> None:
        self._claim(key)
        del self._shared[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._shared)

    def __len__(self) -> int:
        return len(self._shared)

    def __contains__(self, key: object) -> bool:
        return key in self._shared

    def __repr__(self) -> str:
        return f"<shared store seen by branch {self._names[self._branch]!r}: {self._shared!r}>"
