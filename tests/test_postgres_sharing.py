"""Many processes, one batch, on PostgreSQL: a run with share=True and its helpers (real child
processes: tests/sharing_child.py), helpers killed with SIGKILL or stopped with Ctrl-C, the
run cancelled with `flowfn runs cancel`, the global limit and rate counted by the items
themselves; the format-2 schema and its migration; the refusals. On asyncio and trio."""

from __future__ import annotations

import functools
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


def wait_for(what: str, ready: Any, *watched: subprocess.Popen[str], seconds: float = 90) -> None:
    """Wait until ``ready()``; on a time-out, the stacks of the ``watched`` processes."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            stacks = []
            for process in watched:
                process.send_signal(signal.SIGUSR1)
                time.sleep(0.5)
                process.kill()
                stacks.append(process.communicate()[1])
            raise AssertionError(f"timed out waiting until {what}\n" + "\n".join(stacks))
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
        env={
            **os.environ,
            **env,
            "SHARING_SLEEP": "0",
            "SHARING_RATE": "1e9",  # as fast as it goes: only its result matters here
            "SHARING_LOG": str(single_log),
        },
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
    # The bucket lets `burst` start at once, then `rate` a second. An item logs its start a
    # moment after its claim (its process schedules it): allow 50 ms of such lag.
    burst, lag = rate / 10, 0.05
    assert most_starts_in(log, 1.0) <= rate * (1.0 + lag) + burst
    assert most_starts_in(log, 0.1) <= rate * (0.1 + lag) + burst
    assert not query(url, "SELECT * FROM {schema}.work")  # the batch's rows are gone
    status = query(url, "SELECT status FROM {schema}.runs")
    assert status == [("done",)]


@backends
def test_a_named_limiter_holds_across_the_run_and_its_helpers(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    """``limiter=flowfn.Limiter(4, per_second=40, name="api")``: at most 4 attempts at once
    and 40 starts a second (after a burst of 4) in all three processes together, though
    the batch's own limit (40) would let ten times as many run."""
    items, concurrency, per_second = 120, 4, 40.0
    log_folder = tmp_path / "log"
    log_folder.mkdir()
    env = {
        "SHARING_ITEMS": str(items),
        "SHARING_LIMIT": "40",
        "SHARING_RATE": "1e6",
        "SHARING_SLEEP": "0.03",
        "SHARING_LIMITER": f"{concurrency},{per_second:g}",
        "SHARING_LOG": str(log_folder),
    }
    helpers = [spawn("help", postgres_url, backend, env) for _ in "ab"]
    run = spawn("run", postgres_url, backend, env)
    try:
        code, output = ended(run)
        assert code == 0, output
        for helper in helpers:
            assert ended(helper)[0] == 0
    finally:
        for process in (run, *helpers):
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert json.loads(output)["total"] == sum(3 * x + 1 for x in range(items))
    log = events(log_folder)
    assert len(log) >= 2  # helpers took items too: the limit held across processes
    assert most_in_flight(log, {}) <= concurrency
    burst, lag = max(1.0, per_second / 10), 0.05
    assert most_starts_in(log, 1.0) <= per_second * (1.0 + lag) + burst
    assert query(postgres_url, "SELECT count(*) FROM {schema}.limiter_slots") == [(0,)]


def claims_of(url: str, pid: int) -> int:
    rows = query(url, "SELECT count(*) FROM {schema}.work WHERE state = 1 AND owner LIKE %s",
                 f"%:{pid}:%")  # fmt: skip
    return int(rows[0][0])


def started_in(folder: Path, pid: int) -> bool:
    return any(kind == "s" for kind, _, _ in events(folder).get(pid, []))


