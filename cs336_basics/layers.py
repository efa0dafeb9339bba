"""The Transformer's building blocks, written from scratch with plain tensor ops.

Only ``nn.Parameter`` / ``nn.Module`` containers come from ``torch.nn``: no ``torch.nn`` layers and no
``torch.nn.functional``. Weights follow the ``torch.nn`` layout (``Linear.weight`` is ``[out, in]``)
so the course's reference state dicts load unchanged (see ../shared/spec/adapters.md).

Speed notes (these matter for the CPU/GPU benchmark in scripts/bench_model.py):
- attention runs all heads in one batched matmul; Q/K/V come from one fused matmul whose weight is
  the concatenation of the three separate (state-dict visible) projection weights;
- the 1/sqrt(d_k) scale is folded into Q and the causal softmax uses exp2 (see ``_causal_probs``);
- softmax is a small ``torch.autograd.Function`` that saves only its output (the backward needs
  nothing else); the model's causal attention goes further and keeps no T x T matrix at all for
  backward (it recomputes the weights, as FlashAttention does) -- see ``_CausalAttention``;
- on CPU, bf16/fp16 attention cores run in float32 (no bf16 matrix units on most CPUs);
- nothing in a forward pass calls ``.item()`` or builds data-dependent shapes, so torch.compile
  traces each model into one graph.
"""

from __future__ import annotations

import math

import torch
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
    """Lookup table ``[num_embeddings, embedding_dim]``; init N(0, 1) truncated to [-3, 3]."""

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
        self.weight = nn.Parameter(
            torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Int[Tensor, " ..."]) -> Float[Tensor, "... d"]:
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

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
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
        x: Float[Tensor, "... seq d_k"],
        token_positions: Int[Tensor, "... seq"] | None = None,
    ) -> Float[Tensor, "... seq d_k"]:
        if token_positions is None:
            cos = self.cos[: x.shape[-2]]
            sin = self.sin[: x.shape[-2]]
        else:
            cos = self.cos[token_positions]  # [..., seq, d_k/2]
            sin = self.sin[token_positions]
        return apply_rope(x, cos, sin)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, d_k={self.d_k}, max_seq_len={self.max_seq_len}"


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
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
# Attention
# ----------------------------------------------------------------------------------------------
class _Softmax(torch.autograd.Function):
    """Softmax that saves only its output: ``dx = y * (dy - sum(dy * y))``."""

    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        y = _softmax_fwd(x, dim)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        dx = (dy * y).sum(dim=ctx.dim, keepdim=True)
        dx = (dy - dx).mul_(y)
        return dx, None


