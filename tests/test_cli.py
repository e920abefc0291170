"""The ``flowfn`` command: ``run`` and ``graph``, in-process through ``main([...])``, and
one example end to end in a subprocess (``python -m flowfn``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_graph import need_dot

from flowfn._cli import main

ROOT = Path(__file__).resolve().parent.parent

FLOWS = """
import anyio

from flowfn import Flow, Node, node, parallel_batch


@node
def greet(shared, greeting="Hello"):
    shared["message"] = f"{greeting}, {shared['name']}!"
    return "greeted"


@node
def shout(shared):
    shared["message"] = shared["message"].upper()


greet - "greeted" >> shout
greeting = Flow(greet)


@parallel_batch(items="numbers", into="squares", limit=2)
async def square(number):
    await anyio.sleep(0)
    return number * number


squares = Flow(square)


@node
def odd_values(shared):
    shared["a set"] = {3}
    shared["by pair"] = {("a", 1): "x"}
    shared["me"] = shared


odd = Flow(odd_values)


@node
def boom(shared):
    raise ValueError("boom")


broken = Flow(boom)


class Holder:
    flow = greeting


class Step(Node):
    pass


def plain(shared):
    pass


settings = {"flow": "not one"}
"""


@pytest.fixture(autouse=True)
def restore_import_state() -> Iterator[None]:
    """Loading a TARGET puts its folder on sys.path and its module in sys.modules: undo it."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(textwrap.dedent(FLOWS), encoding="utf-8")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(list(argv)) == 0
    out = capsys.readouterr()
    assert out.err == ""
    return json.loads(out.out)


# -- flowfn run -------------------------------------------------------------------------


