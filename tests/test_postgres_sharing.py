"""Many processes, one batch, on PostgreSQL: a run with share=True and its helpers (real child
processes: tests/sharing_child.py), helpers killed with SIGKILL or stopped with Ctrl-C, the
run cancelled with `flowfn runs cancel`, the global limit and rate counted by the items
themselves; the format-2 schema and its migration; the refusals. On asyncio and trio."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

import flowfn
from flowfn import FlowError, node, parallel_batch

CHILD = Path(__file__).with_name("sharing_child.py")
backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])


def spawn(mode: str, where: str, backend: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, where, "run-1", backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def ended(process: subprocess.Popen[str], seconds: float = 120) -> tuple[int, str]:
    out, err = process.communicate(timeout=seconds)
    return process.returncode, out + err


def query(url: str, text: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    from flowfn.persistence.postgres import _own_options

    server, own = _own_options(url)
    with psycopg.connect(server, autocommit=True) as db:
        return db.execute(text.replace("{schema}", f'"{own["schema"]}"'), args).fetchall()


def events(folder: Path) -> dict[int, list[tuple[str, int, float]]]:
    """Every item start (s) and end (e) the items logged, by process id."""
    found: dict[int, list[tuple[str, int, float]]] = {}
    for path in folder.glob("*.log"):
        lines = [line.split() for line in path.read_text().splitlines() if line]
        found[int(path.stem)] = [(kind, int(i), float(t)) for kind, i, t in lines]
    return found


def ends(folder: Path) -> int:
    return sum(kind == "e" for rows in events(folder).values() for kind, _, _ in rows)


def wait_for(what: str, ready: Any, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def recorded_indices(url: str) -> list[int]:
    """The indices of every item result the run's journal recorded (with repeats)."""
    indices: list[int] = []
    for (blob,) in query(url, "SELECT results FROM {schema}.items"):
        indices.extend(pickle.loads(blob)[0])
    return indices


def most_in_flight(log: dict[int, list[tuple[str, int, float]]], killed: dict[int, float]) -> int:
    """The most items running at once, over every process: an item of a killed process that
    never logged its end ran until that process was killed."""
    changes: list[tuple[float, int]] = []
    for pid, rows in log.items():
        open_starts: dict[int, float] = {}
        for kind, index, when in rows:
            if kind == "s":
                open_starts[index] = when
            else:
                changes += [(open_starts.pop(index), 1), (when, -1)]
        for started in open_starts.values():
            changes += [(started, 1), (killed.get(pid, float("inf")), -1)]
    running = most = 0
    for _, change in sorted(changes, key=lambda c: (c[0], c[1])):  # ends first at a tie
        running += change
        most = max(most, running)
    return most


def most_starts_in(log: dict[int, list[tuple[str, int, float]]], window: float) -> int:
    starts = sorted(when for rows in log.values() for kind, _, when in rows if kind == "s")
    most, first = 0, 0
    for last, when in enumerate(starts):
        while starts[first] < when - window:
            first += 1
        most = max(most, last - first + 1)
    return most


@backends
def test_four_processes_share_a_batch_under_one_limit_and_rate_while_helpers_are_killed(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    items, limit, rate = 20_000, 40, 2000.0
    url = f"{postgres_url}&lease=2"  # the killed helpers' claims expire soon
    shared_log, single_log = tmp_path / "shared", tmp_path / "single"
    shared_log.mkdir()
    single_log.mkdir()
    env = {"SHARING_ITEMS": str(items), "SHARING_LIMIT": str(limit), "SHARING_RATE": str(rate)}
    env["SHARING_SLEEP"] = "0.002"
    helpers = [spawn("help", url, backend, {**env, "SHARING_LOG": str(shared_log)}) for _ in "abc"]
    run = spawn("run", url, backend, {**env, "SHARING_LOG": str(shared_log)})
    killed: dict[int, float] = {}
    try:
        for victim, after in ((helpers[0], items // 4), (helpers[1], items // 2)):
            wait_for(f"{after} items ended", lambda after=after: ends(shared_log) >= after)
            assert str(victim.pid) in {path.stem for path in shared_log.glob("*.log")}
            victim.send_signal(signal.SIGKILL)
            killed[victim.pid] = time.time()
        code, output = ended(run)
        assert code == 0, output
    finally:
        for process in (run, *helpers):
            if process.poll() is None:
                process.kill()
            process.communicate()
    result = json.loads(output)
    assert helpers[2].returncode == 0  # the helper left alive returned once the run ended
    single = subprocess.run(
        [sys.executable, str(CHILD), "single", str(tmp_path / "one.db"), "run-1", backend],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "SHARING_SLEEP": "0", "SHARING_LOG": str(single_log)},
        timeout=120,
    )
    assert single.returncode == 0, single.stdout + single.stderr
    assert result == json.loads(single.stdout)  # what one process gives
    assert result["total"] == sum(3 * x + 1 for x in range(items))

    # Every item's result recorded exactly once, in the run's journal.
    assert sorted(recorded_indices(url)) == list(range(items))
    log = events(shared_log)
    assert len(log) == 4  # every process ran items
    starts: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for pid, rows in log.items():
        for kind, index, when in rows:
            if kind == "s":
                starts[index].append((when, pid))
    assert set(starts) == set(range(items))
    # An item ran again only if it was in flight on a helper that was killed: every start
    # but its last was on a killed helper.
    again = {index: sorted(pids) for index, pids in starts.items() if len(pids) > 1}
    for index, pids in again.items():
        assert all(pid in killed for _, pid in pids[:-1]), (index, pids, killed)
    assert len(again) <= 2 * limit
    assert most_in_flight(log, killed) <= limit
    burst = rate / 10
    assert most_starts_in(log, 1.0) <= rate + burst
    assert most_starts_in(log, 0.1) <= rate * 0.1 + burst
    assert not query(url, "SELECT * FROM {schema}.work")  # the batch's rows are gone
    status = query(url, "SELECT status FROM {schema}.runs")
    assert status == [("done",)]
