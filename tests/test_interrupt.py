"""Ctrl-C for real: a child process running a parallel batch gets SIGINT while every item
waits, and must end with ``KeyboardInterrupt`` as itself (never inside an exception group),
from ``run()``, from ``anyio.run`` around ``run_async()``, and from ``flowfn run`` (exit 130,
one line on stderr)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FLOW = """
import sys

import anyio

from flowfn import Flow, parallel_batch


@parallel_batch(items=lambda shared: range(8), limit=8)
async def wait(item):
    if item == 7:
        print("ready", flush=True)  # every item is waiting now
    await anyio.sleep(60)


flow = Flow(wait)


def numbers():
    import os, signal

    yield from range(3)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the pool is still pulling items
    yield from range(3, 8)


@parallel_batch(items=lambda shared: numbers(), limit=8)
async def pulled(item):
    await anyio.sleep(60)


pulling = Flow(pulled)


@parallel_batch(items=lambda shared: range(10**6), limit=100)
async def churn(item):
    if item == 0:
        print("ready", flush=True)
    await anyio.sleep(0.001)  # workers start, finish and pull items all the time


busy = Flow(churn)
"""

RUN = """
import sys, anyio

import flows

flow = getattr(flows, sys.argv[3])
if sys.argv[3] == "pulling":
    print("ready", flush=True)  # it interrupts itself
try:
    if sys.argv[1] == "run":
        flow.run({}, backend=sys.argv[2])
    else:
        anyio.run(flow.run_async, {}, backend=sys.argv[2])
except BaseException as exc:
    print("caught", type(exc).__name__, flush=True)
    raise SystemExit(0)
print("returned", flush=True)
"""


def interrupted(
    command: list[str], cwd: Path, *, signal_it: bool = True, ready_on: str = "stdout"
) -> subprocess.CompletedProcess[str]:
    """Start ``command``, wait for its "ready" line (on ``ready_on``), send SIGINT,
    collect the rest (the "ready" line is not part of what is returned for stderr)."""
    path = [str(cwd), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    child = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stderr is not None
        source = child.stdout if ready_on == "stdout" else child.stderr
        line = source.readline()
        assert line.strip() == "ready", (line, child.stderr.read() if ready_on == "stdout" else "")
        if signal_it:
            time.sleep(0.2)  # let it run a while: the signal lands wherever it lands
            child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if ready_on == "stdout":
        return subprocess.CompletedProcess(command, child.returncode, line + out, err)
    return subprocess.CompletedProcess(command, child.returncode, out, err)


def backends() -> list[object]:
    """On Python 3.10, asyncio.run has no Ctrl-C handling of its own: the asyncio cases
    depend on where the interrupt lands, so they run from 3.11 on."""
    old = sys.version_info < (3, 11)
    skip = pytest.mark.skipif(old, reason="asyncio handles Ctrl-C from Python 3.11 on")
    return [pytest.param("asyncio", marks=skip), "trio"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(textwrap.dedent(FLOW), encoding="utf-8")
    (tmp_path / "main.py").write_text(textwrap.dedent(RUN), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("entry", ["run", "run_async"])
@pytest.mark.parametrize("flow", ["flow", "pulling", "busy"])
def test_ctrl_c_reaches_the_caller_as_keyboard_interrupt(
    project: Path, backend: str, entry: str, flow: str
) -> None:
    """Ctrl-C while every item waits (``flow``), while the pool still pulls items and
    starts workers (``pulling``), or while workers come and go (``busy``: on trio, 5 runs
    in 6 used to end with a ``BaseExceptionGroup([KeyboardInterrupt()])``)."""
    for _ in range(2 if flow == "busy" else 1):
        command = [sys.executable, "main.py", entry, backend, flow]
        done = interrupted(command, project, signal_it=flow != "pulling")
        assert done.stdout.splitlines()[-1] == "caught KeyboardInterrupt", done.stderr
        assert done.returncode == 0


@pytest.mark.parametrize("backend", backends())
def test_ctrl_c_ends_flowfn_run_with_130_and_one_line(project: Path, backend: str) -> None:
    command = [sys.executable, "-m", "flowfn", "run", "flows.py:flow", "--backend", backend]
    done = interrupted(command, project, ready_on="stderr")  # the flow prints to stderr
    assert done.returncode == 130
    assert done.stderr.splitlines() == ["flowfn: interrupted (KeyboardInterrupt)"]


SLOW_STEP = """
import sys
import time

from flowfn import Flow, node


@node
def slow(shared):  # a sync step: it runs in a worker thread, which nothing can interrupt
    print("ready", file=sys.stderr, flush=True)
    time.sleep(float(shared.get("seconds", 60)))


flow = Flow(slow)
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio handles Ctrl-C from 3.11 on")
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_a_step_in_a_thread_says_it_waits_and_a_second_one_quits(
    tmp_path: Path, presses: int
) -> None:
    """asyncio: the run ends at once, the thread cannot; flowfn says it waits for it, and a
    second Ctrl-C quits without the traceback Python's own wait at exit would print."""
    (tmp_path / "slow.py").write_text(SLOW_STEP, encoding="utf-8")
    seconds = 2 if presses == 1 else 60
    command = [sys.executable, "-m", "flowfn", "run", "slow.py:flow", "--backend", "asyncio"]
    command += ["--shared", f'{{"seconds": {seconds}}}']
    child = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stderr is not None
        assert child.stderr.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        if presses == 2:
            waiting = child.stderr.readline() + child.stderr.readline()
            assert "flowfn: waiting for steps still running in worker threads" in waiting
            child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)  # not 60 s: the second Ctrl-C quit
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert out == ""
    if presses == 1:
        assert err.splitlines() == [
            "flowfn: interrupted (KeyboardInterrupt)",
            "flowfn: waiting for steps still running in worker threads (threads cannot be "
            "interrupted); Ctrl-C again to quit at once",
        ]
    assert "Traceback" not in err


IDLE_POOL = """
import sys
from concurrent.futures import ThreadPoolExecutor

import anyio

from flowfn import Flow, node

executor = ThreadPoolExecutor(2)  # its threads stay, idle, until the interpreter exits


@node(workers=executor, into="first")
def first():
    return 1


@node
async def wait(shared):
    print("ready", file=sys.stderr, flush=True)
    await anyio.sleep(60)


first >> wait
flow = Flow(first)
"""


@pytest.mark.parametrize("backend", backends())
def test_ctrl_c_does_not_wait_for_idle_worker_threads(tmp_path: Path, backend: str) -> None:
    (tmp_path / "idle.py").write_text(IDLE_POOL, encoding="utf-8")
    command = [sys.executable, "-m", "flowfn", "run", "idle.py:flow", "--backend", backend]
    started = time.monotonic()
    done = interrupted(command, tmp_path, ready_on="stderr")  # communicate(timeout=30)
    assert done.returncode == 130
    assert done.stderr.splitlines()[0] == "flowfn: interrupted (KeyboardInterrupt)"
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
