"""The whole LM (and its block/config) against a reference assembled from torch built-ins."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.lm.model import ModelConfig, TransformerBlock, TransformerLM

from . import adapters
from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .test_layers_ref import ref_rope

TINY = dict(vocab_size=50, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64, rope_theta=10000.0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_weights(c: ModelConfig) -> dict[str, torch.Tensor]:
    """A state dict in the course's naming with random (non-unit) values everywhere."""
    d, f, V = c.d_model, c.d_ff, c.vocab_size
    w = {"token_embeddings.weight": torch.randn(V, d)}
    for i in range(c.num_layers):
        p = f"layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "output_proj"):
            w[p + f"attn.{n}.weight"] = torch.randn(d, d) / d**0.5
        w[p + "ln1.weight"] = 1 + 0.1 * torch.randn(d)
        w[p + "ffn.w1.weight"] = torch.randn(f, d) / d**0.5
        w[p + "ffn.w2.weight"] = torch.randn(d, f) / f**0.5
        w[p + "ffn.w3.weight"] = torch.randn(f, d) / d**0.5
        w[p + "ln2.weight"] = 1 + 0.1 * torch.randn(d)
    w["ln_final.weight"] = 1 + 0.1 * torch.randn(d)
    w["lm_head.weight"] = torch.randn(V, d) / d**0.5
    return w


def rms(x, weight):
    return F.rms_norm(x, (x.shape[-1],), weight, eps=1e-5)  # built-in, differentiable in weight


def ref_block(x, w, prefix, num_heads, theta):
    B, T, d = x.shape
    dk = d // num_heads
    h = rms(x, w[prefix + "ln1.weight"])

    def heads(name):
        return F.linear(h, w[prefix + f"attn.{name}.weight"]).view(B, T, num_heads, dk).transpose(1, 2)

    q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
    pos = torch.arange(T)
    q, k = ref_rope(q, theta, pos), ref_rope(k, theta, pos)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
    y = x + F.linear(o, w[prefix + "attn.output_proj.weight"])
    h = rms(y, w[prefix + "ln2.weight"])
    ff = F.linear(
        F.silu(F.linear(h, w[prefix + "ffn.w1.weight"])) * F.linear(h, w[prefix + "ffn.w3.weight"]),
        w[prefix + "ffn.w2.weight"],
    )
    return y + ff


def ref_lm(idx, w, c: ModelConfig):
    x = F.embedding(idx, w["token_embeddings.weight"])
    for i in range(c.num_layers):
        x = ref_block(x, w, f"layers.{i}.", c.num_heads, c.rope_theta)
    return F.linear(rms(x, w["ln_final.weight"]), w["lm_head.weight"])


