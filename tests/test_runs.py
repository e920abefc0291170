"""The truth about every run (`flowfn runs` and the store behind it): live or crashed from
the run's lock, hostile and damaged checkpoint files, read-only and full disks, deleting
and pruning. Real SQLite files; real child processes where a crash is the point."""

from __future__ import annotations

import gc
import json
import os
import pickle
import shlex
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowfn import Flow, FlowError, JSONSerializer, Paused, SQLiteStore, ask, node
from flowfn._cli import main
from flowfn._durable import store as _store
from flowfn._durable.store import BatchInfo, Record

backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])

# A run that holds its checkpoint: item 4 of its batch waits until the file `go` exists.
JOB = """
import sys
import time
from pathlib import Path

from flowfn import Flow, batch, node

HERE = Path(__file__).parent


@node
def start(shared):
    shared["n"] = 6


@batch(items=lambda shared: range(shared["n"]), into="out")
def work(i):
    if i == 4 and not (HERE / "go").exists():
        (HERE / "started").touch()
        while not (HERE / "go").exists():
            time.sleep(0.02)
    return i * 10


start >> work
flow = Flow(start)

if __name__ == "__main__":
    db, run_id, backend = sys.argv[1:4]
    flow.run({}, checkpoint=db, run_id=run_id, backend=backend)
"""


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited a minute for {what}")
        time.sleep(0.02)


