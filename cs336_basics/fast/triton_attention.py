"""Fused causal attention for CUDA, written in Triton: the FlashAttention-2 algorithm, from scratch.

``fast_attention.causal_attention`` calls :func:`flash_attention` for half-precision CUDA inputs
(when Triton is installed, as it is with PyTorch's CUDA wheels on Linux). It computes the same
function as the rest of that module, ``softmax(q k^T * scale + causal mask) v``, but never writes
the ``[seq, kv_seq]`` score matrix to GPU memory: each program keeps a block of queries in
registers and streams the keys and values past it.

Forward (one program per ``BLOCK_M`` queries of one batch*head row), for each block of keys:

    s     = q k^T * scale * log2(e)                    (float32 accumulators)
    m_new = max(m, rowmax(s))                           (the running row max)
    p     = exp2(s - m_new);  l = l * exp2(m - m_new) + rowsum(p)
    acc   = acc * exp2(m - m_new) + p v
    ...   out = acc / l;  lse = m + log2(l)             (base-2 log-sum-exp, kept for backward)

With causal masking, a query block stops at the last key it can see, so the masked triangle costs
nothing. Backward recomputes ``p = exp2(s - lse)`` block by block (nothing of size ``seq x kv_seq``
is stored) and uses ``delta_i = rowsum(dO_i * O_i)``:

    dV = p^T dO,   dP = dO V^T,   dS = p * (dP - delta),   dK = scale * dS^T Q,   dQ = scale * dS K

one kernel over key blocks (dK, dV: loops over the queries that see them) and one over query
blocks (dQ), so no program writes where another does (no atomics: the results are deterministic).
All accumulation is in float32; matmul operands are the input dtype, as in FlashAttention.

The two kernels are registered as ``torch.library`` custom ops, so ``torch.compile`` keeps them as
single opaque calls inside its graph, and autograd connects them. Tests run the kernels on the CPU
through Triton's interpreter (``TRITON_INTERPRET=1``) against a float64 reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

try:  # Triton comes with PyTorch's CUDA wheels on Linux; elsewhere this module is simply unused.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where Triton is missing
    triton = None

__all__ = ["flash_attention", "supported"]

_LOG2E = 1.0 / math.log(2.0)  # softmax(x) == exp2((x - max) * log2 e) / sum
_HEAD_DIMS = (16, 32, 64, 128)


def supported(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether :func:`flash_attention` takes these inputs: Triton present, CUDA (or the interpreter),
    bf16/fp16, a head size of 16, 32, 64 or 128, and a last dimension laid out contiguously."""
    return (
        triton is not None
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.dtype == k.dtype == v.dtype
        and q.shape[-1] in _HEAD_DIMS
        and q.dim() == k.dim() == v.dim() == 3
        and all(t.stride(-1) == 1 for t in (q, k, v))
    )


