"""The tables of docs/coming-from.md, generated from the dialect tables (cs336_basics.training.dialects).

    uv run python -m cs336_basics.tools.dialect_reference docs/coming-from.md

Each system's table sits in the page between ``<!-- generated: SYSTEM ... -->`` and
``<!-- end generated -->``; this command rewrites those blocks and leaves the prose around them
alone, so a key's row and the program's reading of it can never disagree.
``tests/test_tools_dialect_reference.py`` fails when a checked-in table differs from :func:`table`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cs336_basics.training.dialects import MUON_GROUPS, SYSTEMS, Rule
from cs336_basics.utils.errors import UserError, read_error_line, run_cli
from cs336_basics.utils.fsutil import atomic_write_text

COMMAND = "uv run python -m cs336_basics.tools.dialect_reference docs/coming-from.md"
BLOCK = re.compile(r"(<!-- generated: (\w+) .*?-->\n)(.*?)(<!-- end generated -->)", re.S)
KINDS = {"maps": "", "note": "accepted, changes nothing here (said once at start): ", "refused": "**refused**: "}


def _cell(text: str) -> str:
    """One line for a Markdown table cell: pipes escaped, flags outside code spans as code."""
    parts = " ".join(text.replace("|", "\\|").split()).split("`")
    flag = re.compile(r"(?<![\w-])(--[\w-]+)")
    return "`".join(flag.sub(r"`\1`", p) if i % 2 == 0 else p for i, p in enumerate(parts))


def _rows(rules: dict[str, Rule]) -> list[tuple[list[str], str]]:
    """``(keys, what they become)``: the per-group keys that differ only by the group's name, and
    neighbours that read the same, share a row."""
    rows: list[tuple[list[str], str]] = []
    for key, rule in rules.items():
        text = KINDS[rule.kind] + rule.doc
        group = next((g for g in MUON_GROUPS if f".{g}." in key), None)
        if group is not None:
            key, text = key.replace(f".{group}.", ".GROUP."), text.replace(f"_{group}", "_GROUP")
        if rows and rows[-1][1] == text:
            if key not in rows[-1][0]:
                rows[-1][0].append(key)
        else:
            rows.append(([key], text))
    return rows


def table(system: str) -> str:
    """The Markdown table of ``system``'s keys, as the page holds it between its markers."""
    lines = ["| key | here |", "|---|---|"]
    lines += [f"| {', '.join(f'`{k}`' for k in keys)} | {_cell(text)} |" for keys, text in _rows(SYSTEMS[system].rules)]
    return "\n".join(lines) + "\n"


def render(page: str) -> str:
    """``page`` with every generated block replaced by the current table."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), page)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise UserError(f"usage: {COMMAND}")
    path = Path(args[0])
    try:
        page = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(read_error_line(str(path), err, expected="a Markdown page")) from None
    found = {m.group(2) for m in BLOCK.finditer(page)}
    unknown = sorted(found - set(SYSTEMS))
    if unknown or not found:
        why = f"unknown system {unknown[0]!r}" if unknown else "no '<!-- generated: SYSTEM -->' blocks"
        raise UserError(f"{path}: {why} (systems: {', '.join(SYSTEMS)})")
    new = render(page)
    if new != page:
        atomic_write_text(path, new)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
