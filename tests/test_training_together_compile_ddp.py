"""--compile under DDP (2 CPU processes, gloo, started by torchrun) trains like the eager DDP run.

The order is the one PyTorch's "Where to apply torch.compile?" page recommends: compile the inner
model, then wrap it in DistributedDataParallel (Dynamo does not trace the DDP wrapper well; its
DDPOptimizer splits the compiled graph at DDP's bucket boundaries so gradients are still all-reduced
during backward). Compiled kernels fuse and reorder floating-point work, so the comparison has a
tolerance: losses within 1e-4 relative, final weights within 1e-4 absolute, after 4 steps.

AdamW runs with ``eps`` 1e-6 here, not the default 1e-8. Its step ``lr * m / (sqrt(v) + eps)`` has
slope up to ``lr / eps`` in the gradient: for an element whose gradient is rounding noise (terms that
cancel), that slope turns a difference in the last bits into a weight difference of ~1e-4. It did for
one of 1024 elements of a ``v_proj`` on one machine; every other element was within 1e-5. At 1e-6 the
slope is 100x smaller, and the largest difference there was 2.7e-6.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests._train_utils import REPO, base_argv, load_pt, subprocess_env, train_losses, write_pattern_data

FLAGS = dict(batch_size=4, max_iters=4, warmup_iters=0, lr=3e-3, min_lr=3e-3, eps=1e-6, checkpoint_interval=100,
             eval_interval=100, log_interval=1, seed=5)  # fmt: skip


def _ddp(data, run_dir, *extra):
    argv = base_argv(data, run_dir, *extra, **FLAGS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "cs336_basics.training_together", *argv]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


@pytest.mark.slow  # two torch.compile runs on the CPU: minutes on a busy machine
def test_compiled_ddp_trains_like_eager_ddp(tmp_path):
    data = write_pattern_data(tmp_path / "data", n_train=4000, n_val=1000)
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    _ddp(data, eager)
    p = _ddp(data, compiled, "--compile")
    assert "DDP check: weights identical on all 2 ranks" in p.stdout
    want, got = train_losses(eager), train_losses(compiled)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in want:
        assert abs(got[step] - want[step]) <= 1e-4 * abs(want[step]), (step, got[step], want[step])
    a, b = load_pt(eager / "checkpoint_iter_4.pt")["model"], load_pt(compiled / "checkpoint_iter_4.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4, msg=k)
