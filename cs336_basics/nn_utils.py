"""Training-loss and gradient utilities: cross-entropy, perplexity, global-norm gradient clipping.

Written from scratch (no ``torch.nn.functional``); the multi-tensor ``torch._foreach_*`` kernels are
used where available because they turn "one small kernel per parameter" into a handful of launches,
which matters for models with hundreds of parameter tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cs336_basics.utils.dtensor import is_dtensor, local_tensor

__all__ = ["cross_entropy", "masked_cross_entropy", "perplexity", "clip_grad_norm"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def cross_entropy(logits: Float[Tensor, "... vocab"], targets: Int[Tensor, ...]) -> Float[Tensor, ""]:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)`` over all batch dims.

    ``loss_i = logsumexp(o_i) - o_i[target_i]`` with the row max subtracted first, so it stays finite
    for arbitrarily large logits (x1000 etc.). bf16/fp16 logits are upcast to float32 because
    log-sum-exp over a 50k vocab in bf16 loses several bits of the loss; the result is float32 then.
    Targets must lie in ``[0, V)`` (not checked: that would cost a host sync every step).
    """
    if logits.dim() < 1:
        raise ValueError("cross_entropy: logits must have a vocab dimension")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"cross_entropy: targets shape {tuple(targets.shape)} does not match "
            f"logits batch shape {tuple(logits.shape[:-1])}"
        )
    # Memory matters here: [batch, seq, vocab] is the largest activation in the model. Only one
    # float32 [..., V] temporary is kept for backward (exp is done in place on the shifted copy);
    # the target logit is gathered from the caller's tensor, which is alive anyway.
    low_precision = logits.dtype in _LOW_PRECISION
    work = logits.float() if low_precision else logits
    # The max is a constant shift (its gradient cancels exactly), so detach it: cheaper backward.
    row_max = work.detach().amax(dim=-1, keepdim=True)
    if low_precision:
        shifted = work.sub_(row_max)  # `work` is our own fresh float32 copy
    else:
        shifted = work - row_max
    sum_exp = shifted.exp_().sum(dim=-1)
    log_sum_exp = torch.log(sum_exp) + row_max.squeeze(-1)
    target_logit = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1).to(log_sum_exp.dtype)
    return (log_sum_exp - target_logit).mean()


def masked_cross_entropy(
    logits: Float[Tensor, "... vocab"], targets: Int[Tensor, ...], mask: Tensor, reduction: str = "mean"
) -> Float[Tensor, ""]:
    """Cross-entropy over the positions where ``mask`` is nonzero only (e.g. the assistant's answers).

    ``mean``: their mean (0, with zero gradient, when the mask is all zero: a window of prompt text
    only must not turn into a NaN step); ``sum``: their sum. Same arithmetic per token as
    :func:`cross_entropy` (float32 for low-precision logits, the row max subtracted first).
    """
    work = logits.float()
    row_max = work.detach().amax(dim=-1, keepdim=True)
    log_sum_exp = torch.log((work - row_max).exp().sum(dim=-1)) + row_max.squeeze(-1)
    target_logit = work.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    weight = mask.to(log_sum_exp.dtype)
    total = ((log_sum_exp - target_logit) * weight).sum()
    return total if reduction == "sum" else total / weight.sum().clamp_min(1.0)


def perplexity(mean_loss: float | Tensor) -> float:
    """``exp(mean cross-entropy)``; ``inf`` instead of an OverflowError for a diverged loss."""
    value = float(mean_loss.item() if isinstance(mean_loss, Tensor) else mean_loss)
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _grads(parameters: Iterable[Tensor] | Tensor) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _group_by_device_dtype(tensors: list[Tensor]) -> dict[tuple, list[Tensor]]:
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def _sum_of_squares(tensors: list[Tensor], use_foreach: bool, acc_dtype: torch.dtype) -> Tensor:
    """``sum_i ||t_i||^2`` of plain tensors on one device (the first one's), in ``acc_dtype``."""
    squares: list[Tensor] = []
    device = tensors[0].device
    for (_, dtype), group in _group_by_device_dtype(tensors).items():
        # fp16/bf16 per-tensor norms are computed in float32: an fp16 sum of squares overflows at
        # 65504, and a bf16 norm keeps only ~3 significant digits.
        norm_dtype = torch.float32 if dtype in _LOW_PRECISION else None
        norms = None
        if use_foreach:
            try:
                norms = torch._foreach_norm(group, 2, dtype=norm_dtype)
            except TypeError:  # older torch without the dtype argument
                norms = None
        if norms is None:
            norms = [torch.linalg.vector_norm(g, dtype=norm_dtype) for g in group]
        squares.append(torch.stack(norms).to(acc_dtype).square().sum().to(device))
    return torch.stack(squares).sum()


