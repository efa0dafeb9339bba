#!/usr/bin/env python
"""Thin wrapper: ``uv run python scripts/plot_metrics.py RUN_DIR`` == ``python -m cs336_basics.tools.plot_metrics RUN_DIR``."""

from cs336_basics.tools.plot_metrics import main
from cs336_basics.utils.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
