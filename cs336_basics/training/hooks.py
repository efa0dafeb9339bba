"""``--on_checkpoint 'CMD {path}'``: a shell command run after each checkpoint is durable.

For uploads to object storage, evaluation harnesses, notifications. The command runs in the
background (its own process group, so a shell's children go with it), while training continues;
``{path}``, ``{step}`` and ``{run_dir}`` are replaced by the checkpoint file, its iteration and the
run directory, each shell-quoted. Hooks run one at a time, in order: a checkpoint written while an
earlier hook is still running queues behind it (every checkpoint gets its hook; none is dropped).
The loop polls between steps (no threads): a finished hook is reported on the console and as a
``checkpoint_hook`` event in metrics.jsonl with its exit status and the tail of its output. A
failing hook is a warning, never a training failure. At exit the remaining hooks (the final
checkpoint's included) get ``--on_checkpoint_timeout`` seconds in all; whatever still runs then is
stopped (SIGTERM, then SIGKILL) and reported, and queued ones that never started are reported too.
Only rank 0 writes checkpoints, so only rank 0 runs hooks.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

TAIL_LINES = 10
TAIL_CHARS = 2000


@dataclass(frozen=True)
class HookResult:
    """How one hook ended: ``exit_code`` None when it never ran to an exit (timed out, not started)."""

    step: int
    path: str
    command: str
    exit_code: int | None
    seconds: float
    output_tail: str
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        how = self.note or f"exited {self.exit_code} after {self.seconds:.1f}s"
        return f"checkpoint hook for iteration {self.step} ({self.path}) {how}"


def render(template: str, *, path: str | os.PathLike, step: int, run_dir: str | os.PathLike) -> str:
    """The command line: ``{path}``, ``{step}``, ``{run_dir}`` replaced, shell-quoted (other braces are left alone)."""
    out = template
    for key, value in (("path", path), ("step", step), ("run_dir", run_dir)):
        out = out.replace("{" + key + "}", shlex.quote(str(value)))
    return out


class NoHooks:
    """No ``--on_checkpoint`` (or not rank 0): every call does nothing."""

    def submit(self, path: str | os.PathLike, step: int) -> None:
        pass

    def poll(self) -> None:
        pass

    def close(self, wait: bool = True) -> None:
        pass


@dataclass
class _Running:
    step: int
    path: str
    command: str
    proc: subprocess.Popen
    out: IO[bytes]
    t0: float


class CheckpointHooks(NoHooks):
    """Runs ``template`` once per checkpoint, one at a time, in the background; ``report`` gets each result."""

    def __init__(
        self, template: str, run_dir: str | os.PathLike, *, timeout_s: float, report: Callable[[HookResult], None]
    ) -> None:
        self.template, self.run_dir, self.timeout_s, self.report = template, str(run_dir), timeout_s, report
        self._queue: deque[tuple[int, str]] = deque()
        self._running: _Running | None = None

    def submit(self, path: str | os.PathLike, step: int) -> None:
        """Queue the hook for a checkpoint that is now durable (starts at once if none is running)."""
        self._queue.append((step, str(path)))
        self.poll()

    def poll(self) -> None:
        """Report a finished hook and start the next queued one; never blocks."""
        if self._running is not None and self._running.proc.poll() is not None:
            self._finish(self._running, self._running.proc.returncode)
        while self._running is None and self._queue:
            self._start(*self._queue.popleft())

    def close(self, wait: bool = True) -> None:
        """At exit: run what is left within ``timeout_s`` (``wait=False``: stop it now), then stop the rest."""
        deadline = time.monotonic() + (self.timeout_s if wait else 0.0)
        self.poll()
        while self._running is not None and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._running.proc.wait(timeout=min(0.2, max(deadline - time.monotonic(), 0.0)))
            self.poll()
        if self._running is not None:
            r = self._running
            _stop(r.proc)
            why = f"still running after --on_checkpoint_timeout {self.timeout_s:g}s at exit" if wait else "interrupted"
            self._finish(r, None, note=f"stopped: {why}")
        while self._queue:
            step, path = self._queue.popleft()
            self.report(HookResult(step, path, self._command(path, step), None, 0.0, "",
                                   note="not run: no time left at exit"))  # fmt: skip

    # -- internals ---------------------------------------------------------------------------------
    def _command(self, path: str, step: int) -> str:
        return render(self.template, path=path, step=step, run_dir=self.run_dir)

    def _start(self, step: int, path: str) -> None:
        command = self._command(path, step)
        out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _finish
        try:
            proc = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        except OSError as err:
            out.close()
            self.report(HookResult(step, path, command, None, 0.0, "", note=f"could not start: {err}"))
            return
        self._running = _Running(step, path, command, proc, out, time.monotonic())

    def _finish(self, r: _Running, code: int | None, note: str = "") -> None:
        self._running = None
        try:
            r.out.seek(0, os.SEEK_END)
            size = r.out.tell()
            r.out.seek(max(size - 4 * TAIL_CHARS, 0))
            text = r.out.read().decode("utf-8", errors="replace")
        finally:
            r.out.close()
        tail = "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]
        self.report(HookResult(r.step, r.path, r.command, code, time.monotonic() - r.t0, tail, note))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the hook's process group, SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def make_hooks(
    template: str | None, run_dir: Path, *, timeout_s: float, is_main: bool, report: Callable[[HookResult], None]
) -> NoHooks:
    """The hook runner for this rank: real on rank 0 with ``--on_checkpoint``, else a no-op."""
    if template is None or not is_main:
        return NoHooks()
    return CheckpointHooks(template, run_dir, timeout_s=timeout_s, report=report)
