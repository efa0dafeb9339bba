"""Atomic writes end with the mode a plain ``open(path, "w")`` gives a new file (0o666 & ~umask),
whatever the umask, instead of mkstemp's private 0o600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cs336_basics.utils.fsutil import atomic_write, atomic_write_text


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_mode_matches_plain_open(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as f:  # the reference: what any other program would create
            f.write("x")
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_write(tmp_path / "b.bin") as f:
            f.write(b"x")
        # Replacing an existing (private) file gives the same mode as a new one.
        private = tmp_path / "c.txt"
        private.write_text("old")
        private.chmod(0o600)
        atomic_write_text(private, "new")
    finally:
        os.umask(old)
    assert _mode(plain) == 0o666 & ~umask
    for name in ("a.txt", "b.bin", "c.txt"):
        assert _mode(tmp_path / name) == _mode(plain), name
    assert private.read_text() == "new"


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("keep")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
