"""The plain loop (``python -m cs336_basics.train``) and the training program are twins.

With the plain paths (``--attention plain --embedding plain``), the same data, seed and settings,
``training_together`` builds the textbook's model with the same initial weights, draws the same
batches, and logs the same losses as the plain loop, step by step. They differ in the last bits only
(float32 tolerance, 1e-5 relative here): the program computes the gradient norm in float32 with
multi-tensor kernels, the textbook in float64, and its AdamW uses multi-tensor kernels too.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cs336_basics import train
from cs336_basics import training_together as tt

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[1]
SHAPE = ["--vocab_size", "64", "--context_length", "16", "--d_model", "32", "--num_layers", "2", "--num_heads", "2",
         "--d_ff", "64", "--batch_size", "4", "--max_iters", "25", "--warmup_iters", "3", "--lr", "3e-3",
         "--min_lr", "3e-4", "--weight_decay", "0.1", "--seed", "7", "--log_interval", "1"]  # fmt: skip


def _data(path: Path, n: int = 6000) -> Path:
    """Ids with structure (runs of x -> 3x+1 mod 64), so the loss really falls."""
    rng = np.random.default_rng(0)
    ids, x = [], 0
    for i in range(n):
        x = int(rng.integers(0, 64)) if i % 13 == 0 else (3 * x + 1) % 64
        ids.append(x)
    np.save(path, np.array(ids, dtype=np.uint16))
    return path


def _plain_losses(out: str) -> dict[int, float]:
    return {int(m[1]): float(m[2]) for m in re.finditer(r"^step\s+(\d+) \| loss (\S+)", out, re.M)}


def test_plain_loop_and_training_program_log_the_same_losses(tmp_path, capsys):
    data = _data(tmp_path / "train.npy")
    assert train.main(["--train_data", str(data), *SHAPE, "--eval_interval", "1000",
                       "--checkpoint", str(tmp_path / "plain" / "ckpt.pt")]) == 0  # fmt: skip
    plain = _plain_losses(capsys.readouterr().out)
    assert sorted(plain) == list(range(1, 26))

    run = tmp_path / "program"
    assert tt.main(["--train_data_path", str(data), *SHAPE, "--attention", "plain", "--embedding", "plain",
                    "--checkpoint_dir", str(run), "--checkpoint_interval", "1000", "--heartbeat_s", "0"]) == 0  # fmt: skip
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    program = {r["step"]: r["loss"] for r in recs if r.get("type") == "train"}
    assert sorted(program) == sorted(plain)
    for step in plain:
        assert program[step] == pytest.approx(plain[step], rel=1e-5, abs=1e-6), step
    assert plain[25] < plain[1] - 1.0  # it learned: a comparison of flat curves would prove little

    # the plain loop's checkpoint is the course's: model, optimizer, iteration
    payload = torch.load(tmp_path / "plain" / "ckpt.pt", weights_only=True)
    assert payload["iteration"] == 25 and set(payload) == {"model", "optimizer", "iteration"}


def test_plain_loop_runs_as_a_program_evaluates_and_resumes(tmp_path):
    data = _data(tmp_path / "train.npy")
    val = _data(tmp_path / "val.npy", 2000)
    ckpt = tmp_path / "run" / "ckpt.pt"
    args = [sys.executable, "-m", "cs336_basics.train", "--train_data", str(data), "--val_data", str(val), *SHAPE,
            "--eval_interval", "10", "--eval_iters", "3", "--checkpoint", str(ckpt), "--device", "cpu"]  # fmt: skip
    first = subprocess.run(
        [*args[:-4], "--max_iters", "10", *args[-4:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    assert "step     10 | val loss" in first.stdout and ckpt.is_file()
    resumed = subprocess.run([*args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 10" in resumed.stdout
    assert sorted(_plain_losses(resumed.stdout)) == list(range(11, 26))
    assert torch.load(ckpt, weights_only=True)["iteration"] == 25