def test_run_prints_the_last_action_and_the_shared_store(
    flows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(capsys, "run", f"{flows}:greeting", "--shared", '{"name": "Ada"}')
    assert result == {"action": None, "shared": {"name": "Ada", "message": "HELLO, ADA!"}}


def test_run_passes_params_to_the_flow(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", f"{flows}:greeting", "--shared", '{"name": "Bo"}', "--params"]
    result = run_json(capsys, *argv, '{"greeting": "Hi"}')
    assert result["shared"]["message"] == "HI, BO!"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_on_each_backend(flows: Path, capsys: pytest.CaptureFixture[str], backend: str) -> None:
    argv = ["run", f"{flows}:squares", "--backend", backend, "--shared", '{"numbers": [1, 2, 3]}']
    result = run_json(capsys, *argv)
    assert result == {"action": None, "shared": {"numbers": [1, 2, 3], "squares": [1, 4, 9]}}


def test_run_a_module_target_with_a_dotted_name(
    flows: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(flows.parent)
    monkeypatch.syspath_prepend(str(flows.parent))
    result = run_json(capsys, "run", "flows:Holder.flow", "--shared", '{"name": "Cy"}')
    assert result["shared"]["message"] == "HELLO, CY!"


def test_run_a_node_runs_what_follows_it(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "run", f"{flows}:greet", "--shared", '{"name": "Di"}')
    assert result["shared"]["message"] == "HELLO, DI!"  # greet, then shout, as Flow(greet)


def test_run_prints_values_json_cannot_hold_as_their_repr(
    flows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(capsys, "run", f"{flows}:odd")
    assert result["shared"] == {"a set": "{3}", "by pair": {"('a', 1)": "x"}, "me": "<cycle>"}


def test_exception_names_are_the_ones_users_import(tmp_path: Path) -> None:
    import json

    from flowfn._cli import one_line

    (tmp_path / "mine.py").write_text(
        "from flowfn import Flow, node\n"
        "class MyError(Exception): pass\n"
        "@node\n"
        "def fails(shared): raise MyError('mine')\n"
        "flow = Flow(fails)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "flowfn", "run", f"{tmp_path / 'mine.py'}:flow"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("flowfn: mine.MyError: mine (flowfn: in node 'fails'")
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads("{")
    assert one_line(caught.value).startswith("json.JSONDecodeError: Expecting")
    assert one_line(anyio.BrokenResourceError("x")) == "anyio.BrokenResourceError: x"
    assert one_line(KeyError("k")) == "KeyError: 'k'"


def test_an_exception_from_the_flow_is_one_line_or_its_whole_traceback(
    flows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{flows}:broken"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["flowfn: ValueError: boom (flowfn: in node 'boom' of flow 'Flow')"]
    with pytest.raises(ValueError, match="boom") as caught:
        main(["run", f"{flows}:broken", "--traceback"])
    assert "flowfn: in node 'boom' of flow 'Flow'" in caught.value.__notes__


CHATTY = """
from flowfn import Flow, FlowError, node


@node
def chatty(shared):
    print("working on", shared.get("n", 0))
    shared["items"] = list(range(shared.get("n", 0)))


@node
def fails(shared):
    raise FlowError("the setup is wrong")


flow = Flow(chatty)
broken = Flow(fails)
"""


def test_stdout_holds_the_result_alone_and_pipes_close_quietly(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(CHATTY)

    def flowfn(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowfn", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = flowfn("run", "chatty.py:flow", "--shared", '{"n": 3}', "--log")
    assert json.loads(done.stdout) == {"action": None, "shared": {"n": 3, "items": [0, 1, 2]}}
    assert "working on 3" in done.stderr  # the flow's own output, out of the JSON's way
    assert "flowfn: node_end Flow/chatty" in done.stderr  # --log

    to_file = flowfn("run", "chatty.py:flow", "-o", "result.json")
    assert to_file.stdout == "working on 0\n"
    assert json.loads((tmp_path / "result.json").read_text())["action"] is None

    failed = flowfn("run", "chatty.py:broken")
    assert failed.returncode == 1
    assert failed.stderr == (
        "flowfn: flowfn.FlowError: the setup is wrong (flowfn: in node 'fails' of flow 'Flow')\n"
    )

    piped = subprocess.run(
        f"{sys.executable} -m flowfn run chatty.py:flow --shared '{{\"n\": 200000}}' | head -c 20",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stdout == '{\n  "action": null,\n'[:20]
    assert "Traceback" not in piped.stderr
    assert "BrokenPipe" not in piped.stderr


# -- flowfn graph -----------------------------------------------------------------------


def test_graph_prints_mermaid_or_dot(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", f"{flows}:greeting"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "flowchart TD",
        '    n0["greet"]',
        '    n1["shout"]',
        '    n0 -->|"greeted"| n1',
    ]
    assert main(["graph", f"{flows}:greeting", "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph flowfn {")
    assert '    n0 -> n1 [label="greeted"];\n' in dot


def test_graph_writes_the_format_its_output_suffix_names(
    flows: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, first_line in (("flow.mmd", "flowchart TD"), ("flow.gv", "digraph flowfn {")):
        assert main(["graph", f"{flows}:squares", "-o", str(tmp_path / name)]) == 0
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert text.splitlines()[0] == first_line
        assert "square ⇉ parallel" in text
    assert capsys.readouterr().out == ""


def test_graph_writes_a_png_with_graphviz(
    flows: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    need_dot()
    image = pytest.importorskip("PIL.Image")
    for argv in (["-o", "a.png"], ["--format", "png", "-o", "b.picture"]):
        *_, name = argv
        assert main(["graph", f"{flows}:greeting", *argv[:-1], str(tmp_path / name)]) == 0
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with image.open(io.BytesIO(data)) as picture:
            assert picture.format == "PNG"
            assert picture.size[0] > 50
            assert picture.size[1] > 100  # two boxes, one above the other
    assert capsys.readouterr() == ("", "")


# -- mistakes: one line on stderr, exit code 2 --------------------------------------------


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("flowfn: error: ")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "flows.py"], "TARGET 'flows.py' must be module:name or path/to/file.py:name"),
        (["run", "no_such_module_x1:flow"], "no module named 'no_such_module_x1'"),
        (["run", "{dir}/missing.py:flow"], "no file '{dir}/missing.py' (looked in "),
        (["run", "{dir}/flows:greeting"], "a file's path ends in .py"),
        (
            ["run", "{dir}/flows.py:nope"],
            "has no attribute 'nope'; its flows and nodes: greet, shout, greeting, square, "
            "squares, odd_values, odd, boom, broken",
        ),
        (["run", "{dir}/flows.py:settings"], "is a dict, not a flow or a node"),
        (["run", "{dir}/flows.py:plain"], "is a function, not a flow or a node: decorate"),
        (["run", "{dir}/flows.py:Step"], "is the class Step, not a flow or a node: name an"),
        (["run", "{dir}/flows.py:greeting", "--shared", "{oops"], "--shared is not valid JSON"),
        (["run", "{dir}/flows.py:greeting", "--shared", "[1]"], "got a JSON array: '[1]'"),
        (["run", "{dir}/flows.py:greeting", "--params", '"x"'], "--params must be a JSON object"),
        (["graph", "{dir}/flows.py:greeting", "--format", "png"], "add -o FILE.png"),
        (["graph", "{dir}/flows.py:greeting", "-o", "{dir}/no/dir.mmd"], "cannot write"),
    ],
)
def test_mistakes_are_one_line_and_exit_code_2(
    flows: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    fill = str(flows.parent)
    fails(capsys, [arg.replace("{dir}", fill) for arg in argv], message.replace("{dir}", fill))


def test_a_missing_dependency_of_the_target_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "needs.py").write_text("import not_installed_pkg_x2\n", encoding="utf-8")
    message = "failed: No module named 'not_installed_pkg_x2'"
    fails(capsys, ["run", f"{tmp_path}/needs.py:flow"], message)


def test_png_without_graphviz_says_how_to_install_it(
    flows: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    argv = ["graph", f"{flows}:greeting", "-o", str(tmp_path / "flow.png")]
    fails(capsys, argv, "needs Graphviz's `dot` command, which is not on PATH")
    fails(capsys, argv, "apt-get install graphviz")
    assert not (tmp_path / "flow.png").exists()


def test_trio_backend_without_trio_says_what_to_install(
    flows: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trio" else find_spec(name)
    )
    fails(capsys, ["run", f"{flows}:squares", "--backend", "trio"], "pip install 'flowfn[trio]'")


@pytest.mark.parametrize(
    "argv", [[], ["run"], ["draw", "x:y"], ["graph", "x:y", "--format", "jpeg"]]
)
def test_usage_mistakes_exit_with_argparse_code_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: flowfn" in capsys.readouterr().err


# -- the installed command, end to end --------------------------------------------------


def test_the_flowfn_command_is_installed() -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="flowfn")
    assert script.value == "flowfn._cli:command"


def python_m_flowfn(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m flowfn ARGS`` in ``cwd`` (the repository), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "flowfn", *args],
        cwd=cwd,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def test_python_m_flowfn_runs_the_translate_example(tmp_path: Path) -> None:
    shared = {"text": "Hello!", "languages": ["Spanish", "Klingon"], "out_dir": str(tmp_path)}
    command = ["run", "examples/translate.py:flow", "--backend", "trio"]
    done = python_m_flowfn(*command, "--shared", json.dumps(shared))
    assert done.returncode == 0
    assert "  -> asking for Spanish" in done.stderr.splitlines()  # the example's own prints
    result = json.loads(done.stdout)  # stdout: the result JSON alone
    assert result["action"] is None
    assert result["shared"]["translations"] == ["Hola, bienvenido a flowfn!", "[Klingon] Hello!"]
    assert result["shared"]["files"] == [
        str(tmp_path / "spanish.txt"),
        str(tmp_path / "klingon.txt"),
    ]
    assert (tmp_path / "klingon.txt").read_text(encoding="utf-8") == "[Klingon] Hello!\n"


def test_python_m_flowfn_draws_the_cake_factory() -> None:
    done = python_m_flowfn("graph", "examples/cake_factory.py:flow")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[:2] == [
        "flowchart TD",
        '    subgraph n0 ["in_parallel ⇉ parallel \N{MULTIPLICATION SIGN}4"]',
    ]
    assert '    subgraph n5 ["one_by_one ⟳ batch"]' in done.stdout.splitlines()


def run_in_terminal(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``command`` with its stderr on a pseudo terminal; its exit code and the screen."""
    import os
    import pty
    import select
    import time

    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        chunks, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        returncode = process.wait(timeout=10)
    finally:
        os.close(leader)
    return returncode, b"".join(chunks).decode()


def test_progress_draws_a_live_bar_in_a_terminal(tmp_path: Path) -> None:
    """--progress in a pseudo terminal: rich's bar (installed with the test extra), redrawn in
    place, ending at 100%; --log's lines and the flow's echo() go above it, not through it."""
    pytest.importorskip("rich")
    shared = {"text": "Hi", "languages": ["fr", "de", "ja", "es"], "out_dir": str(tmp_path)}
    command = [sys.executable, "-m", "flowfn", "run", "examples/translate.py:flow"]
    command += ["--progress", "--log", "--summary", "--shared", json.dumps(shared)]
    returncode, screen = run_in_terminal(command, ROOT)
    assert returncode == 0
    assert "\r\x1b[2KFlow/translate " in screen  # redrawn in place, not one line per update
    assert re.search(r"100%.*4/4.* 0 failed", screen)
    assert "\r\x1b[2K  -> asking for fr\r\n" in screen  # the bar cleared, echo's line, ...
    assert "\r\x1b[2Kflowfn: batch_end Flow/translate took=" in screen  # ... a log line
    assert "Flow/translate      1        0         0      4" in screen  # --summary


PRINTER = """
import anyio
from flowfn import Flow, parallel_batch


@parallel_batch(items=lambda shared: range(4), limit=2)
async def work(i):
    await anyio.sleep(0.01)
    print(f"plain print {i}")
    print("in", end="")
    print(" parts")


flow = Flow(work)
"""


def test_plain_prints_go_above_the_bars_of_flowfn_run(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    (tmp_path / "printer.py").write_text(PRINTER)
    command = [sys.executable, "-m", "flowfn", "run", "printer.py:flow", "--progress"]
    returncode, screen = run_in_terminal(command, tmp_path)
    assert returncode == 0
    for i in range(4):
        assert f"\r\x1b[2Kplain print {i}\r\n" in screen  # the bar cleared, the whole line
    assert screen.count("\r\x1b[2Kin parts\r\n") == 4
    assert re.search(r"100%.*4/4.* 0 failed", screen)


def test_lines_above_bars_writes_through_without_bars() -> None:
    from flowfn._observe.progress import LinesAboveBars

    target = io.StringIO()
    stream = LinesAboveBars(target)
    print("no bars", file=stream)
    print("half", end="", file=stream)
    assert target.getvalue() == "no bars\nhalf"
    assert stream.isatty() is False
    assert stream.encoding == target.encoding


def test_bytes_written_to_stdout_under_flowfn_run_reach_stderr(tmp_path: Path) -> None:
    (tmp_path / "raw.py").write_text(
        "import sys\n"
        "from flowfn import Flow, node\n"
        "@node\n"
        "def step(shared):\n"
        "    print('text first')\n"
        "    sys.stdout.buffer.write(b'raw bytes\\n')\n"
        "flow = Flow(step)\n"
    )
    done = python_m_flowfn("run", "raw.py:flow", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["action"] is None  # stdout: the result alone
    assert done.stderr.splitlines() == ["text first", "raw bytes"]


def test_a_flow_ends_warning_names_the_user_code_behind_odd_nodes() -> None:
    """Under `flowfn run` the warning points at a node's definition: through partials,
    callable objects, nested flows and node classes, never at flowfn's own files."""
    import functools
    import inspect

    from flowfn import Flow, Node, node
    from flowfn._engine.errors import _defined_at

    def plain(shared: Any, k: int) -> str:
        return "oops"

    class Callable:
        def __call__(self, shared: Any) -> str:
            return "oops"

    class Mine(Node):  # type: ignore[type-arg]
        pass

    here = __file__
    line = plain.__code__.co_firstlineno
    assert _defined_at(node(functools.partial(plain, k=1), name="p"))[:2] == (here, line)  # type: ignore[index]
    assert _defined_at(Flow(node(plain, name="q")))[:2] == (here, line)  # type: ignore[index]
    called = _defined_at(node(Callable(), name="c"))
    assert called is not None
    assert called[:2] == (here, inspect.getsourcelines(Callable)[1])
    mine = _defined_at(Mine())
    assert mine is not None
    assert mine[:2] == (here, inspect.getsourcelines(Mine)[1])
    assert _defined_at(Node()) is None  # flowfn's own class: the caller's line is better


def test_graph_renders_svg_and_pdf_and_refuses_a_suffix_it_does_not_know(
    flows: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    need_dot()
    assert main(["graph", f"{flows}:greeting", "-o", str(tmp_path / "a.svg")]) == 0
    assert "<svg" in (tmp_path / "a.svg").read_text(encoding="utf-8")
    assert main(["graph", f"{flows}:greeting", "-o", str(tmp_path / "a.pdf")]) == 0
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    capsys.readouterr()
    fails(
        capsys,
        ["graph", f"{flows}:greeting", "-o", str(tmp_path / "a.jpg")],
        "flowfn does not know what to write into a '.jpg' file",
    )
    assert not (tmp_path / "a.jpg").exists()
    fails(
        capsys,
        ["graph", f"{flows}:greeting", "-o", str(tmp_path / "picture")],
        "flowfn does not know what to write into a file without a suffix",
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import flowfn

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"flowfn {flowfn.__version__}\n"


def test_the_commands_at_the_top_of_docs_cli_run_as_written(tmp_path: Path) -> None:
    """The first block of docs/cli.md, command by command (its files go to tmp_path)."""
    import shlex

    need_dot()
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    block = page.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0] for line in block.splitlines() if line.strip()]
    assert len(commands) == 4
    for command in commands:
        argv = shlex.split(command.replace("examples/out", str(tmp_path)))
        assert argv[0] == "flowfn"
        done = subprocess.run(
            [sys.executable, "-m", "flowfn", *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert (tmp_path / "translations" / "spanish.txt").exists()
    assert (tmp_path / "cake.png").read_bytes().startswith(b"\x89PNG")


def test_a_flow_ends_warning_points_at_the_node_when_the_cli_runs_the_flow(
    tmp_path: Path,
) -> None:
    """Nothing above `flowfn run` is the user's code: the warning names the node's line."""
    source = (
        "from flowfn import Flow, node\n"
        "\n"
        "def pick(shared):\n"
        "    return 'serach'\n"
        "\n"
        "pick = node(pick)\n"
        "search = node(lambda shared: None, name='search')\n"
        "pick - 'search' >> search\n"
        "flow = Flow(pick)\n"
    )
    (tmp_path / "typo.py").write_text(source)
    done = python_m_flowfn("run", "typo.py:flow", cwd=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout)["action"] == "serach"
    assert f"{tmp_path / 'typo.py'}:3: FlowEndsWarning: Flow ends: node 'pick'" in done.stderr
    assert "Did you mean 'search'?" in done.stderr


def test_main_called_in_process_leaves_the_sigint_handler_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the program (flowfn._cli.command) lets a second Ctrl-C end the process."""
    import signal

    (tmp_path / "interrupt.py").write_text(
        "from flowfn import Flow, node\n"
        "@node\n"
        "def stop(shared):\n"
        "    raise KeyboardInterrupt\n"
        "flow = Flow(stop)\n"
    )
    before = signal.getsignal(signal.SIGINT)
    assert main(["run", f"{tmp_path / 'interrupt.py'}:flow"]) == 130
    assert signal.getsignal(signal.SIGINT) is before
    assert capsys.readouterr().err.startswith("flowfn: interrupted (KeyboardInterrupt)\n")