def _softmax_fwd(x: Tensor, dim: int) -> Tensor:
    """Softmax without autograd bookkeeping (for use inside autograd.Functions)."""
    y = x - x.amax(dim=dim, keepdim=True)
    y = y.exp_()
    return y.div_(y.sum(dim=dim, keepdim=True))


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax along ``dim`` (subtracts the max first, so huge inputs are fine).

    A row that is all ``-inf`` (a query that may attend to nothing) yields NaN, as torch's does.
    """
    return _Softmax.apply(x, dim)


def scaled_dot_product_attention(
    Q: Float[Tensor, "... q d_k"],
    K: Float[Tensor, "... k d_k"],
    V: Float[Tensor, "... k d_v"],
    mask: Bool[Tensor, "... q k"] | None = None,
) -> Float[Tensor, "... q d_v"]:
    """``softmax(Q K^T / sqrt(d_k) + mask) V``; ``mask`` True = may attend (False -> -inf)."""
    d_k = Q.shape[-1]
    scores = (Q @ K.transpose(-2, -1)) * (1.0 / math.sqrt(d_k))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = softmax(scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores, -1)
    return probs.to(V.dtype) @ V


class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to ``max_len``.

    ``length`` is a Python int (the number of positions already cached, equal for all layers); the
    model advances it once per forward, after every layer has written its keys/values.
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
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k, v: [B, H, T, d]`` at ``length`` and return all cached keys/values so far."""
        start = self.length
        end = start + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalMultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention with optional RoPE on queries and keys.

    Rows ``[h*d_k, (h+1)*d_k)`` of each projection belong to head ``h``. The state dict keeps the
    four separate projections (``q_proj``, ``k_proj``, ``v_proj``, ``output_proj``) so reference
    weights load; the forward concatenates q/k/v weights and runs one matmul for all three.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryPositionalEmbedding | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        max_seq_len: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads ({num_heads})"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.rope = rope
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
    ) -> Float[Tensor, "... seq d_model"]:
        lead = x.shape[:-2]
        T = x.shape[-2]
        x3 = x.reshape(-1, T, self.d_model)  # [B, T, d]
        B = x3.shape[0]
        H, d_k = self.num_heads, self.d_k

        w_qkv = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight), dim=0)
        qkv = (x3 @ w_qkv.t()).view(B, T, 3, H, d_k).permute(2, 0, 3, 1, 4)  # [3, B, H, T, d_k]
        q, k, v = qkv[0], qkv[1], qkv[2]

        start = 0 if kv_cache is None else kv_cache.length
        if self.rope is not None:
            if token_positions is None:
                cos = self.rope.cos[start : start + T]
                sin = self.rope.sin[start : start + T]
            else:
                pos = token_positions.broadcast_to((*lead, T)).reshape(B, T)
                cos = self.rope.cos[pos].unsqueeze(1)  # [B, 1, T, d_k/2]
                sin = self.rope.sin[pos].unsqueeze(1)
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)

        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)
        S = k.shape[-2]  # number of keys (T, or cached + T)

        out = _causal_attention_core(
            q.reshape(B * H, T, d_k), k.reshape(B * H, S, d_k), v.reshape(B * H, S, d_k), 1.0 / math.sqrt(d_k)
        )  # [B*H, T, d_k]
        out = out.view(B, H, T, d_k).transpose(1, 2).reshape(*lead, T, self.d_model)
        return self.output_proj(out)


