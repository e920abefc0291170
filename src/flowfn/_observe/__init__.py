"""Watching runs: the observers, progress bars, and pictures of flows (Mermaid, DOT).

Importing this wing plugs ``progress=True`` and ``Flow.to_mermaid()``/``to_dot()`` into the
engine (``flowfn._engine.hooks``).
"""

from __future__ import annotations

from .._engine import hooks
from .graph import to_dot, to_mermaid
from .progress import Progress

hooks.plug(progress=Progress, to_mermaid=to_mermaid, to_dot=to_dot)
