"""One run per directory: an OS-level lock on a lock file inside it.

Two trainers started on the same ``--checkpoint_dir`` would overwrite each other's checkpoints,
``best.pt`` and ``run_config.json`` and move each other's ``metrics.jsonl`` aside, each believing it
succeeded. So the first takes ``DIR/.lock`` with ``flock(LOCK_EX | LOCK_NB)`` before it writes
anything, and a second is refused in one line naming the holder.

Why ``flock`` and not "create a pid file if none exists": the kernel drops an flock when the last
file descriptor on it closes, which includes the process dying by ``kill -9`` or a power cut of the
process, so there is never a stale lock to clean up by hand. The lock file itself is left in place
(deleting it on release would let a third process lock a fresh file while a second still waits on
the old one); its contents (pid, host, start time) only serve the refusal message.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cs336_basics.utils.errors import UserError, os_reason

LOCK_NAME = ".lock"


class DirectoryInUse(UserError):
    """Another live process holds the directory's lock."""


class RunLock:
    """An acquired lock on ``directory``; :meth:`release` (or process exit) frees it.

    ``created_dirs`` (the deepest first) and ``created_file``: what :func:`acquire` made, so that a
    run refused during setup can take it away again (:meth:`discard`).
    """

    def __init__(
        self, directory: Path, fd: int | None, created_dirs: tuple[Path, ...] = (), created_file: bool = False
    ) -> None:
        self.directory = directory
        self._fd = fd
        self.created_dirs = created_dirs
        self.created_file = created_file

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def discard(self) -> None:
        """Release, and take away what :func:`acquire` created, as long as nothing else was put there:
        the lock file, then each directory it made while it is empty (so a run refused before it
        wrote anything leaves no empty run folder behind). A directory that existed before, or one
        that now holds anything besides the lock file, is left alone."""
        try:
            only_lock = [p.name for p in self.directory.iterdir()] == [LOCK_NAME]
        except OSError:
            only_lock = False
        if self.created_file and (only_lock or self.directory not in self.created_dirs):
            with contextlib.suppress(OSError):  # unlinked while still held: no other run can have it
                (self.directory / LOCK_NAME).unlink()
        self.release()
        for d in self.created_dirs:  # deepest first; stops at the first one that is not empty
            try:
                d.rmdir()
            except OSError:
                break

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        # A lock dropped by an exception unwinding setup is freed with it. No module globals here:
        # at interpreter exit they may already be None (and the kernel frees the lock anyway).
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            try:
                _close(fd)
            except OSError:
                pass


def describe_holder(path: Path) -> str:
    """``pid 123 on host h since 2026-01-01 12:00:00 UTC``, from what the holder wrote in the file."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        return f"pid {info['pid']} on host {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


def acquire(directory: str | os.PathLike, *, what: str = "directory", hint: str = "") -> RunLock:
    """Create ``directory`` if needed and lock it for this process, or raise :class:`DirectoryInUse`.

    ``what`` names the directory in the message (e.g. ``--checkpoint_dir``); ``hint`` ends it
    (what the user can do instead). Where the file system has no locks (``fcntl`` missing, or a
    network file system refusing ``flock``) the run goes ahead unlocked: refusing every run there
    would be worse than the race this guards against.
    """
    d = Path(directory)
    try:
        import fcntl
    except ImportError:  # Windows
        return RunLock(d, None)
    created = _missing_dirs(d)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {d} exists and is not a directory") from None
    except OSError as err:
        raise UserError(f"cannot create {what} {d}: {os_reason(err)}") from None
    path = d / LOCK_NAME
    try:
        fd, made = _open_lock_file(path)
    except OSError as err:
        raise UserError(f"{what} {d} is not writable: cannot create {path}: {os_reason(err)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            tail = f"; {hint}" if hint else ""
            raise DirectoryInUse(
                f"{what} {d} is in use by another run: {describe_holder(path)} (lock file {path}){tail}"
            ) from None
        return RunLock(d, None, created, made)  # ENOLCK / EOPNOTSUPP: no locking on this file system
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"
    with contextlib.suppress(OSError):  # the details only feed the message; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
    return RunLock(d, fd, created, made)


def _missing_dirs(d: Path) -> tuple[Path, ...]:
    """``d`` and those of its parents that do not exist yet, the deepest first."""
    missing = []
    for p in (d, *d.parents):
        if p.exists() or p.is_symlink():
            break
        missing.append(p)
    return tuple(missing)


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """The lock file's descriptor, and whether this call created the file."""
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        return os.open(path, flags | os.O_CREAT, 0o644), False


@contextlib.contextmanager
def hold(directory: str | os.PathLike, *, what: str = "directory", hint: str = "") -> Iterator[RunLock]:
    """``with hold(d): ...``: :func:`acquire` for the block."""
    lock = acquire(directory, what=what, hint=hint)
    try:
        yield lock
    finally:
        lock.release()
