"""The LR schedules of ``--lr_schedule`` (cs336_basics/extensions/schedules.py) against hand-computed values.

max_lr 1.0, min_lr 0.1, warmup 10, max_iters 100; wsd decays over the last 0.2 (from step 80).
Every value below was worked out by hand from the definitions (not by calling the code).
"""

from __future__ import annotations

import math

import pytest

from cs336_basics import training_together as tt
from cs336_basics.extensions.schedules import make_schedule
from cs336_basics.optim import lr_cosine_schedule
from cs336_basics.training.settings import build_parser, parse_settings
from tests._train_utils import base_argv, records, write_pattern_data

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

KW = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=100)

# step: lr. 0 = start, 5 = mid-warmup, 10 = end of warmup, 80 = start of the wsd decay, 99 = last step,
# 100 = max_iters and after.
HAND = {
    "linear": {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.55, 80: 0.3, 99: 0.11, 100: 0.1, 150: 0.1},
    "constant": {0: 0.0, 5: 0.5, 10: 1.0, 80: 1.0, 99: 1.0, 100: 1.0, 150: 1.0},
    "wsd:linear": {0: 0.0, 5: 0.5, 10: 1.0, 79: 1.0, 80: 1.0, 90: 0.55, 99: 0.145, 100: 0.1, 150: 0.1},
    # sqrt: 1 - 0.9 * sqrt(p); p = 0.5 -> 1 - 0.9 * 0.70710678 ; p = 0.95 -> 1 - 0.9 * 0.97467943
    "wsd:sqrt": {0: 0.0, 10: 1.0, 80: 1.0, 90: 0.36360390, 99: 0.12278851, 100: 0.1},
    # cosine: 0.1 + 0.9 * (1 + cos(pi p)) / 2; p = 0.95: cos = -0.98768834
    "wsd:cosine": {0: 0.0, 10: 1.0, 80: 1.0, 90: 0.55, 99: 0.10554025, 100: 0.1},
}


@pytest.mark.parametrize("name", list(HAND))
def test_schedule_matches_hand_values(name):
    kind, _, shape = name.partition(":")
    lr_at = make_schedule(kind, **KW, decay_frac=0.2, decay_shape=shape or "linear")
    for step, want in HAND[name].items():
        assert lr_at(step) == pytest.approx(want, abs=1e-8), (name, step)


def test_cosine_is_the_handouts_function_bit_for_bit():
    lr_at = make_schedule("cosine", **KW)
    for step in range(0, 120):
        assert lr_at(step) == lr_cosine_schedule(step, 1.0, 0.1, 10, 100)  # exact equality: same call


def test_wsd_decay_frac_moves_the_decay_start():
    lr_at = make_schedule("wsd", **KW, decay_frac=0.5)  # decay from step 50
    assert lr_at(49) == 1.0 and lr_at(50) == 1.0 and lr_at(75) == pytest.approx(0.55)


@pytest.mark.parametrize("decay_frac", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_decay_frac_has_one_rule_for_the_schedule_and_the_flag(decay_frac):
    """(0, 1]: the flag and the schedule agree (the schedule used to take 0, the flag refused it)."""
    with pytest.raises(ValueError, match=r"decay_frac must be in \(0, 1\]"):
        make_schedule("wsd", **KW, decay_frac=decay_frac)(50)
    with pytest.raises(ValueError, match=r"--decay_frac must be in \(0, 1\]"):
        parse_settings(["--train_data_path", "a", "--lr_schedule", "wsd", "--warmup_iters", "0",
                        "--decay_frac", str(decay_frac)])  # fmt: skip
    assert make_schedule("wsd", **KW, decay_frac=1.0)(50) == pytest.approx(0.55)  # decay from step 0: p = 0.5
    assert parse_settings(["--train_data_path", "a", "--lr_schedule", "wsd", "--warmup_iters", "0",
                           "--decay_frac", "1"]).decay_frac == 1.0  # fmt: skip


def test_schedule_flags_are_checked():
    base = ["--train_data_path", "a"]
    assert parse_settings(base).lr_schedule == "cosine"
    with pytest.raises(ValueError, match="--lr_schedule wsd"):
        parse_settings([*base, "--decay_shape", "sqrt"])
    with pytest.raises(ValueError, match="--decay_frac"):
        parse_settings([*base, "--lr_schedule", "wsd", "--decay_frac", "0"])
    with pytest.raises(ValueError, match="before the warmup ends"):
        parse_settings([*base, "--lr_schedule", "wsd", "--max_iters", "100", "--warmup_iters", "90"])


def test_wsd_through_the_cli_logs_the_schedule_and_resumes_on_it(tmp_path, capsys):
    """The logged LR of step k is the rate of iteration k-1; a resumed run continues the same curve."""
    data = write_pattern_data(tmp_path / "data", n_train=4000, n_val=1000)
    flags = dict(max_iters=10, warmup_iters=2, lr=1e-2, min_lr=1e-3, eval_interval=100, checkpoint_interval=5)
    argv = base_argv(data, tmp_path / "run", "--lr_schedule", "wsd", "--decay_frac", "0.4", "--decay_shape",
                     "cosine", **flags)  # fmt: skip
    assert tt.main(argv) == 0
    lrs = {r["step"]: r["lr"] for r in records(tmp_path / "run", "train")}
    # decay from step 6: iteration i < 2: 1e-2 * i / 2; 2..6: 1e-2; i > 6: cosine over 6..10
    want = {1: 0.0, 2: 5e-3, 3: 1e-2, 7: 1e-2, 8: 1e-3 + 0.5 * (1 + math.cos(math.pi * 0.25)) * 9e-3,
            10: 1e-3 + 0.5 * (1 + math.cos(math.pi * 0.75)) * 9e-3}  # fmt: skip
    for step, lr in want.items():
        assert lrs[step] == pytest.approx(lr, rel=1e-12), step
    ck = tmp_path / "run" / "checkpoint_iter_5.pt"
    argv2 = base_argv(data, tmp_path / "resumed", "--resume_from", str(ck), "--lr_schedule", "wsd", "--decay_frac",
                      "0.4", "--decay_shape", "cosine", **flags)  # fmt: skip
    assert tt.main(argv2) == 0
    resumed = {r["step"]: r["lr"] for r in records(tmp_path / "resumed", "train")}
    assert resumed == {k: v for k, v in lrs.items() if k > 5}
    capsys.readouterr()


def test_lr_find_and_sweep_accept_the_schedule_flags(tmp_path, capsys):
    from cs336_basics.tools import lr_find, sweep

    data = write_pattern_data(tmp_path / "data", n_train=4000, n_val=1000)
    rc = lr_find.main(["--train_data_path", str(data["train"]), *base_argv(data, tmp_path / "x")[4:], "--num_steps",
                       "10", "--plot", "", "--lr_schedule", "wsd", "--decay_shape", "sqrt"])  # fmt: skip
    assert rc == 0, capsys.readouterr()
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        f'[base]\ntrain_data_path = "{data["train"]}"\nval_data_path = "{data["val"]}"\nlr_schedule = "wsd"\n'
        '[grid]\ndecay_shape = ["linear", "sqrt"]\n'
    )
    flags = frozenset(a.dest for a in build_parser()._actions)  # what the sweep reads from the trainer's --help
    sw = sweep.load_sweep(cfg, flags=flags)
    assert [v.flags["decay_shape"] for v in sw.variants] == ["linear", "sqrt"]
