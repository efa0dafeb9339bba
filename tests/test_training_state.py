"""TrainState: its state_dict is the checkpoint, and loading it puts every resumed thing back."""

from __future__ import annotations

import random

import numpy as np
import torch

from cs336_basics.fast.optim import AdamW
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.training.state import TrainState, capture_rng_state, make_data_rng, restore_rng_state

CFG = ModelConfig(vocab_size=32, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32)


def _state(seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    model = TransformerLM(CFG)
    opt = AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return TrainState(model, opt, scaler, seed=seed, rank=0, world_size=1, model_config=CFG, train_config={})


def test_global_rngs_come_back_exactly():
    snap = capture_rng_state()
    want = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)  # move them on
    restore_rng_state(snap)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert want[0] == got[0] and want[1] == got[1] and torch.equal(want[2], got[2])


def test_each_rank_has_its_own_reproducible_data_stream():
    a0, a1, b0 = make_data_rng(42, 0), make_data_rng(42, 1), make_data_rng(42, 0)
    x0, x1, y0 = a0.integers(0, 10**9, 5), a1.integers(0, 10**9, 5), b0.integers(0, 10**9, 5)
    assert np.array_equal(x0, y0) and not np.array_equal(x0, x1)


def test_state_dict_round_trip_restores_weights_optimizer_step_counters_and_data_stream():
    src = _state(seed=1)
    x = torch.randint(0, 32, (2, 8))
    src.model(x).sum().backward()
    src.optimizer.step()
    src.iteration, src.tokens_seen = 7, 112
    src.record_eval(3.5)
    src.data_rng.integers(0, 100, 3)  # advance the stream
    payload = src.state_dict([src.data_rng.bit_generator.state])  # one rank: its own stream

    dst = _state(seed=2)
    dst.load_state_dict(payload)
    for (k, a), (_, b) in zip(src.model.state_dict().items(), dst.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    sa, sb = src.optimizer.state_dict()["state"], dst.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert (dst.iteration, dst.tokens_seen, dst.best_val_loss) == (7, 112, 3.5)
    assert np.array_equal(src.data_rng.integers(0, 10**9, 4), dst.data_rng.integers(0, 10**9, 4))


def test_record_eval_counts_evaluations_since_the_best():
    s = _state()
    assert s.record_eval(3.0) and not s.record_eval(3.2) and not s.record_eval(float("nan"))
    assert s.evals_since_best == 2 and s.best_val_loss == 3.0
    assert s.record_eval(2.9) and s.evals_since_best == 0


def test_early_stopping_threshold_counts_a_small_gain_as_no_improvement():
    # As Hugging Face's EarlyStoppingCallback: a new best by no more than the threshold still counts
    # against the patience (it is still the best checkpoint); a gain above it starts the count over.
    s = _state()
    assert s.record_eval(3.0, 0.05) and s.evals_since_best == 0
    assert s.record_eval(2.98, 0.05) and s.evals_since_best == 1 and s.best_val_loss == 2.98
    assert not s.record_eval(3.1, 0.05) and s.evals_since_best == 2
    assert s.record_eval(2.9, 0.05) and s.evals_since_best == 0
