"""Epoch intervals: an epoch is the train tokens over the tokens per optimizer step (hand-computed)."""

from __future__ import annotations

from cs336_basics.training.cadence import epoch_interval, steps_per_epoch


def test_steps_per_epoch_and_intervals():
    # 1,000,000 train tokens, batch 8 x context 128 x 2 ranks = 2,048 tokens per step -> 488.28 steps.
    assert abs(steps_per_epoch(1_000_000, 2048) - 488.28125) < 1e-9
    assert epoch_interval(0.5, 1_000_000, 2048) == 244  # round(244.14)
    assert epoch_interval(2.0, 1_000_000, 2048) == 977  # round(976.56)
    assert epoch_interval(0.0001, 1_000_000, 2048) == 1  # never 0 steps