def _causal_attention_core(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``softmax(q k^T * scale + causal) v`` for ``q: [N, T, d]``, ``k, v: [N, S, d]`` (S >= T).

    Query i sits at absolute position S - T + i (it continues a cached prefix of S - T keys) and sees keys j <= that.
    On CPU, half-precision inputs (bf16 autocast) are computed in float32: CPUs without bf16 matrix
    units emulate bf16 batched matmuls about 3x slower than float32 ones, and float32 is also the
    more accurate choice for the softmax. On GPUs the core stays in the input dtype.
    """
    out_dtype = v.dtype
    if q.device.type == "cpu" and out_dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            return _causal_attention_core(q.float(), k.float(), v.float(), scale).to(out_dtype)
    return _CausalAttention.apply(q, k, v, scale, _attention_blocks(q.shape[-2]))


_LOG2E = 1.4426950408889634  # log2(e): softmax(x) == exp2((x - max) * log2 e) / sum


def _causal_probs(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """Attention weights ``softmax(q k^T * scale + causal mask)``, in q's dtype (softmax in fp32).

    CPU speed details (eager; torch.compile would fuse all of this anyway):
    - the scale (times log2 e) is folded into q (T x d elements, not T x S), and the softmax uses
      ``exp2``: torch's CPU ``exp`` takes a slow path for -inf/underflowing inputs (half of a causal
      score matrix), ``exp2`` does not -- 2-8x faster here;
    - ``bmm`` then an in-place bias add beats ``baddbmm`` on CPU;
    - everything after the matmul works in place on the one scores buffer: at T=256 each
      ``[N, T, S]`` temporary is many MB, and every extra one costs page faults and a memory pass.
    """
    T, S = q.shape[-2], k.shape[-2]
    scores = torch.bmm(q * (scale * _LOG2E), k.transpose(1, 2))
    if T > 1:  # a single new query sees every cached key: no mask needed
        scores = scores.add_(_causal_bias(T, S, q.device).to(scores.dtype))
    if scores.dtype in (torch.float16, torch.bfloat16):
        return _softmax2_(scores.float(), -1).to(q.dtype)
    return _softmax2_(scores, -1)


def _softmax2_(x: Tensor, dim: int) -> Tensor:
    """In place on a tensor we own (no autograd): base-2 softmax, ``exp2(x - max) / sum``."""
    x = x.sub_(x.amax(dim=dim, keepdim=True)).exp2_()
    return x.div_(x.sum(dim=dim, keepdim=True))


class _CausalAttention(torch.autograd.Function):
    """Causal attention that keeps no ``[T, S]`` matrix for backward (like FlashAttention).

    Saves only q, k, v and the output, and recomputes the attention weights in backward (one extra
    batched matmul + softmax). Without this, autograd would keep the ``N x T x S`` weights of every
    layer alive -- the largest activation at context 256+ (e.g. 16.8 MB per layer at batch 4,
    16 heads, T 256 in fp32). Backward uses ``rowsum(P * dP) = rowsum(dO * O)``.

    ``blocks`` splits the queries into that many row blocks; block b only multiplies against the keys
    it can see, which skips most of the masked upper triangle (4 blocks: 10/16 of the dense matmul
    work). It is a fixed, shape-determined count (not a loop over heads), so torch.compile unrolls it.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, blocks: int = 1) -> Tensor:  # type: ignore[override]
        T, S = q.shape[-2], k.shape[-2]
        outs = []
        for lo, hi in _row_blocks(T, blocks):
            end = S - T + hi  # keys visible to the last query of this block
            probs = _causal_probs(q[:, lo:hi], k[:, :end], scale)
            outs.append(torch.bmm(probs, v[:, :end]))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        ctx.save_for_backward(q, k, v, out)
        ctx.scale = scale
        ctx.blocks = blocks
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):  # type: ignore[override]
        q, k, v, out = ctx.saved_tensors
        scale = ctx.scale
        T, S = q.shape[-2], k.shape[-2]
        dout = dout.to(out.dtype)
        delta = (dout * out).sum(dim=-1, keepdim=True)  # [N, T, 1]
        blocks = _row_blocks(T, ctx.blocks)
        if len(blocks) == 1:
            probs = _causal_probs(q, k, scale)
            dv = torch.bmm(probs.transpose(1, 2), dout)
            ds = torch.bmm(dout, v.transpose(1, 2)).sub_(delta).mul_(probs)
            dq = torch.bmm(ds, k).mul_(scale)
            dk = torch.bmm(ds.transpose(1, 2), q).mul_(scale)
            return dq, dk, dv, None, None
        dq_parts = []
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        for lo, hi in blocks:
            end = S - T + hi
            k_b, v_b, q_b, do_b = k[:, :end], v[:, :end], q[:, lo:hi], dout[:, lo:hi]
            probs = _causal_probs(q_b, k_b, scale)
            dv[:, :end] += torch.bmm(probs.transpose(1, 2), do_b)
            ds = torch.bmm(do_b, v_b.transpose(1, 2)).sub_(delta[:, lo:hi]).mul_(probs)
            dq_parts.append(torch.bmm(ds, k_b).mul_(scale))
            dk[:, :end] += torch.bmm(ds.transpose(1, 2), q_b).mul_(scale)
        return torch.cat(dq_parts, dim=1), dk, dv, None, None


def _row_blocks(T: int, blocks: int) -> list[tuple[int, int]]:
    """Split ``range(T)`` into ``blocks`` contiguous, nearly equal ``(lo, hi)`` ranges."""
    blocks = max(1, min(blocks, T))
    bounds = [round(i * T / blocks) for i in range(blocks + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(blocks)]


def _attention_blocks(T: int) -> int:
    """Query blocks for causal attention: enough to skip most masked work, few enough to stay fast."""
    return 4 if T >= 256 else 2 if T >= 128 else 1


def _causal_bias(T: int, S: int, device: torch.device) -> Tensor:
    """``[T, S]`` float bias: 0 where query i (at absolute S - T + i) may see key j, else -inf."""
    q_pos = torch.arange(S - T, S, device=device).unsqueeze(1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)
    zeros = torch.zeros((), device=device)
    return torch.where(k_pos <= q_pos, zeros, float("-inf"))
