"""Fault-injection harness for tests/test_training_together_reliability.py (stdlib only at import time).

Why a harness: the reliability guarantees are about *processes* (kill -9, signals, exit codes,
files left on disk), so every run under test is a separate process. Importing torch costs ~3 s, so
by default the runs are forked from a small server process that has already imported torch and
numpy (``ForkServer``); each run is still its own process with its own pid, so ``kill -9`` and
signals behave exactly as for ``python -m``. Set ``RELIABILITY_FORKSERVER=0`` to start a fresh
interpreter per run instead (slower, same semantics). ``RELIABILITY_MUTATION=<python code>`` runs
that code in every run before the module (e.g. to break a guarantee on purpose and check that the
tests notice).

Faults are injected *inside* the run, before ``cs336_basics`` is imported, by monkeypatching -- no
production hooks needed:

- ``os.fsync`` is wrapped; a rule matching the basename of the file being fsynced (found through
  ``/proc/self/fd``) can sleep (to widen the window of a checkpoint write and kill inside it), raise
  ``OSError(ENOSPC)`` (disk full), or ``SIGKILL`` the process on the spot. A marker file
  ``fsync_<n>`` is written to ``marker_dir`` when a rule fires, so the test knows the window is open.
- ``os.fdopen`` is wrapped; a file whose name matches a rule fails ``write`` with ENOSPC after a
  given number of bytes (a disk filling up in the middle of a checkpoint); ``open`` likewise for
  files written with plain ``open`` (the metrics log).
- ``cs336_basics.nn_utils.cross_entropy`` is wrapped; training calls (grad enabled) are counted
  1, 2, 3, ... and can be delayed (so external signals land mid-run: ``step_delay`` for every call,
  ``slow_from`` from a given call on, so the run cannot end before a signal sent after it arrives),
  parked (``hold_at``: the run cannot finish before a kill), made NaN, or given an infinite gradient
  while the loss itself stays finite.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_MODULE = "cs336_basics.training_together"

# Names a checkpoint directory may legitimately contain after a run; anything that looks like a
# temp / partial file is reported by ``leftover_temp_files``.
_TEMP_HINTS = (".tmp", ".temp", ".partial", ".part", "~")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every run: torch's default thread count (the guarantees are for default
    settings, so they are tested that way), no GPU, no wandb."""
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTEST_CURRENT_TEST"):
        env.pop(var, None)
    if extra:
        env.update(extra)
    return env


def leftover_temp_files(directory: Path) -> list[str]:
    """Files in ``directory`` that look like temp/partial writes (hidden files or temp suffixes)."""
    if not directory.exists():
        return []
    out = []
    for p in directory.iterdir():
        name = p.name
        if name == ".lock":  # the run directory's lock file (cs336_basics.utils.runlock): kept on purpose
            continue
        if name.startswith(".") or any(h in name for h in _TEMP_HINTS) or name.startswith("tmp"):
            out.append(name)
    return sorted(out)


# ----------------------------------------------------------------------------------------------
# Code that runs inside the run under test
# ----------------------------------------------------------------------------------------------
def _install_fsync_rules(rules: list[dict]) -> None:
    real_fsync = os.fsync
    compiled = [(re.compile(r["pattern"]), r) for r in rules]
    fired = {"n": 0}

    def fsync(fd):  # noqa: ANN001 - same signature as os.fsync
        try:
            fileno = fd if isinstance(fd, int) else fd.fileno()
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fileno}"))
        except (OSError, AttributeError, ValueError):
            name = ""
        for rx, rule in compiled:
            if name and rx.search(name):
                fired["n"] += 1
                marker_dir = rule.get("marker_dir")
                if marker_dir:
                    Path(marker_dir, f"fsync_{fired['n']}").write_text(name)
                action = rule["action"]
                if action == "sleep":
                    time.sleep(float(rule.get("sleep", 60)))
                elif action == "enospc":
                    import errno

                    raise OSError(errno.ENOSPC, "No space left on device")
                elif action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                    time.sleep(60)
                break
        return real_fsync(fd)

    os.fsync = fsync


class _FullDisk:
    """A file object whose ``write`` fails with ENOSPC once ``limit`` bytes have been written."""

    def __init__(self, f, limit: int) -> None:
        self._f = f
        self._limit = limit
        self._n = 0

    def write(self, data):  # noqa: ANN001
        import errno

        n = len(data) if isinstance(data, str) else memoryview(data).nbytes
        if self._n + n > self._limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._n += n
        return self._f.write(data)

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self):
        self._f.__enter__()
        return self

    def __exit__(self, *exc):  # noqa: ANN002
        return self._f.__exit__(*exc)

    def __iter__(self):
        return iter(self._f)


