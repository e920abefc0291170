"""Calling a user's function with what it asks for, by parameter name.

A step function receives its *data* positionally (the item of a batch, the result of
``prep``, ...) and everything else by name: a parameter called ``shared`` gets the shared
store, one called ``params`` the node's params dict, one called ``local`` the run's scratch
dict (see ``flowfn.local``), and any other name the param of that name (from a batch flow
or ``set_params``), or its default when the param is missing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from . import hooks
from .errors import FlowError, node_name
from .local import local

__all__ = ["Bound", "is_async_callable"]

_REQUIRED: Any = inspect.Parameter.empty
_RESERVED = ("shared", "params", "local")


def is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async __call__ of a callable object
    )


class Bound:
    """``fn`` with its call plan: ``n_data`` leading positional args, the rest injected."""

    __slots__ = ("fn", "inject", "is_async", "label", "n_data", "only_shared")

    def __init__(self, fn: Callable[..., Any], n_data: int, *, role: str, owner: str) -> None:
        if not callable(fn):
            raise TypeError(f"{owner}: the {role} must be callable, got {fn!r}")
        self.fn, self.n_data, self.is_async = fn, n_data, is_async_callable(fn)
        self.label = f"{getattr(fn, '__qualname__', fn)!s}()"
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a signature: pass data only
            self.inject: tuple[tuple[str, Any], ...] = ()
            self.only_shared = False
            return
        params = list(signature.parameters.values())
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in positional)
        if len(positional) < n_data and not takes_varargs:
            raise TypeError(
                f"{owner}: the {role} {self.label} must take {n_data} positional "
                f"parameter(s) for {_what_data(role)}, but its signature is {signature}"
            )
        data, rest = params[:n_data], params[n_data:]
        if role in ("item function", "exec function"):
            for p in data:
                if p.name in _RESERVED:
                    raise TypeError(
                        f"{owner}: the first parameter of {self.label} receives "
                        f"{_what_data(role)}, so it cannot be named {p.name!r}; rename it "
                        f"and take {p.name!r} as a later parameter"
                    )
        inject = []
        for p in rest:
            if p.kind is p.POSITIONAL_ONLY and p.default is _REQUIRED:
                raise TypeError(
                    f"{owner}: {self.label} parameter {p.name!r} is positional-only, so "
                    f"flowfn cannot pass it by name; remove the '/'"
                )
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                inject.append((p.name, p.default))
        self.inject = tuple(inject)
        self.only_shared = [name for name, _ in inject] == ["shared"]  # the common case, fast

    def kwargs(self, node: Any, shared: Any) -> dict[str, Any]:
        if self.only_shared:
            return {"shared": shared}
        kwargs: dict[str, Any] = {}
        for name, default in self.inject:
            if name == "shared":
                kwargs[name] = shared
            elif name == "params":
                kwargs[name] = node.params
            elif name == "local":
                kwargs[name] = local()
            elif name in node.params:
                kwargs[name] = node.params[name]
            elif default is _REQUIRED:
                raise FlowError(
                    f"node {node_name(node)!r}: {self.label} takes a parameter {name!r}, which "
                    f"is not in the node's params {sorted(node.params)}. Pass it from a batch "
                    f"flow ({{{name!r}: ...}}), set it with flow.set_params(...), give it a "
                    f"default, or name it 'shared', 'params' or 'local'."
                )
        return kwargs

    def call(
        self, node: Any, shared: Any, data: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> Any:
        """Call a sync function here (``kwargs``: already bound); an async one needs
        ``acall`` in an event loop."""
        if self.is_async:
            raise RuntimeError(
                f"Use run_async. (node {node_name(node)!r}: {self.label} is async, so the node "
                f"must run in an event loop: `await flow.run_async(shared)`, or `flow.run()`)"
            )
        if kwargs is None:
            if self.only_shared:
                return self.fn(*data, shared=shared)
            kwargs = self.kwargs(node, shared)
        return self.fn(*data, **kwargs)

    def acall(
        self,
        node: Any,
        shared: Any,
        data: tuple[Any, ...],
        *,
        workers: str | hooks.Workers = "inline",
        limiter: anyio.CapacityLimiter | hooks.RemoteCalls | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Awaitable[Any]:
        """Awaitable result: an async function's coroutine, or a sync function run
        ``"inline"``, in a worker ``"thread"``, in a worker ``"process"``, or on remote
        ``workers`` (``limiter``: the batcher of the node run's remote calls, if any).

        Thread and process jobs are not abandoned on cancellation: the cancellation takes
        effect once the function returns, so no job outlives the flow.
        """
        # Returns the awaitable instead of being a coroutine: one frame less per step.
        if kwargs is None:
            kwargs = {"shared": shared} if self.only_shared else self.kwargs(node, shared)
        if self.is_async:
            return self.fn(*data, **kwargs)  # type: ignore[no-any-return]
        if workers == "thread":
            call = functools.partial(self.fn, *data, **kwargs)
            return anyio.to_thread.run_sync(call, limiter=limiter)  # type: ignore[arg-type]
        if not isinstance(workers, str):  # remote workers
            if limiter is None or isinstance(limiter, anyio.CapacityLimiter):
                limiter = workers.calls(self.fn, node)
            return limiter.call(data, kwargs)
        if workers == "process":
            return self._in_process(node, data, kwargs)
        return _ready(self.fn(*data, **kwargs))

    async def _in_process(
        self,
        node: Any,
        data: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        import pickle

        ref = function_ref(self.fn)
        try:
            pickle.dumps((ref, data, kwargs))
        except Exception as exc:
            raise FlowError(
                f"node {node_name(node)!r}: workers='process' sends {self.label}, its "
                f"arguments and its result to another process by pickling, and this failed: "
                f"{exc}. Use a module-level function with picklable arguments, or "
                f"workers='thread'."
            ) from exc
        return await hooks.run_in_process(call_by_ref, ref, data, kwargs)


def function_ref(fn: Callable[..., Any]) -> tuple[str, str, str | None]:
    """Where a worker process finds ``fn``: its module, qualified name and source file.

    The decorator replaced the function's module attribute with a node, so the function
    itself cannot be pickled by reference; the node can be looked up, and its ``fn`` used.
    """
    module = str(getattr(fn, "__module__", None) or "__main__")
    qualname = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", ""))
    if "<locals>" in qualname:
        raise FlowError(
            f"{qualname}(): workers='process' needs a function defined at module level "
            f"(a worker process imports it by name), not inside another function"
        )
    code = getattr(fn, "__code__", None)
    path = getattr(code, "co_filename", None)
    return module, qualname, path if isinstance(path, str) else None


_loaded_files: dict[str, dict[str, Any]] = {}


def call_by_ref(ref: tuple[str, str, str | None], data: tuple[Any, ...], kwargs: Any) -> Any:
    """Run in a worker process: find the function named by ``ref`` and call it."""
    fn = resolve_ref(ref)
    try:
        return fn(*data, **kwargs)
    except BaseException as exc:
        _check_unpicklable(exc)
        raise


def resolve_ref(ref: tuple[str, str, str | None]) -> Callable[..., Any]:
    """In a worker process: the plain function that ``ref`` (see :func:`function_ref`) names."""
    import importlib
    import runpy
    import sys

    module_name, qualname, path = ref
    namespace: Any
    try:
        if module_name == "__main__":
            raise ImportError("the parent's __main__ is not importable here")
        namespace = importlib.import_module(module_name)
    except ImportError:
        main = sys.modules.get("__mp_main__")
        if main is not None and getattr(main, "__file__", None) == path:
            namespace = main
        elif path is not None:
            if path not in _loaded_files:
                _loaded_files[path] = runpy.run_path(path, run_name="__flowfn_worker__")
            namespace = _loaded_files[path]
        else:
            raise
    target: Any = namespace
    for part in qualname.split("."):
        target = target[part] if isinstance(target, dict) else getattr(target, part)
    return getattr(target, "fn", target)  # type: ignore[no-any-return]  # decorated: the plain function


def _check_unpicklable(exc: BaseException) -> None:
    """Raise a FlowError in place of ``exc`` if the parent could not rebuild it: the worker
    pool would take it for a dead worker and fail every job in flight."""
    import pickle
    import traceback

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception as why:
        text = "".join(traceback.format_exception(exc))
        raise FlowError(
            f"a workers='process' function raised {type(exc).__qualname__}: {exc}, which "
            f"cannot be sent back from the worker process ({why}). Its traceback there:\n"
            f"{text}"
        ) from None


async def _ready(value: Any) -> Any:
    return value


def _what_data(role: str) -> str:
    return {
        "item function": "the item",
        "exec function": "prep's result",
        "fallback": "the data and the exception",
        "prep": "the shared store",
        "post": "shared, prep's result and exec's result",
    }.get(role, "its data")
