"""Two versions of flowfn side by side: the same workloads, alternating fresh processes.

    git worktree add /tmp/before <commit>
    python benchmarks/compare.py /tmp/before/src src --cases sync_chain async_chain

Prints each implementation's median time per unit in both trees and the ratio new/old:
what a change costs or saves, measured in one run (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPLS = {
    "sync_chain": [("compat", "-"), ("dsl", "-")],
    "async_chain": [("compat", "asyncio"), ("dsl", "asyncio"), ("compat", "trio"), ("dsl", "trio")],
}
DEFAULT_IMPLS = [("compat", "asyncio"), ("dsl", "asyncio"), ("compat", "trio"), ("dsl", "trio")]
IMPLS["async_chain"] += [("dslobs", "asyncio"), ("dslobs", "trio")]
IMPLS["process_restart"] = [("dsl", "asyncio"), ("dsl", "trio")]


def measure(src: str, case: str, impl: str, backend: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    command = [sys.executable, str(HERE / "bench.py"), "--child", case, impl, backend]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the src/ folder of the version to compare against")
    parser.add_argument("new", help="the src/ folder of the version measured")
    parser.add_argument("--cases", nargs="+", default=["sync_chain", "async_chain"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--peers", action="store_true", help="also measure the peers (once per round, either tree)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import bench
    import workloads

    per = {case.name: getattr(workloads, case.per) for case in bench.CASES}
    samples: dict[tuple[str, str, str, str], list[float]] = {}
    cases = {case.name: case for case in bench.CASES}
    ours = ("compat", "dsl", "dslobs")
    peers = {
        name: [i for i in cases[name].impls if i[0] not in ours] if args.peers else []
        for name in args.cases
    }
    for round_ in range(args.repeat):
        for case in args.cases:
            for impl, backend in IMPLS.get(case, DEFAULT_IMPLS):
                pair = (("old", args.old), ("new", args.new))
                for tag, src in pair if round_ % 2 == 0 else pair[::-1]:  # alternating
                    seconds = measure(src, case, impl, backend)
                    samples.setdefault((case, impl, backend, tag), []).append(seconds)
            for impl, backend in peers[case]:
                seconds = measure(args.new, case, impl, backend)
                samples.setdefault((case, impl, backend, "peer"), []).append(seconds)
    for case in args.cases:
        for impl, backend in IMPLS.get(case, DEFAULT_IMPLS):
            old = statistics.median(samples[(case, impl, backend, "old")])
            new = statistics.median(samples[(case, impl, backend, "new")])
            unit = per[case]
            print(
                f"{case:15} {impl:7} {backend:8} old {old / unit * 1e6:8.3f} us  "
                f"new {new / unit * 1e6:8.3f} us  new/old {new / old:.3f}"
            )
        for impl, backend in peers[case]:
            peer = statistics.median(samples[(case, impl, backend, "peer")])
            mine = [
                (f"{i}({b})", statistics.median(samples[(case, i, b, "new")]))
                for i, b in IMPLS.get(case, DEFAULT_IMPLS)
                if b == backend or backend == "asyncio-raw"
            ]
            vs = "  ".join(f"{i}/{impl} {seconds / peer:.2f}" for i, seconds in mine)
            print(f"{case:15} {impl:11} {backend:11} {peer / per[case] * 1e6:8.3f} us  {vs}")


if __name__ == "__main__":
    main()