def flash_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool = True) -> Tensor:
    """``softmax(q k^T * scale + causal) v`` for ``[n, seq, d_head]`` inputs (``kv_seq >= seq``;
    query i sits at absolute position ``kv_seq - seq + i``), differentiable, no ``seq x kv_seq`` buffer."""
    out, _ = torch.ops.cs336_basics.flash_attn_fwd(q, k, v, float(scale), bool(causal))
    return out


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _fwd_kernel(
        Q, K, V, OUT, LSE, qk_scale,
        sq_n, sq_t, sk_n, sk_t, sv_n, sv_t, so_n, so_t,
        T, S,
        CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q = tl.load(Q + n * sq_n + rows[:, None] * sq_t + offs_d[None, :], mask=rows[:, None] < T, other=0.0)
        q_pos = rows + (S - T)  # absolute position of each query
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        hi = S
        if CAUSAL:  # the last key the block's last query can see
            hi = tl.minimum(S, (start_m + 1) * BLOCK_M + (S - T))
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            kt = tl.load(K + n * sk_n + cols[None, :] * sk_t + offs_d[:, None], mask=cols[None, :] < S, other=0.0)
            s = tl.dot(q, kt) * qk_scale  # [BLOCK_M, BLOCK_N], float32
            valid = cols[None, :] < S
            if CAUSAL:
                valid = valid & (cols[None, :] <= q_pos[:, None])
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + n * sv_n + cols[:, None] * sv_t + offs_d[None, :], mask=cols[:, None] < S, other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        acc = acc / l_i[:, None]
        tl.store(
            OUT + n * so_n + rows[:, None] * so_t + offs_d[None, :],
            acc.to(OUT.dtype.element_ty),
            mask=rows[:, None] < T,
        )
        tl.store(LSE + n * T + rows, m_i + tl.math.log2(l_i), mask=rows < T)

    @triton.jit
    def _bwd_dkdv_kernel(
        Q, K, V, DO, LSE, DELTA, DK, DV, qk_scale, sm_scale,
        sq_n, sq_t, sk_n, sk_t, sv_n, sv_t, sdo_n, sdo_t, sdk_n, sdk_t, sdv_n, sdv_t,
        T, S,
        CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        start_n = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        cols = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        k = tl.load(K + n * sk_n + cols[:, None] * sk_t + offs_d[None, :], mask=cols[:, None] < S, other=0.0)
        v = tl.load(V + n * sv_n + cols[:, None] * sv_t + offs_d[None, :], mask=cols[:, None] < S, other=0.0)
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        lo = 0
        if CAUSAL:  # the first query that sees any key of this block (rounded down to a block)
            lo = tl.maximum(0, start_n * BLOCK_N - (S - T))
            lo = (lo // BLOCK_M) * BLOCK_M
        for start_m in range(lo, T, BLOCK_M):
            rows = start_m + offs_m
            in_rows = rows < T
            q = tl.load(Q + n * sq_n + rows[:, None] * sq_t + offs_d[None, :], mask=in_rows[:, None], other=0.0)
            do = tl.load(DO + n * sdo_n + rows[:, None] * sdo_t + offs_d[None, :], mask=in_rows[:, None], other=0.0)
            lse = tl.load(LSE + n * T + rows, mask=in_rows, other=0.0)
            delta = tl.load(DELTA + n * T + rows, mask=in_rows, other=0.0)
            s = tl.dot(q, tl.trans(k)) * qk_scale  # [BLOCK_M, BLOCK_N]
            valid = in_rows[:, None] & (cols[None, :] < S)
            if CAUSAL:
                valid = valid & (cols[None, :] <= rows[:, None] + (S - T))
            p = tl.where(valid, tl.math.exp2(s - lse[:, None]), 0.0)
            dv += tl.dot(tl.trans(p.to(do.dtype)), do)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
        dk = dk * sm_scale
        tl.store(
            DK + n * sdk_n + cols[:, None] * sdk_t + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=cols[:, None] < S
        )
        tl.store(
            DV + n * sdv_n + cols[:, None] * sdv_t + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=cols[:, None] < S
        )

    @triton.jit
    def _bwd_dq_kernel(
        Q, K, V, DO, LSE, DELTA, DQ, qk_scale, sm_scale,
        sq_n, sq_t, sk_n, sk_t, sv_n, sv_t, sdo_n, sdo_t, sdq_n, sdq_t,
        T, S,
        CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        in_rows = rows < T
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q = tl.load(Q + n * sq_n + rows[:, None] * sq_t + offs_d[None, :], mask=in_rows[:, None], other=0.0)
        do = tl.load(DO + n * sdo_n + rows[:, None] * sdo_t + offs_d[None, :], mask=in_rows[:, None], other=0.0)
        lse = tl.load(LSE + n * T + rows, mask=in_rows, other=0.0)
        delta = tl.load(DELTA + n * T + rows, mask=in_rows, other=0.0)
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        hi = S
        if CAUSAL:
            hi = tl.minimum(S, (start_m + 1) * BLOCK_M + (S - T))
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            kt = tl.load(K + n * sk_n + cols[None, :] * sk_t + offs_d[:, None], mask=cols[None, :] < S, other=0.0)
            vt = tl.load(V + n * sv_n + cols[None, :] * sv_t + offs_d[:, None], mask=cols[None, :] < S, other=0.0)
            s = tl.dot(q, kt) * qk_scale
            valid = in_rows[:, None] & (cols[None, :] < S)
            if CAUSAL:
                valid = valid & (cols[None, :] <= rows[:, None] + (S - T))
            p = tl.where(valid, tl.math.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, vt)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(kt.dtype), tl.trans(kt))
        dq = dq * sm_scale
        tl.store(
            DQ + n * sdq_n + rows[:, None] * sdq_t + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=in_rows[:, None]
        )


def _blocks(d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): 64 x 64 tiles fit every supported head size in shared memory."""
    return 64, 64, 4 if d <= 64 else 8


def _check(q: Tensor, k: Tensor, v: Tensor) -> None:
    if triton is None:
        raise RuntimeError("flash_attention needs Triton (it comes with PyTorch's CUDA wheels on Linux)")
    if not supported(q, k, v):
        raise ValueError(
            f"flash_attention: unsupported inputs (dtype {q.dtype}, shapes {tuple(q.shape)}/{tuple(k.shape)}; "
            f"needs bf16/fp16 [n, seq, d_head] with d_head in {_HEAD_DIMS})"
        )


# ----------------------------------------------------------------------------------------------
# Custom ops: opaque to torch.compile, connected to autograd
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("cs336_basics::flash_attn_fwd", mutates_args=())
def _flash_attn_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool) -> tuple[Tensor, Tensor]:
    _check(q, k, v)
    n, t, d = q.shape
    s = k.shape[1]
    out = torch.empty_like(q)
    lse = torch.empty((n, t), dtype=torch.float32, device=q.device)
    bm, bn, warps = _blocks(d)
    _fwd_kernel[(triton.cdiv(t, bm), n)](
        q, k, v, out, lse, scale * _LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        t, s, CAUSAL=causal, D=d, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=2,
    )  # fmt: skip
    return out, lse


@_flash_attn_fwd.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), q.new_empty(q.shape[:2], dtype=torch.float32)


@torch.library.custom_op("cs336_basics::flash_attn_bwd", mutates_args=())
def _flash_attn_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float, causal: bool
) -> tuple[Tensor, Tensor, Tensor]:
    n, t, d = q.shape
    s = k.shape[1]
    dout = dout.contiguous()
    delta = (dout.float() * out.float()).sum(dim=-1)  # [n, seq]: rowsum(P * dP) = rowsum(dO * O)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    bm, bn, warps = _blocks(d)
    _bwd_dkdv_kernel[(triton.cdiv(s, bn), n)](
        q, k, v, dout, lse, delta, dk, dv, scale * _LOG2E, scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), dout.stride(0), dout.stride(1),
        dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        t, s, CAUSAL=causal, D=d, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=2,
    )  # fmt: skip
    _bwd_dq_kernel[(triton.cdiv(t, bm), n)](
        q, k, v, dout, lse, delta, dq, scale * _LOG2E, scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), dout.stride(0), dout.stride(1),
        dq.stride(0), dq.stride(1),
        t, s, CAUSAL=causal, D=d, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=2,
    )  # fmt: skip
    return dq, dk, dv


@_flash_attn_bwd.register_fake
def _(dout, q, k, v, out, lse, scale, causal):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, scale, causal = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale, ctx.causal = scale, causal


def _backward(ctx, dout: Tensor, _dlse: Tensor):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.cs336_basics.flash_attn_bwd(dout, q, k, v, out, lse, ctx.scale, ctx.causal)
    return dq, dk, dv, None, None


_flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)