def _reduce_over_shards(local_sq: Tensor, mesh, placements) -> Tensor:
    """Sum a DTensor's local squared norm over the mesh dimensions it is sharded on.

    Shard(d) on a mesh dimension: each rank along it holds different elements, so their squares
    add up (one all-reduce over that dimension's group). Replicate: every rank already has them
    all, nothing to add. (FSDP2 gradients are Shard(0) after its reduce-scatter.)
    """
    import torch.distributed as dist
    from torch.distributed.tensor import Replicate, Shard

    for dim, placement in enumerate(placements):
        if isinstance(placement, Shard):
            dist.all_reduce(local_sq, op=dist.ReduceOp.SUM, group=mesh.get_group(dim))
        elif not isinstance(placement, Replicate):
            raise ValueError(
                f"clip_grad_norm: cannot clip a gradient with placement {placement} "
                "(only Shard and Replicate DTensor gradients are supported)"
            )
    return local_sq


def clip_grad_norm(parameters: Iterable[Tensor] | Tensor, max_norm: float, foreach: bool | None = None) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the total norm *before* clipping (as a Python float, for logging). One global norm over
    every gradient (parameters without ``.grad`` are skipped); if it exceeds ``max_norm`` each
    gradient is multiplied by ``max_norm / (norm + 1e-6)``, otherwise gradients are untouched.

    Cost: one multi-tensor norm per (device, dtype) group, one reduction, and exactly one host
    sync (reading the norm, which the caller wants to log anyway); the scale is a Python scalar, so
    clipping is one more multi-tensor launch. A non-finite norm (inf/nan gradients, e.g. under an
    fp16 grad scaler) is returned as is and the gradients are left alone: scaling by 0 would turn
    inf into nan, and the caller should skip the step anyway.

    DTensor gradients (FSDP2 shards): the norm is the norm of the *whole* gradient. Each rank sums
    the squares of its local shards, and one all-reduce per (mesh, placements) combination adds
    them up over the sharded mesh dimensions, so every rank gets the same total and the same
    scale. Every rank must call this (it is a collective when DTensors are present).
    """
    if max_norm < 0 or math.isnan(max_norm):
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    grads = _grads(parameters)
    if not grads:
        return 0.0
    use_foreach = foreach if foreach is not None else hasattr(torch, "_foreach_norm")
    # Accumulate squared norms in float32 (float64 if any gradient is float64).
    acc_dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    plain: list[Tensor] = []
    sharded: dict[tuple, list[Tensor]] = {}  # (mesh, placements) -> local shards
    for g in grads:
        if is_dtensor(g):
            sharded.setdefault((g.device_mesh, tuple(g.placements)), []).append(g._local_tensor)
        else:
            plain.append(g)
    device = grads[0].device
    parts: list[Tensor] = []
    if plain:
        parts.append(_sum_of_squares(plain, use_foreach, acc_dtype).to(device))
    for (mesh, placements), shards in sharded.items():
        local_sq = _sum_of_squares(shards, use_foreach, acc_dtype)
        parts.append(_reduce_over_shards(local_sq, mesh, placements).to(device))
    total = torch.stack(parts).sum().sqrt()
    total_norm = float(total.item())  # the single host sync
    if math.isfinite(total_norm) and total_norm > max_norm:
        scale = max_norm / (total_norm + 1e-6)
        local = [local_tensor(g) for g in grads]
        for group in _group_by_device_dtype(local).values():
            if use_foreach:
                torch._foreach_mul_(group, scale)
            else:
                for g in group:
                    g.mul_(scale)
    return total_norm
