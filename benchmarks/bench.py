"""flowfn vs PocketFlow 0.0.3 vs a bare anyio pool, side by side in one run.

    python benchmarks/bench.py [--repeat 5] [--quick] [--write docs/performance.md]

Each measurement runs in a fresh process (so peak RSS is the workload's own), the
implementations take turns within every round, and the table reports medians and ratios.
Needs ``pip install -e '.[bench]'`` (PocketFlow 0.0.3, trio and aiometer).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BACKENDS = ("asyncio", "trio")
#: The peers flowfn is measured against: import name, distribution, version (None: any).
PEERS = (
    ("pocketflow", "pocketflow", "0.0.3"),
    ("trio", "trio", None),
    ("aiometer", "aiometer", None),
)
INSTALL = "pip install -e '.[bench]'"


def missing_peers() -> list[str]:
    """What of :data:`PEERS` is not installed (or not at the measured version), as phrases."""
    missing = []
    for module, dist, version in PEERS:
        if importlib.util.find_spec(module) is None:
            missing.append(dist if version is None else f"{dist}=={version}")
        elif version is not None and importlib.metadata.version(dist) != version:
            found = importlib.metadata.version(dist)
            missing.append(f"{dist}=={version} (found {found})")
    return missing


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    per: str  # workloads.py constant: how many units one run does
    unit: str
    impls: tuple[tuple[str, str], ...]  # (implementation, backend)


def _async_impls(
    with_pf: bool = True,
    with_dsl: bool = True,
    with_anyio: bool = False,
    observed: bool = False,
    peers: bool = False,
    asyncio_pool: bool = False,
    byhand: bool = False,
) -> tuple:
    rows = [("pocketflow", "asyncio-raw")] if with_pf else []
    for backend in BACKENDS:
        rows.append(("compat", backend))
        if with_dsl:
            rows.append(("dsl", backend))
        if observed:
            rows.append(("dslobs", backend))
        if with_anyio:
            rows.append(("anyio", backend))
        if peers or byhand:
            rows.append(("byhand", backend))
        if peers:
            rows.append(("aiometer", backend))
    if asyncio_pool:
        rows.append(("asynciopool", "asyncio"))
    return tuple(rows)


CASES = (
    Case(
        "sync_chain",
        "Sync node transitions (100k)",
        "TRANSITIONS",
        "us/transition",
        (("pocketflow", "-"), ("compat", "-"), ("dsl", "-")),
    ),
    Case(
        "async_chain",
        "Async node transitions (100k)",
        "TRANSITIONS",
        "us/transition",
        _async_impls(observed=True),
    ),
    Case(
        "parallel_noop",
        "Parallel batch, 100k no-op items",
        "NOOP_ITEMS",
        "us/item",
        _async_impls(with_anyio=True, observed=True, peers=True, asyncio_pool=True),
    ),
    Case(
        "parallel_flows",
        "Parallel batch flow, 5k sub-flows x 3 nodes, each awaiting sleep(0)",
        "SUB_FLOWS",
        "us/sub-flow",
        _async_impls(peers=True),
    ),
    Case(
        "million",
        "1M no-op items, limit 1000 (PocketFlow has no limit: not run)",
        "MILLION",
        "us/item",
        _async_impls(with_pf=False, with_anyio=True, asyncio_pool=True),
    ),
    Case(
        "sleepers",
        "10k items sleeping 10 ms, limit 1000 (ideal: 10 rounds = 100 ms)",
        "SLEEPERS",
        "ms total",
        _async_impls(with_anyio=True, byhand=True),
    ),
    Case(
        "process_restart",
        'workers="process": a second Flow.run() of 10 CPU items, until its first item starts',
        "RESTARTS",
        "ms total",
        (("dsl", "asyncio"), ("dsl", "trio")),
    ),
)


def run_child(case: str, impl: str, backend: str) -> None:
    sys.path.insert(0, str(HERE))
    import asyncio

    import anyio
    import workloads

    # Warm up: the first run of a backend imports it (trio: ~0.2 s), which is not the workload.
    if backend in BACKENDS:
        anyio.run(anyio.sleep, 0, backend=backend)
    else:
        asyncio.run(asyncio.sleep(0))
    if impl in ("pocketflow", "compat"):
        if impl == "pocketflow":
            import pocketflow as mod
        else:
            import flowfn.compat as mod
        seconds = getattr(workloads, f"class_{case}")(mod, backend)
    else:
        seconds = getattr(workloads, f"{impl}_{case}")(backend)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb}))


def measure(case: Case, impl: str, backend: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case.name, impl, backend],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:  # the child's own error, not a bare CalledProcessError
        raise SystemExit(f"bench.py: {case.name} on {label(impl, backend)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def label(impl: str, backend: str) -> str:
    names = {
        "pocketflow": "PocketFlow 0.0.3",
        "compat": "flowfn.compat",
        "dsl": "flowfn DSL",
        "dslobs": "flowfn DSL, observed",
        "anyio": "bare anyio pool",
        "byhand": "TaskGroup + Semaphore by hand"
        if backend == "asyncio"
        else "nursery + CapacityLimiter by hand",
        "aiometer": "aiometer",
        "asynciopool": "bare asyncio pool",
    }
    return names[impl] + ("" if backend in ("-", "asyncio-raw") else f" ({backend})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median is reported)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, skip the 1M case")
    parser.add_argument("--only", nargs="*", help="case names to run")
    parser.add_argument("--write", type=Path, help="also write the Markdown table here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    missing = missing_peers()
    if missing:  # say so now, not after half a minute of measuring
        raise SystemExit(
            f"bench.py measures flowfn against its peers; missing: {', '.join(missing)}.\n"
            f"Install them with: {INSTALL}"
        )

    sys.path.insert(0, str(HERE))
    import workloads

    repeat = 3 if args.quick else args.repeat
    cases = [c for c in CASES if (not args.only or c.name in args.only)]
    if args.quick:
        cases = [c for c in cases if c.name != "million"]

    lines = [
        "| workload | implementation | time | peak RSS | vs PocketFlow | vs bare anyio "
        "| vs by hand |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    verdicts: list[str] = []
    for case in cases:
        samples: dict[tuple[str, str], list[dict[str, float]]] = {i: [] for i in case.impls}
        for round_ in range(repeat):
            order = case.impls if round_ % 2 == 0 else tuple(reversed(case.impls))
            for impl in order:
                samples[impl].append(measure(case, *impl))
        per = getattr(workloads, case.per)
        med: dict[tuple[str, str], tuple[float, float]] = {}
        for impl, runs in samples.items():
            seconds = statistics.median(r["seconds"] for r in runs)
            rss = statistics.median(r["rss_mb"] for r in runs)
            med[impl] = (seconds, rss)
        pf = med.get(("pocketflow", "-")) or med.get(("pocketflow", "asyncio-raw"))
        print(f"\n{case.title}")
        for impl, (seconds, rss) in med.items():
            shown = seconds * 1000 if case.unit == "ms total" else seconds / per * 1e6
            vs_pf = f"{seconds / pf[0]:.2f}x time, {rss / pf[1]:.2f}x RSS" if pf else ""
            base = med.get(("anyio", impl[1]))
            vs_anyio = f"{seconds / base[0]:.2f}x" if base and impl[0] != "anyio" else ""
            hand = med.get(("byhand", impl[1]))
            vs_hand = f"{seconds / hand[0]:.2f}x" if hand and impl[0] != "byhand" else ""
            row = (
                f"| {case.title if impl == case.impls[0] else ''} | {label(*impl)} | "
                f"{shown:.2f} {case.unit} | {rss:.0f} MB | {vs_pf} | {vs_anyio} | {vs_hand} |"
            )
            lines.append(row)
            print(
                f"  {label(*impl):<46} {shown:10.2f} {case.unit:<14} {rss:6.0f} MB  {vs_pf}  "
                f"{vs_anyio}  {vs_hand}"
            )
        for impl in case.impls:
            if impl[1] == "trio" and (impl[0], "asyncio") in med:
                a, t = med[(impl[0], "asyncio")][0], med[impl][0]
                verdicts.append(f"{case.name}: {label(impl[0], '-')} trio/asyncio = {t / a:.2f}x")
    header = [
        f"Measured by `python benchmarks/bench.py --repeat {repeat}"
        f"{' --quick' if args.quick else ''}` on {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores. Medians of {repeat} rounds, "
        "each measurement in a fresh process; ratios are within this one run.",
        "",
    ]
    table = "\n".join([*header, *lines, "", *(f"- {v}" for v in verdicts)]) + "\n"
    print("\n" + "\n".join(f"- {v}" for v in verdicts))
    if args.write:
        text = args.write.read_text() if args.write.exists() else ""
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start in text and end in text:
            text = text[: text.index(start) + len(start)] + "\n" + table + text[text.index(end) :]
        else:
            text += f"\n{start}\n{table}{end}\n"
        args.write.write_text(text)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
