"""cs336_basics.tools.accounting against independent counts: the real TransformerLM built on the meta device
(parameters) and torch's FlopCounterMode on a real forward pass (matmul FLOPs)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cs336_basics.model import ModelConfig, TransformerLM
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
    assert bad.returncode == 2 and "--num_heads 7" in bad.stderr and "Traceback" not in bad.stderr
