"""Fast twin of :func:`cs336_basics.nn_utils.clip_grad_norm` (the global gradient norm with multi-tensor
kernels, float32 accumulation, FSDP2 (DTensor) shards, and a variant with no host sync), and the
training program's other loss helpers: a cross-entropy over masked targets only, perplexity.

The textbook's version (:mod:`cs336_basics.nn_utils`) is the handout's ten lines (a Python loop over
gradients). This one uses the multi-tensor ``torch._foreach_*`` kernels, which turn "one small kernel
per parameter" into a handful of launches (PyTorch's own ``clip_grad_norm_(foreach=True)`` does the
same), and :func:`clip_grad_norm_on_device` keeps the norm and the clipping decision on the device,
so a training step never waits for the GPU (the ``found_inf`` pattern of PyTorch's fused optimizers).
The training step uses this module; ``tests/test_fast_nn_utils_ref.py`` ties it to the textbook's and to
``torch.nn.utils.clip_grad_norm_``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cs336_basics.nn_utils import log_sum_exp
from cs336_basics.utils.dtensor import is_dtensor, local_tensor

__all__ = ["clip_grad_norm", "clip_grad_norm_on_device", "global_grad_norm", "masked_cross_entropy", "perplexity"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


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


def global_grad_norm(grads: list[Tensor], foreach: bool | None = None) -> Tensor:
    """The L2 norm of all of ``grads`` together, as a 0-dim tensor on the first gradient's device.

    One multi-tensor norm per (device, dtype) group, squares accumulated in float32 (float64 if any
    gradient is float64). DTensor gradients (FSDP2 shards): each rank sums the squares of its local
    shards, and one all-reduce per (mesh, placements) combination adds them up over the sharded mesh
    dimensions, so every rank gets the norm of the *whole* gradient. Every rank must call this (it is a
    collective when DTensors are present). No host sync.
    """
    use_foreach = foreach if foreach is not None else hasattr(torch, "_foreach_norm")
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
    return torch.stack(parts).sum().sqrt()


def _scale_grads(grads: list[Tensor], scale: float | Tensor, use_foreach: bool) -> None:
    local = [local_tensor(g) for g in grads]
    for group in _group_by_device_dtype(local).values():
        if use_foreach:
            torch._foreach_mul_(group, scale)
        else:
            for g in group:
                g.mul_(scale)


def clip_grad_norm(parameters: Iterable[Tensor] | Tensor, max_norm: float, foreach: bool | None = None) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the total norm *before* clipping (as a Python float, for logging). Same rule as the
    textbook's :func:`cs336_basics.nn_utils.clip_grad_norm`: if the norm exceeds ``max_norm`` each gradient is
    multiplied by ``max_norm / (norm + 1e-6)``. Cost: :func:`global_grad_norm`, one host sync (reading
    the norm), and one multi-tensor launch for the scale (a Python scalar). A non-finite norm (inf/nan
    gradients, e.g. under an fp16 grad scaler) is returned as is and the gradients are left alone:
    scaling by 0 would turn inf into nan, and the caller should skip the step anyway.
    """
    if max_norm < 0 or math.isnan(max_norm):
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    grads = _grads(parameters)
    if not grads:
        return 0.0
    use_foreach = foreach if foreach is not None else hasattr(torch, "_foreach_norm")
    total_norm = float(global_grad_norm(grads, use_foreach).item())  # the single host sync
    if math.isfinite(total_norm) and total_norm > max_norm:
        _scale_grads(grads, max_norm / (total_norm + 1e-6), use_foreach)
    return total_norm


def clip_grad_norm_on_device(
    parameters: Iterable[Tensor] | Tensor, max_norm: float, foreach: bool | None = None
) -> Tensor:
    """:func:`clip_grad_norm` without the host sync: returns the norm as a 0-dim device tensor.

    The decision "finite and above ``max_norm``" is a device tensor, and the scale is
    ``max_norm / (norm + 1e-6)`` computed in float64 and rounded to float32, which is what the Python
    float of :func:`clip_grad_norm` becomes inside the multiply: the gradients come out bit for bit the
    same (float32 gradients; tied by the test). When the norm is not above ``max_norm`` (or not
    finite) the scale is exactly 1.0, so the gradients are unchanged.
    """
    if max_norm < 0 or math.isnan(max_norm):
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    grads = _grads(parameters)
    if not grads:
        return torch.zeros((), dtype=torch.float32)
    use_foreach = foreach if foreach is not None else hasattr(torch, "_foreach_norm")
    total = global_grad_norm(grads, use_foreach)
    if math.isinf(max_norm):  # clipping off: no scale pass at all
        return total
    wide = total.double()
    clip = torch.isfinite(wide) & (wide > max_norm)
    scale = torch.where(clip, max_norm / (wide + 1e-6), torch.ones_like(wide)).float()
    _scale_grads(grads, scale, use_foreach)
    return total


# ----------------------------------------------------------------------------------------------
# The loss over some targets only (chat fine-tuning), and perplexity
# ----------------------------------------------------------------------------------------------
def masked_cross_entropy(
    logits: Float[Tensor, "... vocab"], targets: Int[Tensor, ...], mask: Tensor, reduction: str = "mean"
) -> Float[Tensor, ""]:
    """Cross-entropy over the positions where ``mask`` is nonzero only (e.g. the assistant's answers).

    ``mean``: their mean (0, with zero gradient, when the mask is all zero: a window of prompt text
    only must not turn into a NaN step); ``sum``: their sum. Per token the textbook's arithmetic
    (:func:`cs336_basics.nn_utils.log_sum_exp`, in float32).
    """
    logits = logits.float()  # float32 throughout (also for float64 logits, which cross_entropy keeps)
    lse = log_sum_exp(logits)
    target_logit = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    weight = mask.to(lse.dtype)
    total = ((lse - target_logit) * weight).sum()
    return total if reduction == "sum" else total / weight.sum().clamp_min(1.0)


def perplexity(mean_loss: float | Tensor) -> float:
    """``exp(mean cross-entropy)``; ``inf`` instead of an OverflowError for a diverged loss."""
    value = float(mean_loss.item() if isinstance(mean_loss, Tensor) else mean_loss)
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf
