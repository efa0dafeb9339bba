"""The plain (handout) attention and the fast one agree: outputs, gradients, KV cache, whole LM.

Both are also checked against torch built-ins in test_layers_ref.py / test_lm_model_ref.py; here the point
is that swapping ``ModelConfig.attention`` changes nothing but speed, including under bf16, and that
the fast bf16 backward is no less accurate than plain bf16 autograd (float64 reference).
"""

from __future__ import annotations

import math

import pytest
import torch

from cs336_basics import layers
from cs336_basics.fast import attention as fast_attention
from cs336_basics.fast.attention import FastCausalMultiHeadSelfAttention
from cs336_basics.layers import RotaryPositionalEmbedding
from cs336_basics.lm.attention import Attention as CausalMultiHeadSelfAttention  # the engine's plain path
from cs336_basics.lm.attention import KVCache
from cs336_basics.lm.model import ModelConfig, TransformerLM

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

D, H = 32, 4
PATHS = {"plain": CausalMultiHeadSelfAttention, "fast": FastCausalMultiHeadSelfAttention}


def make_pair(max_len: int = 320, rope: bool = True, seed: int = 0):
    """A plain and a fast attention module holding the same random weights."""
    torch.manual_seed(seed)
    r = RotaryPositionalEmbedding(10000.0, D // H, max_len) if rope else None
    plain = CausalMultiHeadSelfAttention(D, H, rope=r)
    fast = FastCausalMultiHeadSelfAttention(D, H, rope=r)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def out_and_grads(attn, x, g, autocast: bool = False):
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = attn(x)
    grads = torch.autograd.grad(out, [x, *attn.parameters()], g.to(out.dtype))
    return out, grads


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_same_parameters_and_state_dict_names():
    plain, fast = make_pair()
    assert (
        list(plain.state_dict())
        == list(fast.state_dict())
        == ["q_proj.weight", "k_proj.weight", "v_proj.weight", "output_proj.weight"]
    )


# T=9: one block; 130: two query blocks of 65; 257: four uneven blocks (257 is not a multiple of 4)
@pytest.mark.parametrize("T", [9, 130, 257])
def test_fp32_outputs_and_gradients_agree(T):
    plain, fast = make_pair()
    x = torch.randn(2, T, D)
    g = torch.randn(2, T, D)
    out_p, grads_p = out_and_grads(plain, x, g)
    out_f, grads_f = out_and_grads(fast, x, g)
    torch.testing.assert_close(out_f, out_p, atol=1e-5, rtol=1e-5)
    names = ["x", *[n for n, _ in plain.named_parameters()]]
    for name, a, b in zip(names, grads_f, grads_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("T", [9, 257])
def test_bf16_autocast_outputs_and_gradients_agree(T):
    """Under bf16 autocast the two paths round differently; they must agree to bf16 accuracy, and
    each must be close to the fp32 result (so 'agree' cannot mean 'equally broken')."""
    plain, fast = make_pair()
    x = torch.randn(2, T, D)
    g = torch.randn(2, T, D)
    out_32, grads_32 = out_and_grads(plain, x, g)
    out_p, grads_p = out_and_grads(plain, x, g, autocast=True)
    out_f, grads_f = out_and_grads(fast, x, g, autocast=True)
    assert out_p.dtype == out_f.dtype == torch.bfloat16
    assert rel_err(out_f, out_p) < 2e-2
    assert rel_err(out_f, out_32) < 2e-2 and rel_err(out_p, out_32) < 2e-2
    for a, b, c in zip(grads_f, grads_p, grads_32, strict=True):
        assert rel_err(a, b) < 3e-2
        assert rel_err(a, c) < 3e-2 and rel_err(b, c) < 3e-2


@pytest.mark.parametrize("kind", ["plain", "fast"])
@pytest.mark.parametrize("prefix", [1, 5, 130])
def test_kv_cache_prefix_then_steps_equals_full_forward(kind, prefix):
    """A cached prefix followed by one-token steps (and one multi-token chunk) gives the full
    forward's outputs, on both paths; 130 makes the cached prefill itself use query blocks."""
    plain, fast = make_pair()
    attn = {"plain": plain, "fast": fast}[kind]
    T = prefix + 6
    x = torch.randn(2, T, D)
    with torch.no_grad():
        full = plain(x)  # the plain path without a cache is the reference for both
        cache = KVCache(1, 2, H, T, D // H)
        parts = []
        for lo, hi in [(0, prefix), (prefix, prefix + 3), (prefix + 3, prefix + 4), (prefix + 4, T)]:
            parts.append(attn(x[:, lo:hi], kv_cache=cache, layer_idx=0))
            cache.length += hi - lo
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["plain", "fast"])
def test_explicit_positions_per_batch_row_agree(kind):
    """Positions ``[batch, seq]`` (different per row) reach every head of that row."""
    plain, fast = make_pair()
    attn = {"plain": plain, "fast": fast}[kind]
    x = torch.randn(2, 7, D)
    pos = torch.stack([torch.arange(7) + 3, torch.arange(7) * 2])
    expect = torch.cat([plain(x[i : i + 1], pos[i]) for i in range(2)])
    torch.testing.assert_close(attn(x, pos), expect, atol=1e-5, rtol=1e-4)


TINY = dict(vocab_size=60, context_length=160, d_model=32, num_layers=2, num_heads=4, d_ff=64)


def test_whole_lm_plain_and_fast_same_logits_and_grads():
    torch.manual_seed(0)
    fast = TransformerLM(ModelConfig(**TINY))  # default attention is "fast"
    assert isinstance(fast.layers[0].attn, FastCausalMultiHeadSelfAttention)
    plain = TransformerLM(ModelConfig(**TINY, attention="plain"))
    assert type(plain.layers[0].attn) is CausalMultiHeadSelfAttention
    plain.load_state_dict(fast.state_dict())  # a checkpoint of one path loads into the other
    idx = torch.randint(0, 60, (2, 150))
    lp, lf = plain(idx), fast(idx)
    torch.testing.assert_close(lf, lp, atol=1e-5, rtol=1e-4)
    (lp.square().mean()).backward()
    (lf.square().mean()).backward()
    pp, fp = dict(plain.named_parameters()), dict(fast.named_parameters())
    for k in pp:
        torch.testing.assert_close(fp[k].grad, pp[k].grad, atol=1e-6, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("kind", ["plain", "fast"])
def test_whole_lm_kv_cache_equals_full_forward(kind):
    torch.manual_seed(1)
    model = TransformerLM(ModelConfig(**TINY, attention=kind))
    idx = torch.randint(0, 60, (1, 140))
    with torch.no_grad():
        full = model(idx)
        cache = model.make_kv_cache(1)
        parts = [model(idx[:, :130], kv_cache=cache)]
        parts += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(130, 140)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- bf16 gradient accuracy
def _bf16_grad_errors(N: int, T: int, d: int, seed: int, device: str) -> tuple[list[float], list[float]]:
    """Relative errors of dq, dk, dv from (fast core in bf16, plain attention under bf16 autograd),
    each against a float64 reference computed from the same bf16-rounded inputs."""
    g = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(N, T, d, generator=g).to(device, torch.bfloat16) for _ in range(4))
    scale = 1.0 / math.sqrt(d)
    mask = layers.causal_mask(T, T, device=device)
    ref_in = [t.double().requires_grad_() for t in (q, k, v)]
    ref = torch.autograd.grad(layers.scaled_dot_product_attention(*ref_in, mask), ref_in, do.double())

    def errors(fn) -> list[float]:
        ins = [t.clone().requires_grad_() for t in (q, k, v)]
        grads = torch.autograd.grad(fn(*ins), ins, do)
        assert all(gr.dtype == torch.bfloat16 for gr in grads)
        return [rel_err(a, b) for a, b in zip(grads, ref, strict=True)]

    blocks = fast_attention._attention_blocks(T)
    fast = errors(lambda a, b, c: fast_attention._CausalAttention.apply(a, b, c, scale, blocks))
    plain = errors(lambda a, b, c: layers.scaled_dot_product_attention(a, b, c, mask))
    return fast, plain


# (N, T, d): one block; two blocks; four blocks with d_head 64 (a power-of-two scale)
BF16_CASES = [(8, 64, 32), (8, 130, 32), (4, 256, 64)]


@pytest.mark.parametrize("N, T, d", BF16_CASES)
def test_fast_bf16_gradients_no_less_accurate_than_plain_autograd(N, T, d):
    """The in-dtype bf16 core (what GPUs run) accumulates its backward in fp32 like FlashAttention.
    Called directly: inside the model on CPU, bf16 attention takes the float32 detour instead."""
    fast, plain = _bf16_grad_errors(N, T, d, seed=0, device="cpu")
    for name, f, p in zip(("dq", "dk", "dv"), fast, plain, strict=True):
        assert f <= p * 1.05, f"{name}: fast {f:.5f} vs plain {p:.5f}"
        assert p < 1e-2  # the reference comparison is meaningful (bf16-level, not broken)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("N, T, d", BF16_CASES + [(16, 512, 64)])
def test_fast_bf16_gradients_no_less_accurate_than_plain_autograd_cuda(N, T, d):
    """The same on CUDA, where the fp32 block results come from ``bmm(out_dtype=float32)``."""
    fast, plain = _bf16_grad_errors(N, T, d, seed=0, device="cuda")
    for name, f, p in zip(("dq", "dk", "dv"), fast, plain, strict=True):
        assert f <= p * 1.05, f"{name}: fast {f:.5f} vs plain {p:.5f}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_whole_lm_plain_and_fast_agree(precision):
    torch.manual_seed(0)
    fast = TransformerLM(ModelConfig(**TINY)).cuda()
    plain = TransformerLM(ModelConfig(**TINY, attention="plain")).cuda()
    plain.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 60, (4, 160), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        lp, lf = plain(idx), fast(idx)
    lp.float().square().mean().backward()
    lf.float().square().mean().backward()
    tol = 1e-4 if precision == "fp32" else 3e-2
    assert rel_err(lf, lp) < tol
    pp, fp = dict(plain.named_parameters()), dict(fast.named_parameters())
    for k in pp:
        assert rel_err(fp[k].grad, pp[k].grad) < 10 * tol, k
