"""Adversarial cases of shared batches on PostgreSQL (issue 23, part 2): a run taken over by
another process while its first process still lives, notification payloads near Postgres's
8000-byte limit, a cancel sent while the run's LISTEN connection is cut, a schema and a run
id with quotes and spaces, a helper with another flow. Real Postgres, real child processes
(tests/sharing_child.py) where a process's fate is the point."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_postgres_sharing import (
    ended,
    events,
    query,
    recorded_indices,
    spawn,
    wait_for,
)

import flowfn
from flowfn import FlowError, node, parallel_batch

backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])


def lease_expired(url: str) -> bool:
    now = "extract(epoch FROM clock_timestamp())"
    rows = query(url, f"SELECT count(*) FROM {{schema}}.leases WHERE expires >= {now}")
    return int(rows[0][0]) == 0


@backends
def test_a_run_taken_over_while_its_first_process_lives_ends_with_every_result(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    """The first process is stopped (SIGSTOP: a network cut, a frozen VM) longer than its
    lease; another process resumes the run; then the first wakes up. It must not take items
    of the new attempt's batch (recording them where the new holder never sees them) nor
    delete that batch: the new holder ends with every item's result, recorded once."""
    items = 200
    url = f"{postgres_url}&lease=2"
    env = {"SHARING_ITEMS": str(items), "SHARING_LIMIT": "20", "SHARING_RATE": "1e9"}
    env |= {"SHARING_SLEEP": "0.01", "SHARING_LOG": str(tmp_path)}
    (tmp_path / "hold").touch()
    first = spawn("run", url, backend, env)
    second = None
    try:
        wait_for("items started", lambda: any(events(tmp_path).values()), first)
        first.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        wait_for("the first process's lease expired", lambda: lease_expired(url))
        second = spawn("run", url, backend, env)
        wait_for(
            "the second process started items",
            lambda: bool(events(tmp_path).get(second.pid)),  # type: ignore[union-attr]
            second,
        )
        first.send_signal(signal.SIGCONT)
        time.sleep(1.0)  # the first process wakes while the second's items are held
        (tmp_path / "hold").unlink()
        code, output = ended(second, 60)
        first_code, first_output = ended(first, 120)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.communicate()
    assert code == 0, output
    assert json.loads(output)["total"] == sum(3 * x + 1 for x in range(items))
    assert first_code != 0
    assert "lost its lease" in first_output, first_output
    assert sorted(recorded_indices(url)) == list(range(items))


def test_a_record_of_a_thousand_items_of_a_big_batch_fits_in_its_notifications(
    postgres_url: str,
) -> None:
    """A notification holds at most 8000 bytes: 1000 six-digit indices (items past the
    100000th, recorded together, as a helper does with `limit=1000` items that wait) did
    not fit, and the record failed with "payload string too long"."""
    from flowfn.persistence import _sharing
    from flowfn.persistence.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    run_id, position = "run-1", "[1]"
    shared = _sharing._Shared(store, run_id)
    first = 100_000
    items = [(index, store.serializer.dumps(index)) for index in range(first, first + 1000)]
    row = (run_id, position, "triple", "[1]", first + 1000, None, None, None, None, None)
    heard: list[int] = []
    listener = store._connect()
    try:
        listener.execute(f"LISTEN {_sharing._channel(store.schema)}")
        shared.records.call(_sharing._publish, row, items, shared.payload("opened", position))
        claimed, _, _ = shared.claims.call(
            _sharing._claim, run_id, position, shared.owner, 1000, False
        )
        assert len(claimed) == 1000
        rows = [(index, True, store.serializer.dumps(3 * index)) for index, _ in claimed]
        accepted = shared.records.call(
            _sharing._record,
            (run_id, position),
            shared.owner,
            _sharing._RECORDED,
            rows,
            shared.payload("recorded", position),
        )
        assert accepted == set(range(first, first + 1000))
        for note in listener.notifies(timeout=1.0, stop_after=None):
            payload = json.loads(note.payload)
            if payload[1] == "recorded":
                heard.extend(payload[3])
    finally:
        listener.close()
        shared.close()
        store.close()
    assert sorted(heard) == list(range(first, first + 1000))