# ---------------------------------------------------------------- forward equivalence
@pytest.mark.parametrize("attention", ["fast", "plain"])
@pytest.mark.parametrize("T", [16, 5, 1])
def test_lm_matches_builtin_reference(T, attention):
    c = ModelConfig(**TINY, attention=attention)
    w = random_weights(c)
    idx = torch.randint(0, c.vocab_size, (3, T))
    if attention == "fast":  # the default, through the course adapter
        out = adapters.run_transformer_lm(
            c.vocab_size, c.context_length, c.d_model, c.num_layers, c.num_heads, c.d_ff, c.rope_theta, w, idx
        )
    else:
        model = TransformerLM(c)
        model.load_state_dict(w)
        out = model(idx)
    assert out.shape == (3, T, c.vocab_size)
    torch.testing.assert_close(out, ref_lm(idx, w, c), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attention", ["fast", "plain"])
@pytest.mark.parametrize("T", [256, 130])
def test_lm_gradients_match_builtin_reference_at_long_context(T, attention):
    """At T >= 128 the fast attention splits queries into blocks and recomputes its weights in
    backward: the loss gradient of every weight must still equal the built-in reference's (float64)."""
    c = ModelConfig(
        **{
            **TINY,
            "context_length": 256,
            "d_model": 16,
            "num_layers": 1,
            "num_heads": 2,
            "d_ff": 32,
            "attention": attention,
        }
    )
    w = {k: v.double() for k, v in random_weights(c).items()}
    model = TransformerLM(c, dtype=torch.float64)
    model.load_state_dict(w)
    idx = torch.randint(0, c.vocab_size, (2, T))
    tgt = torch.randint(0, c.vocab_size, (2, T))
    F.cross_entropy(model(idx).flatten(0, 1), tgt.flatten()).backward()
    ref_w = {k: v.clone().requires_grad_() for k, v in w.items()}
    F.cross_entropy(ref_lm(idx, ref_w, c).flatten(0, 1), tgt.flatten()).backward()
    ours = dict(model.named_parameters())
    for k, v in ref_w.items():
        torch.testing.assert_close(ours[k].grad, v.grad, atol=1e-7, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


def test_block_matches_builtin_reference():
    c = ModelConfig(**TINY)
    w = random_weights(c)
    bw = {k.removeprefix("layers.0."): v for k, v in w.items() if k.startswith("layers.0.")}
    x = torch.randn(2, 7, c.d_model)
    out = adapters.run_transformer_block(c.d_model, c.num_heads, c.d_ff, 16, c.rope_theta, bw, x)
    torch.testing.assert_close(out, ref_block(x, w, "layers.0.", c.num_heads, c.rope_theta), atol=1e-5, rtol=1e-4)


def test_state_dict_names_exact():
    c = ModelConfig(**TINY)
    model = TransformerLM(c)
    assert set(model.state_dict()) == set(random_weights(c))
    for k, v in random_weights(c).items():
        assert model.state_dict()[k].shape == v.shape, k


def test_prefix_consistency_and_too_long():
    c = ModelConfig(**TINY)
    model = TransformerLM(c)
    idx = torch.randint(0, c.vocab_size, (2, 16))
    full = model(idx)
    torch.testing.assert_close(model(idx[:, :6]), full[:, :6], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="17 exceeds.*context_length 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_bf16_model_dtype():
    c = ModelConfig(**TINY)
    model = TransformerLM(c, dtype=torch.bfloat16)
    out = model(torch.randint(0, c.vocab_size, (1, 8)))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ---------------------------------------------------------------- counting helpers
def test_num_parameters_and_flops():
    c = ModelConfig(**TINY)
    model = TransformerLM(c)
    d, f, V, L = c.d_model, c.d_ff, c.vocab_size, c.num_layers
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    total = V * d + L * per_layer + d + V * d
    assert model.num_parameters() == total
    assert model.num_parameters(non_embedding=True) == total - V * d
    n_matmul = L * (4 * d * d + 3 * d * f) + V * d
    assert model.flops_per_token() == 2 * n_matmul + 4 * L * c.context_length * d
    assert model.flops_per_token(4) == 2 * n_matmul + 4 * L * 4 * d


# ---------------------------------------------------------------- config
def test_config_json_round_trip():
    c = ModelConfig(**TINY, use_post_norm=True, ffn_type="silu", attention="plain")
    assert c.to_dict()["attention"] == "plain"  # saved with every checkpoint
    again = ModelConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()


def test_config_without_attention_key_loads_with_fast_default():
    old = ModelConfig(**TINY).to_dict()
    del old["attention"]  # a config saved before the field existed
    assert ModelConfig.from_dict(old).attention == "fast"
    assert ModelConfig().attention == "fast"


@pytest.mark.parametrize(
    "change, pattern",
    [
        (dict(d_model=30, num_heads=4), r"d_model \(30\).*num_heads \(4\)"),
        (dict(d_model=36, num_heads=4), r"even head dimension.*36/4 = 9"),
        (dict(ffn_type="gelu"), r"ffn_type.*'gelu'"),
        (dict(num_layers=0), r"num_layers must be positive, got 0"),
        (dict(vocab_size=-3), r"vocab_size must be positive"),
        (dict(d_ff=0), r"d_ff must be positive"),
        (dict(rope_theta=0.0), r"rope_theta"),
        (dict(context_length=2.5), r"context_length must be an integer"),
        (dict(attention="flash"), r"model config attention must be one of fast, plain, got 'flash'"),
    ],
)
def test_config_validation_errors(change, pattern):
    cfg = ModelConfig(**{**TINY, **change})
    with pytest.raises(ValueError, match=pattern) as info:
        cfg.validate()
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        TransformerLM(cfg)


def test_config_odd_head_dim_ok_without_rope_and_unknown_keys():
    ModelConfig(**{**TINY, "d_model": 36, "num_heads": 4, "remove_rope": True}).validate()
    with pytest.raises(ValueError, match="unknown model config key.*n_layer"):
        ModelConfig.from_dict({**TINY, "n_layer": 3})


# ---------------------------------------------------------------- ablations
@pytest.mark.parametrize(
    "flags, absent, present",
    [
        (dict(remove_rmsnorm=True), ["layers.0.ln1.weight", "ln_final.weight"], ["layers.0.ffn.w3.weight"]),
        (dict(use_post_norm=True), [], ["layers.0.ln1.weight", "ln_final.weight"]),
        (dict(remove_rope=True), [], ["layers.0.attn.q_proj.weight"]),
        (dict(ffn_type="silu", d_ff=128), ["layers.0.ffn.w3.weight"], ["layers.0.ffn.w1.weight"]),
    ],
)
def test_ablation_variants_run(flags, absent, present):
    c = ModelConfig(**{**TINY, **flags})
    model = TransformerLM(c)
    keys = set(model.state_dict())
    assert not keys & set(absent)
    assert set(present) <= keys
    out = model(torch.randint(0, c.vocab_size, (2, 8)))
    assert out.shape == (2, 8, c.vocab_size) and torch.isfinite(out).all()
    out.sum().backward()
    if c.ffn_type == "silu":
        assert model.layers[0].ffn.w1.weight.shape == (128, c.d_model)


def test_post_norm_block_matches_formula():
    blk = TransformerBlock(16, 2, 32, 8, 10000.0, use_post_norm=True)
    with torch.no_grad():
        blk.ln1.weight.uniform_(0.5, 1.5)
        blk.ln2.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 16)
    z = blk.ln1(x + blk.attn(x))
    torch.testing.assert_close(blk(x), blk.ln2(z + blk.ffn(z)))


def test_nope_has_no_position_information_but_is_causal():
    c = ModelConfig(**{**TINY, "remove_rope": True})
    model = TransformerLM(c)
    idx = torch.randint(0, c.vocab_size, (1, 6))
    out = model(idx)
    # Without positions, the first token's output depends only on itself.
    torch.testing.assert_close(model(idx[:, :1])[0, 0], out[0, 0])


# ---------------------------------------------------------------- training sanity
def test_overfits_one_batch():
    torch.manual_seed(0)
    c = ModelConfig(vocab_size=32, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64)
    model = TransformerLM(c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    x = torch.randint(0, c.vocab_size, (4, 16))
    y = torch.randint(0, c.vocab_size, (4, 16))
    first = None
    for _ in range(40):
        loss = F.cross_entropy(model(x).reshape(-1, c.vocab_size), y.reshape(-1))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.0
    assert loss.item() < 0.05
