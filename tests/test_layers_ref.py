"""Model pieces (through tests/adapters.py) against torch built-ins as independent references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics import layers
from cs336_basics.fast import attention as fast_attention
from cs336_basics.fast.attention import FastCausalMultiHeadSelfAttention
from cs336_basics.layers import (
    CausalMultiHeadSelfAttention,
    Embedding,
    Linear,
    RMSNorm,
    RotaryPositionalEmbedding,
    SiLUFFN,
    SwiGLU,
    default_d_ff,
)

from . import adapters
from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def close(a, b, atol=1e-5, rtol=1e-4):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


# ---------------------------------------------------------------- references written with built-ins
def ref_rope(x: torch.Tensor, theta: float, positions: torch.Tensor) -> torch.Tensor:
    """Complex-number RoPE: pair (x[2i], x[2i+1]) is the complex number x[2i] + i x[2i+1]."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = positions.to(torch.float64)[..., None] * freqs  # [..., seq, d/2]
    rot = torch.polar(torch.ones_like(ang), ang)
    xc = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).reshape(x.shape).to(x.dtype)


def ref_mha(x, wq, wk, wv, wo, num_heads, theta=None, positions=None):
    *lead, T, d = x.shape
    dk = d // num_heads

    def heads(w):
        return F.linear(x, w).reshape(*lead, T, num_heads, dk).transpose(-3, -2)  # [..., H, T, dk]

    q, k, v = heads(wq), heads(wk), heads(wv)
    if theta is not None:
        pos = torch.arange(T) if positions is None else positions
        pos = pos.unsqueeze(-2)  # broadcast over heads
        q, k = ref_rope(q, theta, pos), ref_rope(k, theta, pos)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(o.transpose(-3, -2).reshape(*lead, T, d), wo)


# ---------------------------------------------------------------- basic layers
def test_linear_matches_f_linear():
    w = torch.randn(7, 5)
    x = torch.randn(2, 3, 5)
    close(adapters.run_linear(5, 7, w, x), F.linear(x, w))


def test_embedding_matches_f_embedding():
    w = torch.randn(11, 4)
    ids = torch.randint(0, 11, (3, 5))
    close(adapters.run_embedding(11, 4, w, ids), F.embedding(ids, w))


def test_swiglu_matches_written_out():
    d, dff = 8, 24
    w1, w2, w3 = torch.randn(dff, d), torch.randn(d, dff), torch.randn(dff, d)
    x = torch.randn(2, 5, d)
    expect = F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)
    close(adapters.run_swiglu(d, dff, w1, w2, w3, x), expect)


def test_silu_ffn_matches_written_out():
    ffn = SiLUFFN(8)
    assert ffn.w1.weight.shape == (32, 8) and ffn.w2.weight.shape == (8, 32)
    x = torch.randn(3, 8)
    close(ffn(x), F.linear(F.silu(F.linear(x, ffn.w1.weight)), ffn.w2.weight))


def test_silu_matches_f_silu():
    x = torch.randn(100) * 10
    close(adapters.run_silu(x), F.silu(x))


def test_default_d_ff():
    assert default_d_ff(512) == 1344
    assert default_d_ff(768) == 2048
    for d in (64, 100, 256, 1024):
        v = default_d_ff(d)
        assert v % 64 == 0 and abs(v - 8 * d / 3) <= 32
    assert SwiGLU(64).d_ff == default_d_ff(64)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch(dim):
    x = torch.randn(4, 6, 5)
    close(adapters.run_softmax(x, dim), torch.softmax(x, dim))


def test_softmax_huge_values_and_grad():
    x = torch.tensor([[1000.0, 1000.0, -1000.0], [1e30, 0.0, -1e30]], requires_grad=True)
    y = adapters.run_softmax(x, -1)
    assert torch.isfinite(y).all()
    close(y, torch.softmax(x.detach(), -1))
    close(adapters.run_softmax(x.detach() + 100.0, -1), torch.softmax(x.detach(), -1))
    # autograd through our softmax vs torch's
    xs = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layers.softmax(t, -1), (xs,))
    g = torch.randn(3, 7, dtype=torch.float64)
    (a,) = torch.autograd.grad(layers.softmax(xs, 1), xs, g)
    (b,) = torch.autograd.grad(torch.softmax(xs, 1), xs, g)
    close(a, b)


