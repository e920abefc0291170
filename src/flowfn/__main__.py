"""``python -m flowfn``: the ``flowfn`` command (see :mod:`flowfn._cli`)."""

from ._cli import command

command()
