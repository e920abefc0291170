"""Caching a step's results across runs: ``@node(cache=Cache(...))``.

A cached function's result is kept in the run's checkpoint store under a key made of the
node, the function's name and code (see ``code_fingerprint``), ``Cache(version=...)`` and
its arguments (or what ``key=`` makes of them). A later call with the same key (in this run
or any later run on the same store) returns the kept result instead of calling the function,
until ``ttl`` seconds have passed. On batches the key is per item.

Caching needs a store: it works in runs with ``checkpoint=``; a run without one calls the
function every time. Only results are kept: a call that raises, or a fallback's stand-in
value, is not.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import pickle
import time
import types
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from .._engine.errors import FlowError, node_name

__all__ = ["Cache", "cached_call", "caching"]


class RunStore(Protocol):
    """What the cache and ``flowfn.ask`` need of the durable run (its journal implements it),
    so that they depend on this, not on the journal."""

    answers: dict[str, Any]  # to the questions of flowfn.ask(), by id

    def cache_get(self, key: str, now: float) -> Any: ...

    def cache_put(self, key: str, value: Any, expires: float | None) -> None: ...

    def step_name(self, position: tuple[int, ...]) -> str: ...


#: The durable run whose store caches results (items of batch flows keep it too).
caching: ContextVar[RunStore | None] = ContextVar("flowfn_caching", default=None)
_MISSING = object()


class Cache:
    """How a node caches its results: ``@node(cache=Cache(ttl=3600))``.

    ``key`` receives the function's data (prep's result, or the item of a batch) and
    returns what identifies the call (a str, a tuple, any picklable value; None: do not
    cache this call); by default the data and the params the function takes by name.
    ``ttl`` is how many seconds a result stays good (None: for ever). ``version`` (a str or
    an int) is part of every key: change it to drop the kept results when something the key
    does not follow has changed (a helper the function calls, a global, a library, a model).
    The key follows the function's own code by itself: its bytecode, constants, the names
    it uses, its defaults and the functions written inside it (comments and line numbers do
    not count).
    ``cache=True`` is ``Cache()``.
    """

    __slots__ = ("key", "ttl", "version")

    def __init__(
        self,
        *,
        key: Callable[..., Any] | None = None,
        ttl: float | None = None,
        version: str | int | None = None,
    ) -> None:
        if key is not None and not callable(key):
            raise TypeError(f"Cache(key=...) must be a function of the data, got {key!r}")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
        ):
            raise ValueError(f"Cache(ttl=...) must be a number of seconds > 0, got {ttl!r}")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, (str, int))
        ):
            raise TypeError(f"Cache(version=...) must be a str or an int, got {version!r}")
        self.version = version
        self.key, self.ttl = key, ttl

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "ttl"):  # set once, in __init__: a Cache is a value
            raise AttributeError("Cache is immutable: make a new one")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        key = "" if self.key is None else f"key={getattr(self.key, '__qualname__', self.key)}, "
        version = "" if self.version is None else f", version={self.version!r}"
        return f"Cache({key}ttl={self.ttl}{version})"


def as_cache(cache: object, owner: str) -> Cache | None:
    """The :class:`Cache` that ``cache=`` asks for (None for no caching)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return Cache()
    if isinstance(cache, Cache):
        return cache
    raise TypeError(f"{owner}: cache= takes True or flowfn.Cache(key=..., ttl=...), got {cache!r}")


def cache_key(
    cache: Cache, node: Any, fn: Callable[..., Any], data: tuple[Any, ...], kwargs: Any
) -> str | None:
    """The store key for this call, or None if it is not to be cached."""
    if cache.key is not None:
        value = cache.key(*data)
        if value is None:
            return None
    else:
        named = {k: v for k, v in kwargs.items() if k not in ("shared", "local", "params")}
        value = (data, sorted(named.items()))
    try:
        digest = hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()
    except Exception as exc:
        raise FlowError(
            f"node {node_name(node)!r}: the cache key of this call cannot be pickled "
            f"({type(exc).__name__}: {exc}); give Cache(key=...) a function that returns a "
            f"str or a tuple of plain values"
        ) from exc
    where = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}"
    code = code_fingerprint(fn)
    version = "" if cache.version is None else f"|v={cache.version!r}"
    return f"{node_name(node)}|{where}|code={code}{version}|{digest}"


