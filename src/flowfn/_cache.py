"""Caching a step's results across runs: ``@node(cache=Cache(...))``.

A cached function's result is kept in the run's checkpoint store under a key made of the
node, the function and its arguments (or what ``key=`` makes of them). A later call with the
same key (in this run or any later run on the same store) returns the kept result instead
of calling the function, until ``ttl`` seconds have passed. On batches the key is per item.

Caching needs a store: it works in runs with ``checkpoint=``; a run without one calls the
function every time. Only results are kept: a call that raises, or a fallback's stand-in
value, is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._errors import FlowError, node_name

if TYPE_CHECKING:
    from ._journal import Journal

__all__ = ["Cache", "cached_call", "caching"]

#: The durable run whose store caches results (items of batch flows keep it too).
caching: ContextVar[Journal | None] = ContextVar("flowfn_caching", default=None)
_MISSING = object()


class Cache:
    """How a node caches its results: ``@node(cache=Cache(ttl=3600))``.

    ``key`` receives the function's data (prep's result, or the item of a batch) and
    returns what identifies the call (a str, a tuple, any picklable value; None: do not
    cache this call); by default the data and the params the function takes by name.
    ``ttl`` is how many seconds a result stays good (None: for ever). ``cache=True`` is
    ``Cache()``.
    """

    __slots__ = ("key", "ttl")

    def __init__(self, *, key: Callable[..., Any] | None = None, ttl: float | None = None) -> None:
        if key is not None and not callable(key):
            raise TypeError(f"Cache(key=...) must be a function of the data, got {key!r}")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
        ):
            raise ValueError(f"Cache(ttl=...) must be a number of seconds > 0, got {ttl!r}")
        self.key, self.ttl = key, ttl

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "ttl"):  # set once, in __init__: a Cache is a value
            raise AttributeError("Cache is immutable: make a new one")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        key = "" if self.key is None else f"key={getattr(self.key, '__qualname__', self.key)}, "
        return f"Cache({key}ttl={self.ttl})"


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
    import hashlib
    import pickle

    try:
        digest = hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()
    except Exception as exc:
        raise FlowError(
            f"node {node_name(node)!r}: the cache key of this call cannot be pickled "
            f"({type(exc).__name__}: {exc}); give Cache(key=...) a function that returns a "
            f"str or a tuple of plain values"
        ) from exc
    where = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}"
    return f"{node_name(node)}|{where}|{digest}"


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
