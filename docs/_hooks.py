"""ProperDocs (MkDocs) hooks: the examples the guide links to become files of the site.

The guide links to ``../examples/name.py``, which GitHub shows beside ``docs/``. On the
site, those links point at copies of the scripts served with it, so that no link is
broken and ``properdocs build --strict`` can fail on any link that is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from properdocs.structure.files import File, Files

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_LINK = re.compile(r"\]\(\.\./examples/")


def on_files(files: Files, config: Any) -> Files:
    for path in sorted(EXAMPLES.glob("*.py")):
        files.append(File.generated(config, f"examples/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    up = "../" * page.file.src_uri.count("/")  # from the page's folder back to docs/
    return _LINK.sub(f"]({up}examples/", markdown)