# Fingerprints are made once per function: a call's key must stay cheap.
_fingerprints: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A digest of what ``fn`` does, stable across processes and runs.

    It follows the function's bytecode, its constants, the names it uses (globals,
    attributes, locals), its default arguments, and the same of every function, lambda,
    comprehension or class body defined inside it, recursively; for a function wrapped
    with ``functools.wraps`` also the wrapped one's, for ``functools.partial`` the bound
    arguments, for a callable object its class's ``__call__``. It does not follow the
    functions it calls, global values, closed-over values or libraries (bump
    ``Cache(version=...)`` for those). Line numbers, comments and where the function sits
    in its file do not count; the Python version does (its bytecode differs).
    """
    try:
        return _fingerprints[fn]
    except (KeyError, TypeError):
        pass
    digest = hashlib.sha256(repr(_code_of(fn, depth=0)).encode()).hexdigest()[:16]
    with contextlib.suppress(TypeError):  # not weakly referable: made again next time
        _fingerprints[fn] = digest
    return digest


def _code_of(fn: Any, depth: int) -> Any:
    if depth > 8:  # a cycle of __wrapped__ or partials: what was seen is enough
        return "..."
    if isinstance(fn, functools.partial):
        return ("partial", _code_of(fn.func, depth + 1), _value(fn.args), _value(fn.keywords))
    if isinstance(fn, types.MethodType):
        return ("method", _code_of(fn.__func__, depth + 1))
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType):
        wrapped = getattr(fn, "__wrapped__", None)
        return (
            _code(code),
            _value(getattr(fn, "__defaults__", None)),
            _value(getattr(fn, "__kwdefaults__", None)),
            None if wrapped is None else _code_of(wrapped, depth + 1),
        )
    call: Any = type(fn).__call__  # fn is callable: its class has __call__
    if not isinstance(fn, type) and isinstance(getattr(call, "__code__", None), types.CodeType):
        return ("object", _code_of(call, depth + 1))
    return ("opaque", getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))


@functools.lru_cache(maxsize=1024)
def _code(code: types.CodeType) -> tuple[Any, ...]:
    """A code object's behaviour as plain values (line numbers and file left out)."""
    return (
        code.co_name,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_code,
        tuple(_value(c) for c in code.co_consts),
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
    )


def _value(value: Any) -> Any:
    """A constant or default as a value whose repr is the same in every process."""
    if isinstance(value, types.CodeType):
        return ("code", _code(value))
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_value(v) for v in value))
    if isinstance(value, (frozenset, set)):  # iteration order varies with the hash seed
        return (type(value).__name__, tuple(sorted(repr(_value(v)) for v in value)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(_value(k)), repr(_value(v))) for k, v in value.items())))
    if value is Ellipsis:
        return ("...",)
    # Another object's repr may hold its address: only its type is stable.
    kind = type(value)
    return ("object", kind.__module__, kind.__qualname__)


def cached_call(
    cache: Cache, node: Any, fn: Callable[..., Any], data: tuple[Any, ...], kwargs: Any
) -> tuple[str | None, Any]:
    """(key, kept result or ``_MISSING``) for a call, looked up in the run's store."""
    journal = caching.get()
    if journal is None:
        return None, _MISSING
    key = cache_key(cache, node, fn, data, kwargs)
    if key is None:
        return None, _MISSING
    return key, journal.cache_get(key, time.time())


def keep(cache: Cache, key: str | None, result: Any) -> None:
    """Keep ``result`` under ``key`` in the run's store."""
    journal = caching.get()
    if journal is None or key is None:
        return
    expires = None if cache.ttl is None else time.time() + cache.ttl
    journal.cache_put(key, result, expires)


def is_missing(value: Any) -> bool:
    return value is _MISSING