def listeners(url: str) -> list[int]:
    """The sessions that LISTEN (their last statement: LISTEN, or a look at the run)."""
    found = "query LIKE 'LISTEN %%flowfn_%%' OR query LIKE 'SELECT cancelled FROM%%'"
    return [int(pid) for (pid,) in query(url, f"SELECT pid FROM pg_stat_activity WHERE {found}")]


@backends
def test_a_cancel_sent_while_the_runs_listener_reconnects_still_stops_the_run(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    """The run's LISTEN connection is cut (a server restart, a proxy timing out an idle
    session) and `flowfn runs cancel` comes while it reconnects: its notification is heard
    by nobody. The run must still stop (it finds the flag when it listens again)."""
    from flowfn.persistence import cancel

    env = {"SHARING_ITEMS": "20", "SHARING_LIMIT": "20", "SHARING_LOG": str(tmp_path)}
    (tmp_path / "hold").touch()
    run = spawn("run", postgres_url, backend, env)
    try:
        wait_for("items started", lambda: any(events(tmp_path).values()), run)
        wait_for("the run listens", lambda: bool(listeners(postgres_url)), run)
        for pid in listeners(postgres_url):  # waits until that session ended
            query(postgres_url, "SELECT pg_terminate_backend(%s, 10000)", pid)
        assert cancel(postgres_url, "run-1")
        code, output = ended(run, 60)
    finally:
        (tmp_path / "hold").unlink()
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert code == 1, output
    assert "was cancelled" in output
    assert query(postgres_url, "SELECT status FROM {schema}.runs") == [("cancelled",)]


@parallel_batch(items="xs", into="ys", limit=4)
async def double(x: int) -> int:
    await anyio.sleep(0.001)
    return 2 * x


@node
def some_items(shared: dict[str, Any]) -> None:
    shared["xs"] = list(range(30))


odd = flowfn.Flow(some_items)
some_items >> double


def drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url.split("?")[0], autocommit=True) as db:
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.anyio
async def test_a_schema_and_run_id_with_quotes_and_spaces_are_shared(
    postgres_url: str, anyio_backend: str
) -> None:
    """Names are the user's: a schema `we"ird schéma` and a run id with quotes, spaces and
    accents work as any other (the schema's check quoted it as is: invalid name syntax)."""
    schema = f'we"ird schéma {anyio_backend}'
    url = postgres_url.split("?")[0] + "?schema=" + urllib.parse.quote(schema)
    run_id = f'it\'s a "run" ünï {anyio_backend}'
    shared: dict[str, Any] = {}
    helped: list[int] = []

    async def helper() -> None:
        helped.append(await flowfn.work_async(url, run_id, odd))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(helper)
            await anyio.sleep(0.2)
            await odd.run_async(shared, checkpoint=url, run_id=run_id, share=True)
    finally:
        drop_schema(postgres_url, schema)
    assert shared["ys"] == [2 * x for x in range(30)]
    assert helped
    assert 0 <= helped[0] <= 30


@backends
def test_a_helper_with_another_flow_is_refused_clearly_before_it_runs_anything(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    """A helper started with changed code (another flow than the run's) stops at once with a
    FlowError saying so, raised as itself (not in an exception group), having run nothing;
    on the command line, a one-line error."""
    env = {"SHARING_ITEMS": "20", "SHARING_LIMIT": "20", "SHARING_LOG": str(tmp_path)}
    (tmp_path / "hold").touch()
    run = spawn("run", postgres_url, backend, env)
    try:
        wait_for("items started", lambda: any(events(tmp_path).values()), run)
        with pytest.raises(FlowError, match="made by a flow of another shape"):
            flowfn.work(postgres_url, "run-1", odd, backend=backend)
        command = subprocess.run(
            [sys.executable, "-m", "flowfn", "runs", "work", postgres_url, "run-1",
             "--target", f"{__file__}:odd", "--backend", backend],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        (tmp_path / "hold").unlink()
        code, output = ended(run, 60)
    assert command.returncode != 0
    assert "made by a flow of another shape" in command.stderr
    assert "Traceback" not in command.stderr, command.stderr
    assert code == 0, output
    assert set(events(tmp_path)) == {run.pid}  # no item ran anywhere else
