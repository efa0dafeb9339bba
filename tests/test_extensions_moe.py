"""The mixture-of-experts FFN (cs336_basics.extensions.moe) against independent references: torch's built-ins for
the dense SwiGLU, hand-worked router losses, FlopCounterMode for active FLOPs, and the real training
program for training, logging and exact resume."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cs336_basics import training_together as tt
from cs336_basics.extensions.moe import MoEFFN, MoESpec, RouterLoss, router_losses
from cs336_basics.fast.optim import AdamW
from cs336_basics.layers import SwiGLU
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.tools import accounting as acc

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
from ._train_utils import (
    REPO,
    assert_weights_equal,
    base_argv,
    records,
    subprocess_env,
    train_losses,
    write_pattern_data,
)

MOE = ["--ffn_type", "moe", "--num_experts", "4", "--moe_top_k", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("moe_data"))


def _router_example(top_k: int) -> tuple[MoEFFN, torch.Tensor]:
    """Two experts, an identity router (d_model 2), and inputs that are the router logits themselves:
    three tokens with logits (ln 3, 0) -> p = (3/4, 1/4), one with (0, ln 3) -> p = (1/4, 3/4)."""
    moe = MoEFFN(2, 4, MoESpec(num_experts=2, top_k=top_k))
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(2))
    ln3 = math.log(3.0)
    x = torch.tensor([[ln3, 0.0], [ln3, 0.0], [0.0, ln3], [ln3, 0.0]])
    return moe, x


# ---------------------------------------------------------------------------------------------
# the layer
# ---------------------------------------------------------------------------------------------
def test_one_expert_top1_equals_dense_swiglu():
    torch.manual_seed(0)
    dense = SwiGLU(16, 24)
    moe = MoEFFN(16, 24, MoESpec(num_experts=1, top_k=1))
    moe.experts[0].load_state_dict(dense.state_dict())
    x = torch.randn(3, 5, 16)
    ref = F.linear(F.silu(F.linear(x, dense.w1.weight)) * F.linear(x, dense.w3.weight), dense.w2.weight)
    torch.testing.assert_close(moe(x), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(moe(x), dense(x), rtol=1e-6, atol=1e-6)


def test_topk_output_matches_a_per_token_reference():
    """Every token: sum over its top-k experts of (renormalised prob) * expert(x), computed token by token."""
    torch.manual_seed(1)
    moe = MoEFFN(8, 12, MoESpec(num_experts=4, top_k=2, shared_expert=True))
    x = torch.randn(10, 8)
    out = moe(x)
    probs = torch.softmax(F.linear(x, moe.router.weight), dim=-1)
    for n in range(10):
        top = torch.topk(probs[n], 2)
        w = top.values / top.values.sum()
        ref = sum(w[j] * moe.experts[int(top.indices[j])](x[n]) for j in range(2)) + moe.shared(x[n])
        torch.testing.assert_close(out[n], ref, rtol=1e-5, atol=1e-6)


def test_router_losses_equal_hand_worked_values():
    # top-1: expert 0 gets 3 of 4 tokens, f = (3/4, 1/4); P = mean p = (2.5/4, 1.5/4) = (0.625, 0.375).
    moe, x = _router_example(top_k=1)
    moe(x)
    parts = router_losses([moe.router_stats])
    assert parts["load_balance"].item() == pytest.approx(2 * (0.75 * 0.625 + 0.25 * 0.375))  # 1.125
    assert parts["aux"].item() == pytest.approx((0.75 - 0.5) ** 2 + (0.25 - 0.5) ** 2)  # 0.125
    assert parts["z"].item() == pytest.approx(math.log(4.0) ** 2)  # logsumexp(ln 3, 0) = ln 4 for every token
    # top-2: every token uses both experts, f = (1/2, 1/2): balanced.
    moe2, x2 = _router_example(top_k=2)
    moe2(x2)
    parts2 = router_losses([moe2.router_stats])
    assert parts2["load_balance"].item() == pytest.approx(1.0)
    assert parts2["aux"].item() == pytest.approx(0.0, abs=1e-12)
    # Aggregated over layers (the mean) and weighted by the coefficients.
    model = torch.nn.ModuleList([moe, moe2])
    total = RouterLoss(model, load_balance_coef=0.1, aux_coef=2.0, z_coef=0.01)()
    expected = 0.1 * (1.125 + 1.0) / 2 + 2.0 * (0.125 + 0.0) / 2 + 0.01 * math.log(4.0) ** 2
    assert total.item() == pytest.approx(expected)


def test_gradients_reach_the_router():
    torch.manual_seed(2)
    moe = MoEFFN(8, 12, MoESpec(num_experts=4, top_k=2))
    moe(torch.randn(6, 8)).square().sum().backward()  # through the renormalised top-2 weights
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    # Each router loss on its own (top-1, where the output carries no router gradient: p/p = 1).
    for name in ("load_balance", "aux", "z"):
        moe1, x = _router_example(top_k=1)
        moe1(x)
        router_losses([moe1.router_stats])[name].backward()
        assert moe1.router.weight.grad.abs().sum() > 0, name


def test_capacity_factor_drops_and_counts_tokens():
    # Capacity ceil(0.5 * 4 tokens * 1 / 2 experts) = 1: expert 0 keeps token 0 only (tokens 1 and 3
    # are dropped, token order decides), expert 1 keeps token 2.
    moe, x = _router_example(top_k=1)
    moe.spec = MoESpec(num_experts=2, top_k=1, capacity_factor=0.5)
    out = moe(x)
    assert moe.capacity(4) == 1
    assert int(moe.router_stats.dropped) == 2
    assert torch.equal(out[1], torch.zeros(2)) and torch.equal(out[3], torch.zeros(2))
    torch.testing.assert_close(out[0], moe.experts[0](x[0]))
    torch.testing.assert_close(out[2], moe.experts[1](x[2]))
    # The load counts the router's choices, before dropping.
    assert moe.router_stats.load.tolist() == [0.75, 0.25]


def test_load_balance_loss_moves_toward_one_when_trained():
    """A router collapsed onto one expert (load balance ~E) trained on LM-ish loss + the coefficient."""
    torch.manual_seed(3)
    E = 4
    moe = MoEFFN(8, 12, MoESpec(num_experts=E, top_k=1))
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 0.3  # expert 0 wins every (positive) input: load balance ~2.8 of at most 4
    x = torch.randn(64, 8).abs()
    opt = AdamW(moe.router.parameters(), lr=0.05, weight_decay=0.0)
    lbs = []
    for _ in range(30):
        out = moe(x)
        lb = router_losses([moe.router_stats])["load_balance"]
        lbs.append(lb.item())
        (out.square().mean() + 1.0 * lb).backward()
        opt.step()
        opt.zero_grad()
    assert lbs[0] > 2.5
    assert abs(lbs[-1] - 1.0) < 0.5 * abs(lbs[0] - 1.0)
    assert sum(lbs[-5:]) / 5 < lbs[0] - 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="num_experts.*ffn_type moe only"):
        ModelConfig(num_experts=4).validate()
    with pytest.raises(ValueError, match="moe_top_k .3. exceeds num_experts .2."):
        ModelConfig(ffn_type="moe", num_experts=2, moe_top_k=3).validate()
    with pytest.raises(ValueError, match="moe_capacity_factor"):
        ModelConfig(ffn_type="moe", moe_capacity_factor=0.0).validate()
    assert ModelConfig.from_dict(ModelConfig(ffn_type="moe", num_experts=3).to_dict()).num_experts == 3


# ---------------------------------------------------------------------------------------------
# accounting: total vs active
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_shared", [False, True])
def test_accounting_total_and_active_match_the_model(with_shared):
    shape = acc.Shape(97, 12, 16, 2, 2, 24, ffn_type="moe", num_experts=4, moe_top_k=2, moe_shared_expert=with_shared)
    cfg = ModelConfig(97, 12, 16, 2, 2, 24, ffn_type="moe", num_experts=4, moe_top_k=2, moe_shared_expert=with_shared,
                      attention="plain")  # fmt: skip
    torch.manual_seed(4)
    model = TransformerLM(cfg)
    p = acc.param_counts(shape)
    assert p["total"] == sum(q.numel() for q in model.parameters())
    expert = 3 * 16 * 24
    assert p["total"] - p["active"] == 2 * (4 - 2) * expert  # two layers, two unchosen experts each
    # Active FLOPs: what a real forward executes (capacity-free: every token runs exactly k experts).
    x = torch.randint(0, 97, (3, 12))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() == acc.forward_flops(shape, batch_size=3)["total"]
    assert model.flops_per_token(12) * 12 * 3 == acc.forward_flops(shape, batch_size=3)["total"]


# ---------------------------------------------------------------------------------------------
# the training program
# ---------------------------------------------------------------------------------------------
def test_tiny_moe_trains_and_logs_router_losses(data, tmp_path, capsys):
    run_dir = tmp_path / "moe"
    argv = base_argv(data, run_dir, *MOE, "--moe_load_balance_coef", "0.1", max_iters=30, log_interval=5)
    assert tt.main(argv) == 0, capsys.readouterr().err
    train = records(run_dir, "train")
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    for rec in train:
        assert set(rec["moe"]) == {"load_balance", "aux", "z", "dropped_fraction"}
        assert 0.5 < rec["moe"]["load_balance"] < 4.0  # 1 when balanced, E = 4 when collapsed
        load = rec["moe_expert_load"]
        assert len(load) == 2 and all(len(layer) == 4 for layer in load)
        assert all(sum(layer) == pytest.approx(1.0) for layer in load)
        assert rec["moe"]["dropped_fraction"] == 0.0
    final = records(run_dir, "final")[0]
    assert final["val_loss"] < math.log(64) - 1.0


def test_moe_capacity_through_the_cli_counts_drops(data, tmp_path, capsys):
    run_dir = tmp_path / "cap"
    # With activation checkpointing too: the block's recomputation in backward re-runs the routing.
    argv = base_argv(data, run_dir, *MOE, "--moe_capacity_factor", "0.5", "--activation_checkpointing",
                     max_iters=4, log_interval=1)  # fmt: skip
    assert tt.main(argv) == 0, capsys.readouterr().err
    assert all(r["moe"]["dropped_fraction"] > 0.0 for r in records(run_dir, "train"))


def test_moe_resume_is_exact(data, tmp_path, capsys):
    n = 5
    common = dict(lr=3e-3, min_lr=3e-3, warmup_iters=0, eval_interval=n, checkpoint_interval=n)
    full, part = tmp_path / "full", tmp_path / "part"
    assert tt.main(base_argv(data, full, *MOE, max_iters=2 * n, **common)) == 0
    assert tt.main(base_argv(data, part, *MOE, max_iters=n, **common)) == 0
    assert tt.main(base_argv(data, part, *MOE, "--resume", max_iters=2 * n, **common)) == 0
    capsys.readouterr()
    assert_weights_equal(full / f"checkpoint_iter_{2 * n}.pt", part / f"checkpoint_iter_{2 * n}.pt")
    assert train_losses(full) == train_losses(part)
    # The architecture is checked on resume: other expert counts are refused in one line.
    rc = tt.main(base_argv(data, part, "--ffn_type", "moe", "--num_experts", "2", "--resume", max_iters=3 * n))
    err = capsys.readouterr().err
    assert rc == 2 and "num_experts 4 in checkpoint vs 2 from flags" in err


def test_moe_flags_need_ffn_type_moe(data, tmp_path, capsys):
    rc = tt.main(base_argv(data, tmp_path / "bad", "--num_experts", "4"))
    err = capsys.readouterr().err
    assert rc == 2 and "num_experts" in err and "ffn_type moe only" in err
    assert tt.main(base_argv(data, tmp_path / "bad", *MOE, "--moe_z_coef", "-1")) == 2
    assert "--moe_z_coef must be a finite number >= 0" in capsys.readouterr().err
    assert tt.main(base_argv(data, tmp_path / "bad", "--objective", "diffusion", "--diffusion_eps", "1")) == 2
    assert "--diffusion_eps must be in (0, 1)" in capsys.readouterr().err


def test_moe_with_diffusion_trains_under_ddp(data, tmp_path):
    """2 CPU ranks (gloo): every expert's weights get a gradient on every rank (even with no tokens),
    so DDP's all-reduce completes, and the ranks end with identical weights."""
    run_dir = tmp_path / "ddp"
    argv = base_argv(data, run_dir, *MOE, "--objective", "diffusion", "--skip_validation", max_iters=2, warmup_iters=0,
                     batch_size=4, grad_accum_steps=2, checkpoint_interval=2)  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "cs336_basics.training_together", *argv]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert re.search(r"^DDP check: weights identical on all 2 ranks", p.stdout, re.M), p.stdout
    assert len(records(run_dir, "train")) == 2 and "moe" in records(run_dir, "train")[-1]
