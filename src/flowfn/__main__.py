"""``python -m flowfn``: the ``flowfn`` command (see :mod:`flowfn._cli`)."""

from ._cli import main

raise SystemExit(main())