def test_rmsnorm_matches_torch_and_bf16():
    d = 16
    w = torch.randn(d)
    x = torch.randn(2, 3, d) * 3
    ref = torch.nn.RMSNorm(d, eps=1e-5)
    with torch.no_grad():
        ref.weight.copy_(w)
    close(adapters.run_rmsnorm(d, 1e-5, w, x), ref(x))
    xb = x.to(torch.bfloat16)
    out = adapters.run_rmsnorm(d, 1e-5, w, xb)
    assert out.dtype == torch.bfloat16
    x32 = xb.float()
    expect = (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5) * w).to(torch.bfloat16)
    torch.testing.assert_close(out, expect, atol=0, rtol=0)
    assert torch.equal(RMSNorm(d).weight, torch.ones(d))


# ---------------------------------------------------------------- init statistics
def test_linear_init_statistics():
    lin = Linear(300, 500)
    w = lin.weight.detach()
    sigma = math.sqrt(2 / 800)
    assert abs(w.mean().item()) < 0.01 * sigma * 10
    # truncation at 3 sigma shrinks the std by ~1.3%
    assert 0.95 * sigma < w.std().item() < 1.01 * sigma
    assert w.abs().max().item() <= 3 * sigma + 1e-7
    assert w.abs().max().item() > 2.8 * sigma  # the tails exist (not a clamp to a tiny range)


def test_embedding_init_statistics():
    w = Embedding(1000, 200).weight.detach()
    assert abs(w.mean().item()) < 0.02
    assert 0.95 < w.std().item() < 1.01
    assert w.abs().max().item() <= 3.0
    # a clamp would pile mass exactly at +-3; the truncated normal has none there
    assert (w.abs() == 3.0).float().mean().item() < 1e-4


def test_init_respects_device_dtype():
    lin = Linear(4, 3, dtype=torch.bfloat16)
    assert lin.weight.dtype == torch.bfloat16 and lin.weight.shape == (3, 4)
    assert Embedding(5, 2, dtype=torch.float64).weight.dtype == torch.float64


# ---------------------------------------------------------------- RoPE
def test_rope_matches_complex_reference_offset_positions_and_leading_dims():
    d_k, theta = 16, 10000.0
    x = torch.randn(2, 3, 5, d_k)
    pos = torch.tensor([[7, 8, 9, 10, 11], [0, 3, 1, 4, 30]])[:, None, :].expand(2, 3, 5)
    out = adapters.run_rope(d_k, theta, 32, x, pos)
    close(out, ref_rope(x, theta, pos))
    # positions with fewer leading dims broadcast
    pos1 = torch.arange(3, 8)
    close(adapters.run_rope(d_k, theta, 32, x, pos1), ref_rope(x, theta, pos1))


def test_rope_broadcasts_batch_positions_over_a_head_axis():
    """x ``[batch, heads, seq, d]`` with positions ``[batch, seq]``: each head gets its row's positions."""
    d_k, theta = 8, 10000.0
    rope = RotaryPositionalEmbedding(theta, d_k, 64)
    x = torch.randn(2, 3, 5, d_k)
    pos = torch.tensor([[7, 8, 9, 10, 11], [0, 3, 1, 4, 30]])
    close(rope(x, pos), ref_rope(x, theta, pos[:, None, :]))
    close(rope(x, pos[0]), ref_rope(x, theta, pos[0]))  # [seq] broadcasts over everything
    close(rope(x), ref_rope(x, theta, torch.arange(5)))  # default positions 0..seq-1


def test_rope_buffers_not_in_state_dict_and_norm_preserved():
    rope = RotaryPositionalEmbedding(10000.0, 8, 16)
    assert rope.state_dict() == {}
    x = torch.randn(4, 16, 8)
    y = rope(x, torch.arange(16))
    close(y.norm(dim=-1), x.norm(dim=-1))
    close(rope(x, torch.zeros(16, dtype=torch.long)), x)  # position 0 is the identity


