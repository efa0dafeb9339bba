"""The Transformer's building blocks, as the CS336 handout writes them (section 3).

Only ``nn.Parameter`` and the ``nn.Module`` containers come from ``torch.nn``: no ``torch.nn`` layers
and no ``torch.nn.functional``. Weights follow the ``torch.nn`` layout (``Linear.weight`` is
``[out, in]``), so the course's reference state dicts load unchanged. Read top to bottom: Linear,
Embedding, RMSNorm, SwiGLU (and the SiLU ablation), RoPE, softmax, scaled dot-product attention,
causal multi-head self-attention. Shape names: ``batch``, ``heads``, ``seq`` (query positions),
``kv_seq`` (key positions), ``d_model``, ``d_head``, ``d_ff``.

The engine's faster twins (same parameters, same function) live in ``cs336_basics.fast``.
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn


@torch.no_grad()
def trunc_normal_(t: Tensor, std: float = 1.0, a: float = -3.0, b: float = 3.0) -> Tensor:
    """Fill ``t`` in place with N(0, std^2) truncated to [a, b] (inverse-CDF sampling).

    Sampling u ~ U(Phi(a/std), Phi(b/std)) and mapping it through Phi^{-1} gives the truncated normal
    exactly, with no rejection loop. Done in float32 (erfinv is missing for some low-precision
    dtypes), then copied into ``t``.
    """
    lo = 0.5 * (1.0 + math.erf(a / std / math.sqrt(2.0)))
    hi = 0.5 * (1.0 + math.erf(b / std / math.sqrt(2.0)))
    u = torch.empty(t.shape, dtype=torch.float32, device=t.device).uniform_(lo, hi)
    x = torch.special.erfinv(2.0 * u - 1.0).mul_(std * math.sqrt(2.0))
    x.clamp_(min=a, max=b)  # the endpoints may round one ulp outside [a, b]
    t.copy_(x)
    return t


class Linear(nn.Module):
    """``y = x @ W.T`` without bias; ``W`` is ``[out_features, in_features]``.

    Init: truncated normal with variance 2 / (in + out), cut at +-3 sigma.
    """

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / (self.in_features + self.out_features))
        trunc_normal_(self.weight, std=std, a=-3.0 * std, b=3.0 * std)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return x @ self.weight.t()


class Embedding(nn.Module):
    """Lookup table ``[num_embeddings, embedding_dim]``, init N(0, 1) truncated to [-3, 3]."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Int[Tensor, " ..."]) -> Float[Tensor, "... d_model"]:
        return self.weight[token_ids]


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * g``, computed in float32 and returned in the input dtype
    (under bf16 the mean of squares would lose too many bits)."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.d_model, self.eps = d_model, eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        in_dtype = x.dtype
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + self.eps)
        return (x32 * inv_rms * self.weight.float()).to(in_dtype)


class Identity(nn.Module):
    """Stand-in for a removed norm (the ``remove_rmsnorm`` ablation): no parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def silu(x: Tensor) -> Tensor:
    """SiLU / swish: ``x * sigmoid(x)``."""
    return x * torch.sigmoid(x)


def default_d_ff(d_model: int) -> int:
    """SwiGLU hidden size: about 8/3 * d_model, rounded to a multiple of 64 (the three matrices then
    hold what a 4x two-matrix FFN holds; 64 keeps matmuls on fast tiles). ``default_d_ff(512) == 1344``."""
    return max(64, int(round(8 * d_model / 3 / 64)) * 64)


class SwiGLU(nn.Module):
    """``W2(SiLU(W1 x) * W3 x)`` with ``w1, w3: [d_ff, d_model]`` and ``w2: [d_model, d_ff]``."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None) -> None:
        super().__init__()
        d_ff = default_d_ff(d_model) if d_ff is None else d_ff
        self.d_model, self.d_ff = d_model, d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.w2(silu(self.w1(x)) * self.w3(x))