def flowfn(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``flowfn ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def shown(capsys: pytest.CaptureFixture[str], db: Path, run_id: str) -> dict[str, Any]:
    code, out, err = flowfn(capsys, "runs", "show", str(db), run_id, "--json")
    assert code == 0, err
    return dict(json.loads(out))


def listed(capsys: pytest.CaptureFixture[str], db: Path) -> dict[str, dict[str, Any]]:
    code, out, err = flowfn(capsys, "runs", "list", str(db), "--json")
    assert code == 0, err
    return {run["run_id"]: run for run in json.loads(out)}


@node
def one(shared: dict[str, Any]) -> None:
    shared["one"] = 1


# -- live, crashed, and a resume command that works as printed ----------------------------


@backends
def test_a_live_run_shows_its_holder_and_a_killed_one_shows_as_crashed(
    tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "job.py").write_text(JOB)
    db = tmp_path / "runs.db"
    command = [sys.executable, "job.py", "runs.db", "job-29685295", backend]
    child = subprocess.Popen(command, cwd=tmp_path)
    try:
        wait_for((tmp_path / "started").exists, "the child to start item 4")

        def four_recorded() -> bool:
            batches = shown(capsys, db, "job-29685295")["batches"]
            return bool(batches) and batches[0]["recorded"] == 4

        wait_for(four_recorded, "items 0-3 to be recorded")
        run = listed(capsys, db)["job-29685295"]
        assert (run["state"], run["status"]) == ("live", "running")
        assert run["holder"] == f"pid {child.pid} on {socket.gethostname()}"
        assert (run["target"], run["backend"]) == (f"{tmp_path / 'job.py'}:flow", backend)
        code, out, _ = flowfn(capsys, "runs", "show", str(db), "job-29685295")
        assert out.startswith(f"run job-29685295: live (pid {child.pid} on ")
        assert "  batch 1       " in out
        assert "resume with" not in out
        code, _, err = flowfn(capsys, "runs", "delete", str(db), "job-29685295")
        assert code == 2
        assert f"is running in another process (pid {child.pid} on " in err
        assert "a live run is not deleted" in err

        # Another run id whose crc32 is the same (the old lock's byte) runs meanwhile.
        assert zlib.crc32(b"job-29685295") == zlib.crc32(b"job-32060020")
        shared: dict[str, Any] = {}
        Flow(one).run(shared, checkpoint=db, run_id="job-32060020")
        assert shared == {"one": 1}
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -9

    after = shown(capsys, db, "job-29685295")
    assert (after["state"], after["status"]) == ("crashed", "running")
    assert after["batches"][0]["recorded"] == 4
    code, out, _ = flowfn(capsys, "runs", "show", str(db), "job-29685295")
    assert "crashed (recorded as running, but no process holds it)" in out.splitlines()[0]
    (resume,) = [line for line in out.splitlines() if line.startswith("resume with: ")]
    assert f"--backend {backend} --durability async" in resume
    (tmp_path / "go").touch()
    argv = shlex.split(resume.removeprefix("resume with: "))
    assert argv[0] == "flowfn"
    done = subprocess.run(
        [sys.executable, "-m", "flowfn", *argv[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shared"]["out"] == [0, 10, 20, 30, 40, 50]
    assert listed(capsys, db)["job-29685295"]["state"] == "finished"


def test_inspecting_a_run_of_this_process_keeps_its_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    seen: list[Any] = []

    @node
    def look(shared: dict[str, Any]) -> None:
        (mine,) = SQLiteStore(db, read_only=True).runs()
        seen.append((mine.state, mine.holder))
        # Had the inspection closed the lock file, this process would have lost its lock.
        other = subprocess.run(
            [sys.executable, "-m", "flowfn", "runs", "list", str(db), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        seen.append(json.loads(other.stdout)[0]["state"])

    Flow(look).run({}, checkpoint=db, run_id="me")
    assert seen == [("live", f"pid {os.getpid()} on {socket.gethostname()}"), "live"]
    assert listed(capsys, db)["me"]["state"] == "finished"


def test_lock_files_are_closed_when_their_last_run_ends(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for job in range(60):
        Flow(one).run({}, checkpoint=tmp_path / f"job-{job}.db", run_id="j")
        SQLiteStore(tmp_path / f"job-{job}.db", read_only=True).runs()
    assert _store._lock_files == {}
    gc.collect()  # SQLite connections of stores no longer used close with them
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_batch_shows_items_recorded_of_items_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    store = SQLiteStore(db)
    assert store.begin("r", flow="Flow", shape="s", initial=b"", target=None) is None
    items = pickle.dumps([[0, 1, 2], [0, 10, 20]])
    started = Record("progress", 1, (1,), (1,), None, b"", done=False, node="work", total=10)
    store.save("r", [started, Record("items", 0, (1,), items=items, count=3)])
    store.finish("r", "failed", "ValueError: no", None)
    store.release("r")
    assert SQLiteStore(db, read_only=True).batches("r") == [BatchInfo((1,), "work", 3, 10, False)]
    out = flowfn(capsys, "runs", "show", str(db), "r")[1]
    assert "  batch 1       work: 3 of 10 items recorded" in out.splitlines()


# -- the target, backend, durability and serializer a run started with ---------------------


@pytest.mark.anyio
async def test_a_run_started_from_python_records_its_flow_as_target(
    tmp_path: Path, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"runs_target_{anyio_backend}"
    (tmp_path / f"{module}.py").write_text(
        "from flowfn import Flow, node\n\n@node\ndef hello(shared):\n    shared['hi'] = 1\n\n"
        "flow = Flow(hello)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    imported = __import__(module)
    db = tmp_path / "runs.db"
    await imported.flow.run_async({}, checkpoint=db, run_id="from-python")
    await Flow(one).run_async({}, checkpoint=db, run_id="not-importable")
    runs = {run.run_id: run for run in SQLiteStore(db, read_only=True).runs()}
    assert runs["from-python"].target == f"{module}:flow"
    assert runs["from-python"].backend == anyio_backend
    assert runs["not-importable"].target is None


FLAKY = """
from pathlib import Path

from flowfn import Flow, node

HERE = Path(__file__).parent


@node
def start(shared):
    shared["n"] = 2


@node
def finish(shared):
    if (HERE / "broken").exists():
        raise RuntimeError("broken")
    shared["done"] = True


start >> finish
flow = Flow(start)
"""


def test_resume_takes_neither_target_nor_pickle_from_the_file_unasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "broken").touch()
    run = ("run", "flaky.py:flow", "--checkpoint", "runs.db")
    assert flowfn(capsys, *run, "--run-id", "p")[0] == 1
    assert flowfn(capsys, *run, "--run-id", "j", "--serializer", "json", "--durability", "sync")[0]
    (tmp_path / "broken").unlink()

    code, _, err = flowfn(capsys, "runs", "resume", "runs.db", "p")
    assert code == 2
    assert "records target 'flaky.py:flow' and serializer 'pickle'" in err
    assert "add --trust" in err
    code, out, err = flowfn(capsys, "runs", "resume", "runs.db", "p", "--trust")
    assert code == 0, err
    assert json.loads(out)["shared"] == {"n": 2, "done": True}

    j = shown(capsys, "runs.db", "j")  # type: ignore[arg-type]
    assert (j["serializer"], j["durability"]) == ("json", "sync")
    assert "--serializer json --backend asyncio --durability sync" in j["resume"]
    with sqlite3.connect(tmp_path / "runs.db") as db:
        (initial,) = db.execute("SELECT initial FROM runs WHERE run_id='j'").fetchone()
    assert json.loads(initial) == {}  # saved as JSON
    code, _, err = flowfn(capsys, "runs", "resume", "runs.db", "j")  # JSON: the target alone
    assert code == 2
    assert "add --trust" in err
    code, out, err = flowfn(capsys, "runs", "resume", "runs.db", "j", "--target", "flaky.py:flow")
    assert code == 0, err
    assert json.loads(out)["shared"] == {"n": 2, "done": True}


# -- hostile and damaged files -------------------------------------------------------------


class Trap:
    """Unpickling it creates a file: proof that code from the checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@node
def approve(shared: dict[str, Any]) -> None:
    shared["sent"] = ask({"send": "this?"}) == "yes"


def test_inspecting_a_crafted_file_runs_no_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, marker = tmp_path / "runs.db", tmp_path / "pwned"
    assert isinstance(Flow(approve).run({}, checkpoint=db, run_id="p"), Paused)
    trap = pickle.dumps(Trap(marker))
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE runs SET detail=?, initial=?", (trap, trap))
        connection.execute("UPDATE steps SET shared=?", (trap,))
        connection.execute("INSERT INTO items VALUES ('p', '[0]', 1, 1, ?)", (trap,))
    code, out, _ = flowfn(capsys, "runs", "list", str(db))
    assert code == 0
    assert "paused" in out
    code, out, _ = flowfn(capsys, "runs", "show", str(db), "p")
    assert code == 0
    assert '(approve): {"send": "this?"}' in out  # the questions, from their JSON text
    assert shown(capsys, db, "p")["questions"][0]["question"] == {"send": "this?"}
    code, _, err = flowfn(capsys, "runs", "resume", str(db), "p")
    assert code == 2
    assert "records no target" in err
    assert not marker.exists()


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("UPDATE steps SET shared=x'80ff00'", "the shared store after step 'first' of run 'x'"),
        ("UPDATE runs SET initial=x'80ff00'", "the shared store it started with of run 'x'"),
        ("UPDATE steps SET position='[oops'", "cannot be read (JSONDecodeError"),
    ],
)
def test_a_damaged_row_is_a_flowerror_naming_the_file_before_any_step_runs(
    tmp_path: Path, serializer: str, sql: str, what: str
) -> None:
    db = tmp_path / "runs.db"
    ran: list[str] = []

    @node
    def first(shared: dict[str, Any]) -> None:
        ran.append("first")
        shared["a"] = 1

    @node
    def second(shared: dict[str, Any]) -> None:
        ran.append("second")
        if len(ran) == 2:
            raise ValueError("once")

    first >> second

    def store() -> SQLiteStore:
        return SQLiteStore(db, serializer=JSONSerializer() if serializer == "json" else None)

    with pytest.raises(ValueError, match="once"):
        Flow(first).run({"in": 1}, checkpoint=store(), run_id="x")
    with sqlite3.connect(db) as connection:
        connection.execute(sql)
    with pytest.raises(FlowError, match=f"checkpoint '{db}'") as caught:
        Flow(first).run({"in": 1}, checkpoint=store(), run_id="x")
    assert what in str(caught.value)
    assert ran == ["first", "second"]  # nothing ran again


def test_a_finished_run_with_a_damaged_result_names_the_file(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    Flow(one).run({}, checkpoint=db, run_id="x")
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE runs SET detail=x'80ff00'")
    with pytest.raises(
        FlowError, match=r"the result of run 'x' cannot be read \(ValueError: unsupported pickle"
    ):
        Flow(one).run({}, checkpoint=db, run_id="x")


def test_broken_files_end_runs_commands_with_exit_2_and_are_not_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = flowfn(capsys, "runs", "list", str(empty))
    assert (code, err) == (2, f"flowfn: error: checkpoint '{empty}' is an empty file, not a "
                              f"flowfn checkpoint\n")  # fmt: skip
    assert empty.stat().st_size == 0
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert flowfn(capsys, "runs", "show", str(garbage), "x")[0] == 2
    # Another layout: the mark and format of a checkpoint, without its tables.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.executescript(
            "PRAGMA application_id=1718382455; CREATE TABLE meta (key TEXT, value TEXT); "
            "INSERT INTO meta VALUES ('format', '2');"
        )
    code, _, err = flowfn(capsys, "runs", "list", str(other))
    assert code == 2
    assert f"checkpoint '{other}' cannot be read (OperationalError: no such table" in err
    with pytest.raises(FlowError, match=f"checkpoint '{other}' cannot be written .*runs"):
        Flow(one).run({}, checkpoint=other)
    assert not (tmp_path / "empty.db-wal").exists()
    assert garbage.read_bytes() == b"not a database" * 100


def test_a_format_1_checkpoint_is_read_as_it_is_and_migrated_by_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    failing = [False, True]  # fails the first time

    @node
    def flaky(shared: dict[str, Any]) -> None:
        if failing.pop():
            raise RuntimeError("first time")
        shared["ok"] = True

    @node
    def start(shared: dict[str, Any]) -> None:
        shared["one"] = 1

    start >> flaky
    with pytest.raises(RuntimeError):
        Flow(start).run({}, checkpoint=db, run_id="old")
    with sqlite3.connect(db) as connection:  # what a format 1 file had
        connection.executescript(
            "ALTER TABLE runs DROP COLUMN meta; ALTER TABLE runs DROP COLUMN holder; "
            "ALTER TABLE runs DROP COLUMN questions; ALTER TABLE steps DROP COLUMN owners; "
            "DROP TABLE batches; "
            "UPDATE meta SET value='1' WHERE key='format';"
        )

    def file_format() -> str:
        with sqlite3.connect(db) as connection:
            return str(connection.execute("SELECT value FROM meta").fetchone()[0])

    run = listed(capsys, db)["old"]
    assert (run["state"], run["error"], run["backend"]) == (
        "failed",
        "RuntimeError: first time",
        None,
    )
    assert shown(capsys, db, "old")["resume"].endswith("--serializer pickle")
    assert file_format() == "1"  # inspecting wrote nothing
    shared: dict[str, Any] = {}
    Flow(start).run(shared, checkpoint=db, run_id="old")
    assert shared == {"one": 1, "ok": True}
    assert file_format() == "2"
    assert listed(capsys, db)["old"]["state"] == "finished"


# -- read-only, missing and full -----------------------------------------------------------


def as_someone_else(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` as a user who cannot write to the files made by this one."""
    who = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [*(who if os.geteuid() == 0 else []), sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_read_only_checkpoint_is_inspected_and_a_run_says_what_is_wrong() -> None:
    folder = Path(tempfile.mkdtemp(prefix="flowfn-read-only-"))
    try:
        (folder / "flaky.py").write_text(FLAKY)
        (folder / "broken").touch()
        db = folder / "runs.db"
        run = ("-m", "flowfn", "run", "flaky.py:flow", "--checkpoint")
        assert subprocess.run([sys.executable, *run, "runs.db"], cwd=folder, check=False).returncode
        inspect = [sys.executable, "-m", "flowfn", "runs", "list", "runs.db"]
        assert subprocess.run(inspect, cwd=folder, check=False).returncode == 0
        beside = sorted(path.name for path in folder.glob("runs.db*"))
        assert beside == ["runs.db", "runs.db-flowfn.lock"]  # no -wal, -shm left by a reader
        db.chmod(0o444)
        folder.chmod(0o555)  # owned by this user: read-only to anyone, root aside
        listed = as_someone_else("-m", "flowfn", "runs", "list", "runs.db", cwd=folder)
        assert listed.returncode == 0, listed.stderr
        assert "failed" in listed.stdout.splitlines()[1]
        run_id = listed.stdout.splitlines()[1].split()[0]
        shown = as_someone_else("-m", "flowfn", "runs", "show", "runs.db", run_id, cwd=folder)
        assert shown.returncode == 0, shown.stderr
        assert "error: RuntimeError: broken" in shown.stdout
        again = as_someone_else(*run, "runs.db", "--run-id", run_id, cwd=folder)
        assert again.returncode == 1
        assert "checkpoint 'runs.db' is read-only, and a run writes to it" in again.stderr
        new = as_someone_else(*run, "new.db", cwd=folder)
        assert "checkpoint 'new.db': the folder '.' is read-only" in new.stderr
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
        import shutil

        shutil.rmtree(folder)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    where = tmp_path / "no" / "such" / "runs.db"
    with pytest.raises(FlowError, match=f"there is no folder '{where.parent}'; create it"):
        Flow(one).run({}, checkpoint=where)


def test_a_full_disk_before_the_run_names_the_checkpoint(tmp_path: Path) -> None:
    class Full(SQLiteStore):  # a file that cannot grow: SQLite's own "disk is full"
        def _connect(self) -> sqlite3.Connection:
            db = super()._connect()
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={pages}")
            return db

    db = tmp_path / "runs.db"
    ran: list[str] = []

    @node
    def step(shared: dict[str, Any]) -> None:
        ran.append("step")

    with pytest.raises(FlowError, match=f"checkpoint '{db}' cannot be written .*disk is full"):
        Flow(step).run({"big": "x" * 200_000}, checkpoint=Full(db), run_id="r")
    assert ran == []


# -- keeping a file small, and what people read ------------------------------------------


def test_delete_and_prune_in_python(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    for run_id in ("a", "b", "c"):
        Flow(one).run({}, checkpoint=db, run_id=run_id)
    store = SQLiteStore(db)
    with store._db() as connection:
        connection.execute("UPDATE runs SET status='failed' WHERE run_id='b'")
    later = time.time() + 7200
    assert store.prune(3600) == []  # all fresh
    assert store.prune(3600, status="finished", now=later) == ["a", "c"]
    assert [run.run_id for run in store.runs()] == ["b"]
    assert store.delete("b") is True
    assert store.delete("b") is False
    with sqlite3.connect(db) as connection:
        for table in ("runs", "steps", "items", "batches"):
            assert connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)


def test_delete_and_prune_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "runs.db")
    for run_id in ("a", "b"):
        Flow(one).run({}, checkpoint=db, run_id=run_id)
    assert flowfn(capsys, "runs", "delete", db, "a")[1] == f"deleted run a from {db}\n"
    code, _, err = flowfn(capsys, "runs", "delete", db, "a")
    assert (code, err) == (2, f"flowfn: error: no run 'a' in '{db}' (its runs: b)\n")
    assert flowfn(capsys, "runs", "prune", db, "--older-than", "7d")[1].startswith("no runs ")
    code, _, err = flowfn(capsys, "runs", "prune", db, "--older-than", "7x")
    assert code == 2
    assert "s, m, h, d or w" in err
    out = flowfn(capsys, "runs", "prune", db, "--older-than", "0s", "--status", "finished")[1]
    assert out == "deleted 1 finished runs older than 0s: b\n"
    assert listed(capsys, Path(db)) == {}


def test_runs_list_has_a_header_and_an_interrupt_has_no_trailing_colon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"

    @node
    def stop(shared: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Flow(stop).run({}, checkpoint=db, run_id="k")
    out = flowfn(capsys, "runs", "list", str(db))[1]
    header, line = out.splitlines()
    assert header.split() == ["RUN", "ID", "STATE", "UPDATED", "FLOW", "STEPS", "ITEMS", "ERROR"]
    assert line.startswith("k       interrupted  ")
    assert line.endswith("  KeyboardInterrupt")
    out = flowfn(capsys, "runs", "show", str(db), "k")[1]
    assert "error: KeyboardInterrupt" in out.splitlines()
    assert listed(capsys, db)["k"]["error"] == "KeyboardInterrupt"


# -- values of the wrong type, lock files of another user, a node that changes folder ------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE runs SET error=x'00ff'",  # a blob where text was: bytes.endswith(": ")
        "UPDATE runs SET updated='yesterday'",  # text where a time was
        "UPDATE runs SET run_id=x'78'",  # a blob run id
        "UPDATE runs SET flow=x'00'",  # a blob flow name
        "UPDATE runs SET meta='{\"backend\": 5}'",  # JSON of the wrong type
    ],
)
def test_a_row_of_the_wrong_type_ends_runs_commands_with_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str
) -> None:
    """SQLite keeps any value in any column: each is checked before it is used."""
    db = tmp_path / "runs.db"
    Flow(one).run({}, checkpoint=db, run_id="x")
    with sqlite3.connect(db) as connection:
        connection.execute(sql)
    connection.close()
    wrong = []
    for command in (("list",), ("list", "--json"), ("show", "x"), ("prune", "--older-than", "0s")):
        code, _, err = flowfn(capsys, "runs", command[0], str(db), *command[1:])
        if code != 2 or f"checkpoint '{db}'" not in err or "run " not in err:
            wrong.append((command[0], code, err.strip()))
    assert wrong == []


def test_a_lock_file_this_user_cannot_write_is_a_flowerror_and_leaves_no_run() -> None:
    """A lock file of mode 0644 (made under umask 022) cannot be written by another user:
    a FlowError naming it, and no phantom 'crashed' run left behind by the refused begin."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to act as another user")
    folder = Path(tempfile.mkdtemp(prefix="flowfn-shared-"))
    try:
        folder.chmod(0o777)
        db = folder / "runs.db"
        Flow(one).run({}, checkpoint=db, run_id="mine")
        db.chmod(0o666)  # written by anyone: the lock file is all that is in the way
        (folder / "runs.db-flowfn.lock").chmod(0o644)
        script = (
            "from flowfn import Flow, node\n"
            "@node\ndef one(shared): shared['one'] = 1\n"
            "try:\n    Flow(one).run({}, checkpoint='runs.db', run_id='theirs')\n"
            "except BaseException as exc:\n    print(type(exc).__name__, exc)\n"
        )
        other = as_someone_else("-c", script, cwd=folder)
        assert other.stdout.startswith("FlowError"), other.stdout + other.stderr
        assert "runs.db-flowfn.lock" in other.stdout
        assert "chmod" in other.stdout
        with sqlite3.connect(db) as connection:
            ids = [row[0] for row in connection.execute("SELECT run_id FROM runs")]
        connection.close()
        assert ids == ["mine"]
    finally:
        import shutil

        shutil.rmtree(folder)


def test_the_lock_file_is_made_with_the_umask_like_the_checkpoint(tmp_path: Path) -> None:
    """Under umask 002 (a group sharing a folder) the lock file is group-writable too."""
    script = (
        "import os, sys\nos.umask(0o002)\n"
        "from flowfn import Flow, node\n"
        "@node\ndef one(shared): shared['one'] = 1\n"
        "Flow(one).run({}, checkpoint=sys.argv[1], run_id='x')\n"
    )
    db = tmp_path / "runs.db"
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=120)
    assert (tmp_path / "runs.db-flowfn.lock").stat().st_mode & 0o777 == 0o664


@backends
def test_a_relative_checkpoint_is_kept_where_the_run_began_after_a_chdir(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path)

    @node
    def go(shared: dict[str, Any]) -> None:
        os.chdir("work")
        shared["went"] = True

    @node
    def after(shared: dict[str, Any]) -> None:
        shared["after"] = True

    go >> after
    Flow(go).run({}, checkpoint="runs.db", run_id="x", backend=backend)
    assert not (tmp_path / "work" / "runs.db").exists()
    with sqlite3.connect(tmp_path / "runs.db") as connection:
        steps = connection.execute("SELECT node FROM steps ORDER BY seq").fetchall()
    connection.close()
    assert steps == [("go",), ("after",)]
    os.chdir(tmp_path)  # and the run is not left "already running in this process"
    Flow(go).run({}, checkpoint="runs.db", run_id="x", backend=backend)


@pytest.mark.parametrize(
    ("meta", "named"),
    [('{"backend": "curio"}', "backend 'curio'"), ('{"durability": "never"}', "'never'")],
)
def test_resume_refuses_a_recorded_backend_or_durability_it_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    meta: str, named: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "broken").touch()
    assert flowfn(capsys, "run", "flaky.py:flow", "--checkpoint", "runs.db", "--run-id", "p")[0]
    (tmp_path / "broken").unlink()
    with sqlite3.connect(tmp_path / "runs.db") as connection:
        connection.execute("UPDATE runs SET meta=?", (meta,))
    connection.close()
    code, _, err = flowfn(capsys, "runs", "resume", "runs.db", "p", "--trust")
    assert code == 2, err
    assert named in err
    assert "'runs.db'" in err
