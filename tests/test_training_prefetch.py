"""The prefetcher gives the batches plain get_batch gives, in the same order, and leaves the random
generator where get_batch leaves it (also when the stream moved under it); a training run with and without
--prefetch ends with the same weights, and so does a run resumed from a prefetching run's checkpoint."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from cs336_basics import training_together
from cs336_basics.corpus.tokens import get_batch
from cs336_basics.training.prefetch import Prefetcher

from ._train_utils import assert_weights_equal, base_argv, load_pt, write_pattern_data


def test_prefetcher_matches_get_batch_and_the_rng_stream():
    data = np.arange(5000, dtype=np.uint16) % 97
    plain_rng, rng = np.random.default_rng(7), np.random.default_rng(7)
    pre = Prefetcher(data, 4, 8, torch.device("cpu"), accum_steps=2)
    try:
        for step in range(6):
            if step == 3:  # the stream moved under the prefetcher (a rewind, a resume): both draw once more
                plain_rng.integers(0, 10)
                rng.integers(0, 10)
            want = [get_batch(data, 4, 8, "cpu", rng=plain_rng) for _ in range(2)]
            got = pre.batches(rng)
            assert len(got) == 2
            for (x, y), (wx, wy) in zip(got, want):
                assert torch.equal(x, wx) and torch.equal(y, wy)
            assert rng.bit_generator.state == plain_rng.bit_generator.state
        assert pre.hits >= 4 and pre.misses >= 2  # the first call and the one after the extra draw
    finally:
        pre.close()


def _run(argv):
    with contextlib.redirect_stdout(io.StringIO()):
        return training_together.main(argv)


def test_training_with_and_without_prefetch_is_bit_identical_and_resumes(tmp_path):
    data = write_pattern_data(tmp_path / "data", n_train=4000, n_val=1000)
    kw = dict(max_iters=8, checkpoint_interval=4, eval_interval=100, log_interval=2)
    on, off, resumed = tmp_path / "on", tmp_path / "off", tmp_path / "resumed"
    assert _run(base_argv(data, on, "--prefetch", "--grad_accum_steps", "2", **kw)) == 0
    assert _run(base_argv(data, off, "--no-prefetch", "--grad_accum_steps", "2", **kw)) == 0
    assert_weights_equal(on / "checkpoint_iter_8.pt", off / "checkpoint_iter_8.pt")
    assert load_pt(on / "checkpoint_iter_4.pt")["rng"]["data"] == load_pt(off / "checkpoint_iter_4.pt")["rng"]["data"]
    resume = ("--resume_from", str(off / "checkpoint_iter_4.pt"), "--prefetch", "--grad_accum_steps", "2")
    assert _run(base_argv(data, resumed, *resume, **kw)) == 0
    assert_weights_equal(resumed / "checkpoint_iter_8.pt", off / "checkpoint_iter_8.pt")
