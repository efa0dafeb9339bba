"""The training program's flag reference, generated from ``TrainSettings`` (docs/training-flags.md).

    uv run python -m cs336_basics.tools.flag_reference > docs/training-flags.md

Each flag is a field of :class:`cs336_basics.training.settings.TrainSettings`; its group, help text
and choices are the field's metadata, so this page and ``--help`` can never disagree.
``tests/test_tools_flag_reference.py`` fails when the checked-in page differs from :func:`render`.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields
from typing import Any

from cs336_basics.training.settings import TrainSettings, build_parser

COMMAND = "uv run python -m cs336_basics.tools.flag_reference > docs/training-flags.md"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: argparse's ``%%`` unescaped, pipes escaped, one line."""
    return " ".join(text.replace("%%", "%").replace("|", "\\|").split())


def _type_name(name: str) -> str:
    hint = typing.get_type_hints(TrainSettings)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint).__name__


def _default(f: Any) -> str:
    if f.metadata["required"]:
        return "required"
    value = f.default if f.default is not MISSING else None
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def _flag(f: Any) -> str:
    if _type_name(f.name) == "bool":
        return f"`--{f.name}` / `--no-{f.name}`"
    choices = f.metadata["choices"]
    value = "|".join(choices) if choices else _type_name(f.name).upper()
    return f"`--{f.name} {_cell(value)}`"


def render() -> str:
    """The whole page, as docs/training-flags.md holds it."""
    groups: dict[str, list[Any]] = {}
    for f in fields(TrainSettings):
        groups.setdefault(f.metadata["group"], []).append(f)
    lines = [
        f"<!-- Generated from cs336_basics/training/settings.py; do not edit. Regenerate: {COMMAND} -->",
        "",
        "# Training flags",
        "",
        "Every flag of `python -m cs336_basics.training_together` (and of `tools.lr_find` and the sweep's",
        "`[base]`), grouped as `--help` groups them. Booleans also take `--no-X`. A `--config FILE.toml`",
        "takes the same keys (flat or in tables); command line > file > defaults. Model defaults are",
        "`ModelConfig`'s. How the flags fit together: [training.md](training.md).",
    ]
    for group, members in groups.items():
        lines += ["", f"## {group}", "", "| flag | default | what |", "|---|---|---|"]
        lines += [f"| {_flag(f)} | {_default(f)} | {_cell(f.metadata['help'])} |" for f in members]
    override = next(a for a in build_parser()._actions if a.dest == "override")
    lines += ["", "## overrides", "", "| flag | default | what |", "|---|---|---|"]
    lines += [f"| `--override {override.metavar}` | none | {_cell(override.help)} |"]
    return "\n".join(lines) + "\n"


def main() -> int:
    print(render(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
