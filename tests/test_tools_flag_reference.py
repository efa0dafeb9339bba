"""docs/training-flags.md is exactly what cs336_basics.tools.flag_reference renders, and lists every flag."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from cs336_basics.tools.flag_reference import COMMAND, render
from cs336_basics.training.settings import build_parser

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "training-flags.md"


def test_the_checked_in_page_is_the_generated_one():
    assert DOC.is_file(), f"{DOC.relative_to(REPO)} is missing; run: {COMMAND}"
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"{DOC.relative_to(REPO)} differs from the flags in cs336_basics/training/settings.py; regenerate it: {COMMAND}"
    )


def test_every_flag_of_the_parser_has_one_row_with_its_default():
    parser = build_parser()
    page = render()
    rows = {m.group(1): line for line in page.splitlines() for m in [re.match(r"\| `(--[\w]+)", line)] if m}
    flags = {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}
    assert set(rows) == set(flags)
    for flag, action in flags.items():
        if action.required:
            assert "| required |" in rows[flag]
        elif isinstance(action.default, (int, float, str)) and not isinstance(action.default, bool):
            assert f"| `{action.default}` |" in rows[flag], flag
        for choice in action.choices or ():
            assert choice in rows[flag], (flag, choice)
    # Bit by bit, as the parser prints them: a boolean default and a %-escaped help.
    assert "| `--prefetch` / `--no-prefetch` | on |" in page
    assert "| `--compile` / `--no-compile` | off |" in page
    assert "10% of --max_iters" in page and "%%" not in page


def test_the_module_prints_the_page(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cs336_basics.tools.flag_reference"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == render()
    assert r.stdout.splitlines()[0].endswith(f"Regenerate: {COMMAND} -->")
