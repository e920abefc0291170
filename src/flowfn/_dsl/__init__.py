"""The functional DSL: the decorators, ``Parallel`` branches, and workflow documents (IR).

Importing this wing plugs ``Flow.to_ir()`` into the engine (``flowfn._engine.hooks``).
"""

from __future__ import annotations

from .._engine import hooks
from .ir import to_ir

hooks.plug(to_ir=to_ir)