def _install_write_rules(rules: list[dict]) -> None:
    """Files opened through ``os.fdopen`` (how ``fsutil.atomic_write`` opens its temp file) whose
    name matches a rule get a ``write`` that hits a full disk after ``limit`` bytes."""
    real_fdopen = os.fdopen
    compiled = [(re.compile(r["pattern"]), r) for r in rules]

    def fdopen(fd, *args, **kwargs):  # noqa: ANN001
        f = real_fdopen(fd, *args, **kwargs)
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return f
        for rx, rule in compiled:
            if rx.search(name):
                return _FullDisk(f, int(rule.get("limit", 1000)))
        return f

    os.fdopen = fdopen


def _install_open_rules(rules: list[dict]) -> None:
    """Files opened for writing through ``open`` whose name matches a rule hit a full disk after
    ``limit`` bytes (e.g. the metrics log, which is appended to with plain ``open``)."""
    import builtins

    real_open = builtins.open
    compiled = [(re.compile(r["pattern"]), r) for r in rules]

    def open_(file, mode="r", *args, **kwargs):  # noqa: ANN001
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            name = os.path.basename(os.fspath(file))
            for rx, rule in compiled:
                if rx.search(name):
                    return _FullDisk(f, int(rule.get("limit", 1000)))
        return f

    builtins.open = open_


