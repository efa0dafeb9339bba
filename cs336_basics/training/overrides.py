"""``--override a.b.c=VALUE``: set one value of the ``--config`` TOML document by its dotted path.

For users who keep nested TOML (``[optim] lr = 1e-3``): ``--override optim.lr=3e-3`` changes that
key before the file is read as flags, so the command line says which entry of the file it replaces.
Array elements take an index (``data.files[0]="a.npy"``). A value is read as a TOML value
(``3e-3``, ``true``, ``"cuda"``); anything that is not valid TOML is taken as a plain string, so
``--override device=cpu`` works without shell-quoted quotes. A one-segment path (``lr=3e-3``)
replaces the key wherever the file keeps it (``[optim] lr``), or adds it at the top.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from cs336_basics.utils.errors import UserError

_SEGMENT = re.compile(r"^([A-Za-z0-9_-]+)((?:\[\d+\])*)$")

Step = str | int  # a table key or an array index


def parse_path(item: str, path: str) -> list[Step]:
    """``"a.b[0].c"`` -> ``["a", "b", 0, "c"]``; a malformed path is a UserError naming ``item``."""
    steps: list[Step] = []
    for seg in path.split("."):
        m = _SEGMENT.match(seg.strip())
        if not m:
            raise UserError(
                f"--override {item!r}: bad path segment {seg!r} (expected name or name[index], joined by dots)"
            )
        steps.append(m.group(1))
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return steps


def parse_value(raw: str) -> Any:
    """A TOML value (``v = RAW``), else the raw text as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _leaf_key(steps: list[Step]) -> str:
    """The last table key of a path (``data.files[0]`` -> ``files``): the setting it changes."""
    return next(s for s in reversed(steps) if isinstance(s, str))


def _tables_with(data: dict[str, Any], key: str, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The table paths under which ``key`` is set (``[("optim",)]`` for ``[optim] lr``)."""
    found = [prefix] if key in data and not isinstance(data[key], dict) else []
    for k, v in data.items():
        if isinstance(v, dict):
            found += _tables_with(v, key, (*prefix, k))
    return found


def apply_overrides(
    data: dict[str, Any],
    items: Sequence[str],
    known: Sequence[str],
    did_you_mean: Callable[[str, Sequence[str]], str | None],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``items`` (``PATH=VALUE``) to the parsed TOML ``data`` in place.

    ``known``: the setting names a leaf may have; ``did_you_mean(name, ["--x", ...])`` suggests one.
    Returns the document and ``{setting: item}`` for the settings the overrides touched (so errors
    about their values can name the override rather than the file).
    """
    touched: dict[str, str] = {}
    for item in items:
        path, eq, raw = item.partition("=")
        path = path.strip()
        if not eq or not path:
            raise UserError(f"--override {item!r}: expected PATH=VALUE, e.g. optim.lr=3e-3")
        steps = parse_path(item, path)
        leaf = _leaf_key(steps).replace("-", "_")
        if leaf not in known:
            close = did_you_mean(leaf, [f"--{k}" for k in known])
            hint = f"; did you mean {close[2:]!r}?" if close else " (not a training setting; see --help)"
            raise UserError(f"--override {item!r}: unknown key {leaf!r}{hint}")
        if len(steps) == 1:  # a bare key: wherever the file keeps it
            where = _tables_with(data, steps[0])
            if len(where) == 1:
                steps = [*where[0], steps[0]]
        _set(data, steps, parse_value(raw.strip()), item)
        touched[leaf] = item
    return data, touched


def _set(data: dict[str, Any], steps: list[Step], value: Any, item: str) -> None:
    node: Any = data
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        shown = _show(steps[: i + 1])
        if isinstance(step, int):
            if not isinstance(node, list):
                raise UserError(f"--override {item!r}: {_show(steps[:i])} is not an array in the config")
            if step >= len(node):
                raise UserError(
                    f"--override {item!r}: {shown} is out of range ({_show(steps[:i])} has {len(node)} elements)"
                )
        elif not isinstance(node, dict):
            raise UserError(f"--override {item!r}: {_show(steps[:i])} is not a table in the config")
        if last:
            node[step] = value
            return
        if isinstance(step, str) and step not in node:
            node[step] = [] if isinstance(steps[i + 1], int) else {}
        node = node[step]


def _show(steps: Sequence[Step]) -> str:
    out = ""
    for s in steps:
        out += f"[{s}]" if isinstance(s, int) else (f".{s}" if out else s)
    return out