@backends
def test_a_helper_stopped_with_ctrl_c_gives_its_claims_back_at_once(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    url = f"{postgres_url}&lease=600"  # an expired claim cannot explain what follows
    env = {"SHARING_ITEMS": "40", "SHARING_LIMIT": "40", "SHARING_LOG": str(tmp_path)}
    (tmp_path / "hold").touch()
    helper = spawn("help", url, backend, env)
    run = spawn("run", url, backend, {**env, "SHARING_BLOCK": "0.05"})
    try:
        wait_for("the helper started items", lambda: started_in(tmp_path, helper.pid))
        wait_for("its claims are in the table", lambda: claims_of(url, helper.pid) > 0)
        helper.send_signal(signal.SIGINT)
        helper.communicate(timeout=60)
        assert claims_of(url, helper.pid) == 0  # given back, long before they would expire
        (tmp_path / "hold").unlink()
        code, output = ended(run)
        assert code == 0, output
    finally:
        for process in (run, helper):
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert json.loads(output)["total"] == sum(3 * x + 1 for x in range(40))
    assert sorted(recorded_indices(url)) == list(range(40))
    log = events(tmp_path)
    assert not any(kind == "e" for kind, _, _ in log[helper.pid])  # it finished none
    ran_by_run = {index for kind, index, _ in log[run.pid] if kind == "e"}
    assert ran_by_run == set(range(40))  # the run took the helper's items back and ran them


@backends
def test_runs_cancel_stops_the_run_and_its_helpers_at_their_next_checkpoint(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    env = {"SHARING_ITEMS": "60", "SHARING_LIMIT": "60", "SHARING_LOG": str(tmp_path)}
    (tmp_path / "hold").touch()
    helper = spawn("help", postgres_url, backend, env)
    run = spawn("run", postgres_url, backend, env)
    try:
        # (Either process may have claimed every item.)
        wait_for("items started", lambda: any(events(tmp_path).values()), run, helper)
        cancel = subprocess.run(
            [sys.executable, "-m", "flowfn", "runs", "cancel", postgres_url, "run-1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        assert "cancelled run run-1" in cancel.stdout
        code, output = ended(run, 60)
        helper_code, helper_output = ended(helper, 60)
    finally:
        (tmp_path / "hold").unlink()
        for process in (run, helper):
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert code == 1, output
    assert "RunCancelled: run 'run-1'" in output
    assert "was cancelled" in output
    assert helper_code == 0, helper_output
    # Held items were stopped where they waited: none of them ended.
    assert not any(kind == "e" for rows in events(tmp_path).values() for kind, _, _ in rows)
    assert query(postgres_url, "SELECT status FROM {schema}.runs") == [("cancelled",)]
    assert not query(postgres_url, "SELECT * FROM {schema}.work")
    again = subprocess.run(
        [sys.executable, "-m", "flowfn", "runs", "cancel", postgres_url, "run-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode != 0
    assert "is not running" in again.stderr + again.stdout


# -- in one process: the run and a helper on the same event loop ---------------------------


@parallel_batch(items="xs", into="ys", limit=8, errors="collect", retries=1)
async def flaky(x: int) -> int:
    await anyio.sleep(0.001)
    if x % 7 == 3:
        raise ValueError(f"item {x} fails")
    return x * 10


@node
def make_items(shared: dict[str, Any]) -> None:
    shared["xs"] = list(range(50))


in_process = flowfn.Flow(make_items)
make_items >> flaky


@pytest.mark.anyio
async def test_a_run_and_a_helper_in_one_event_loop_share_a_batch_that_collects_errors(
    postgres_url: str, anyio_backend: str
) -> None:
    shared: dict[str, Any] = {}
    helped: list[int] = []

    async def helper() -> None:
        helped.append(await flowfn.work_async(postgres_url, "r", in_process))

    async with anyio.create_task_group() as tg:
        tg.start_soon(helper)
        await anyio.sleep(0.2)
        await in_process.run_async(shared, checkpoint=postgres_url, run_id="r", share=True)
    results = shared["ys"]
    assert isinstance(results, flowfn.BatchResults)
    assert [r for r in results if not isinstance(r, Exception)] == [
        x * 10 for x in range(50) if x % 7 != 3
    ]
    assert sorted(results.errors) == [x for x in range(50) if x % 7 == 3]
    assert all("fails" in str(e) for e in results.errors.values())
    assert helped
    assert 0 <= helped[0] <= 50
    # Resumed, a finished run gives its store again without running anything.
    again: dict[str, Any] = {}
    await in_process.run_async(again, checkpoint=postgres_url, run_id="r", share=True)
    assert [r for r in again["ys"] if not isinstance(r, Exception)] == [
        x * 10 for x in range(50) if x % 7 != 3
    ]


one_at_a_time = flowfn.Limiter(1, name="one-at-a-time")


@parallel_batch(items="xs", into="ys", limit=8, limiter=one_at_a_time)
async def fails_while_others_wait(x: int) -> int:
    await anyio.sleep(0.05)
    if x == 2:
        raise ValueError("item 2 fails")
    return x


@node
def make_few(shared: dict[str, Any]) -> None:
    shared["xs"] = list(range(8))


limited_flow = flowfn.Flow(make_few)
make_few >> fails_while_others_wait


@pytest.mark.anyio
async def test_a_named_limiter_gives_every_slot_back_when_a_failure_cancels_the_waiters(
    postgres_url: str, anyio_backend: str
) -> None:
    """Items waiting for the named limiter's one slot, and the one holding it, are
    cancelled when item 2 fails: no slot stays taken (it would be renewed, and so held, for
    as long as the process lives), so the run resumed takes the slot again at once."""
    with pytest.raises(ValueError, match="item 2 fails"):
        await limited_flow.run_async({}, checkpoint=postgres_url, run_id="l", share=True)
    assert query(postgres_url, "SELECT count(*) FROM {schema}.limiter_slots") == [(0,)]


@parallel_batch(items="xs", into="ys")
async def writes_shared(x: int, shared: dict[str, Any]) -> int:
    shared[str(x)] = x
    return x


@node
def make_more(shared: dict[str, Any]) -> None:
    shared["xs"] = list(range(50))


refused = flowfn.Flow(make_more)
make_more >> writes_shared


@pytest.mark.anyio
async def test_a_batch_whose_function_takes_shared_is_refused_for_helpers(
    postgres_url: str, anyio_backend: str
) -> None:
    with pytest.raises(FlowError, match="node 'writes_shared' takes 'shared'"):
        await refused.run_async({}, checkpoint=postgres_url, run_id="x", share=True)
    with pytest.raises(FlowError, match="node 'writes_shared' takes 'shared'"):
        await flowfn.work_async(postgres_url, "x", refused)
    # Without share=True, the same flow runs durably as ever.
    shared: dict[str, Any] = {}
    await refused.run_async(shared, checkpoint=postgres_url, run_id="y")
    assert shared["ys"] == list(range(50))


@pytest.mark.anyio
async def test_share_needs_a_postgres_checkpoint(tmp_path: Path, anyio_backend: str) -> None:
    with pytest.raises(FlowError, match="share=True shares the run's batches with helpers"):
        await in_process.run_async({}, checkpoint=str(tmp_path / "c.db"), share=True)
    with pytest.raises(TypeError, match="share= are about a run in a checkpoint"):
        await in_process.run_async({}, share=True)


def test_a_format_1_schema_is_migrated_to_the_current_format(postgres_url: str) -> None:
    import psycopg

    from flowfn.persistence import postgres
    from flowfn.persistence.postgres import PostgresStore, _own_options

    server, own = _own_options(postgres_url)
    schema = own["schema"]
    with psycopg.connect(server, autocommit=True) as db:  # what a format-1 flowfn made
        db.execute(f'CREATE SCHEMA "{schema}"')
        db.execute(postgres._TABLES.replace("{schema}", f'"{schema}"'))
        db.execute(f"INSERT INTO \"{schema}\".meta VALUES ('format', '1')")
        db.execute(
            f'INSERT INTO "{schema}".runs (run_id, flow, shape, serializer, status, created, '
            "updated) VALUES ('old', 'f', 's', 'pickle', 'done', 0, 0)"
        )
    store = PostgresStore(postgres_url)
    assert [run.run_id for run in store.runs()] == ["old"]
    assert query(postgres_url, "SELECT value FROM {schema}.meta WHERE key = 'format'") == [
        (str(postgres.SCHEMA_FORMAT),)
    ]
    assert postgres.SCHEMA_FORMAT == 3
    assert query(postgres_url, "SELECT run_id, cancelled FROM {schema}.runs") == [("old", False)]
    assert query(postgres_url, "SELECT count(*) FROM {schema}.work") == [(0,)]
    assert query(postgres_url, "SELECT count(*) FROM {schema}.shared_batches") == [(0,)]
    assert query(postgres_url, "SELECT count(*) FROM {schema}.limiter_slots") == [(0,)]
    store.close()


@backends
def test_a_shared_run_killed_mid_batch_resumes_without_redoing_what_it_recorded(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    url = f"{postgres_url}&lease=2"
    env = {"SHARING_ITEMS": "3000", "SHARING_LIMIT": "40", "SHARING_RATE": "1e9"}
    env |= {"SHARING_SLEEP": "0.005", "SHARING_LOG": str(tmp_path)}
    helper = spawn("help", url, backend, env)
    run = spawn("run", url, backend, env)
    try:
        wait_for("a third of the items ended", lambda: ends(tmp_path) >= 1000, run, helper)
        run.kill()
        run.communicate()
        recorded_at_kill = set(recorded_indices(url))
        # The run is no longer live once its lease expired: the helper returns.
        helper_code, helper_output = ended(helper, 60)
        assert helper_code == 0, helper_output
        again = spawn("run", url, backend, env)
        code, output = ended(again)
    finally:
        for process in (run, helper):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert code == 0, output
    assert json.loads(output)["total"] == sum(3 * x + 1 for x in range(3000))
    assert sorted(recorded_indices(url)) == list(range(3000))  # each once, old and new
    started_again = Counter(index for rows in events(tmp_path).values()
                            for kind, index, _ in rows if kind == "s")  # fmt: skip
    assert recorded_at_kill  # the killed run had recorded some items ...
    assert all(started_again[index] == 1 for index in recorded_at_kill)  # ... run once


def test_flowfn_run_share_on_the_command_line(postgres_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "SHARING_ITEMS": "30", "SHARING_LOG": str(tmp_path)}
    target = f"{CHILD}:flow"
    command = [sys.executable, "-m", "flowfn", "run", target, "--run-id", "cli", "--share"]
    shared = subprocess.run(
        [*command, "--checkpoint", postgres_url], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert shared.returncode == 0, shared.stdout + shared.stderr
    assert json.loads(shared.stdout)["shared"]["total"] == sum(3 * x + 1 for x in range(30))
    assert sorted(recorded_indices(postgres_url)) == list(range(30))
    on_sqlite = subprocess.run(
        [*command, "--checkpoint", str(tmp_path / "runs.db")], capture_output=True, text=True,
        env=env, timeout=120,
    )  # fmt: skip
    assert on_sqlite.returncode != 0
    assert "share=True shares the run's batches with helpers" in on_sqlite.stderr


@pytest.mark.anyio
async def test_runs_cancel_refuses_a_run_started_without_share(
    postgres_url: str, anyio_backend: str
) -> None:
    from flowfn.persistence import cancel

    started, release = anyio.Event(), anyio.Event()

    @node
    async def wait_here(shared: dict[str, Any]) -> None:
        started.set()
        await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                flowfn.Flow(wait_here).run_async, {}, checkpoint=postgres_url, run_id="plain"
            )
        )
        await started.wait()
        with pytest.raises(FlowError, match="started without share=True"):
            await anyio.to_thread.run_sync(cancel, postgres_url, "plain")
        release.set()
    assert not await anyio.to_thread.run_sync(cancel, postgres_url, "plain")  # it ended
    assert not await anyio.to_thread.run_sync(cancel, postgres_url, "no such run")


def test_runs_resume_shares_a_run_that_was_shared(postgres_url: str, tmp_path: Path) -> None:
    """`flowfn runs resume` resumes a run started with --share as it started: shared, so the
    helpers take their part of the rest. (Resumed without sharing, the batch the killed
    process published is gone: a helper takes nothing, as the second half checks.)"""
    url = f"{postgres_url}&lease=2"
    env = {**os.environ, "SHARING_ITEMS": "400", "SHARING_SLEEP": "0.05"}
    env |= {"SHARING_LIMIT": "8", "SHARING_LOG": str(tmp_path)}
    flowfn_cli = [sys.executable, "-m", "flowfn"]
    first = subprocess.Popen(
        [*flowfn_cli, "run", f"{CHILD}:flow", "--run-id", "run-1", "--share", "--checkpoint", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for("50 items ended", lambda: ends(tmp_path) >= 50, first)
    finally:
        first.kill()
        first.communicate()
    from flowfn.persistence import PostgresStore

    store = PostgresStore(url)
    assert [(run.run_id, run.share) for run in store.runs()] == [("run-1", True)]
    store.close()
    time.sleep(2.5)  # the killed run's lease expires
    resumed = subprocess.Popen(
        [*flowfn_cli, "runs", "resume", url, "run-1", "--trust"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    helper = None
    try:
        before = ends(tmp_path)
        wait_for("the resumed run's items end", lambda: ends(tmp_path) >= before + 8, resumed)
        helper = spawn("help", url, "asyncio", {**env, "SHARING_LOG": str(tmp_path)})
        code, output = ended(resumed)
        assert code == 0, output
        helper_code, helper_output = ended(helper)
        assert helper_code == 0, helper_output
    finally:
        for process in (resumed, helper):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert json.JSONDecoder().raw_decode(output)[0]["shared"]["total"] == sum(
        3 * x + 1 for x in range(400)
    )
    assert started_in(tmp_path, helper.pid), helper_output  # it took items of the resumed run

    # Resumed without share=True: what the killed process published is withdrawn at once,
    # so a helper runs nothing that the run's own process runs too.
    env |= {"SHARING_LOG": str(tmp_path / "unshared")}
    (tmp_path / "unshared").mkdir()
    first = subprocess.Popen(
        [*flowfn_cli, "run", f"{CHILD}:flow", "--run-id", "run-2", "--share", "--checkpoint", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for("50 items ended", lambda: ends(tmp_path / "unshared") >= 50, first)
    finally:
        first.kill()
        first.communicate()
    time.sleep(2.5)
    unshared = subprocess.Popen(  # the same run, resumed without share=True
        [sys.executable, str(CHILD), "single", url, "run-2", "asyncio"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    helper = None
    try:
        before = ends(tmp_path / "unshared")
        wait_for("items end", lambda: ends(tmp_path / "unshared") >= before + 8, unshared)
        helper = subprocess.Popen(
            [sys.executable, str(CHILD), "help", url, "run-2", "asyncio"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        code, output = ended(unshared)
        assert code == 0, output
        ended(helper)
    finally:
        for process in (unshared, helper):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert json.JSONDecoder().raw_decode(output)[0]["total"] == sum(3 * x + 1 for x in range(400))
    assert not started_in(tmp_path / "unshared", helper.pid)


def test_an_item_whose_processes_keep_dying_fails_instead_of_killing_them_all(
    postgres_url: str,
) -> None:
    """An item whose claim expired three times (each process that ran it died: it may be
    what kills them) is recorded as failed, with a FlowError that says so, and leaves the
    batch's live count; an item claimed as often but given back (Ctrl-C) is not."""
    from flowfn.persistence import _sharing
    from flowfn.persistence.postgres import PostgresStore

    store = PostgresStore(f"{postgres_url}&lease=1")
    run_id, position = "run-1", "[1]"
    shared = _sharing._Shared(store, run_id)
    items = [(index, store.serializer.dumps(index)) for index in range(2)]
    row = (run_id, position, "triple", "[1]", 2, None, None, None, None, None)
    try:
        shared.records.call(_sharing._publish, row, items, shared.payload("opened", position))
        for death in range(_sharing.MOST_DEATHS):
            claimed, _, _ = shared.claims.call(
                _sharing._claim, run_id, position, shared.owner, 1, True
            )
            assert [index for index, _ in claimed] == [0], death
            query(postgres_url, "UPDATE {schema}.work SET expires = 0 WHERE idx = 0 RETURNING idx")
        other = _sharing._Shared(store, run_id)  # another process: item 1, given back often
        for _ in range(_sharing.MOST_DEATHS + 1):
            claimed, _, _ = other.claims.call(
                _sharing._claim, run_id, position, other.owner, 1, False
            )
            assert [index for index, _ in claimed] == [1]
            other.give_back(position)
        other.close()
        claimed, _, _ = shared.claims.call(_sharing._claim, run_id, position, shared.owner, 2, True)
        assert [index for index, _ in claimed] == [1]  # item 0 is not handed out again
        ((state, ok, blob),) = query(
            postgres_url, "SELECT state, ok, result FROM {schema}.work WHERE idx = 0"
        )
        assert (state, ok) == (_sharing._RECORDED, False)
        failure = _sharing._loaded(store.serializer.loads, bytes(blob), False)
        assert isinstance(failure, FlowError)
        assert "died (its claim expired) 3 times" in str(failure)
        assert query(postgres_url, "SELECT live FROM {schema}.shared_batches") == [(1,)]
    finally:
        shared.close()
        store.close()
