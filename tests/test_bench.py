"""The README's benchmark command: it installs the peers, and bench.py names a missing one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402


def test_the_readme_command_installs_every_peer() -> None:
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "benchmarks/bench.py" in line)
    extras = re.search(r"-e '\.\[([\w,]+)\]'", command)
    assert extras, command
    pyproject = (ROOT / "pyproject.toml").read_text()  # each extra on one line: name = [...]
    installed = " ".join(
        re.search(rf"^{extra} = \[(.*)\]$", pyproject, re.MULTILINE).group(1)  # type: ignore[union-attr]
        for extra in extras.group(1).split(",")
    )
    for module, dist, version in bench.PEERS:
        assert dist in installed, f"{command} does not install {dist} ({module})"
        if version:
            assert f"{dist}=={version}" in installed
    assert bench.INSTALL in readme.replace(".venv/bin/", "").replace(" -q", "")


def test_a_missing_peer_is_named_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiometer", None)  # find_spec says: not installed
    ran: list[object] = []
    monkeypatch.setattr(bench, "measure", lambda *args: ran.append(args))
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--only", "parallel_noop"])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    message = str(stopped.value.code)
    assert "missing: aiometer." in message
    assert "pip install -e '.[bench]'" in message
    assert ran == []