class SiLUFFN(nn.Module):
    """The ungated ablation ``W2(SiLU(W1 x))``; ``d_ff`` defaults to 4 * d_model (the parameter count
    of a SwiGLU with 8/3 * d_model)."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.d_model, self.d_ff = d_model, d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.w2(silu(self.w1(x)))


class RotaryPositionalEmbedding(nn.Module):
    """RoPE on adjacent pairs ``(x[2i], x[2i+1])``: pair ``i`` at position ``p`` is rotated by the
    angle ``p * theta ** (-2i / d_k)``. The cos/sin tables are non-persistent buffers (recomputable,
    so not in the state dict)."""

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None) -> None:
        super().__init__()
        if d_k % 2 != 0:
            raise ValueError(f"RoPE needs an even head dimension, got d_k={d_k}")
        self.theta, self.d_k, self.max_seq_len = theta, d_k, max_seq_len
        # Angles in float64 so large positions keep their precision, stored as float32.
        inv_freq = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64, device=device) / d_k)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64, device=device), inv_freq)
        self.register_buffer("cos", torch.cos(angles).float(), persistent=False)  # [max_seq_len, d_k/2]
        self.register_buffer("sin", torch.sin(angles).float(), persistent=False)

    def forward(
        self, x: Float[Tensor, "... seq d_head"], token_positions: Int[Tensor, "... seq"] | None = None
    ) -> Float[Tensor, "... seq d_head"]:
        """Rotate ``x`` by the angles of ``token_positions`` (default ``0..seq-1``). Positions of
        shape ``[batch, seq]`` with x ``[batch, heads, seq, d_head]`` apply to every head."""
        if token_positions is None:
            cos, sin = self.cos[: x.shape[-2]], self.sin[: x.shape[-2]]
        else:
            if token_positions.dim() > 1 and token_positions.dim() == x.dim() - 2:
                token_positions = token_positions.unsqueeze(-2)  # [..., 1, seq]: broadcast over heads
            cos, sin = self.cos[token_positions], self.sin[token_positions]
        return apply_rope(x, cos, sin)


def apply_rope(
    x: Float[Tensor, "... seq d_head"], cos: Float[Tensor, "... seq half"], sin: Float[Tensor, "... seq half"]
) -> Float[Tensor, "... seq d_head"]:
    """Rotate the adjacent pairs of ``x`` by tables ``cos/sin`` that broadcast against it."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def softmax(x: Float[Tensor, " ..."], dim: int = -1) -> Float[Tensor, " ..."]:
    """Softmax along ``dim``, with the max subtracted first: the result is the same (it cancels in
    the ratio), but ``exp`` cannot overflow. A row of all ``-inf`` gives NaN, as torch's does."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(
    Q: Float[Tensor, "... seq d_head"],
    K: Float[Tensor, "... kv_seq d_head"],
    V: Float[Tensor, "... kv_seq d_v"],
    mask: Bool[Tensor, "... seq kv_seq"] | None = None,
) -> Float[Tensor, "... seq d_v"]:
    """``softmax(Q K^T / sqrt(d_head)) V``; ``mask`` True = may attend (False -> -inf before the
    softmax). Under bf16/fp16 the softmax runs in float32; the weights go back to V's dtype."""
    scores = einsum(Q, K, "... seq d, ... kv_seq d -> ... seq kv_seq") / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    probs = softmax(scores, dim=-1)
    return einsum(probs.to(V.dtype), V, "... seq kv_seq, ... kv_seq d_v -> ... seq d_v")


def causal_mask(seq: int, kv_seq: int, device=None) -> Bool[Tensor, "seq kv_seq"]:
    """True where query ``i`` may see key ``j``: query i sits at position ``kv_seq - seq + i`` (after
    ``kv_seq - seq`` earlier keys) and sees the keys at or before it."""
    q_pos = torch.arange(kv_seq - seq, kv_seq, device=device)
    return torch.arange(kv_seq, device=device)[None, :] <= q_pos[:, None]


class CausalMultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention, with RoPE on queries and keys when ``rope`` is given.

    ``q_proj``, ``k_proj``, ``v_proj`` map ``d_model -> heads * d_head`` (rows ``[h*d_head, (h+1)*d_head)``
    belong to head ``h``); every head attends causally; ``output_proj`` reads the heads concatenated.
    """

    def __init__(
        self, d_model: int, num_heads: int, rope: RotaryPositionalEmbedding | None = None, device=None, dtype=None
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.rope = rope
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)

    def split_heads(self, x: Float[Tensor, "... seq d_model"]) -> Float[Tensor, "... heads seq d_head"]:
        return rearrange(x, "... seq (heads d_head) -> ... heads seq d_head", heads=self.num_heads)

    def forward(
        self, x: Float[Tensor, "... seq d_model"], token_positions: Int[Tensor, "... seq"] | None = None
    ) -> Float[Tensor, "... seq d_model"]:
        q, k, v = self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(x.shape[-2], device=x.device)
            q, k = self.rope(q, token_positions), self.rope(k, token_positions)
        out = scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2], k.shape[-2], device=x.device))
        return self.output_proj(rearrange(out, "... heads seq d_head -> ... seq (heads d_head)"))
