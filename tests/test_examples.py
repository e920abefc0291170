"""Every script in examples/ runs on asyncio and on trio and leaves the expected shared store.

The examples are imported by path and their ``main(backend)`` is called (it starts its own
event loop, so these tests are sync). Files go to pytest's tmp_path, never to examples/out/.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def python_m_flowfn(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m flowfn ARGS`` in the repository, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "flowfn", *args],
        cwd=EXAMPLES.parent,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@functools.cache
def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line.strip() for line in capsys.readouterr().out.splitlines()]


def test_every_example_is_tested_and_short() -> None:
    scripts = {path.stem for path in EXAMPLES.glob("*.py")}
    assert scripts == {
        "branches",
        "cake_factory",
        "compat_cake_factory",
        "cpu_bound",  # run by test_process.py
        "image_filters",
        "parallel_squares",
        "resume_batch",
        "scale_out",
        "shared_batch",  # needs a PostgreSQL server (FLOWFN_TEST_POSTGRES)
        "stream_tokens",
        "typed_store",
        "summarize_files",
        "translate",
    }
    for name in scripts - {"compat_cake_factory"}:
        source = (EXAMPLES / f"{name}.py").read_text()
        assert len(source.splitlines()) < 80, name
        assert 'def main(backend: str = "asyncio"' in source, name
        assert "from flowfn import" in source, name


@backends
def test_cake_factory_bakes_in_parallel_then_one_by_one(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = example("cake_factory").main(backend)
    cakes = {
        1: "Chocolate cake with Sprinkles",
        2: "Vanilla cake with Roses",
        3: "Red Velvet cake with Cream Cheese",
        4: "Strawberry cake with Hearts",
    }
    assert shared["cakes"] == {"parallel": cakes, "one_by_one": cakes}
    assert list(shared["cakes"]["one_by_one"]) == [1, 2, 3, 4]  # in order of completion
    assert list(shared["cakes"]["parallel"])[-1] == 1  # Chocolate is the slowest cake

    out = lines(capsys)
    split = out.index("--- The same 4 orders, one after another ---")
    parallel, one_by_one = out[1:split], out[split + 1 : -1]
    steps = [re.sub(r"\[Factory-\d ", "[", line).split("]")[0] for line in parallel]
    assert steps[:4] == ["[Mix"] * 4  # all four orders started before any was baked
    assert steps[4:8] == ["[Bake"] * 4
    assert parallel[-1] == "[Factory-1 Ready!] Chocolate cake with Sprinkles ready!"
    assert [line.split("]")[0] for line in one_by_one] == [
        f"[Factory-{factory} {step}"
        for factory in range(1, 5)
        for step in ("Mix", "Bake", "Decorate", "Ready!")
    ]
    seconds = shared["seconds"]
    assert seconds["parallel"] * 1.5 < seconds["one_by_one"]  # about 0.23 s against 0.75 s
    assert out[-1].startswith("Total time: parallel ")
    assert out[-1].endswith("x faster")


@backends
def test_compat_cake_factory_still_runs(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    anyio.run(example("compat_cake_factory").main, backend=backend)
    out = lines(capsys)
    assert out[0] == "--- Parallel cake factories ---"
    assert sorted(out[1:5]) == [  # all four started at once (trio may start them in any order)
        f"[Factory-{i} Mix] Mixing {flavor} batter."
        for i, flavor in enumerate(["Chocolate", "Vanilla", "Red Velvet", "Strawberry"], 1)
    ]
    assert "[Factory-1 Ready!] Chocolate cake with Sprinkles ready!" in out
    assert out[-1].startswith("Total time: parallel ")


@backends
def test_parallel_squares_overlap_and_keep_input_order(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = example("parallel_squares").main(backend)
    assert shared == {"numbers_to_square": [3, 1, 5, 2, 4], "squared_numbers": [9, 1, 25, 4, 16]}
    events = [line.split()[0:3] for line in lines(capsys) if "squaring" in line]
    assert [event[0] for event in events] == ["Starting"] * 5 + ["Finished"] * 5
    assert [int(event[2].rstrip(".")) for event in events[5:]] == [1, 2, 3, 4, 5]  # by delay


@backends
def test_translate_bounds_the_requests_and_saves_every_translation(
    backend: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    module = example("translate")
    shared = module.main(backend, out_dir=tmp_path)
    languages = ["Spanish", "French", "German", "Italian", "Portuguese"]
    assert shared["languages"] == languages
    assert shared["translations"] == [module.CANNED[language] for language in languages]
    assert shared["translations"][0] == "Hola, bienvenido a flowfn!"
    assert shared["files"] == [str(tmp_path / f"{lang.lower()}.txt") for lang in languages]
    for path, translation in zip(shared["files"], shared["translations"], strict=True):
        assert Path(path).read_text(encoding="utf-8") == translation + "\n"

    in_flight, peak = 0, 0
    for line in lines(capsys):
        in_flight += line.startswith("-> asking") - line.startswith("<- ")
        peak = max(peak, in_flight)
    assert (in_flight, peak) == (0, 3)  # limit=3: three requests at once, never more


@backends
def test_image_filters_write_real_images(
    backend: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = pytest.importorskip("PIL.Image")
    image_chops = pytest.importorskip("PIL.ImageChops")
    module = example("image_filters")
    shared = module.main(backend, out_dir=tmp_path)
    pairs = [(name, f) for name in ("sunset", "fractal") for f in ("grayscale", "blur", "sepia")]
    assert sorted(shared["outputs"]) == sorted(pairs)
    assert shared["work"] == {}  # every intermediate image was saved and dropped
    for (name, filter_name), path in shared["outputs"].items():
        assert path == str(tmp_path / f"{name}_{filter_name}.png")
        with image.open(path) as picture:
            assert picture.format == "PNG"
            assert picture.size == module.SIZE == (96, 64)
            assert picture.mode == ("L" if filter_name == "grayscale" else "RGB")
            with image.open(tmp_path / "inputs" / f"{name}.png") as original:
                changed = image_chops.difference(picture.convert("RGB"), original.convert("RGB"))
                assert changed.getbbox() is not None  # the filter did something
    with image.open(tmp_path / "fractal_sepia.png") as sepia:
        red, green, blue = sepia.convert("RGB").getpixel((0, 0))
        assert red > green > blue  # brownish

    out = lines(capsys)
    for name, filter_name in pairs:
        tag = f"[{name}/{filter_name}]"
        steps = [line.split()[1] for line in out if line.startswith(tag)]
        assert steps == ["loaded", "filtered", "saved"]
    assert out[-1] == "--- 6 images written ---"


@backends
def test_summarize_files_routes_each_file_by_its_action(
    backend: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shared = example("summarize_files").main(backend, folder=tmp_path)
    assert shared["files"] == ["anyio.txt", "blank.txt", "pocketflow.txt", "todo.txt"]
    assert shared["routes"] == {
        "anyio.txt": "long",
        "blank.txt": "empty",
        "pocketflow.txt": "long",
        "todo.txt": "short",
    }
    assert shared["summaries"] == {
        "anyio.txt": "AnyIO runs async code on asyncio or trio. (15 words)",
        "blank.txt": "(empty file)",
        "pocketflow.txt": "PocketFlow builds LLM apps from small nodes. (11 words)",
        "todo.txt": "Buy flour, eggs and sugar.",
    }
    assert shared["report"].splitlines()[2].startswith("pocketflow.txt: PocketFlow builds")
    out = lines(capsys)
    assert sorted(out[:4]) == [
        "[anyio.txt] 15 words -> long",
        "[blank.txt] 0 words -> empty",
        "[pocketflow.txt] 11 words -> long",
        "[todo.txt] 5 words -> short",
    ]
    assert out[4:] == ["--- 4 files summarised ---", *shared["report"].splitlines()]


@pytest.mark.parametrize("engine", ["processes", "dask", "ray"])
def test_scale_out_runs_the_same_batch_on_processes_dask_and_ray(engine: str) -> None:
    # Run as a script, as the README says: Ray and Dask pickle its functions by value.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "scale_out.py"), engine, "trio"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout.splitlines()
    assert out[0] == f"16 simulations on {engine}"
    assert "pi ~ 3.1426 from 16 simulations" in out  # the same seeds give the same estimate
    assert out[-1].startswith("took ")
    assert out[-1].endswith(" s on trio")
    if engine == "ray":  # Ray's start-up lines (INFO, a token warning) stay out of it
        assert "the first start takes a few seconds" in out[1]
        assert result.stderr == ""


@backends
def test_shared_batch_shares_its_questions_with_two_helpers(
    backend: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = example("shared_batch").main(backend, url=postgres_url)
    assert [a["question"] for a in shared["answers"]] == shared["questions"]  # in item order
    assert shared["report"]["answers"] == 90
    assert sum(shared["report"]["by process"].values()) == 90
    assert "'answers': 90" in capsys.readouterr().out


@backends
def test_resume_batch_resumes_a_killed_run_without_redoing_recorded_summaries(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    shared = example("resume_batch").main(backend, checkpoint=str(db))
    out = lines(capsys)
    assert shared["report"] == "60 summaries"
    assert shared["summaries"] == [f"summary of document {i}" for i in range(60)]
    resumed = int(re.search(r"resumed: (\d+) LLM calls now", out[2]).group(1))  # type: ignore[union-attr]
    assert resumed <= 60 - 16  # at least the 16 recorded summaries were not asked again
    assert shared["calls"] >= 60
    # It says where the checkpoint is, and the commands it prints work on it.
    assert out[0] == f"checkpoint: {db}"
    commands = [line.split("flowfn ", 1)[1].split() for line in out if "flowfn runs" in line]
    assert [c[:2] for c in commands] == [["runs", "list"], ["runs", "show"]]
    for command in commands:
        done = python_m_flowfn(*command)
        assert done.returncode == 0, done.stderr
        assert "nightly" in done.stdout
        assert "finished" in done.stdout  # the run finished


@backends
def test_resume_batch_resumed_by_the_command_line_logs_beside_its_checkpoint(
    backend: str, tmp_path: Path
) -> None:
    module = example("resume_batch")
    db = str(tmp_path / "runs.db")
    module.kill_halfway(backend, db)
    log = Path(db + ".calls.log")
    before = len(log.read_text().splitlines())
    target = "examples/resume_batch.py:flow"  # what a user types; the run also remembers it
    done = python_m_flowfn(
        "runs", "resume", db, "nightly", "--target", target, "--serializer", "pickle"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shared"]["report"] == "60 summaries"
    assert before >= 16
    # The resumed calls landed in the same log: together they cover every document.
    assert {line.strip() for line in log.read_text().splitlines()} == {
        f"document {i}" for i in range(60)
    }


@backends
def test_stream_tokens_streams_every_word_in_order_under_one_quota(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = example("stream_tokens")
    shared = module.main(backend)
    assert shared["answers"] == list(module.REPLIES.values())
    for question, reply in module.REPLIES.items():  # each reply's words arrive in order
        assert [w for who, w in shared["tokens"] if who == question] == reply.split()
    for text, title in zip(shared["answers"], shared["titles"], strict=True):
        tag = f"title: {module.short(text, 13)}"
        assert [w for who, w in shared["tokens"] if who == tag] == title.split()
        # Titles and tags end between words: every word shown is a whole word of the answer.
        shown = title.removeprefix("A title for: ").split() + tag.split()[1:]
        assert set(shown) - {"…"} <= set(text.split()), (title, tag)
    assert lines(capsys)[-1].startswith(f"{len(shared['tokens'])} tokens streamed")


@backends
def test_branches_fetches_three_things_at_once_then_summarises(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = example("branches").main(backend)
    assert shared["briefing"] == (
        "Markets calm, rain expected | 14 degrees, showers | Home wins 2-1"
    )
    out = lines(capsys)
    assert out[0] == shared["briefing"]
    assert re.fullmatch(rf"three 0.2 s calls at once took [0-9.]+ s on {backend}", out[1])
    assert 'subgraph n0 ["fetch ⫴ branches"]' in out


@backends
def test_typed_store_runs_and_type_checks(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    shared = example("typed_store").main(backend)
    assert shared["longest"] == "stores"
    assert shared["lengths"] == [5, 6, 5, 5, 5]
    assert lines(capsys) == ["longest word: stores (6 letters)"]


def test_what_the_examples_and_docs_write_stays_out_of_git_and_the_sdist() -> None:
    """Files the examples and the commands in docs/ write go under ignored folders (hatchling
    leaves git-ignored files out of the sdist), never loose in the repository."""
    import shutil
    import subprocess

    root = EXAMPLES.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs git and a git checkout")
    written = [
        example(name).OUT_DIR / "some-output.txt"
        for name in ("translate", "summarize_files", "image_filters")
    ]
    cli_page = (root / "docs" / "cli.md").read_text(encoding="utf-8")
    out_dirs = set(re.findall(r'"out_dir": "([^"/][^"]*)"', cli_page))
    assert out_dirs == {"examples/out/translations"}
    written += [root / folder / "spanish.txt" for folder in out_dirs]
    written += [root / name for name in ("runs.db", "runs.db-wal", "runs.db-flowfn.lock")]
    written += [root / "site" / "index.html"]  # mkdocs build
    for path in written:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(path.relative_to(root))], cwd=root, check=False
        )
        assert ignored.returncode == 0, f"{path.relative_to(root)} is not ignored by git"
    tracked = subprocess.run(
        ["git", "ls-files", "examples/out", "site", "out"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert tracked.stdout == ""
