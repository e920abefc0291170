"""The API reference site, built as CI builds it (``properdocs build --strict``) and read.

What a user looks for must be on the page: every option of each decorator (type, default,
meaning), the fields of the public records, signatures that name only public types,
formatted over lines; and a broken link or cross-reference fails the build.
"""

from __future__ import annotations

import ast
import html
import re
import shlex
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import flowfn
from flowfn._dsl.decorators import NodeOptions

pytest.importorskip("properdocs", reason="the docs extra: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / ".ci" / "run"
SIGNATURE = re.compile(r'<code class="language-python doc-signature"[^>]*>(.*?)</code>', re.S)
#: Private types that public signatures still show: the records CheckpointStore.begin and
#: save exchange with a custom store. Making them public is a change to flowfn itself.
KNOWN_PRIVATE = {"Record", "Saved"}


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """The docs build of .ci/run, exactly (but into ``site``), run in ``root``."""
    line = next(line for line in CI.read_text().splitlines() if "properdocs build" in line)
    command = shlex.split(line.rsplit(";", 1)[1])
    assert command[:3] == ["properdocs", "build", "--strict"], line
    at = command.index("--site-dir")
    command[at + 1] = str(site)
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT, out)
    assert done.returncode == 0, done.stderr
    # A clean build warns of nothing, and no theme announces its end of life.
    said = done.stdout + done.stderr
    assert [line for line in said.splitlines() if not line.startswith("INFO ")] == []
    assert not re.search(r"end of life|maintenance mode|MkDocs 2", said, re.IGNORECASE)
    return out


def text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def section(site: Path, page: str, name: str) -> str:
    """The HTML of ``flowfn.name`` on a reference page, up to the next top-level object."""
    markup = (site / "reference" / page / "index.html").read_text()
    start = markup.index(f'id="flowfn.{name}"')
    following = re.compile(r'id="flowfn\.\w+"')
    end = following.search(markup, start + 1)
    return markup[start : end.start() if end else len(markup)]


def signatures(site: Path) -> dict[str, list[str]]:
    return {
        page.parent.name: [text(s) for s in SIGNATURE.findall(page.read_text())]
        for page in sorted((site / "reference").glob("*/index.html"))
    }


def option_rows(markup: str) -> dict[str, list[str]]:
    """The options table of a decorator: option name -> its cells."""
    rows = re.findall(r"<tr>(.*?)</tr>", markup, re.S)
    cells = [[text(c).strip() for c in re.findall(r"<td>(.*?)</td>", r, re.S)] for r in rows]
    return {row[0]: row[1:] for row in cells if len(row) == 4}


@pytest.mark.parametrize(
    ("decorator", "more"),
    [("node", []), ("batch", ["items"]), ("parallel_batch", ["items", "limit", "errors"])],
)
def test_every_option_of_a_decorator_is_on_its_page(
    site: Path, decorator: str, more: list[str]
) -> None:
    markup = section(site, "decorators", decorator)
    rows = option_rows(markup)
    options = [*more, *typing.get_type_hints(NodeOptions)]
    assert sorted(rows) == sorted(options)
    for option in options:
        kind, default, meaning = rows[option]
        assert kind, option
        assert default, option
        assert len(meaning.split()) >= 3, (option, meaning)
    assert rows["retries"][:2] == ["int", "0"]
    assert rows["workers"][1] == '"thread"'
    assert "RayWorkers" in rows["workers"][0]
    if decorator == "parallel_batch":
        assert rows["limit"][1] == "DEFAULT_LIMIT"
        assert rows["errors"][1] == '"fail_fast"'
    # The signature names them too, instead of **options: Unpack[NodeOptions].
    shown = "\n".join(text(s) for s in SIGNATURE.findall(markup))
    assert "Unpack" not in shown
    for option in options:
        assert f"{option}: " in shown


@pytest.mark.parametrize(
    ("page", "record"),
    [
        ("events", "Event"),
        ("events", "RunSummary"),
        ("events", "NodeStats"),
        ("durable", "RunInfo"),
    ],
)
def test_public_records_show_their_fields(site: Path, page: str, record: str) -> None:
    cls = getattr(flowfn, record)
    fields = getattr(cls, "_fields", None) or list(cls.__dataclass_fields__)
    markup = section(site, page, record)
    for field in fields:
        assert f'id="flowfn.{record}.{field}"' in markup, f"{record}.{field} is not shown"


def private_types() -> set[str]:
    """Classes and type aliases defined in flowfn's private modules (the wings' modules
    included) and not exported."""
    names = set()
    package = ROOT / "src" / "flowfn"
    for source in [*package.glob("_*.py"), *package.glob("_*/*.py")]:
        for stmt in ast.parse(source.read_text()).body:
            if isinstance(stmt, ast.ClassDef):
                names.add(stmt.name)
            elif isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Subscript | ast.BinOp):
                names |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
    return names - set(flowfn.__all__)


def test_no_public_signature_shows_a_private_type(site: Path) -> None:
    private = private_types()
    assert {"NodeOptions", "Workers", "_Bar"} <= private
    found = {}
    for page, texts in signatures(site).items():
        for signature in texts:
            names = set(re.findall(r"\b[A-Za-z_]\w*\b", signature))
            bad = {n for n in names if n in private or n.startswith("_")} - KNOWN_PRIVATE
            if bad:
                found[signature.split("(")[0]] = (page, sorted(bad))
    assert found == {}


def test_long_signatures_are_formatted_over_lines(site: Path) -> None:
    texts = [s for page in signatures(site).values() for s in page]
    assert len(texts) > 50
    longest = max(texts, key=lambda s: max(map(len, s.splitlines())))
    assert max(map(len, longest.splitlines())) <= 100, longest
    assert any(s.count("\n") > 5 for s in texts)


@pytest.mark.parametrize(
    ("page", "broken", "said"),
    [
        ("cli.md", "See [the missing page](missing.md).", "missing.md"),
        ("reference/errors.md", "See [`Nope`][flowfn.Nope].", "flowfn.Nope"),
    ],
    ids=["link", "cross-reference"],
)
def test_a_broken_link_or_cross_reference_fails_the_build(
    tmp_path: Path, page: str, broken: str, said: str
) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "properdocs.yml", copy)
    for folder in ("src", "examples"):
        (copy / folder).symlink_to(ROOT / folder)
    with (copy / "docs" / page).open("a") as markdown:
        markdown.write(f"\n{broken}\n")
    done = build(copy, tmp_path / "site")
    assert done.returncode != 0
    assert said in done.stderr