def test_rope_odd_dim_rejected():
    with pytest.raises(ValueError, match="even"):
        RotaryPositionalEmbedding(10000.0, 7, 16)


# ---------------------------------------------------------------- attention
@pytest.mark.parametrize("lead", [(3,), (2, 3)])
@pytest.mark.parametrize("use_mask", [False, True])
def test_sdpa_matches_torch(lead, use_mask):
    Q = torch.randn(*lead, 5, 8)
    K = torch.randn(*lead, 7, 8)
    V = torch.randn(*lead, 7, 6)
    mask = None
    if use_mask:
        mask = torch.rand(*lead, 5, 7) > 0.4
        mask[..., 0] = True  # every query sees at least one key
    out = adapters.run_scaled_dot_product_attention(Q, K, V, mask)
    close(out, F.scaled_dot_product_attention(Q, K, V, attn_mask=mask))


def test_sdpa_fully_masked_key_gets_zero_weight():
    Q, K, V = torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    V[:, 2] = 1e6
    mask = torch.tensor([[[True, True, False], [True, True, False]]])
    out = adapters.run_scaled_dot_product_attention(Q, K, V, mask)
    assert out.abs().max() < 100


def _weights(d):
    return [torch.randn(d, d) / math.sqrt(d) for _ in range(4)]


MHA_PATHS = ["plain", "fast"]


def run_mha(path, d, h, wq, wk, wv, wo, x, theta=None, positions=None, max_seq_len=64):
    """The plain path through the course adapters; the fast one built directly with the same weights."""
    if path == "plain":
        if theta is None:
            return adapters.run_multihead_self_attention(d, h, wq, wk, wv, wo, x)
        return adapters.run_multihead_self_attention_with_rope(d, h, max_seq_len, theta, wq, wk, wv, wo, x, positions)
    rope = None if theta is None else RotaryPositionalEmbedding(theta, d // h, max_seq_len)
    attn = FastCausalMultiHeadSelfAttention(d, h, rope=rope)
    attn.load_state_dict(
        dict(zip(["q_proj.weight", "k_proj.weight", "v_proj.weight", "output_proj.weight"], [wq, wk, wv, wo]))
    )
    return attn(x, token_positions=positions)


@pytest.mark.parametrize("path", MHA_PATHS)
def test_mha_matches_reference(path):
    d, h = 32, 4
    wq, wk, wv, wo = _weights(d)
    x = torch.randn(2, 9, d)
    close(run_mha(path, d, h, wq, wk, wv, wo, x), ref_mha(x, wq, wk, wv, wo, h))
    # extra leading dims
    x4 = torch.randn(2, 2, 9, d)
    close(run_mha(path, d, h, wq, wk, wv, wo, x4), ref_mha(x4, wq, wk, wv, wo, h))
    # a single unbatched sequence
    close(run_mha(path, d, h, wq, wk, wv, wo, x[0]), ref_mha(x[0], wq, wk, wv, wo, h))


@pytest.mark.parametrize("path", MHA_PATHS)
def test_mha_with_rope_matches_reference(path):
    d, h, theta = 32, 4, 10000.0
    wq, wk, wv, wo = _weights(d)
    x = torch.randn(2, 9, d)
    close(run_mha(path, d, h, wq, wk, wv, wo, x, theta), ref_mha(x, wq, wk, wv, wo, h, theta))
    pos = torch.arange(9) + 20
    close(run_mha(path, d, h, wq, wk, wv, wo, x, theta, pos), ref_mha(x, wq, wk, wv, wo, h, theta, pos))
    pos2 = torch.stack([torch.arange(9) + 5, torch.arange(9) * 2])
    close(run_mha(path, d, h, wq, wk, wv, wo, x, theta, pos2), ref_mha(x, wq, wk, wv, wo, h, theta, pos2))
    # leading dims [2, 2] with positions [2, 2, seq]
    x4 = torch.randn(2, 2, 9, d)
    pos4 = torch.randint(0, 60, (2, 2, 9))
    close(run_mha(path, d, h, wq, wk, wv, wo, x4, theta, pos4), ref_mha(x4, wq, wk, wv, wo, h, theta, pos4))


@pytest.mark.parametrize("cls", [CausalMultiHeadSelfAttention, FastCausalMultiHeadSelfAttention])
def test_mha_is_causal(cls):
    attn = cls(16, 2)
    x = torch.randn(1, 6, 16)
    y1 = attn(x)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16)
    y2 = attn(x2)
    close(y1[:, :4], y2[:, :4])


