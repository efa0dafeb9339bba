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
from collections.abc import Iterator
from pathlib import Path

from cs336_basics.utils.errors import UserError

LOCK_NAME = ".lock"


class DirectoryInUse(UserError):
    """Another live process holds the directory's lock."""


class RunLock:
    """An acquired lock on ``directory``; :meth:`release` (or process exit) frees it."""

    def __init__(self, directory: Path, fd: int | None) -> None:
        self.directory = directory
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a lock dropped by an exception unwinding setup is freed with it
        with contextlib.suppress(Exception):  # (at interpreter exit the kernel frees it anyway)
            self.release()


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
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {d} exists and is not a directory") from None
    except OSError as err:
        raise UserError(f"cannot create {what} {d}: {err.strerror or err}") from None
    path = d / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise UserError(f"{what} {d} is not writable: cannot create {path}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            tail = f"; {hint}" if hint else ""
            raise DirectoryInUse(
                f"{what} {d} is in use by another run: {describe_holder(path)} (lock file {path}){tail}"
            ) from None
        return RunLock(d, None)  # ENOLCK / EOPNOTSUPP: no locking on this file system
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"
    with contextlib.suppress(OSError):  # the details only feed the message; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
    return RunLock(d, fd)


@contextlib.contextmanager
def hold(directory: str | os.PathLike, *, what: str = "directory", hint: str = "") -> Iterator[RunLock]:
    """``with hold(d): ...``: :func:`acquire` for the block."""
    lock = acquire(directory, what=what, hint=hint)
    try:
        yield lock
    finally:
        lock.release()
