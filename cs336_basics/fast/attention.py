"""Causal multi-head self-attention, optimised: the fast twin of the engine's plain attention.

``FastCausalMultiHeadSelfAttention`` is a drop-in for the engine's ``lm.attention.Attention`` (the
textbook's ``layers.CausalMultiHeadSelfAttention`` plus a KV cache, ``causal=False`` and the recipe's
hooks): it subclasses it, so it has the same ``q_proj`` / ``k_proj`` / ``v_proj`` / ``output_proj``
weights and state-dict names (a checkpoint trained with one path loads into the other) and computes
the same function. ``ModelConfig.attention`` ("fast", the default, or "plain") picks the class. What it
does differently, and why:

- **Fused QKV projection.** The three ``[d_model, d_model]`` weights are concatenated into one
  ``[3 d_model, d_model]`` matrix each forward and applied in one matmul: one pass over the
  activations instead of three, and one larger GEMM, which keeps the matrix units busier. The
  concatenation is cheap (weights, not activations) and autograd splits the gradient back.
- **RoPE from sliced tables.** With the default positions, the cos/sin rows are a contiguous slice
  of the tables instead of a gather by position index.
- **All heads in one batched matmul**, on ``[batch * heads, seq, d_head]`` views, no einsum
  bookkeeping.
- **Query blocking that skips the masked triangle.** Queries are split into a few row blocks
  (``_attention_blocks``); block ``b`` only multiplies against the keys it can see, so most of the
  masked upper triangle is never computed (4 blocks do 10/16 of the dense work). The count is fixed
  by the shape, so torch.compile unrolls the loop into one graph.
- **exp2 softmax with the scale folded into q.** ``softmax(x) = exp2((x - max) log2 e) / sum``;
  multiplying q (``seq x d_head``) by ``scale * log2 e`` is cheaper than scaling the
  ``seq x kv_seq`` scores (half-precision inputs scale the float32 scores instead: rounding a
  scaled bf16 q again would cost accuracy), and torch's CPU ``exp`` takes a slow path for the -inf / underflowing
  inputs that fill half of a causal score matrix, while ``exp2`` does not. Everything after the
  score matmul works in place on one buffer (each ``[N, seq, kv_seq]`` temporary costs a memory
  pass and page faults).
- **Recomputing the attention weights in backward, as FlashAttention does.** ``_CausalAttention``
  saves only q, k, v and the output; backward recomputes the weights (one more matmul and softmax)
  instead of keeping the ``N x seq x kv_seq`` matrix of every layer alive, which is the largest
  activation at long context. It uses ``rowsum(P * dP) = rowsum(dO * O)`` for the softmax
  backward. Under bf16/fp16 the backward accumulates in float32 like FlashAttention: ``delta``,
  ``dP``, the softmax gradient ``dS`` and the per-block partial sums of ``dK`` / ``dV`` are float32
  (the matmuls return float32 results), and the scale is applied to the float32 scores rather than
  to a bf16 q; only matmul operands are in the input dtype. Its bf16 gradients are then no less
  accurate than plain bf16 autograd's (a test checks this against a float64 reference).
- **A fused kernel on CUDA.** Half-precision inputs on a GPU go to ``fast.triton_attention`` (the
  FlashAttention-2 algorithm in Triton, forward and backward): the same function, with the score
  matrix never leaving the chip. The blocked core below writes that matrix to GPU memory: on an H200
  at the course's TinyStories shape (bf16 + compile) the model ran at 0.85x the built-in model's
  tokens/s with it, 0.94x with the kernel (docs/benchmarks.md, GPU).
- **The CPU fp32 detour.** On CPU, bf16/fp16 (e.g. bf16 autocast) attention cores run in float32:
  CPUs without bf16 matrix units emulate bf16 batched matmuls much more slowly than float32 ones,
  and float32 is also the more accurate choice. On GPUs the core stays in the input dtype.

- **A non-causal variant for masked diffusion.** ``causal=False`` (set once at construction, like
  ``lm.attention.Attention``'s) skips the mask and the blocking (every query sees every key, so there is no
  masked work to skip); forward and the recomputing backward are otherwise the same code.

Nothing in a forward pass calls ``.item()`` or builds data-dependent shapes, so torch.compile
traces each model into one graph.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cs336_basics.layers import apply_rope
from cs336_basics.lm.attention import Attention, KVCache

__all__ = ["FastCausalMultiHeadSelfAttention", "causal_attention"]

_LOG2E = 1.4426950408889634  # log2(e): softmax(x) == exp2((x - max) * log2 e) / sum
# Half-precision CUDA attention runs the fused Triton kernels of cs336_basics.fast.triton_attention
# (where Triton is installed); False keeps it on the blocked core below (the benchmark compares both).
USE_TRITON = True
_HALF = (torch.float16, torch.bfloat16)


class FastCausalMultiHeadSelfAttention(Attention):
    """Same parameters and function as ``lm.attention.Attention`` (``--attention plain``), computed faster."""

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        first_values=None,
    ) -> Float[Tensor, "... seq d_model"]:
        lead = x.shape[:-2]
        T = x.shape[-2]
        x3 = x.reshape(-1, T, self.d_model)  # [batch, seq, d_model] (leading dims flattened)
        B = x3.shape[0]
        H, d_head = self.num_heads, self.d_k

        w_qkv = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight), dim=0)
        # [batch, seq, 3 * d_model] -> [3, batch, heads, seq, d_head]: a view + permute, no copy.
        qkv = (x3 @ w_qkv.t()).view(B, T, 3, H, d_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.q_norm is not None:  # leaderboard-recipe hooks, as in lm.attention.Attention
            q, k = self.q_norm(q), self.k_norm(k)
        if self.value_mix is not None:
            v = self.value_mix(v, first_values)

        start = 0 if kv_cache is None else kv_cache.length
        if self.rope is not None:
            if token_positions is None:
                cos = self.rope.cos[start : start + T]  # [seq, d_head/2]
                sin = self.rope.sin[start : start + T]
            else:
                pos = token_positions.broadcast_to((*lead, T)).reshape(B, T)
                cos = self.rope.cos[pos].unsqueeze(1)  # [batch, 1, seq, d_head/2]
                sin = self.rope.sin[pos].unsqueeze(1)
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)

        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)
        S = k.shape[-2]  # kv_seq: seq, or cached prefix + seq

        out = causal_attention(
            q.reshape(B * H, T, d_head),
            k.reshape(B * H, S, d_head),
            v.reshape(B * H, S, d_head),
            1.0 / math.sqrt(d_head),
            causal=self.causal,
        )  # [batch * heads, seq, d_head]
        out = out.view(B, H, T, d_head).transpose(1, 2).reshape(*lead, T, self.d_model)
        return self.output_proj(out)


def causal_attention(
    q: Float[Tensor, "n seq d_head"],
    k: Float[Tensor, "n kv_seq d_head"],
    v: Float[Tensor, "n kv_seq d_head"],
    scale: float,
    causal: bool = True,
) -> Float[Tensor, "n seq d_head"]:
    """``softmax(q k^T * scale + causal) v`` for ``n = batch * heads`` (``kv_seq >= seq``).

    Query i sits at absolute position ``kv_seq - seq + i`` (it continues a cached prefix) and sees
    keys j <= that. On CPU, half-precision inputs take the float32 detour (see the module docstring).
    ``causal=False``: no mask, every query sees every key (one block: there is no masked work to skip).
    """
    out_dtype = v.dtype
    if q.is_cuda and out_dtype in _HALF and USE_TRITON:
        import cs336_basics.fast.triton_attention as flash  # imported here: only CUDA runs pay for Triton

        if flash.supported(q, k, v):
            return flash.flash_attention(q, k, v, scale, causal)
    if q.device.type == "cpu" and out_dtype in _HALF:
        with torch.autocast("cpu", enabled=False):
            return causal_attention(q.float(), k.float(), v.float(), scale, causal).to(out_dtype)
    blocks = _attention_blocks(q.shape[-2]) if causal else 1
    return _CausalAttention.apply(q, k, v, scale, blocks, causal)


def _causal_probs(
    q: Float[Tensor, "n seq d_head"], k: Float[Tensor, "n kv_seq d_head"], scale: float, causal: bool = True
) -> Float[Tensor, "n seq kv_seq"]:
    """Attention weights ``softmax(q k^T * scale + causal mask)``; float32 for half inputs.

    The scale (times log2 e) is folded into q (into the fp32 scores for half inputs, which would
    otherwise be rounded twice) and the softmax is base 2; ``bmm`` then an in-place
    bias add beats ``baddbmm`` on CPU; everything after the matmul is in place on one buffer.
    Callers cast the weights to q's dtype for the following matmul themselves.
    """
    T, S = q.shape[-2], k.shape[-2]
    if q.dtype in _HALF:
        # Scaling a bf16/fp16 q would round it a second time: scale the float32 scores instead.
        scores = torch.bmm(q, k.transpose(1, 2)).float().mul_(scale * _LOG2E)
    else:
        scores = torch.bmm(q * (scale * _LOG2E), k.transpose(1, 2))
    if causal and T > 1:  # a single new query sees every cached key: no mask needed
        scores = scores.add_(_causal_bias(T, S, q.device))
    return _softmax2_(scores, -1)


def _softmax2_(x: Tensor, dim: int) -> Tensor:
    """In place on a tensor we own (no autograd): base-2 softmax, ``exp2(x - max) / sum``."""
    x = x.sub_(x.amax(dim=dim, keepdim=True)).exp2_()
    return x.div_(x.sum(dim=dim, keepdim=True))


class _CausalAttention(torch.autograd.Function):
    """Causal attention that keeps no ``[seq, kv_seq]`` matrix for backward (like FlashAttention).

    ``blocks`` splits the queries into that many row blocks; block b only multiplies against the keys
    it can see. Backward recomputes each block's weights and, for half inputs, keeps ``delta``,
    ``dS`` and the ``dK`` / ``dV`` block sums in float32.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, blocks: int = 1, causal: bool = True) -> Tensor:  # type: ignore[override]
        T, S = q.shape[-2], k.shape[-2]
        outs = []
        for lo, hi in _row_blocks(T, blocks):
            end = S - T + hi if causal else S  # keys visible to the last query of this block
            probs = _causal_probs(q[:, lo:hi], k[:, :end], scale, causal).to(v.dtype)
            outs.append(torch.bmm(probs, v[:, :end]))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        ctx.save_for_backward(q, k, v, out)
        ctx.scale = scale
        ctx.blocks = blocks
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):  # type: ignore[override]
        q, k, v, out = ctx.saved_tensors
        scale, causal = ctx.scale, ctx.causal
        T, S = q.shape[-2], k.shape[-2]
        dtype = q.dtype
        acc = torch.float32 if dtype in _HALF else dtype  # accumulate half-precision grads in fp32
        dout = dout.to(dtype)
        # delta_i = rowsum(P_i * dP_i) = dO_i . O_i
        delta = (dout.to(acc) * out.to(acc)).sum(dim=-1, keepdim=True)  # [n, seq, 1]
        blocks = _row_blocks(T, ctx.blocks)
        half = acc is not dtype
        dq_parts = []
        dk: Tensor | None = None
        dv: Tensor | None = None
        for lo, hi in blocks:
            end = S - T + hi if causal else S
            k_b, v_b, q_b, do_b = k[:, :end], v[:, :end], q[:, lo:hi], dout[:, lo:hi]
            probs = _causal_probs(q_b, k_b, scale, causal)  # [n, block, end], in acc
            if half:
                # dP and dS in fp32 (scale folded in, no extra rounding); the dK / dV partial sums of
                # several blocks come out of the matmul in fp32 too, so they are rounded only once.
                p_h = probs.to(dtype)
                ds = _bmm_f32(do_b, v_b.transpose(1, 2)).sub_(delta[:, lo:hi]).mul_(probs).mul_(scale)
                ds = ds.to(dtype)
                dq_b = torch.bmm(ds, k_b)
                if len(blocks) == 1:
                    dk_b = torch.bmm(ds.transpose(1, 2), q_b)
                    dv_b = torch.bmm(p_h.transpose(1, 2), do_b)
                else:
                    dk_b = _bmm_f32(ds.transpose(1, 2), q_b)
                    dv_b = _bmm_f32(p_h.transpose(1, 2), do_b)
            else:  # scale the [block, d_head] results, not the [block, end] dS
                ds = torch.bmm(do_b, v_b.transpose(1, 2)).sub_(delta[:, lo:hi]).mul_(probs)
                dq_b = torch.bmm(ds, k_b).mul_(scale)
                dk_b = torch.bmm(ds.transpose(1, 2), q_b).mul_(scale)
                dv_b = torch.bmm(probs.transpose(1, 2), do_b)
            dq_parts.append(dq_b)
            if len(blocks) == 1:  # one block covers every key: nothing to sum
                dk, dv = dk_b, dv_b
                break
            if dk is None:
                dk = torch.zeros(k.shape, dtype=acc, device=k.device)
                dv = torch.zeros(v.shape, dtype=acc, device=v.device)
            dk[:, :end] += dk_b  # block sums in acc (fp32 for half inputs)
            dv[:, :end] += dv_b
        assert dk is not None and dv is not None
        dq = dq_parts[0] if len(dq_parts) == 1 else torch.cat(dq_parts, dim=1)
        return dq, dk.to(dtype), dv.to(dtype), None, None, None


def _bmm_f32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` of half-precision operands with a float32 result (float32 accumulation throughout).

    CUDA has this as ``bmm(out_dtype=float32)``; elsewhere the operands are upcast (exact for
    bf16/fp16 values), which computes the same thing.
    """
    if a.is_cuda:
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a.float(), b.float())


def _row_blocks(T: int, blocks: int) -> list[tuple[int, int]]:
    """Split ``range(T)`` into ``blocks`` contiguous, nearly equal ``(lo, hi)`` ranges."""
    blocks = max(1, min(blocks, T))
    bounds = [round(i * T / blocks) for i in range(blocks + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(blocks)]


def _attention_blocks(T: int) -> int:
    """Query blocks for causal attention: enough to skip most masked work, few enough to stay fast."""
    return 4 if T >= 256 else 2 if T >= 128 else 1


def _causal_bias(T: int, S: int, device: torch.device) -> Float[Tensor, "seq kv_seq"]:
    """Float bias: 0 where query i (at absolute ``S - T + i``) may see key j, else -inf."""
    q_pos = torch.arange(S - T, S, device=device).unsqueeze(1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)
    zeros = torch.zeros((), device=device)
    return torch.where(k_pos <= q_pos, zeros, float("-inf"))
