"""cs336_basics.tools.accounting against independent counts: the real TransformerLM built on the meta device
(parameters) and torch's FlopCounterMode on a real forward pass (matmul FLOPs)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.tools import accounting as acc

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
from ._train_utils import REPO, subprocess_env


def _config(s: acc.Shape, **extra) -> ModelConfig:
    kw = dict(
        vocab_size=s.vocab_size,
        context_length=s.context_length,
        d_model=s.d_model,
        num_layers=s.num_layers,
        num_heads=s.num_heads,
        d_ff=s.d_ff,
        ffn_type=s.ffn_type,
        remove_rmsnorm=s.remove_rmsnorm,
        **extra,
    )
    # Count on the plain attention path when the model offers a choice (a fused kernel could hide
    # its matmuls from FlopCounterMode).
    if "attention" in {f.name for f in dataclasses.fields(ModelConfig)}:
        kw["attention"] = "plain"
    return ModelConfig(**kw)


def _meta_params(s: acc.Shape) -> tuple[int, dict[str, int]]:
    with torch.device("meta"):
        model = TransformerLM(_config(s))
    by_part: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = (
            "embedding"
            if name.startswith("token_embeddings")
            else "lm_head"
            if name.startswith("lm_head")
            else "attention"
            if ".attn." in name
            else "ffn"
            if ".ffn." in name
            else "norms"
        )
        by_part[part] = by_part.get(part, 0) + p.numel()
    return sum(p.numel() for p in model.parameters()), by_part


@pytest.mark.parametrize("name", sorted(acc.PRESETS))
def test_preset_params_match_meta_model(name):
    s = acc.PRESETS[name]
    total, parts = _meta_params(s)
    counts = acc.param_counts(s)
    assert counts["total"] == total
    for part, n in parts.items():
        assert counts[part] == n, part


@pytest.mark.parametrize("variant", [{}, {"ffn_type": "silu"}, {"remove_rmsnorm": True}])
def test_ablation_params_match_meta_model(variant):
    s = dataclasses.replace(acc.Shape(211, 64, 96, 3, 6, 176), **variant)
    total, parts = _meta_params(s)
    counts = acc.param_counts(s)
    assert counts["total"] == total
    assert {k: counts[k] for k in parts} == parts


def test_gpt2_xl_matches_handworked_numbers():
    # Worked by hand: 2*V*d (embedding + lm_head) + L*(4d^2 + 3*d*d_ff + 2d) + d.
    V, T, d, L, dff = 50257, 1024, 1600, 48, 6400
    p = acc.param_counts(acc.PRESETS["gpt2-xl"])
    assert p["total"] == 2 * V * d + L * (4 * d * d + 3 * d * dff + 2 * d) + d == 2_127_057_600
    f = acc.forward_flops(acc.PRESETS["gpt2-xl"])
    assert f["total"] == L * (8 * T * d * d + 4 * T * T * d + 6 * T * d * dff) + 2 * T * d * V


def _component_flops(counts: dict) -> dict[str, int]:
    """Split FlopCounterMode's per-module counts into the accounting's components."""
    out = {"attention_proj": 0, "attention_scores": 0, "ffn": 0, "lm_head": 0}
    for mod, ops in counts.items():
        parts = mod.split(".")
        if len(parts) == 4 and parts[1] == "layers" and parts[3] == "attn":
            for op, n in ops.items():
                key = "attention_scores" if "bmm" in str(op) else "attention_proj"
                out[key] += n
        elif len(parts) == 4 and parts[1] == "layers" and parts[3] == "ffn":
            out["ffn"] += sum(ops.values())
        elif mod.endswith(".lm_head"):
            out["lm_head"] += sum(ops.values())
    return out


@pytest.mark.parametrize(
    "shape,batch,seq",
    [
        (acc.Shape(97, 48, 64, 2, 4, 160), 3, 48),
        (acc.Shape(50, 40, 32, 3, 2, 128, ffn_type="silu"), 2, 17),  # shorter than the context
    ],
)
def test_forward_flops_match_flop_counter(shape, batch, seq):
    torch.manual_seed(0)
    model = TransformerLM(_config(shape))
    x = torch.randint(0, shape.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    ours = acc.forward_flops(shape, seq, batch)
    assert ours["total"] == fc.get_total_flops()
    assert _component_flops(fc.get_flop_counts()) == {k: ours[k] for k in acc.FLOP_COMPONENTS}


def test_flop_shares_shift_to_attention_with_context():
    rows = acc.flop_shares(acc.PRESETS["gpt2-small"], [1024, 4096, 16384])
    for r in rows:
        assert sum(r[k] for k in acc.FLOP_COMPONENTS) == pytest.approx(1.0)
    scores = [r["attention_scores"] for r in rows]
    assert scores == sorted(scores) and scores[-1] > 0.5 > scores[0]


def test_training_memory_handworked():
    s = acc.Shape(vocab_size=10, context_length=4, d_model=8, num_layers=2, num_heads=2, d_ff=16)
    P = 2 * 10 * 8 + 2 * (4 * 64 + 3 * 8 * 16 + 16) + 8
    m = acc.training_memory(s, batch_size=3)
    assert m["parameters"] == m["gradients"] == 4 * P and m["optimizer_state"] == 8 * P
    # per token: L*(2d norms + 5d attention + 2*H*T scores + 4*d_ff + d ffn) + d + 2V
    per_token = 2 * (16 + 40 + 2 * 2 * 4 + 64 + 8) + 8 + 20
    assert m["activations"] == 4 * 3 * 4 * per_token
    assert m["total"] == 16 * P + 4 * 12 * per_token
    no_scores = acc.training_memory(s, 3, keep_scores=False)
    assert m["activations"] - no_scores["activations"] == 4 * 12 * 2 * (2 * 2 * 4)


def test_max_batch_size_is_the_largest_that_fits():
    s = acc.PRESETS["gpt2-xl"]
    budget = 80e9
    b = acc.max_batch_size(s, budget)
    assert b >= 1
    assert acc.training_memory(s, b)["total"] <= budget < acc.training_memory(s, b + 1)["total"]
    assert acc.max_batch_size(s, 1e9) == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cs336_basics.tools.accounting", *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_preset_and_bad_input():
    r = _cli("--preset", "gpt2-xl", "--d_ff", "6400")
    assert r.returncode == 0, r.stderr
    assert "2,127,057,600" in r.stdout and "16384" in r.stdout
    bad = _cli("--d_model", "64")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "--vocab_size" in bad.stderr
    bad = _cli("--preset", "gpt2-xl", "--num_heads", "7")
    assert (
        bad.returncode == 2 and "num_heads (7)" in bad.stderr and "Traceback" not in bad.stderr
    )  # ModelConfig's check


# ------------------------------------------------------------------------------------------------
# --gpus N --tokens T: data-parallel time, traffic and memory (every number below worked by hand)
# ------------------------------------------------------------------------------------------------
TINY = acc.Shape(vocab_size=10, context_length=4, d_model=8, num_layers=2, num_heads=2, d_ff=16)
# P = 2*V*d (embedding + lm_head) + L*(4d^2 + 3*d*d_ff + 2d) + d = 160 + 2*656 + 8
TINY_P = 1480


def test_cluster_estimate_tiny_handworked():
    c = acc.cluster_estimate(
        TINY, gpus=4, tokens=1000, batch_size=3, grad_accum_steps=2, peak_flops=1e6, mfu=0.5, interconnect_gbps=8e-6
    )  # fmt: skip  (8000 bit/s = 1000 bytes/s)
    assert c["tokens_per_step"] == 3 * 4 * 2 * 4 == 96
    assert c["steps"] == 11  # 10 steps are 960 tokens, short of 1000
    # Forward FLOPs of one 4-token sequence: per layer 8*T*d^2 (2048) + 4*T^2*d (512) + 6*T*d*d_ff (3072),
    # two layers, plus lm_head 2*T*d*V (640) = 11904; a step is 3x that for 3 x 2 sequences per GPU.
    assert c["step_flops_per_gpu"] == 3 * 6 * 11904 == 214272
    assert c["compute_s_per_step"] == pytest.approx(214272 / 0.5e6)
    # Ring all-reduce: each GPU sends 2*(N-1)/N of the fp32 gradients; FSDP 3*(N-1)/N.
    assert c["comm_bytes_per_step"]["ddp"] == pytest.approx(2 * 0.75 * TINY_P * 4) == 8880
    assert c["comm_bytes_per_step"]["fsdp"] == pytest.approx(3 * 0.75 * TINY_P * 4) == 13320
    assert c["comm_s_per_step"]["ddp"] == pytest.approx(8.88)
    assert c["comm_s_per_step"]["fsdp"] == pytest.approx(13.32)
    assert c["bound"] == {"ddp": "communication", "fsdp": "communication"}
    assert c["step_s"]["ddp"] == pytest.approx(8.88) and c["run_s"]["ddp"] == pytest.approx(11 * 8.88)
    assert c["compute_run_s"] == pytest.approx(11 * 0.428544)
    # Memory per GPU. Activations of 3 sequences x 4 tokens x 316 elements per token (see
    # test_training_memory_handworked), fp32: 15168 bytes, the same under DDP and FSDP.
    ddp, fsdp = c["memory_per_gpu"]["ddp"], c["memory_per_gpu"]["fsdp"]
    assert ddp["total"] == 16 * TINY_P + 15168 == 38848
    assert fsdp["parameters"] == fsdp["gradients"] == TINY_P * 4 / 4 and fsdp["optimizer_state"] == 2 * TINY_P
    # Unsharded: weights + gradient (8 bytes/param) of the root (embedding 80 + lm_head 80 + final norm 8)
    # and of one block (656).
    assert fsdp["unsharded"] == 8 * (168 + 656) == 6592
    assert fsdp["activations"] == 15168
    assert fsdp["total"] == 1480 + 1480 + 2960 + 6592 + 15168 == 27680


def test_cluster_estimate_gpt2_small_bound_flips_with_batch():
    """gpt2-small shapes (untied head, SwiGLU: P = 190,460,160) on 8 H100s at 40% MFU, 400 Gbit/s."""
    kw = dict(gpus=8, tokens=1e9, peak_flops=989e12, mfu=0.4, interconnect_gbps=400)
    big = acc.cluster_estimate(acc.PRESETS["gpt2-small"], batch_size=16, **kw)
    # DDP sends 2 * 7/8 * 190,460,160 * 4 bytes = 1.333 GB per step over 50 GB/s: 26.7 ms.
    assert big["comm_bytes_per_step"]["ddp"] == pytest.approx(1_333_221_120)
    assert big["comm_s_per_step"]["ddp"] == pytest.approx(0.0266644224)
    assert big["comm_s_per_step"]["fsdp"] == pytest.approx(0.0399966336)
    # One 1024-token sequence is 349,630,365,696 forward FLOPs; 16 per GPU x 3 at 395.6 TFLOP/s: 42.4 ms.
    assert big["step_flops_per_gpu"] == 16 * 3 * 349_630_365_696
    assert big["compute_s_per_step"] == pytest.approx(0.0424222890632)
    assert big["bound"] == {"ddp": "compute", "fsdp": "compute"}
    assert big["tokens_per_step"] == 16 * 1024 * 8 and big["steps"] == 7630  # ceil(1e9 / 131072)
    # Half the batch halves the compute (21.2 ms), not the traffic: both become communication-bound.
    small = acc.cluster_estimate(acc.PRESETS["gpt2-small"], batch_size=8, **kw)
    assert small["compute_s_per_step"] == pytest.approx(0.0212111445316)
    assert small["bound"] == {"ddp": "communication", "fsdp": "communication"}
    assert small["run_s"]["ddp"] == pytest.approx(15259 * 0.0266644224)  # ceil(1e9 / 65536) steps
    # Accumulating 2 micro-batches per step restores the compute per all-reduce.
    acc2 = acc.cluster_estimate(acc.PRESETS["gpt2-small"], batch_size=8, grad_accum_steps=2, **kw)
    assert acc2["bound"]["ddp"] == "compute" and acc2["steps"] == 7630


def test_cluster_estimate_one_gpu_has_no_traffic():
    c = acc.cluster_estimate(TINY, gpus=1, tokens=16, batch_size=1, peak_flops=1e6, mfu=1.0, interconnect_gbps=1)
    assert c["comm_bytes_per_step"] == {"ddp": 0, "fsdp": 0} and c["bound"]["ddp"] == "compute"
    assert c["steps"] == 4 and c["memory_per_gpu"]["fsdp"]["parameters"] == 4 * TINY_P


def test_cli_gpus_tokens():
    r = _cli("--preset", "gpt2-small", "--gpus", "8", "--tokens", "1e9", "--batch_size", "8", "--mfu", "0.4")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "## 8 GPUs (H100, 989 TFLOP/s peak, 40% MFU)" in out
    assert "tokens per optimizer step: 65,536 (batch 8 x context 1024 x accum 1 x 8 GPUs) -> 15,259 steps" in out
    assert re.search(r"^DDP .*26\.7 ms .*communication$", out, re.M), out
    assert "DDP and FSDP: communication, not compute, bounds the step" in out
    custom = _cli("--preset", "gpt2-small", "--gpus", "8", "--tokens", "1e9", "--gpu_tflops", "100", "--json")
    assert custom.returncode == 0, custom.stderr
    assert json.loads(custom.stdout)["cluster"]["peak_flops"] == 100e12
    for bad, needle in ((["--gpus", "8"], "--tokens"), (["--gpus", "8", "--tokens", "0"], "--tokens"),
                        (["--gpus", "2", "--tokens", "1e6", "--interconnect_gbps", "-1"], "--interconnect_gbps")):  # fmt: skip
        b = _cli("--preset", "gpt2-small", *bad)
        assert b.returncode == 2 and needle in b.stderr and "Traceback" not in b.stderr, b.stderr
        assert b.stderr.strip().count("\n") == 0
