"""scripts/gpu_check.sh without a GPU, and its helper's numbers on a hand-written metrics file.

The full CPU dry run (GPU_CHECK_FORCE_CPU=1) takes minutes, so it is a manual check, not a test.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check_helper as helper  # noqa: E402


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_parses_and_exits_0_without_cuda(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CUDA_VISIBLE_DEVICES": "",
        "OUT": str(tmp_path),
        "GPU_CHECK_WORKDIR": str(tmp_path / "work"),
    }
    env.pop("GPU_CHECK_FORCE_CPU", None)
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("No CUDA device on this machine")
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing run


def _metrics(run_dir: Path) -> None:
    run_dir.mkdir()
    recs = [
        {"type": "train", "step": 10, "loss": 6.0, "tokens_per_sec": 50.0, "mfu": 0.01},  # includes compile
        {"type": "train", "step": 20, "loss": 5.0, "tokens_per_sec": 1000.0, "mfu": 0.30},
        {"type": "train", "step": 30, "loss": 4.0, "tokens_per_sec": 3000.0, "mfu": 0.40},
        {"type": "train", "step": 40, "loss": 3.5, "tokens_per_sec": 2000.0, "mfu": 0.35},
        {"type": "final", "step": 40, "val_loss": 3.75},
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + '\n{"type": "tr')


def test_summary_and_projection_by_hand(tmp_path):
    _metrics(tmp_path / "run")
    s = helper.summary(tmp_path / "run", skip_steps=10)
    # steady intervals are steps 20, 30, 40: median tok/s 2000, median MFU 35%
    assert s == (
        "train loss 6.000 (step 10) -> 3.500 (step 40), val loss 3.750, "
        "2,000 tok/s (median of 3 logged intervals after step 10), MFU 35.0%"
    )
    p = helper.project(tmp_path / "run", tokens=327_680_000, skip_steps=10)
    assert p.startswith("2,000 tok/s") and "327,680,000 tokens in 2730.7 min (45.51 h)" in p  # 163,840 s


def test_flat_loss_is_flagged(tmp_path):
    _metrics(tmp_path / "run")
    assert "[did not fall by 5]" in helper.summary(tmp_path / "run", 10, expect_drop=5)
    assert "did not fall" not in helper.summary(tmp_path / "run", 10, expect_drop=0)


def test_synthetic_data_follows_its_rule(tmp_path):
    helper.make_data(tmp_path / "d.npy", vocab=256, tokens=5000, seed=0)
    ids = np.load(tmp_path / "d.npy").astype(np.int64)
    assert len(ids) == 5000 and ids.min() >= 0 and ids.max() < 256
    follows = (ids[1:] == (5 * ids[:-1] + 3) % 256).mean()
    assert 0.9 < follows < 1.0  # runs of the rule, broken only at run starts


def test_compare_exact_and_within_rtol_and_nonfinite_count(tmp_path):
    _metrics(tmp_path / "a")
    _metrics(tmp_path / "b")
    same = helper.compare(tmp_path / "a", tmp_path / "b", 10, "A", "B")
    assert "the same loss at all 4 logged steps" in same and "1.000x" in same
    # b's last loss off by 3.5e-6 relative: refused exactly, accepted within 1e-4
    path = tmp_path / "b" / "metrics.jsonl"
    path.write_text(path.read_text().replace('"loss": 3.5,', '"loss": 3.5000123,'))
    assert "LOSSES DIFFER by up to 3.5e-06" in helper.compare(tmp_path / "a", tmp_path / "b", 10, "A", "B")
    assert "within 3.5e-06" in helper.compare(tmp_path / "a", tmp_path / "b", 10, "A", "B", rtol=1e-4)
    with path.open("a") as f:  # the trainer's record of a skipped non-finite step
        f.write('\n{"type": "event", "step": 41, "event": "nonfinite", "detail": "loss=nan"}\n')
    assert "1 NON-FINITE STEP(S) skipped" in helper.summary(tmp_path / "b", 10)
