"""The Transformer's building blocks, written from scratch with plain tensor ops.

Only ``nn.Parameter`` / ``nn.Module`` containers come from ``torch.nn``: no ``torch.nn`` layers and no
``torch.nn.functional``. Weights follow the ``torch.nn`` layout (``Linear.weight`` is ``[out, in]``)
so the course's reference state dicts load unchanged.

Attention here is the PLAIN path, written the way the CS336 handout explains it: ``softmax``,
``scaled_dot_product_attention`` with a boolean mask, and ``CausalMultiHeadSelfAttention`` with
separate q/k/v projections, RoPE through ``RotaryPositionalEmbedding`` and a causal mask. The
optimised path (same parameters, same results) lives in ``cs336_basics.fast_attention``;
``ModelConfig.attention`` chooses between them.

Dimension names used in the shape annotations: ``batch``, ``heads``, ``seq`` (query positions),
``kv_seq`` (key positions), ``d_model``, ``d_head``, ``d_ff``, ``vocab``.
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

__all__ = [
    "Linear",
    "Embedding",
    "RMSNorm",
    "Identity",
    "silu",
    "SwiGLU",
    "SiLUFFN",
    "default_d_ff",
    "RotaryPositionalEmbedding",
    "softmax",
    "scaled_dot_product_attention",
    "CausalMultiHeadSelfAttention",
    "trunc_normal_",
    "apply_rope",
    "causal_mask",
    "KVCache",
]


# ----------------------------------------------------------------------------------------------
# Initialization
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def trunc_normal_(t: Tensor, std: float = 1.0, a: float = -3.0, b: float = 3.0) -> Tensor:
    """Fill ``t`` in place with N(0, std^2) truncated to [a, b] (inverse-CDF sampling).

    Sampling u ~ U(Phi(a/std), Phi(b/std)) and mapping it through Phi^{-1} gives the truncated normal
    exactly, with no rejection loop (so no data-dependent control flow). Done in float32, since
    erfinv is not implemented for every low-precision dtype, then copied into ``t``.
    """
    lo = 0.5 * (1.0 + math.erf(a / std / math.sqrt(2.0)))
    hi = 0.5 * (1.0 + math.erf(b / std / math.sqrt(2.0)))
    u = torch.empty(t.shape, dtype=torch.float32, device=t.device).uniform_(lo, hi)
    x = torch.special.erfinv(2.0 * u - 1.0).mul_(std * math.sqrt(2.0))
    # Guard against the endpoints rounding one ulp outside [a, b].
    x.clamp_(min=a, max=b)
    t.copy_(x)
    return t


# ----------------------------------------------------------------------------------------------
# Basic layers
# ----------------------------------------------------------------------------------------------
class Linear(nn.Module):
    """``y = x @ W.T`` without bias; ``W`` is ``[out_features, in_features]`` like ``torch.nn.Linear``.

    Init: truncated normal with variance 2 / (in + out), cut at +-3 sigma.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / (self.in_features + self.out_features))
        trunc_normal_(self.weight, std=std, a=-3.0 * std, b=3.0 * std)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return x @ self.weight.t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Embedding(nn.Module):
    """Lookup table ``[num_embeddings, embedding_dim]``; init N(0, 1) truncated to [-3, 3].

    The forward is a row lookup: ``weight[token_ids]``. (The model uses a twin with the same weights
    whose backward is deterministic on a multi-threaded CPU: ``fast_layers.DeterministicEmbedding``.)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Int[Tensor, " ..."]) -> Float[Tensor, "... d_model"]:
        return self.weight[token_ids]

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * g``, computed in float32 and returned in the input dtype.

    The float32 upcast matters under bf16: the mean of squares loses too many bits otherwise.
    """

    def __init__(
        self,
        d_model: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        in_dtype = x.dtype
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + self.eps)
        return (x32 * inv_rms * self.weight.float()).to(in_dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class Identity(nn.Module):
    """Stand-in for a removed norm (the ``remove_rmsnorm`` ablation): no parameters, no state."""

    def forward(self, x: Tensor) -> Tensor:
        return x


# ----------------------------------------------------------------------------------------------
# Feed-forward
# ----------------------------------------------------------------------------------------------
def silu(x: Tensor) -> Tensor:
    """SiLU / swish: ``x * sigmoid(x)``."""
    return x * torch.sigmoid(x)


def default_d_ff(d_model: int) -> int:
    """SwiGLU hidden size: about 8/3 * d_model, rounded to the nearest multiple of 64 (>= 64).

    8/3 keeps the SwiGLU's 3 matrices at the parameter count of a 4x two-matrix FFN; the multiple of
    64 keeps matmuls on fast tile sizes. ``default_d_ff(512) == 1344`` (the course's TinyStories size).
    """
    return max(64, int(round(8 * d_model / 3 / 64)) * 64)


class SwiGLU(nn.Module):
    """``W2(SiLU(W1 x) * W3 x)`` with ``w1, w3: [d_ff, d_model]`` and ``w2: [d_model, d_ff]``."""

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_ff = default_d_ff(d_model) if d_ff is None else d_ff
        self.d_model = d_model
        self.d_ff = d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.w2(silu(self.w1(x)) * self.w3(x))


class SiLUFFN(nn.Module):
    """The non-gated ablation: ``W2(SiLU(W1 x))``; ``d_ff`` defaults to 4 * d_model.

    With d_ff = 4 d_model it has the same parameter count as a SwiGLU with d_ff = 8/3 d_model.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.d_model = d_model
        self.d_ff = d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.w2(silu(self.w1(x)))


# ----------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------
class RotaryPositionalEmbedding(nn.Module):
    """Rotary position embedding on interleaved pairs ``(x[2i], x[2i+1])``.

    Pair ``i`` at position ``p`` is rotated by ``p * theta ** (-2i / d_k)``. cos/sin tables are
    non-persistent buffers (recomputable, so they stay out of the state dict and checkpoints).
    """

    def __init__(
        self,
        theta: float,
        d_k: int,
        max_seq_len: int,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if d_k % 2 != 0:
            raise ValueError(f"RoPE needs an even head dimension, got d_k={d_k}")
        self.theta = theta
        self.d_k = d_k
        self.max_seq_len = max_seq_len
        # Angles in float64 so large positions keep their precision, then stored as float32.
        inv_freq = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64, device=device) / d_k)
        pos = torch.arange(max_seq_len, dtype=torch.float64, device=device)
        angles = torch.outer(pos, inv_freq)  # [max_seq_len, d_k/2]
        self.register_buffer("cos", torch.cos(angles).float(), persistent=False)
        self.register_buffer("sin", torch.sin(angles).float(), persistent=False)

    def forward(
        self,
        x: Float[Tensor, "... seq d_head"],
        token_positions: Int[Tensor, "... seq"] | None = None,
    ) -> Float[Tensor, "... seq d_head"]:
        """Rotate ``x`` by the angles of ``token_positions`` (default ``0..seq-1``).

        Positions line up with x's leading dims: ``[..., seq]`` for x ``[..., seq, d_head]``, or
        ``[seq]`` for any x. If the positions have exactly one dim fewer than x's leading dims, x is
        taken to carry a head axis just before ``seq`` (x ``[batch, heads, seq, d_head]`` with
        positions ``[batch, seq]``) and every head gets its batch row's positions.
        """
        if token_positions is None:
            cos = self.cos[: x.shape[-2]]
            sin = self.sin[: x.shape[-2]]
        else:
            if token_positions.dim() > 1 and token_positions.dim() == x.dim() - 2:
                token_positions = token_positions.unsqueeze(-2)  # [..., 1, seq]: broadcast over heads
            cos = self.cos[token_positions]  # [..., seq, d_head/2]
            sin = self.sin[token_positions]
        return apply_rope(x, cos, sin)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, d_k={self.d_k}, max_seq_len={self.max_seq_len}"


def apply_rope(
    x: Float[Tensor, "... seq d_head"],
    cos: Float[Tensor, "... seq half_d_head"],
    sin: Float[Tensor, "... seq half_d_head"],
) -> Float[Tensor, "... seq d_head"]:
    """Rotate interleaved pairs of ``x[..., seq, d]`` by tables ``cos/sin[..., seq, d/2]``.

    The tables broadcast against x's leading dims (e.g. ``[seq, d/2]`` or ``[B, 1, seq, d/2]`` for
    ``x: [B, H, seq, d]``). Computed in x's dtype (the tables are cast once, not x).
    """
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    x0 = pairs[..., 0]
    x1 = pairs[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2)


# ----------------------------------------------------------------------------------------------
# Attention (the plain path; the optimised one is cs336_basics.fast_attention)
# ----------------------------------------------------------------------------------------------
def softmax(x: Float[Tensor, " ..."], dim: int = -1) -> Float[Tensor, " ..."]:
    """Numerically stable softmax along ``dim``: subtract the max, exponentiate, normalise.

    Subtracting the row max leaves the result unchanged (it cancels in the ratio) but keeps
    ``exp`` from overflowing, so huge inputs are fine. A row that is all ``-inf`` (a query that may
    attend to nothing) yields NaN, as torch's does. Autograd differentiates it as written.
    """
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(
    Q: Float[Tensor, "... seq d_head"],
    K: Float[Tensor, "... kv_seq d_head"],
    V: Float[Tensor, "... kv_seq d_v"],
    mask: Bool[Tensor, "... seq kv_seq"] | None = None,
) -> Float[Tensor, "... seq d_v"]:
    """``softmax(Q K^T / sqrt(d_head), masked) V``; ``mask`` True = may attend (False -> -inf).

    Under bf16/fp16 the softmax runs in float32 (exp and the row sum lose too many bits in 8-bit
    mantissas); the weights are cast back to V's dtype for the final matmul.
    """
    d_head = Q.shape[-1]
    scores = einsum(Q, K, "... seq d, ... kv_seq d -> ... seq kv_seq") / math.sqrt(d_head)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    probs = softmax(scores, dim=-1)
    return einsum(probs.to(V.dtype), V, "... seq kv_seq, ... kv_seq d_v -> ... seq d_v")


def causal_mask(seq: int, kv_seq: int, device: torch.device | str | None = None) -> Bool[Tensor, "seq kv_seq"]:
    """True where query ``i`` may see key ``j``: query i sits at absolute position
    ``kv_seq - seq + i`` (it continues a cached prefix of ``kv_seq - seq`` keys) and sees keys <= that."""
    q_pos = torch.arange(kv_seq - seq, kv_seq, device=device)
    k_pos = torch.arange(kv_seq, device=device)
    return k_pos[None, :] <= q_pos[:, None]


class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to ``max_len``.

    Each buffer is ``[batch, heads, max_len, d_head]``. ``length`` is a Python int (the number of
    positions already cached, equal for all layers); the model advances it once per forward, after
    every layer has written its keys/values.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys: list[Float[Tensor, "batch heads max_len d_head"]] = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)
        ]
        self.values: list[Float[Tensor, "batch heads max_len d_head"]] = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)
        ]
        self.max_len = max_len
        self.length = 0

    def update(
        self,
        layer: int,
        k: Float[Tensor, "batch heads seq d_head"],
        v: Float[Tensor, "batch heads seq d_head"],
    ) -> tuple[Float[Tensor, "batch heads kv_seq d_head"], Float[Tensor, "batch heads kv_seq d_head"]]:
        """Write ``k, v`` at positions ``length ..`` and return all cached keys/values so far
        (``kv_seq = length + seq``)."""
        start = self.length
        end = start + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalMultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention with optional RoPE on queries and keys (the plain path).

    ``q_proj``, ``k_proj``, ``v_proj`` map ``d_model -> heads * d_head``; rows
    ``[h*d_head, (h+1)*d_head)`` of each belong to head ``h``. Each head attends causally with
    ``scaled_dot_product_attention``; ``output_proj`` reads the heads concatenated in head order.
    ``cs336_basics.fast_attention.FastCausalMultiHeadSelfAttention`` has the same parameters.
    ``causal=False`` drops the mask, so every position sees every other (bidirectional, for masked
    diffusion in ``cs336_basics.extensions.diffusion``); it is fixed at construction.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryPositionalEmbedding | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        causal: bool = True,
        qk_norm: bool = False,
        value_mix: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.causal = causal
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.rope = rope
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        # Leaderboard-recipe hooks (cs336_basics.extensions.recipe), None unless asked for: per-head QK-norm
        # (ViT-22B, OLMo 2: bounded attention logits) and value-residual mixing (recipe.ValueResidual).
        self.q_norm = RMSNorm(self.d_k, device=device, dtype=dtype) if qk_norm else None
        self.k_norm = RMSNorm(self.d_k, device=device, dtype=dtype) if qk_norm else None
        self.value_mix = value_mix

    def _positions(self, x: Tensor, token_positions: Tensor | None, start: int) -> Int[Tensor, "... seq"]:
        """Absolute positions of x's tokens: given, or ``start .. start+seq-1`` (after a cached prefix)."""
        if token_positions is None:
            return torch.arange(start, start + x.shape[-2], device=x.device)
        if token_positions.dim() > 1:  # [..., seq] lined up with x's leading dims
            token_positions = token_positions.broadcast_to(x.shape[:-1])
        return token_positions

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        first_values=None,
    ) -> Float[Tensor, "... seq d_model"]:
        """With ``kv_cache`` (x is ``[batch, seq, d_model]``), x continues the cached prefix.
        ``first_values``: the model's ``recipe.FirstValues`` when value residual is on."""
        start = 0 if kv_cache is None else kv_cache.length
        q = rearrange(self.q_proj(x), "... seq (heads d_head) -> ... heads seq d_head", heads=self.num_heads)
        k = rearrange(self.k_proj(x), "... seq (heads d_head) -> ... heads seq d_head", heads=self.num_heads)
        v = rearrange(self.v_proj(x), "... seq (heads d_head) -> ... heads seq d_head", heads=self.num_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.value_mix is not None:
            v = self.value_mix(v, first_values)
        if self.rope is not None:
            positions = self._positions(x, token_positions, start)
            q = self.rope(q, positions)
            k = self.rope(k, positions)
        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)
        mask = causal_mask(q.shape[-2], k.shape[-2], device=x.device) if self.causal else None
        out = scaled_dot_product_attention(q, k, v, mask)
        out = rearrange(out, "... heads seq d_head -> ... seq (heads d_head)")
        return self.output_proj(out)
