"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Write to a temp file in the same directory, flush + fsync, ``os.replace`` over the target (atomic on
POSIX), then fsync the directory so the rename itself survives a power cut. On any failure the temp
file is removed and the target is untouched.

The result gets the mode a plain ``open(path, "w")`` of a new file would give (``0o666`` less the
umask), not the temp file's private ``0o600``: in a shared course folder other users must be able
to read it. (Replacing a file does not keep its old mode: same rule every time, predictable.)

:func:`atomic_directory` does the same for a folder of files (an export): written beside the target,
renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cs336_basics.utils.errors import read_error_line


def current_umask() -> int:
    """The process umask. Read from /proc where possible: setting it to read it back (the only
    portable way) briefly changes it for every thread of the process."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | os.PathLike) -> None:
    """Persist a rename/creation in ``directory`` (best effort on filesystems that refuse it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A file written under a temporary name beside ``path`` (``.file``, open in ``mode``):
    :meth:`commit` puts it in place complete, :meth:`discard` removes it; ``path`` is untouched until
    the commit. For files that must appear together, several at once (shards): commit them after
    all are written. :func:`atomic_write` is one of these as a with-block."""

    def __init__(self, path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> None:
        self.path = Path(path)
        self.directory = self.path.parent if str(self.path.parent) else Path(".")
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.directory)
        _IN_PROGRESS.add(self.tmp)
        try:
            self.file: IO = os.fdopen(fd, mode, **open_kwargs)
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        try:
            os.chmod(self.tmp, 0o666 & ~current_umask())
        except BaseException:
            self.discard()
            raise

    def close(self) -> None:
        """Flush the data to disk and close the file (not yet in place; :meth:`commit` does that)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def commit(self) -> None:
        """Close, rename over ``path`` (atomic on POSIX) and persist the rename."""
        self.close()
        os.replace(self.tmp, self.path)
        _IN_PROGRESS.discard(self.tmp)
        fsync_dir(self.directory)

    def discard(self) -> None:
        """Close and delete the temp file (best effort: it is cleanup after a failure)."""
        if hasattr(self, "file"):
            with contextlib.suppress(OSError):
                self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)
        _IN_PROGRESS.discard(self.tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """``with atomic_write(p) as f: f.write(...)`` -- ``p`` appears only if the block succeeds."""
    f = AtomicFile(path, mode, **open_kwargs)
    try:
        yield f.file
        f.commit()
    except BaseException:
        f.discard()
        raise


# Temp files of writes still in progress, so an abort that cannot unwind the writer (os._exit on a
# second Ctrl-C) can still remove them: see discard_partial_writes.
_IN_PROGRESS: set[str] = set()


def discard_partial_writes() -> None:
    """Delete the temp files of unfinished atomic writes (their targets stay untouched)."""
    for tmp in list(_IN_PROGRESS):
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """``with atomic_directory(d) as tmp:`` write the files into ``tmp``, a new directory beside
    ``d``; when the block succeeds ``tmp`` is renamed to ``d``, so ``d`` appears complete or not at
    all. On any failure ``tmp`` is removed and ``d`` is left as it was.

    ``d`` may be missing or empty; a non-empty ``d`` makes the final rename fail (``OSError``, ``d``
    untouched) unless ``replace``: then the old ``d`` is first renamed aside (a hidden ``.NAME.*.old``
    beside it), the new one renamed into place, and only then the old one deleted. A crash between
    those two renames leaves both complete directories under their hidden names, never a partial
    ``d``; a failed second rename puts the old one back. The result gets a plain ``mkdir``'s mode
    (``0o777`` less the umask), not ``mkdtemp``'s private ``0o700``.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        for f in tmp.iterdir():  # what the block wrote is on disk before the directory is renamed
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())
        old = None
        if replace and path.is_dir() and any(path.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            try:
                os.rename(path, old)  # onto the empty placeholder (POSIX rename replaces an empty directory)
            except BaseException:
                os.rmdir(old)
                raise
        try:
            os.rename(tmp, path)  # replaces an empty (or missing) directory; refuses a non-empty one
        except BaseException:
            if old is not None:
                os.rename(old, path)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def read_toml(path: str | os.PathLike, error: type[Exception], flag: str = "--config") -> dict:
    """Parse a TOML file; every problem is ``error`` with one line naming the file (and ``flag``)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as err:
        raise error(read_error_line(f"{flag} {path}", err, expected="a .toml file")) from None
    except tomllib.TOMLDecodeError as err:
        raise error(f"{path}: invalid TOML: {err}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: invalid TOML: not UTF-8 text") from None
