"""``python -m cs336_basics.quickstart``: the program lives in this package's ``__init__``."""

from cs336_basics.quickstart import main
from cs336_basics.utils.errors import run_cli

raise SystemExit(run_cli(main))
