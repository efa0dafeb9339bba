"""Helpers for tests/test_training_together_program.py and tests/test_training_together_ddp.py.

Tiny models (d_model 32, 2 layers, vocab 64, context 16) on token data written to tmp_path, so a
whole training run takes about a second in-process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
CTX = 16

MODEL_ARGS = [
    "--vocab_size", str(VOCAB), "--context_length", str(CTX), "--d_model", "32", "--num_layers", "2",
    "--num_heads", "2", "--d_ff", "64",
]  # fmt: skip


def write_pattern_data(d: Path, n_train: int = 20_000, n_val: int = 2_000, noise: float = 0.05) -> dict[str, Path]:
    """A learnable stream: the ids 0..VOCAB-1 counting up, with a little noise; .npy and .bin copies."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def make(n: int) -> np.ndarray:
        base = np.arange(n, dtype=np.int64) % VOCAB
        noisy = rng.integers(0, VOCAB, size=n)
        return np.where(rng.random(n) < noise, noisy, base).astype(np.uint16)

    train, val = make(n_train), make(n_val)
    np.save(d / "train.npy", train)
    np.save(d / "val.npy", val)
    train.tofile(d / "train.bin")
    val.tofile(d / "val.bin")
    return {
        "train": d / "train.npy",
        "val": d / "val.npy",
        "train_bin": d / "train.bin",
        "val_bin": d / "val.bin",
        "dir": d,
    }


def base_argv(data: dict[str, Path], run_dir: Path, *extra: str, **flags: object) -> list[str]:
    """A complete, fast command line; ``flags`` override the defaults below (``key=value``)."""
    settings: dict[str, object] = {
        "batch_size": 8,
        "max_iters": 20,
        "lr": 3e-3,
        "min_lr": 3e-4,
        "warmup_iters": 2,
        "eval_interval": 10,
        "eval_iters": 2,
        "log_interval": 1,
        "checkpoint_interval": 10,
        "device": "cpu",
        "seed": 1234,
    }
    settings.update(flags)
    argv = ["--train_data_path", str(data["train"]), "--val_data_path", str(data["val"]), *MODEL_ARGS]
    for k, v in settings.items():
        argv += [f"--{k}", str(v)]
    argv += ["--checkpoint_dir", str(run_dir), *extra]
    return argv


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in metrics(run_dir) if r.get("type") == kind]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


def load_pt(path: Path) -> dict:
    """Independent reader: plain torch.load with weights_only=True."""
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_weights_equal(a: Path | dict, b: Path | dict) -> None:
    sa = load_pt(a)["model"] if isinstance(a, Path) else a
    sb = load_pt(b)["model"] if isinstance(b, Path) else b
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs (max abs diff {(sa[k] - sb[k]).abs().max()})"


def subprocess_env() -> dict[str, str]:
    """One thread per process (2 cores shared by DDP ranks), no GPU, no wandb, repo importable."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable
