"""``cache=`` keys follow the function's code: a fixed function does not return the results
its old code cached (issue 20, item 3), and ``Cache(version=...)`` drops them by hand."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flowfn import Cache, Flow, parallel_batch
from flowfn._durable.cache import code_fingerprint

PRICES = """
from flowfn import Cache, batch

@batch(items="cents", into="euros", cache=Cache(ttl=3600))
def to_euros(cents):
    return cents {op} 100
"""

RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from flowfn import Flow
from prices import to_euros
shared = {"cents": [250, 1999]}
Flow(to_euros).run(shared, checkpoint=sys.argv[2], run_id=sys.argv[3])
print(json.dumps(shared["euros"]))
"""


def run_child(folder: Path, run_id: str) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(folder), str(folder / "runs.db"), run_id],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: list[float] = json.loads(done.stdout)
    return result


def test_a_fixed_function_in_a_module_does_not_return_its_old_results(tmp_path: Path) -> None:
    module = tmp_path / "prices.py"
    module.write_text(PRICES.format(op="*"))
    assert run_child(tmp_path, "monday") == [25000, 199900]

    module.write_text(PRICES.format(op="/"))  # the fix
    assert run_child(tmp_path, "tuesday") == [2.5, 19.99]

    # Comments, blank lines and moving the function leave the key (and the cache) alone.
    module.write_text("# prices\n\n\n" + PRICES.format(op="/") + "\n# end\n")
    assert run_child(tmp_path, "wednesday") == [2.5, 19.99]


def test_the_key_follows_a_reimported_module_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "prices_here.py"
    module.write_text(PRICES.format(op="*"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "prices_here", raising=False)
    prices: Any = importlib.import_module("prices_here")
    db = tmp_path / "runs.db"

    shared: dict[str, Any] = {"cents": [250]}
    Flow(prices.to_euros).run(shared, checkpoint=db, run_id="one")
    assert shared["euros"] == [25000]

    module.write_text(PRICES.format(op="/"))
    importlib.invalidate_caches()
    # The same size and mtime second could let the import system reuse the stale .pyc.
    for cached in tmp_path.glob("__pycache__/prices_here*.pyc"):
        cached.unlink()
    prices = importlib.reload(prices)
    shared = {"cents": [250]}
    Flow(prices.to_euros).run(shared, checkpoint=db, run_id="two")
    assert shared["euros"] == [2.5]


def calls_of(cache: Cache, db: Path, run_id: str, items: list[int]) -> list[int]:
    made: list[int] = []

    @parallel_batch(items="xs", into="ys", cache=cache)
    def work(x: int) -> int:
        made.append(x)
        return x + 1

    shared: dict[str, Any] = {"xs": items}
    Flow(work).run(shared, checkpoint=db, run_id=run_id)
    assert shared["ys"] == [x + 1 for x in items]
    return sorted(made)


def test_cache_version_is_bumped_by_hand(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    assert calls_of(Cache(version=1), db, "a", [1, 2]) == [1, 2]
    assert calls_of(Cache(version=1), db, "b", [1, 2, 3]) == [3]  # same code, same version
    assert calls_of(Cache(version=2), db, "c", [1, 2]) == [1, 2]  # bumped: made again
    assert calls_of(Cache(version="2"), db, "d", [1]) == [1]  # "2" is not 2
    assert calls_of(Cache(), db, "e", [1]) == [1]
    assert repr(Cache(ttl=5, version="v3")) == "Cache(ttl=5, version='v3')"
    with pytest.raises(TypeError, match=r"Cache\(version=...\) must be a str or an int"):
        Cache(version=True)
    with pytest.raises(TypeError, match=r"Cache\(version=...\) must be a str or an int"):
        Cache(version=1.5)  # type: ignore[arg-type]


def source_fingerprint(source: str, name: str = "f") -> str:
    space: dict[str, Any] = {}
    exec(compile(textwrap.dedent(source), "<test>", "exec", dont_inherit=True), space)
    return code_fingerprint(space[name])


def test_what_the_fingerprint_follows() -> None:
    base = source_fingerprint("def f(x):\n    return [y * 100 for y in x]\n")
    same = source_fingerprint("\n\n# moved\ndef f(x):\n    return [y * 100 for y in x]  # hi\n")
    assert base == same
    # A constant inside a nested code object (the comprehension), a name, a default.
    assert base != source_fingerprint("def f(x):\n    return [y / 100 for y in x]\n")
    assert base != source_fingerprint("def f(x):\n    return [y * 101 for y in x]\n")
    nested = "def f(x):\n    def g(y):\n        return round(y, {n})\n    return g(x)\n"
    assert source_fingerprint(nested.format(n=1)) != source_fingerprint(nested.format(n=2))
    names = "import math\ndef f(x):\n    return math.{fn}(x)\n"
    assert source_fingerprint(names.format(fn="floor")) != source_fingerprint(
        names.format(fn="ceil")
    )
    defaults = "def f(x, rate={rate}):\n    return x * rate\n"
    assert source_fingerprint(defaults.format(rate=100)) != source_fingerprint(
        defaults.format(rate=0.01)
    )
    # A set constant's order follows the hash seed; its fingerprint does not.
    members = "def f(x):\n    return x in {'a', 'b', 'c', 'd'}\n"
    seeds = {
        subprocess.run(
            [sys.executable, "-c", FINGERPRINT, members],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert seeds == {source_fingerprint(members) + "\n"}


FINGERPRINT = """
import sys
from flowfn._durable.cache import code_fingerprint
space = {}
exec(sys.argv[1], space)
print(code_fingerprint(space["f"]))
"""
