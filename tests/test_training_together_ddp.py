"""Data-parallel training under pytest: 2 CPU processes (gloo) started by torchrun.

One torchrun launch does the expensive part; the checks on its output are split into small tests.
It continues a *single-process* checkpoint (iteration 2) under DDP, and its own checkpoints are
then continued in a single process, so both directions are covered. The launch runs a small wrapper
around ``training_together.main`` so a fault can be injected on one rank only: rank 1 alone receives
SIGTERM in the middle of iteration 5, and both ranks must stop together after it with one checkpoint.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cs336_basics import training_together as tt
from cs336_basics.training.settings import parse_settings
from tests._train_utils import (
    REPO,
    assert_weights_equal,
    base_argv,
    load_pt,
    records,
    subprocess_env,
    train_losses,
    write_pattern_data,
)

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

SEED = 77
# Constant LR (warmup 0, min_lr == lr) so the schedule does not depend on max_iters.
FLAGS = dict(batch_size=4, grad_accum_steps=2, max_iters=100, warmup_iters=0, lr=3e-3, min_lr=3e-3,
             checkpoint_interval=1, eval_interval=4, seed=SEED)  # fmt: skip
START = 2  # the single-process run's iteration that DDP continues from
SIGTERM_AT_CALL = 5  # rank 1's 5th micro-step under DDP = first micro-step of iteration 5 (2 per iteration)

WRAPPER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from cs336_basics import training_together as tt
    from cs336_basics.training import step as train_step

    if os.environ.get("RANK") == "1":
        real, calls = train_step.cross_entropy, [0]

        def cross_entropy(logits, targets):
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == {at}:
                    signal.raise_signal(signal.SIGTERM)
            return real(logits, targets)

        train_step.cross_entropy = cross_entropy
    raise SystemExit(tt.main(sys.argv[1:]))
    """
).replace("{at}", str(SIGTERM_AT_CALL))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("ddp_data"))


@pytest.fixture(scope="module")
def single_run(data, tmp_path_factory) -> Path:
    """A single-process run to iteration START (its checkpoint is continued under DDP)."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    torch.set_num_threads(1)
    assert tt.main(base_argv(data, run_dir, **{**FLAGS, "max_iters": START})) == 0
    return run_dir


@pytest.fixture(scope="module")
def ddp_run(data, single_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    run_dir = d / "run"
    wrapper = d / "ddp_wrapper.py"
    wrapper.write_text(WRAPPER)
    argv = base_argv(data, run_dir, "--resume_from", str(single_run / f"checkpoint_iter_{START}.pt"), **FLAGS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(wrapper), *argv]
    p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    return run_dir, p


def test_ddp_run_stops_together_and_reports(ddp_run, single_run):
    run_dir, p = ddp_run
    out = p.stdout
    assert p.returncode == 0, f"stdout:\n{out}\nstderr:\n{p.stderr}"
    assert f"Resuming from {single_run / 'checkpoint_iter_2.pt'} (iteration 2)" in out
    assert "written with world size 1, now 2" in out
    assert "World size: 2" in out
    assert "Tokens per optimizer step: 256 (batch 4 x context 16 x accum 2 x world 2)" in out
    # Only rank 1 got the signal; both ranks finished iteration 5 and stopped.
    assert "Received SIGTERM: finishing iteration 5 and saving a checkpoint" in out
    assert out.count("Saved checkpoint to") == 3  # iterations 3, 4, 5, printed once (rank 0)
    assert sorted(p.name for p in run_dir.glob("checkpoint_iter_*.pt")) == [
        f"checkpoint_iter_{i}.pt" for i in (3, 4, 5)
    ]
    assert re.search(r"^DDP check: weights identical on all 2 ranks", out, re.M), out
    assert sorted(train_losses(run_dir)) == [3, 4, 5]  # one log, from rank 0
    assert [r["step"] for r in records(run_dir, "eval")] == [4]
    assert "Traceback" not in p.stderr


def test_ddp_checkpoint_has_every_ranks_data_stream(ddp_run):
    run_dir, _ = ddp_run
    ck = load_pt(run_dir / "checkpoint_iter_5.pt")
    assert ck["world_size"] == 2 and len(ck["rng"]["data"]) == 2
    assert ck["rng"]["data"][0] != ck["rng"]["data"][1]  # ranks draw different batches
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ck["model"])  # saved unwrapped


def test_ddp_step_averages_the_ranks_gradients(data, single_run, ddp_run):
    """Independent recomputation of the first DDP step (iteration 3) from the single-process
    checkpoint: the mean of both ranks' accumulated gradients, then one AdamW step."""
    import numpy as np

    from cs336_basics.corpus.tokens import get_batch, load_tokens
    from cs336_basics.fast.optim import AdamW, param_groups
    from cs336_basics.lm.model import TransformerLM
    from cs336_basics.nn_utils import clip_grad_norm, cross_entropy

    run_dir, _ = ddp_run
    args = parse_settings(base_argv(data, run_dir, **FLAGS))
    cfg = args.model_config()
    start = load_pt(single_run / f"checkpoint_iter_{START}.pt")
    model = TransformerLM(cfg)
    model.load_state_dict(start["model"])
    opt = AdamW(param_groups(model, "adamw", weight_decay=args.weight_decay, lr=args.lr), lr=args.lr, betas=(args.beta1, args.beta2),
                eps=args.eps, weight_decay=args.weight_decay)  # fmt: skip
    opt.load_state_dict(start["optimizer"])
    tokens = load_tokens(data["train"])
    world, accum = 2, args.grad_accum_steps
    # Rank 0 continues the saved stream; rank 1 (no saved stream) starts one from (seed, rank, iteration).
    rngs = [np.random.Generator(np.random.PCG64()), np.random.Generator(np.random.PCG64([SEED, 1, START]))]
    rngs[0].bit_generator.state = start["rng"]["data"][0]
    total = 0.0
    for rank in range(world):
        for _ in range(accum):
            x, y = get_batch(tokens, args.batch_size, args.context_length, "cpu", rng=rngs[rank])
            loss = cross_entropy(model(x), y) / (accum * world)
            loss.backward()
            total += loss.item()
    clip_grad_norm(model.parameters(), args.grad_clip)
    opt.step()
    got = load_pt(run_dir / f"checkpoint_iter_{START + 1}.pt")["model"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert train_losses(run_dir)[START + 1] == pytest.approx(total, rel=1e-5)


def test_ddp_checkpoint_resumes_in_a_single_process(data, ddp_run, tmp_path, capsys):
    run_dir, _ = ddp_run
    new_dir = tmp_path / "single"
    flags = {**FLAGS, "max_iters": 8}
    rc = tt.main(base_argv(data, new_dir, "--resume_from", str(run_dir / "checkpoint_iter_5.pt"), **flags))
    out = capsys.readouterr().out
    assert rc == 0
    assert f"Resuming from {run_dir / 'checkpoint_iter_5.pt'} (iteration 5)" in out
    assert "world size 2, now 1" in out
    assert "World size: 1" in out
    ck = load_pt(new_dir / "checkpoint_iter_8.pt")
    assert ck["iteration"] == 8 and all(torch.isfinite(v).all() for v in ck["model"].values())
    # A single-process checkpoint written from it resumes identically in a single process again.
    rc = tt.main(base_argv(data, new_dir, "--resume_from", str(new_dir / "checkpoint_iter_6.pt"), **flags))
    assert rc == 0
    capsys.readouterr()
    assert_weights_equal(ck["model"], new_dir / "checkpoint_iter_8.pt")
