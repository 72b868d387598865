"""``python -m clctl``: the same as the ``clctl`` console script."""

from .main import PROG, cli

cli(prog_name=PROG)
