"""Durable runs on PostgreSQL, the hard way: real child processes (tests/durable_child.py with a
postgresql:// URL as its checkpoint) killed with SIGKILL and resumed, leases refused while their
holder lives and taken over once it is dead, and a holder cut off (SIGSTOP) past its lease that
writes nothing more when it wakes. On asyncio and trio."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).with_name("durable_child.py")
EXPECTED: dict[str, Any] = {
    "n": 12,
    "squares": [i * i for i in range(12)],
    "cubes": {str(i): i**3 for i in range(12)},
    "sum": sum(i * i for i in range(12)) + sum(i**3 for i in range(12)),
}
EXPECTED["double"] = EXPECTED["sum"] * 2
ALL_CALLS = {"start", "add", "double"} | {
    f"{kind} {i}" for kind in ("square", "cube") for i in range(12)
}
backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])


def child(
    url: str, tmp: Path, backend: str, *extra: str, wait: bool = True
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    command = [sys.executable, str(CHILD), url, "run-1", str(tmp / "calls.log"), backend, *extra]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def finished(url: str, tmp: Path, backend: str, *extra: str) -> subprocess.CompletedProcess[str]:
    done = child(url, tmp, backend, *extra)
    assert isinstance(done, subprocess.CompletedProcess)
    return done


def calls(tmp: Path) -> list[str]:
    path = tmp / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def query(url: str, text: str) -> list[tuple[Any, ...]]:
    """Rows of ``text`` (``{schema}`` is the test's schema), read straight from the server."""
    import psycopg

    from flowfn.persistence.postgres import _own_options

    server, own = _own_options(url)
    with psycopg.connect(server) as db:
        return db.execute(text.replace("{schema}", f'"{own["schema"]}"')).fetchall()


def recorded(url: str) -> set[str]:
    """What the checkpoint holds as finished: step node names and batch items."""
    steps = {row[0] for row in query(url, "SELECT node FROM {schema}.steps WHERE done")}
    done = {name for name in ("start", "add", "double") if name in steps}
    for name, kind in (("square", "square"), ("cubes", "cube")):
        if name in steps:
            done |= {f"{kind} {i}" for i in range(12)}
    for place, results in query(url, "SELECT batch, results FROM {schema}.items"):
        for item in pickle.loads(results)[0]:
            done.add(f"{'square' if json.loads(place) == [1] else 'cube'} {item}")
    return done


def everything(url: str) -> list[Any]:
    """Every row the run wrote (but the lease's), to see that nothing more was written."""
    return [
        query(url, f"SELECT * FROM {{schema}}.{table} ORDER BY 1, 2")
        for table in ("runs", "steps", "items", "batches")
    ]


def wait_for(what: str, ready: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def lease_expired(url: str) -> bool:
    rows = query(url, "SELECT expires < extract(epoch from clock_timestamp()) FROM {schema}.leases")
    return all(row[0] for row in rows)


@backends
@pytest.mark.parametrize("kill_at", [6, 20, 26])  # the parallel batch, the batch flow, the end
def test_a_run_killed_with_sigkill_resumes_from_postgres_without_redoing_recorded_work(
    postgres_url: str, tmp_path: Path, backend: str, kill_at: int
) -> None:
    url = f"{postgres_url}&lease=3"  # the killed holder's lease is soon expired
    first = finished(url, tmp_path, backend, "--kill-at", str(kill_at))
    assert first.returncode == -9, first.stdout + first.stderr
    done_at_kill = recorded(url)
    wait_for("the killed holder's lease expired", lambda: lease_expired(url))

    second = finished(url, tmp_path, backend)
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout) == EXPECTED  # what an uninterrupted run gives
    counts = Counter(calls(tmp_path))
    assert set(counts) == ALL_CALLS
    assert max(counts.values()) <= 2
    for name in done_at_kill:
        assert counts[name] == 1, f"{name} was recorded, yet ran again"


@backends
def test_a_lease_is_refused_while_its_holder_lives_and_taken_over_once_it_is_killed(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    url = f"{postgres_url}&lease=2"
    holder = child(url, tmp_path, backend, "--slow", wait=False)
    assert isinstance(holder, subprocess.Popen)
    try:
        wait_for("the holder started its items", lambda: "square 0" in calls(tmp_path))
        refused = finished(url, tmp_path, backend)
        assert refused.returncode == 1
        assert "FlowError: run 'run-1'" in refused.stdout
        assert f"running in another process (pid {holder.pid} on " in refused.stdout
        assert "since " in refused.stdout
    finally:
        holder.kill()
        holder.communicate()
    wait_for("the killed holder's lease expired", lambda: lease_expired(url))
    taken = finished(url, tmp_path, backend)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert json.loads(taken.stdout) == EXPECTED
    assert query(url, "SELECT status FROM {schema}.runs") == [("done",)]


@backends
def test_a_holder_that_lost_its_lease_writes_nothing_more(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    url = f"{postgres_url}&lease=3"  # renewed every second: a loaded machine still keeps it
    cut_off = child(url, tmp_path, backend, "--slow", wait=False)
    assert isinstance(cut_off, subprocess.Popen)
    try:
        wait_for("the holder started its items", lambda: "square 0" in calls(tmp_path))
        os.kill(cut_off.pid, signal.SIGSTOP)  # as if its network were cut
        wait_for("the frozen holder's lease expired", lambda: lease_expired(url))
        other = finished(url, tmp_path, backend)  # takes the run over, runs it to the end
        assert other.returncode == 0, other.stdout + other.stderr
        assert json.loads(other.stdout) == EXPECTED
        written = everything(url)
        (tmp_path / "release").touch()  # the frozen holder's items may now finish
    finally:
        os.kill(cut_off.pid, signal.SIGCONT)
    out, _ = cut_off.communicate(timeout=120)
    assert cut_off.returncode == 1, out
    assert "lost its lease on the run" in out
    assert "writes nothing more" in out
    assert everything(url) == written


# -- the runs commands, given a URL ----------------------------------------------------------


TINY = """
from pathlib import Path
from flowfn import Flow, batch

HERE = Path(__file__).parent


@batch(items=lambda shared: range(4), into="out")
def work(i):
    with (HERE / "calls.log").open("a") as log:
        log.write(f"{i}\\n")
    if i == 2 and not (HERE / "ok").exists():
        raise RuntimeError("not yet")
    return i * 10


flow = Flow(work)
"""


def test_runs_commands_take_a_postgres_url(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowfn._cli import main

    def flowfn(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    url = postgres_url.replace("postgresql://", "postgresql://postgres:secret@", 1)
    url = url.replace("postgres:secret@postgres@", "postgres:secret@", 1)
    tiny = tmp_path / "tiny.py"
    tiny.write_text(TINY)
    code, _, err = flowfn("run", f"{tiny}:flow", "--checkpoint", postgres_url, "--run-id", "r")
    assert code == 1
    assert "not yet" in err
    code, out, _ = flowfn("runs", "list", postgres_url, "--json")
    assert code == 0
    (run,) = json.loads(out)
    assert (run["run_id"], run["state"], run["items"]) == ("r", "failed", 2)
    code, out, _ = flowfn("runs", "show", postgres_url, "r")
    assert "batch 0       work: 2 of 4 items recorded" in out
    assert f"resume with: flowfn runs resume '{postgres_url}' r" in out
    (tmp_path / "ok").touch()
    code, out, _ = flowfn("runs", "resume", postgres_url, "r", "--trust")
    assert code == 0
    assert json.loads(out)["shared"] == {"out": [0, 10, 20, 30]}
    assert (tmp_path / "calls.log").read_text().split() == ["0", "1", "2", "2", "3"]
    code, _, err = flowfn("runs", "show", url, "nope")  # a password is never shown
    assert code == 2
    assert "no run 'nope'" in err
    assert "secret" not in err
    code, out, _ = flowfn("runs", "prune", postgres_url, "--older-than", "0s")
    assert "deleted 1 runs older than 0s: r" in out
    assert query(postgres_url, "SELECT COUNT(*) FROM {schema}.runs") == [(0,)]


# -- damaged rows, passwords, and schemas of other programs ---------------------------------


def run_sql(url: str, text: str) -> None:
    """Execute ``text`` (``{schema}`` is the test's schema) straight on the server."""
    import psycopg

    from flowfn.persistence.postgres import _own_options

    server, own = _own_options(url)
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(text.replace("{schema}", f'"{own["schema"]}"'))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from flowfn._cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.anyio
@pytest.mark.parametrize("column", ["position", "nodes"])
async def test_a_damaged_postgres_row_is_a_flowerror_naming_the_database(
    postgres_url: str, anyio_backend: str, capsys: pytest.CaptureFixture[str], column: str
) -> None:
    from flowfn import Flow, FlowError, node

    failing = [True]

    @node
    def first(shared: dict[str, Any]) -> None:
        shared["a"] = 1

    @node
    def second(shared: dict[str, Any]) -> None:
        if failing.pop():
            raise ValueError("once")

    first >> second
    with pytest.raises(ValueError, match="once"):
        await Flow(first).run_async({}, checkpoint=postgres_url, run_id="x")
    run_sql(postgres_url, f"UPDATE {{schema}}.steps SET {column} = '[oops'")
    if column == "position":  # what `runs show` reads
        code, _, err = cli(capsys, "runs", "show", postgres_url, "x")
        assert code == 2, err
        assert "postgresql://" in err
        assert "damaged" in err
    with pytest.raises(FlowError, match=r"postgresql://.*damaged"):
        await Flow(first).run_async({}, checkpoint=postgres_url, run_id="x")


def with_password(url: str, password: str) -> str:
    return url.replace("://postgres@", f"://postgres:{password}@", 1)


def test_the_runs_commands_never_print_a_postgres_password(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = with_password(postgres_url, "s3cret")  # the test server trusts any password
    assert "s3cret" in url
    flow_file = tmp_path / "flaky.py"
    flow_file.write_text(
        "from flowfn import Flow, node\n"
        "@node\ndef boom(shared):\n    raise RuntimeError('boom')\n"
        "flow = Flow(boom)\n"
    )
    printed = []
    for args in (
        ("runs", "list", url),  # "no runs in <url>"
        ("run", f"{flow_file}:flow", "--checkpoint", url, "--run-id", "r"),
        ("runs", "show", url, "r"),  # "resume with: flowfn runs resume '<url>' ..."
        ("runs", "resume", url, "r"),  # "If you trust '<url>', add --trust"
        ("runs", "prune", url, "--older-than", "1w"),  # "no runs older than 1w in <url>"
        ("runs", "delete", url, "r"),  # "deleted run r from <url>"
    ):
        code, out, err = cli(capsys, *args)
        printed.append((args[:2], code, out + err))
    leaked = [(args, code) for args, code, text in printed if "s3cret" in text]
    assert leaked == []
    shown = printed[2][2]
    assert f"flowfn runs resume '{postgres_url}' r" in shown  # its schema= kept
    assert "PGPASSWORD" in shown


@pytest.mark.parametrize("password", ["s3c%zzret", "s3c#ret", "s3c/ret", "s3c?r@et"])
def test_a_malformed_url_never_prints_its_password(
    postgres_url: str, capsys: pytest.CaptureFixture[str], password: str
) -> None:
    from flowfn import Flow, node

    @node
    def one(shared: dict[str, Any]) -> None:
        shared["one"] = 1

    url = with_password(postgres_url, password)
    code, out, err = cli(capsys, "runs", "list", url)
    assert code == 2, err
    assert "s3c" not in out + err
    assert "percent-encode" in err
    with pytest.raises(ValueError, match="percent-encoded") as caught:
        Flow(one).run({}, checkpoint=url)
    assert "s3c" not in str(caught.value)


@pytest.mark.parametrize("option", ["lease=abc", "lease=-1"])
def test_a_bad_url_option_is_a_usage_error(
    postgres_url: str, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    code, _, err = cli(capsys, "runs", "list", f"{postgres_url}&{option}")
    assert code == 2, err
    assert "lease must be a number of seconds" in err


def test_a_schema_holding_another_programs_tables_is_refused_and_left_alone(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """schema= names one that exists, with another program's key-value `meta` and `cache`
    tables (common names): flowfn refuses it, and neither writes nor prunes there."""
    from flowfn import Flow, FlowError, node

    @node
    def one(shared: dict[str, Any]) -> None:
        shared["one"] = 1

    run_sql(postgres_url, "CREATE SCHEMA {schema}")
    run_sql(
        postgres_url,
        "CREATE TABLE {schema}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); "
        "INSERT INTO {schema}.meta VALUES ('version', '7'); "
        "CREATE TABLE {schema}.cache (key TEXT PRIMARY KEY, value BYTEA NOT NULL, "
        "created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION); "
        "INSERT INTO {schema}.cache VALUES ('session', 'theirs', 0, 1)",
    )
    with pytest.raises(FlowError, match=r"holds tables of another program.*schema="):
        Flow(one).run({}, checkpoint=postgres_url, run_id="r")
    code, _, err = cli(capsys, "runs", "prune", postgres_url, "--older-than", "1w")
    assert code == 2
    assert "holds tables of another program" in err
    assert query(postgres_url, "SELECT key, value FROM {schema}.meta") == [("version", "7")]
    assert query(postgres_url, "SELECT key FROM {schema}.cache") == [("session",)]
    tables = query(
        postgres_url.split("?")[0] + "?schema=public",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = '"
        + postgres_url.split("schema=")[1]
        + "' ORDER BY 1",
    )
    assert tables == [("cache",), ("meta",)]


def test_an_empty_schema_made_for_flowfn_is_used(postgres_url: str) -> None:
    from flowfn import Flow, node

    @node
    def one(shared: dict[str, Any]) -> None:
        shared["one"] = 1

    run_sql(postgres_url, "CREATE SCHEMA {schema}")
    assert Flow(one).run({}, checkpoint=postgres_url, run_id="r") is None
    assert query(postgres_url, "SELECT run_id, status FROM {schema}.runs") == [("r", "done")]
