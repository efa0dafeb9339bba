"""The leaderboard recipe (cs336_basics.extensions.recipe): each flag against an independent reference.

References are torch built-ins (``torch.nn.functional.rms_norm``, ``scaled_dot_product_attention``,
``relu``, ``linear``), the formula written out, or a hand-written mixing; a RoPE written with complex
numbers stands in for ours. Plus: the plain and fast attention paths agree with every flag on, and
checkpoints and exact resume work with every flag on.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cs336_basics import training_together as tt
from cs336_basics.extensions import recipe
from cs336_basics.fast import optim
from cs336_basics.fast.attention import FastCausalMultiHeadSelfAttention
from cs336_basics.generate import load_model
from cs336_basics.layers import RotaryPositionalEmbedding, SwiGLU
from cs336_basics.lm.attention import Attention as CausalMultiHeadSelfAttention  # the engine's plain path
from cs336_basics.lm.generate import generate
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.training.settings import ConfigError, parse_settings
from cs336_basics.training.state import _config_diff
from tests._train_utils import assert_weights_equal, base_argv, load_pt, train_losses, write_pattern_data

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

D, H, T, V = 32, 4, 12, 50
PATHS = {"plain": CausalMultiHeadSelfAttention, "fast": FastCausalMultiHeadSelfAttention}
ALL_ON = dict(
    qk_norm=True,
    ffn_type="relu2",
    zero_init_proj=True,
    tie_embeddings=True,
    logit_softcap=5.0,
    value_residual=True,
    embed_norm=True,
)
ALL_FLAGS = ["--qk_norm", "--ffn_type", "relu2", "--zero_init_proj", "--tie_embeddings", "--logit_softcap", "5",
             "--value_residual", "--embed_norm"]  # fmt: skip


def small_config(**kw) -> ModelConfig:
    base = dict(vocab_size=V, context_length=16, d_model=D, num_layers=3, num_heads=H, d_ff=48)
    return ModelConfig(**{**base, **kw})


def rope_reference(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Interleaved-pair RoPE as complex multiplication: pair i at position p turns by p * theta^(-2i/d)."""
    d = x.shape[-1]
    pos = torch.arange(x.shape[-2], dtype=torch.float64)
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(torch.ones(len(pos), d // 2, dtype=torch.float64), torch.outer(pos, freqs))
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)


def heads(t: torch.Tensor) -> torch.Tensor:
    """[batch, seq, heads * d_head] -> [batch, heads, seq, d_head]."""
    return t.unflatten(-1, (H, -1)).transpose(1, 2)


def attention_reference(attn, x, v=None, qk_norm=False):
    """Built-in attention with explicit per-head RMSNorm on q and k (before RoPE) via F.rms_norm."""
    q, k = heads(F.linear(x, attn.q_proj.weight)), heads(F.linear(x, attn.k_proj.weight))
    v = heads(F.linear(x, attn.v_proj.weight)) if v is None else v
    if qk_norm:
        q = F.rms_norm(q, (D // H,), attn.q_norm.weight, eps=1e-5)
        k = F.rms_norm(k, (D // H,), attn.k_norm.weight, eps=1e-5)
    if attn.rope is not None:
        q, k = rope_reference(q), rope_reference(k)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(out.transpose(1, 2).flatten(-2), attn.output_proj.weight)


# ----------------------------------------------------------------------------------------------
# each technique against its reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["plain", "fast"])
def test_qk_norm_is_per_head_rmsnorm_before_rope(path):
    torch.manual_seed(0)
    attn = PATHS[path](D, H, rope=RotaryPositionalEmbedding(10000.0, D // H, 16), qk_norm=True)
    with torch.no_grad():  # non-trivial gains, so a norm applied to the wrong axis or after RoPE shows
        attn.q_norm.weight.uniform_(0.5, 2.0)
        attn.k_norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(2, T, D) * 3
    torch.testing.assert_close(attn(x), attention_reference(attn, x, qk_norm=True), rtol=1e-5, atol=1e-5)
    assert attn.q_norm.weight.shape == (D // H,)


def test_relu2_ffn_matches_builtin_and_swiglu_parameter_count():
    torch.manual_seed(0)
    ffn = recipe.ReLU2FFN(D, 72)
    x = torch.randn(3, 5, D)
    ref = F.linear(F.relu(F.linear(x, ffn.w1.weight)) ** 2, ffn.w2.weight)
    torch.testing.assert_close(ffn(x), ref)
    assert recipe.relu2_d_ff(704) == 1056
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(recipe.ReLU2FFN(256, recipe.relu2_d_ff(704))) == n(SwiGLU(256, 704))
    assert n(recipe.ReLU2FFN(512)) == n(SwiGLU(512))  # the default width follows the same rule


def test_relu2_gradient_is_autograd_through_the_builtin_formula():
    """relu2's own backward (grad * 2r) against autograd through ``F.relu(x) ** 2``: bit for bit."""
    torch.manual_seed(0)
    x = torch.randn(4, 7, 33, dtype=torch.float64)
    x[0, 0, :3] = 0.0  # the kink itself: both give 0 there
    for dtype in (torch.float32, torch.float64):
        a = x.to(dtype).requires_grad_()
        b = x.to(dtype).requires_grad_()
        g = torch.randn(x.shape, dtype=dtype)
        (recipe.relu2(a) * g).sum().backward()
        (F.relu(b) ** 2 * g).sum().backward()
        assert torch.equal(recipe.relu2(a), F.relu(b) ** 2)
        assert torch.equal(a.grad, b.grad)  # -0.0 == 0.0, the only difference allowed
    assert torch.autograd.gradcheck(recipe.relu2, (x[:1, :2].clone().requires_grad_(),))


def test_softcap_gradient_is_autograd_through_the_formula():
    """softcap's own backward (one pass: grad * (1 - t^2)) against autograd through ``C * tanh(z / C)``."""
    torch.manual_seed(0)
    z = 20 * torch.randn(3, 5, 64, dtype=torch.float64)  # some logits well past the cap
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        a = z.to(dtype).requires_grad_()
        b = z.to(dtype).requires_grad_()
        g = torch.randn(z.shape, dtype=dtype)
        (recipe.softcap(a, 15.0) * g).sum().backward()
        (15.0 * torch.tanh(b / 15.0) * g).sum().backward()
        torch.testing.assert_close(recipe.softcap(a, 15.0), 15.0 * torch.tanh(b / 15.0), rtol=0, atol=0)
        torch.testing.assert_close(a.grad, b.grad, rtol=tol, atol=tol)
    assert torch.autograd.gradcheck(lambda t: recipe.softcap(t, 2.0), (z[:1, :2].clone().requires_grad_(),))


def test_softcap_is_the_formula_in_the_model():
    torch.manual_seed(0)
    capped = TransformerLM(small_config(logit_softcap=0.5))
    plain = TransformerLM(small_config())
    plain.load_state_dict(capped.state_dict())
    ids = torch.randint(0, V, (2, T))
    raw = plain(ids)
    assert raw.abs().max() > 0.5  # the cap binds somewhere
    torch.testing.assert_close(capped(ids), 0.5 * torch.tanh(raw / 0.5))
    assert recipe.softcap(torch.tensor([1e6, -1e6, 0.0]), 3.0).tolist() == [3.0, -3.0, 0.0]


def test_zero_init_makes_every_block_the_identity():
    torch.manual_seed(0)
    model = TransformerLM(small_config(zero_init_proj=True))
    x = torch.randn(2, T, D)
    for layer in model.layers:
        assert torch.count_nonzero(layer.attn.output_proj.weight) == 0
        assert torch.count_nonzero(layer.ffn.w2.weight) == 0
        assert torch.equal(layer(x), x)
    # ...so the logits are the head applied to the normed embedding.
    ids = torch.randint(0, V, (2, T))
    emb = model.token_embeddings.weight[ids]
    ref = F.linear(F.rms_norm(emb, (D,), model.ln_final.weight, eps=1e-5), model.lm_head.weight)
    torch.testing.assert_close(model(ids), ref)


def test_tied_embeddings_share_storage_and_receive_both_gradients():
    torch.manual_seed(0)
    tied = TransformerLM(small_config(tie_embeddings=True))
    assert tied.lm_head.weight is tied.token_embeddings.weight
    sd = tied.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["token_embeddings.weight"].data_ptr()
    # The head's init scale (std sqrt(2 / (d + V))), not the embedding's N(0, 1).
    assert tied.lm_head.weight.std() < 3 * math.sqrt(2 / (D + V))
    untied = TransformerLM(small_config())
    untied.load_state_dict(sd)  # the same values in two separate matrices
    ids, targets = torch.randint(0, V, (2, T)), torch.randint(0, V, (2, T))
    for m in (tied, untied):
        F.cross_entropy(m(ids).flatten(0, 1), targets.flatten()).backward()
    expected = untied.token_embeddings.weight.grad + untied.lm_head.weight.grad
    torch.testing.assert_close(tied.token_embeddings.weight.grad, expected)
    # A tied state dict loads back into a tied model, and the two stay one tensor.
    again = TransformerLM(small_config(tie_embeddings=True))
    again.load_state_dict(sd)
    assert again.lm_head.weight is again.token_embeddings.weight
    assert torch.equal(again.lm_head.weight, tied.lm_head.weight)


@pytest.mark.parametrize("opt", ["adamw", "muon"])
def test_param_groups_list_the_shared_matrix_once(opt):
    model = TransformerLM(small_config(tie_embeddings=True, value_residual=True, qk_norm=True))
    groups = optim.param_groups(model, opt, weight_decay=0.1, lr=1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})
    if opt == "muon":
        by_name = {g["name"]: g["params"] for g in groups}
        assert any(p is model.token_embeddings.weight for p in by_name["embed"])
        assert "head" not in by_name  # the head's matrix is the embedding's
        lams = [layer.attn.value_mix.lam for layer in model.layers[1:]]
        assert all(any(p is lam for p in by_name["scalar"]) for lam in lams)  # 0-D scalars: AdamW, no decay


@pytest.mark.parametrize("path", ["plain", "fast"])
def test_value_residual_matches_hand_written_mixing(path):
    torch.manual_seed(0)
    first = PATHS[path](D, H, value_mix=recipe.ValueResidual(True))
    later = PATHS[path](D, H, value_mix=recipe.ValueResidual(False))
    assert first.value_mix.lam is None and later.value_mix.lam.item() == 0.5
    with torch.no_grad():
        later.value_mix.lam.fill_(0.3)
    x0, x1 = torch.randn(2, T, D), torch.randn(2, T, D)
    store = recipe.FirstValues()
    out0 = first(x0, first_values=store)
    out1 = later(x1, first_values=store)
    v_first = heads(x0 @ first.v_proj.weight.T)
    v_own = heads(x1 @ later.v_proj.weight.T)
    torch.testing.assert_close(out0, attention_reference(first, x0), rtol=1e-5, atol=1e-5)
    ref1 = attention_reference(later, x1, v=0.7 * v_own + 0.3 * v_first)
    torch.testing.assert_close(out1, ref1, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="FirstValues"):
        later(x1)


def test_embed_norm_is_rmsnorm_after_the_embedding():
    torch.manual_seed(0)
    model = TransformerLM(small_config(embed_norm=True))
    with torch.no_grad():
        model.embed_norm.weight.uniform_(0.5, 2.0)
    seen = {}
    model.layers[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    ids = torch.randint(0, V, (2, T))
    model(ids)
    ref = F.rms_norm(F.embedding(ids, model.token_embeddings.weight), (D,), model.embed_norm.weight, eps=1e-5)
    torch.testing.assert_close(seen["x"], ref)


# ----------------------------------------------------------------------------------------------
# every flag on: the two attention paths, KV cache, activation checkpointing
# ----------------------------------------------------------------------------------------------
def all_on_pair(seed: int = 0):
    """Plain and fast LMs with every recipe flag on and the same weights (the zero-initialised
    projections filled in, so every parameter gets a gradient)."""
    torch.manual_seed(seed)
    plain = TransformerLM(small_config(**ALL_ON, attention="plain"))
    with torch.no_grad():
        for layer in plain.layers:
            layer.attn.output_proj.weight.normal_(0, 0.2)
            layer.ffn.w2.weight.normal_(0, 0.2)
    fast = TransformerLM(small_config(**ALL_ON, attention="fast"))
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def test_plain_and_fast_paths_agree_with_every_flag_on():
    plain, fast = all_on_pair()
    ids = torch.randint(0, V, (3, 16))
    outs, grads = [], []
    for m in (plain, fast):
        out = m(ids)
        out.square().mean().backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in m.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert grads[0][n] is not None and grads[0][n].abs().sum() > 0, n
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("attention", ["plain", "fast"])
def test_kv_cache_decoding_matches_full_forward_with_every_flag_on(attention):
    model = all_on_pair()[0 if attention == "plain" else 1].eval()
    prompt = [3, 1, 4, 1, 5]
    gen = torch.Generator().manual_seed(0)
    cached = generate(model, prompt, 8, temperature=0, use_cache=True, generator=gen)
    full = generate(model, prompt, 8, temperature=0, use_cache=False, generator=gen)
    assert cached == full
    ids = torch.tensor([prompt + cached])
    cache = model.make_kv_cache(1)
    with torch.no_grad():
        step_logits = torch.cat([model(ids[:, i : i + 1], kv_cache=cache) for i in range(ids.shape[1])], dim=1)
        torch.testing.assert_close(step_logits, model(ids), rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients_with_every_flag_on():
    model = all_on_pair()[1]
    ids = torch.randint(0, V, (2, 16))
    grads = []
    for ac in (False, True):
        model.zero_grad()
        model.activation_checkpointing = ac
        model(ids).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=0, atol=0, msg=n)


# ----------------------------------------------------------------------------------------------
# the training program: flags, checkpoints, exact resume
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("recipe_data"))


def test_flags_reach_the_model_config_and_defaults_are_off(data, tmp_path):
    s = parse_settings(base_argv(data, tmp_path, *ALL_FLAGS))
    cfg = s.model_config()
    assert {k: getattr(cfg, k) for k in ALL_ON} == ALL_ON
    default = parse_settings(base_argv(data, tmp_path)).model_config()
    assert {k: getattr(default, k) for k in recipe.RECIPE_FIELDS} == recipe.RECIPE_FIELDS
    assert default.ffn_type == "swiglu"
    # No recipe parameter or key exists unless asked for.
    plain_keys = set(TransformerLM(small_config()).state_dict())
    assert not any(w in k for k in plain_keys for w in ("q_norm", "k_norm", "value_mix", "embed_norm"))
    with pytest.raises(ConfigError, match="logit_softcap"):
        parse_settings(base_argv(data, tmp_path, "--logit_softcap", "-1"))
    with pytest.raises(ConfigError, match="--tie_embeddings"):
        parse_settings(base_argv(data, tmp_path, "--tie_embeddings", "--fsdp"))
    # A checkpoint written before these fields existed still matches the default flags.
    old = {k: v for k, v in default.to_dict().items() if k not in recipe.RECIPE_FIELDS}
    assert _config_diff(old, default.to_dict()) == []
    assert _config_diff(old, cfg.to_dict()) != []


@pytest.mark.parametrize("opt", ["adamw", "muon", "muon_bf16"])
def test_exact_resume_and_checkpoints_with_every_flag_on(data, tmp_path, capsys, opt):
    """N steps, then --resume for N more == 2N uninterrupted, bit for bit; the checkpoint loads for generation."""
    n = 4
    common = dict(lr=3e-3, min_lr=3e-3, warmup_iters=0, eval_interval=n, checkpoint_interval=n)
    opt_flags = ["--optimizer", "muon", "--muon_ns_dtype", "bfloat16"] if opt == "muon_bf16" else ["--optimizer", opt]
    flags = [*ALL_FLAGS, *opt_flags]
    full, part = tmp_path / "full", tmp_path / "part"
    assert tt.main(base_argv(data, full, *flags, max_iters=2 * n, **common)) == 0
    assert tt.main(base_argv(data, part, *flags, max_iters=n, **common)) == 0
    assert tt.main(base_argv(data, part, *flags, "--resume", max_iters=2 * n, **common)) == 0
    out = capsys.readouterr().out
    assert f"Resuming from {part / f'checkpoint_iter_{n}.pt'}" in out
    assert_weights_equal(full / f"checkpoint_iter_{2 * n}.pt", part / f"checkpoint_iter_{2 * n}.pt")
    assert train_losses(full) == train_losses(part)
    payload = load_pt(full / f"checkpoint_iter_{2 * n}.pt")
    assert torch.equal(payload["model"]["lm_head.weight"], payload["model"]["token_embeddings.weight"])
    # generate's loader rebuilds the recipe model from the stored config; the weights were trained.
    model, _, _ = load_model(full / f"checkpoint_iter_{2 * n}.pt")
    assert model.config.value_residual and model.config.logit_softcap == 5.0
    assert model.lm_head.weight is model.token_embeddings.weight
    assert torch.count_nonzero(model.layers[0].ffn.w2.weight) > 0
    # Resuming with a recipe flag changed is refused (it is part of the architecture); left out, the
    # checkpoint's value stays.
    rc = tt.main(base_argv(data, part, *flags[1:], "--no-qk_norm", "--resume", max_iters=3 * n, **common))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "qk_norm True in checkpoint vs False from flags" in err, err
    assert parse_settings(base_argv(data, part, *flags[1:], "--resume", max_iters=3 * n, **common)).qk_norm
