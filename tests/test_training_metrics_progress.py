"""The live progress bar: drawn on a terminal (a pseudo-terminal here), never into a pipe.

On a terminal the training program redraws one line in place (``\\r`` + erase) under the usual
console lines: steps done/total, loss, tokens/s, ETA, and the evaluation's batches. Piped, the
output is the usual lines and nothing else.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests._train_utils import base_argv, write_pattern_data

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

CLEAR = "\r\x1b[K"
BAR = re.compile(r"(Train|Eval train|Eval val) +\d+/\d+ \[")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("progress_data"))


def _argv(data: dict[str, Path], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cs336_basics.training_together",
            *base_argv(data, run_dir, max_iters=6, eval_interval=3, log_interval=3, checkpoint_interval=6)]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def _run_on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` with stdout on a pseudo-terminal; everything it wrote there, and its exit code."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # 160 columns: no line cut
    proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.STDOUT, env=_env(), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_the_bar_and_a_pipe_gets_the_usual_lines(data, tmp_path):
    rc, shown = _run_on_a_terminal(_argv(data, tmp_path / "tty"))
    assert rc == 0, shown
    bars = [part.split("\r\n")[0] for part in shown.split(CLEAR)[1:] if part.strip()]
    train = [b for b in bars if b.startswith("Train ")]
    assert train, shown
    assert re.fullmatch(r"Train 6/6 \[#{20}\] 100% \| loss \d+\.\d{4} \| [\d,]+ tok/s \| ETA 0:00:00", train[-1]), train
    assert any(re.match(r"Train 1/6 \[#{3}-{17}\]  17% \| loss \d", b) for b in train), train
    assert any(re.match(r"Eval (train|val) [12]/2 \[", b) for b in bars), bars
    assert shown.endswith(CLEAR)  # erased at the end: the shell prompt starts on a clean line

    piped = subprocess.run(_argv(data, tmp_path / "pipe"), capture_output=True, text=True, env=_env(), timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stdout and "\x1b" not in piped.stdout and "tok/s | ETA" not in piped.stdout
    # The same lines either way, the bar taken out (timings differ: compare the lines' first words).
    pieces = re.split(r"\r\x1b\[K|\r\n", shown)
    tty_lines = [p for p in pieces if p and not BAR.match(p)]
    pipe_lines = [ln for ln in (piped.stdout + piped.stderr).splitlines() if ln]
    assert [ln.split()[:2] for ln in tty_lines] == [ln.split()[:2] for ln in pipe_lines]


def test_no_progress_turns_the_bar_off_on_a_terminal(data, tmp_path):
    rc, shown = _run_on_a_terminal([*_argv(data, tmp_path / "r"), "--no-progress"])
    assert rc == 0, shown
    assert CLEAR not in shown and "tok/s | ETA" not in shown
