"""A graceful stop on SIGTERM / Ctrl-C: finish the step, checkpoint, exit 0; a second Ctrl-C aborts."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

import torch
import torch.distributed as dist

from cs336_basics.training.runtime import all_reduce_sum, print0
from cs336_basics.utils.fsutil import discard_partial_writes


class StopRequest:
    """SIGTERM/SIGINT ask the run to finish its step, checkpoint and exit 0; a second Ctrl-C aborts.

    A signal's Python handler runs only when the main thread is back in Python, which can be many
    seconds later while it sits inside one long torch call. So the handlers are backed by a watcher
    thread: CPython writes each signal's number to a "wakeup" pipe the moment it arrives, and the
    watcher, blocked on that pipe, acknowledges the first signal at once and on a second SIGINT ends
    the process at once (exit 130; checkpoints are written atomically, so the previous one is intact).
    The handlers themselves only set attributes: printing from a signal handler can deadlock on the
    stdout lock.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signame: str | None = None
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup_fd = -1
        self._sigints = 0

    @property
    def requested(self) -> bool:
        return self.signame is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signame is not None:
            raise KeyboardInterrupt  # (only reached without the watcher)
        if self.signame is None:
            self.signame = signal.Signals(signum).name

    def _watch(self, read_fd: int) -> None:
        acknowledged = False
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                data = b""
            if not data:  # uninstall() closed the write end
                os.close(read_fd)
                return
            for signum in data:
                if signum not in self.SIGNALS:
                    continue
                if signum == signal.SIGINT:
                    self._sigints += 1
                    if self._sigints >= 2:
                        discard_partial_writes()  # a checkpoint being written stays the previous one
                        os.write(2, b"interrupted: second Ctrl-C, exiting now without a checkpoint\n")
                        os._exit(130)
                if not acknowledged:
                    acknowledged = True
                    again = " (Ctrl-C again to abort now)" if signum == signal.SIGINT else ""
                    name = signal.Signals(signum).name
                    print0(f"Received {name}: stopping after the current step and saving a checkpoint{again}")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. not in some test runners)
        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old_wakeup_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(r,), name="stop-request-watcher", daemon=True).start()

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        if self._pipe is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self._old_wakeup_fd)
            r, w = self._pipe
            os.close(w)  # the watcher reads EOF and ends; it closes nothing itself
            self._pipe = None

    def agree(self, device: torch.device) -> str | None:
        """Collective: the signal any rank received (SIGTERM first), so all ranks stop at the same step.

        The answer comes only from the reduced flags: a signal landing on one rank *during* this call
        is seen by every rank at the next one, never by that rank alone.
        """
        local = self.signame
        if not (dist.is_available() and dist.is_initialized()):
            return local
        flags = torch.tensor([local == "SIGTERM", local == "SIGINT"], dtype=torch.float32, device=device)
        all_reduce_sum(flags)
        agreed = "SIGTERM" if flags[0] > 0 else "SIGINT" if flags[1] > 0 else None
        if agreed is not None and self.signame is None:
            self.signame = agreed  # another rank got it
        return agreed
