"""The LR finder: the suggestion rule on a hand-made curve, and a real sweep on tiny data."""

from __future__ import annotations

import math

import pytest

from cs336_basics.tools import lr_find
from cs336_basics.tools.lr_find import SweepPoint, lr_at, lr_sweep, suggest_lr

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
from ._train_utils import base_argv, write_pattern_data


def test_ramp_is_exponential():
    assert lr_at(0, 11, 1e-5, 1e-1) == pytest.approx(1e-5)
    assert lr_at(10, 11, 1e-5, 1e-1) == pytest.approx(1e-1)
    assert lr_at(5, 11, 1e-5, 1e-1) == pytest.approx(1e-3)  # halfway in log space


def test_suggestion_is_the_steepest_fall_before_the_minimum():
    """A curve written by hand: flat, then a fall steepest at lr = 1e-3, a minimum at 1e-2, then a
    blow-up (steeper than the fall, but after the minimum, so it must not be picked)."""
    lrs = [10 ** (-6 + 0.1 * i) for i in range(51)]  # 1e-6 .. 1e-1

    def loss(lr: float) -> float:
        x = math.log10(lr)
        fall = 2.0 / (1 + math.exp(-4 * (x + 3)))  # logistic fall centred on 1e-3
        return 5.0 - fall + (30 * (x + 2) ** 2 if x > -2 else 0.0)

    pts = [SweepPoint(i, lr, loss(lr), loss(lr)) for i, lr in enumerate(lrs)]
    got = suggest_lr(pts)
    assert got == pytest.approx(1e-3, rel=0.15)


def test_sweep_stops_at_divergence():
    losses = iter([4.0] * 10 + [3.0] * 10 + [50.0] * 30)
    pts, diverged = lr_sweep(lambda lr: next(losses), num_steps=50, start_lr=1e-5, end_lr=1.0, smoothing=0.5)
    assert diverged and 20 < len(pts) < 50
    pts, diverged = lr_sweep(lambda lr: float("nan"), num_steps=50, start_lr=1e-5, end_lr=1.0)
    assert diverged and pts == []


def test_real_sweep_on_tiny_data_leaves_the_run_directory_alone(tmp_path, capsys):
    data = write_pattern_data(tmp_path / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint_iter_5.pt").write_bytes(b"an existing run's file")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    argv = base_argv(data, run_dir, "--num_steps", "60", "--start_lr", "1e-5", "--end_lr", "10",
                     "--csv", str(tmp_path / "sweep.csv"), "--plot", str(tmp_path / "sweep.png"))  # fmt: skip
    assert lr_find.main(argv) == 0
    out = capsys.readouterr().out
    rows = [ln.split(",") for ln in (tmp_path / "sweep.csv").read_text().splitlines()[1:]]
    lrs, losses = [float(r[1]) for r in rows], [float(r[2]) for r in rows]
    suggested = float(out.split("Suggested --lr ")[1].split()[0])
    assert lrs[0] <= suggested <= lrs[-1]
    # The blow-up: after the lowest loss, the first LR whose loss is back above the starting loss.
    low = losses.index(min(losses))
    blowup = next(lr for lr, loss in zip(lrs[low:], losses[low:]) if loss > losses[0])
    assert suggested < blowup, (suggested, blowup)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # the training run is untouched
    assert (tmp_path / "sweep.png").exists()
