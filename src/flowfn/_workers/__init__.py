"""Workers elsewhere: worker processes (``workers="process"``) and remote executors
(``workers=executor``, ``flowfn.ray.RayWorkers``).

Importing this wing plugs them into the engine (``flowfn._engine.hooks``).
"""

from __future__ import annotations

from .._engine import hooks
from .processes import run_in_process
from .remote import remote_workers

hooks.plug(remote_workers=remote_workers, run_in_process=run_in_process)