@pytest.mark.parametrize("cls", [CausalMultiHeadSelfAttention, FastCausalMultiHeadSelfAttention])
def test_mha_state_dict_keys_and_bad_heads(cls):
    attn = cls(16, 4, rope=RotaryPositionalEmbedding(1e4, 4, 8))
    assert set(attn.state_dict()) == {"q_proj.weight", "k_proj.weight", "v_proj.weight", "output_proj.weight"}
    with pytest.raises(ValueError, match=r"d_model \(10\).*num_heads \(3\)"):
        cls(10, 3)


@pytest.mark.parametrize("path", MHA_PATHS)
def test_bf16_autocast_attention_close_to_fp32(path):
    d, h = 32, 4
    wq, wk, wv, wo = _weights(d)
    x = torch.randn(2, 9, d)
    expect = ref_mha(x, wq, wk, wv, wo, h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_mha(path, d, h, wq, wk, wv, wo, x)
    torch.testing.assert_close(out.float(), expect, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("T, S, blocks", [(5, 5, 1), (3, 7, 1), (7, 7, 3), (6, 9, 4)])
def test_causal_attention_function_gradcheck(T, S, blocks):
    """The memory-saving attention recomputes its weights in backward: check its gradients."""
    q = torch.randn(2, T, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, S, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, S, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: fast_attention._CausalAttention.apply(a, b, c, 0.5, blocks), (q, k, v)
    )
    # forward vs torch: query i sits at absolute position S - T + i
    mask = torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]
    expect = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5)
    close(fast_attention._CausalAttention.apply(q, k, v, 0.5, blocks), expect)


@pytest.mark.parametrize("cls", [CausalMultiHeadSelfAttention, FastCausalMultiHeadSelfAttention])
@pytest.mark.parametrize("T", [9, 130, 256])  # 130/256: the fast path's query blocks (2 / 4 blocks)
def test_mha_gradients_match_reference(T, cls):
    d, h, theta = 32, 4, 10000.0
    ws = [w.requires_grad_() for w in _weights(d)]
    x = torch.randn(2, T, d, requires_grad=True)
    g = torch.randn(2, T, d)
    rope = RotaryPositionalEmbedding(theta, d // h, 256)
    attn = cls(d, h, rope=rope)
    attn.load_state_dict(dict(zip(["q_proj.weight", "k_proj.weight", "v_proj.weight", "output_proj.weight"], ws)))
    ours = torch.autograd.grad(attn(x), [x, *attn.parameters()], g)
    ref = torch.autograd.grad(ref_mha(x, *ws, h, theta), [x, *ws], g)
    for a, b in zip(ours, ref):
        close(a, b)


def test_causal_attention_function_half_precision_path():
    """The in-dtype path GPUs take under bf16 (on CPU the model upcasts before reaching it)."""
    q, k, v = (torch.randn(2, 12, 8) for _ in range(3))
    g = torch.randn(2, 12, 8)
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_out = F.scaled_dot_product_attention(*ref_in, is_causal=True, scale=0.3)
    ref_grads = torch.autograd.grad(ref_out, ref_in, g)
    bf = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
    out = fast_attention._CausalAttention.apply(*bf, 0.3, 3)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out, bf, g.to(torch.bfloat16))
    torch.testing.assert_close(out.float(), ref_out, atol=5e-2, rtol=5e-2)
    for a, b in zip(grads, ref_grads):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, atol=1e-1, rtol=1e-1)
