"""Atomic writes end with the mode a plain ``open(path, "w")`` gives a new file (0o666 & ~umask),
whatever the umask, instead of mkstemp's private 0o600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cs336_basics.utils.fsutil import (
    AtomicFile,
    atomic_directory,
    atomic_write,
    atomic_write_text,
    discard_partial_writes,
)


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


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_directory_appears_whole_with_mkdir_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        (tmp_path / "plain").mkdir()  # the reference mode
        with atomic_directory(tmp_path / "d") as tmp:
            assert not (tmp_path / "d").exists()  # nothing at the target while it is being written
            (tmp / "a.txt").write_text("new")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "d") == _mode(tmp_path / "plain") == 0o777 & ~umask
    assert (tmp_path / "d" / "a.txt").read_text() == "new"
    # A non-empty target is not replaced unless asked; a failed block leaves it as it was.
    with pytest.raises(OSError):
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "b.txt").write_text("other")
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "d", replace=True) as tmp:
            (tmp / "b.txt").write_text("other")
            raise RuntimeError("boom")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["a.txt"]
    with atomic_directory(tmp_path / "d", replace=True) as tmp:
        (tmp / "b.txt").write_text("other")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "plain"]  # no temp or old directory left


def test_atomic_files_written_together_appear_at_commit(tmp_path: Path) -> None:
    """AtomicFile (what atomic_write and the token writers use): nothing at the target until commit;
    a discarded one leaves nothing; one still open is removed by discard_partial_writes."""
    a, b = AtomicFile(tmp_path / "a.bin"), AtomicFile(tmp_path / "b.txt", "w", encoding="utf-8")
    a.file.write(b"\x01\x02")
    b.file.write("hé")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
    a.commit()
    b.commit()
    assert (tmp_path / "a.bin").read_bytes() == b"\x01\x02" and (tmp_path / "b.txt").read_text("utf-8") == "hé"
    c = AtomicFile(tmp_path / "c.bin")
    c.file.write(b"x")
    c.discard()
    d = AtomicFile(tmp_path / "d.bin")
    d.file.write(b"x")
    discard_partial_writes()  # what a second Ctrl-C does before os._exit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt"]