def _install_loss_faults(
    step_delay: float, loss_faults: dict[int, str], hold_at: int | None = None, slow_from: dict | None = None
) -> None:
    import torch

    from cs336_basics import nn_utils

    real_ce = nn_utils.cross_entropy
    calls = {"n": 0}

    class _InfGrad(torch.autograd.Function):
        """Identity in the forward pass (finite loss), infinite gradient in the backward pass."""

        @staticmethod
        def forward(ctx, x):  # noqa: ANN001
            return x.clone()

        @staticmethod
        def backward(ctx, g):  # noqa: ANN001
            return g * float("inf")

    def cross_entropy(*args, **kwargs):
        loss = real_ce(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if step_delay:
                time.sleep(step_delay)
            if slow_from and calls["n"] >= int(slow_from["call"]):  # a wide window for a signal to land in
                time.sleep(float(slow_from["seconds"]))
            if calls["n"] == hold_at:  # park here (a test kills the run before): it cannot finish first
                time.sleep(3600)
            kind = loss_faults.get(calls["n"])
            if kind == "nan":
                loss = loss * float("nan")
            elif kind == "inf":
                loss = loss * float("inf")
            elif kind == "inf_grad":
                loss = _InfGrad.apply(loss)
        return loss

    nn_utils.cross_entropy = cross_entropy


def _install_slow_c_step(call_no: int, seconds: float) -> None:
    """Make training micro-step ``call_no`` spend ~``seconds`` inside ONE torch call.

    A signal's Python handler cannot run until that call returns (the situation of a real long step
    on CPU); markers on stdout show when the call starts and ends. One call of
    ``torch.linalg.matrix_power`` is a chain of matmuls in C++, sized from a quick calibration.
    """
    import torch

    from cs336_basics import nn_utils

    real_ce = nn_utils.cross_entropy
    calls = {"n": 0}
    a = torch.randn(384, 384) / 384**0.5
    # The fastest of a few timings: on a busy machine one timing can be many times too slow, and a
    # call sized from it would then end long before ``seconds`` once the load drops.
    per_matmul = 1.0
    for _ in range(5):
        t = time.perf_counter()
        torch.linalg.matrix_power(a, 8)
        per_matmul = min(per_matmul, max((time.perf_counter() - t) / 8, 1e-5))
    power = max(int(seconds / per_matmul), 8)

    def cross_entropy(*args, **kwargs):
        loss = real_ce(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == call_no:
                print("SLOW STEP START", flush=True)
                torch.linalg.matrix_power(a, power)
                print("SLOW STEP END", flush=True)
        return loss

    nn_utils.cross_entropy = cross_entropy


def run_spec_in_this_process(spec: dict) -> int:
    """Apply the faults in ``spec`` and run ``spec['module']`` as ``__main__``; return the exit code."""
    import runpy

    os.chdir(spec.get("cwd") or str(REPO))
    faults = spec.get("faults") or {}
    if faults.get("fsync_rules"):
        _install_fsync_rules(faults["fsync_rules"])
    if faults.get("write_rules"):
        _install_write_rules(faults["write_rules"])
    if faults.get("open_rules"):
        _install_open_rules(faults["open_rules"])
    loss_faults = {int(k): v for k, v in (faults.get("loss_faults") or {}).items()}
    if faults.get("step_delay") or loss_faults or faults.get("hold_at") or faults.get("slow_from"):
        _install_loss_faults(
            float(faults.get("step_delay") or 0.0), loss_faults, faults.get("hold_at"), faults.get("slow_from")
        )
    if faults.get("slow_c_step"):
        _install_slow_c_step(int(faults["slow_c_step"]["call"]), float(faults["slow_c_step"]["seconds"]))
    if faults.get("exec"):
        # Test-only: Python run before the module (RELIABILITY_MUTATION, to check the tests can fail).
        exec(faults["exec"], {"__name__": "reliability_mutation"})
    module = spec["module"]
    sys.argv = [module, *spec["argv"]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # What CPython does for an uncaught Ctrl-C: traceback, then die of SIGINT.
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException:
        traceback.print_exc()
        return 1


def child_entry() -> None:
    """``python -c 'from tests._fault_utils import child_entry; child_entry()'`` (non-fork mode)."""
    spec = json.loads(os.environ["RELIABILITY_SPEC"])
    code = run_spec_in_this_process(spec)
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)


def _child_after_fork(spec: dict) -> None:
    code = 1
    try:
        os.setsid()  # own session: a stray signal to the server's group never reaches it
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(spec["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(spec["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (devnull, out, err):
            os.close(fd)
        sys.stdin = open(os.devnull)  # noqa: SIM115
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True, write_through=True
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True, write_through=True
        )
        for k, v in (spec.get("env") or {}).items():
            os.environ[k] = v
        code = run_spec_in_this_process(spec)
        try:
            import atexit

            atexit._run_exitfuncs()
        except BaseException:
            traceback.print_exc()
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code & 0xFF if code >= 0 else 1)


def serve() -> None:
    """Fork server main loop: one JSON spec per stdin line -> fork a run; report pid and exit code."""
    import numpy  # noqa: F401  (warm imports shared by every forked run)
    import torch  # noqa: F401

    # torch.optim.Optimizer.__init__ imports torch._dynamo (seconds without cached bytecode).
    for mod in ("torch._dynamo", "torch.optim", "einops", "jaxtyping", "regex", "tomllib"):
        try:
            __import__(mod)
        except ImportError:
            pass
    out = sys.stdout

    def reply(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ready": True})
    stdin_fd = sys.stdin.fileno()
    buf = b""
    eof = False
    while True:
        if not eof:
            r, _, _ = select.select([stdin_fd], [], [], 0.02)
            if r:
                chunk = os.read(stdin_fd, 65536)
                if not chunk:
                    eof = True
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    spec = json.loads(line)
                    pid = os.fork()
                    if pid == 0:
                        _child_after_fork(spec)
                    reply({"id": spec["id"], "pid": pid})
        else:
            time.sleep(0.02)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                if eof:
                    return
                break
            if pid == 0:
                break
            reply({"pid": pid, "rc": os.waitstatus_to_exitcode(status)})


# ----------------------------------------------------------------------------------------------
# Test-side API
# ----------------------------------------------------------------------------------------------
class Run:
    """A run under test: its pid, its stdout/stderr files, and its exit code once it ends."""

    def __init__(self, name: str, stdout: Path, stderr: Path) -> None:
        self.name = name
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.pid: int | None = None
        self._rc: int | None = None
        self._done = threading.Event()
        self._popen: subprocess.Popen | None = None

    # exit status -------------------------------------------------------------------------
    def _set_rc(self, rc: int) -> None:
        self._rc = rc
        self._done.set()

    def poll(self) -> int | None:
        if self._popen is not None and self._popen.poll() is not None:
            self._set_rc(self._popen.returncode)
        return self._rc

    def wait(self, timeout: float = 600.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"run {self.name} did not finish within {timeout} s\n{self.describe()}")
            self._done.wait(0.02)
        return self._rc  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # output ------------------------------------------------------------------------------
    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        return (
            f"--- {self.name}: rc={self._rc}\n--- stdout (tail):\n{self.stdout[-4000:]}\n"
            f"--- stderr (tail):\n{self.stderr[-4000:]}"
        )

    def wait_for(self, predicate, timeout: float = 300.0, what: str = "condition") -> None:
        """Poll ``predicate()`` until true; fail early (with the run's output) if the run ends first."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            if self.poll() is not None:
                if predicate():
                    return
                raise AssertionError(f"run {self.name} ended before {what}\n{self.describe()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")
            time.sleep(0.005)

    def wait_for_iter(self, n: int, timeout: float = 300.0) -> None:
        """Wait until the console shows ``Iter <m>`` with m >= n (needs --log_interval 1)."""
        rx = re.compile(r"^Iter\s+(\d+)", re.M)

        def seen() -> bool:
            return any(int(m) >= n for m in rx.findall(self.stdout))

        self.wait_for(seen, timeout, f"'Iter {n}' on stdout")


class Launcher:
    """Starts runs (forked from a warm server by default) and kills leftovers at teardown."""

    def __init__(self, log_dir: Path, use_fork: bool | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if use_fork is None:
            use_fork = os.environ.get("RELIABILITY_FORKSERVER", "1") != "0"
        self.use_fork = use_fork
        self._runs: list[Run] = []
        self._by_id: dict[int, Run] = {}
        self._by_pid: dict[int, Run] = {}
        self._pending_rc: dict[int, int] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._server: subprocess.Popen | None = None
        if use_fork:
            self._start_server()

    def _start_server(self) -> None:
        self._server_err = open(self.log_dir / "forkserver.err", "wb")  # noqa: SIM115
        self._server = subprocess.Popen(
            [sys.executable, "-c", "from tests._fault_utils import serve; serve()"],
            cwd=str(REPO),
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._server_err,
        )
        self._ready = False  # the server imports torch in the background; first use waits for it

    def _ensure_server_ready(self) -> None:
        if self._ready:
            return
        assert self._server is not None and self._server.stdout is not None
        first = self._server.stdout.readline()
        if not first or not json.loads(first).get("ready"):
            raise RuntimeError(f"fork server failed to start: {(self.log_dir / 'forkserver.err').read_text()}")
        self._reader = threading.Thread(target=self._read_server, daemon=True)
        self._reader.start()
        self._ready = True

    def _read_server(self) -> None:
        assert self._server is not None
        for line in self._server.stdout:
            msg = json.loads(line)
            with self._lock:
                if "id" in msg:
                    run = self._by_id[msg["id"]]
                    run.pid = msg["pid"]
                    self._by_pid[msg["pid"]] = run
                    if msg["pid"] in self._pending_rc:
                        run._set_rc(self._pending_rc.pop(msg["pid"]))
                elif "rc" in msg:
                    run = self._by_pid.get(msg["pid"])
                    if run is None:
                        self._pending_rc[msg["pid"]] = msg["rc"]
                    else:
                        run._set_rc(msg["rc"])

    def start(
        self,
        argv: list[str],
        *,
        name: str = "run",
        module: str = TRAIN_MODULE,
        faults: dict | None = None,
        env: dict[str, str] | None = None,
        fresh_interpreter: bool = False,
    ) -> Run:
        """Start ``python -m <module> <argv>`` with ``faults`` injected.

        ``fresh_interpreter=True`` with no faults runs the real ``python -m`` command line.
        """
        with self._lock:
            self._next += 1
            rid = self._next
        stem = f"{rid:03d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        faults = dict(faults or {})
        if os.environ.get("RELIABILITY_MUTATION"):
            faults["exec"] = os.environ["RELIABILITY_MUTATION"]
        run = Run(name, self.log_dir / f"{stem}.out", self.log_dir / f"{stem}.err")
        spec = {
            "id": rid,
            "module": module,
            "argv": [str(a) for a in argv],
            "faults": faults,
            "env": env or {},
            "cwd": str(REPO),
            "stdout": str(run.stdout_path),
            "stderr": str(run.stderr_path),
        }
        self._runs.append(run)
        if self.use_fork and not fresh_interpreter:
            self._ensure_server_ready()
            with self._lock:
                self._by_id[rid] = run
            assert self._server is not None and self._server.stdin is not None
            self._server.stdin.write((json.dumps(spec) + "\n").encode())
            self._server.stdin.flush()
            deadline = time.monotonic() + 300  # the server may still be importing torch on a busy machine
            while run.pid is None and run._rc is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("fork server did not answer")
                time.sleep(0.002)
            return run
        if fresh_interpreter and not faults:
            cmd = [sys.executable, "-m", module, *spec["argv"]]
        else:
            cmd = [sys.executable, "-c", "from tests._fault_utils import child_entry; child_entry()"]
        with open(run.stdout_path, "wb") as out, open(run.stderr_path, "wb") as err:
            run._popen = subprocess.Popen(
                cmd,
                cwd=str(REPO),
                env=child_env({**(env or {}), "RELIABILITY_SPEC": json.dumps(spec)}),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        run.pid = run._popen.pid
        return run

    def run(self, argv: list[str], *, timeout: float = 600.0, **kwargs) -> Run:
        """Start and wait."""
        r = self.start(argv, **kwargs)
        r.wait(timeout)
        return r

    def close(self) -> None:
        for run in self._runs:
            if run.poll() is None:
                run.kill()
        for run in self._runs:
            try:
                run.wait(10)
            except Exception:
                pass
        if self._server is not None:
            try:
                assert self._server.stdin is not None
                self._server.stdin.close()
                self._server.wait(10)
            except Exception:
                self._server.kill()
            self._server_err.close()
