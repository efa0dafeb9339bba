"""Training-loss and gradient utilities: cross-entropy, perplexity, global-norm gradient clipping.

Written from scratch (no ``torch.nn.functional``). ``clip_grad_norm`` here is the handout's plain
version; its fast twin (multi-tensor kernels, FSDP2 shards, no host sync) is
:mod:`cs336_basics.fast_nn_utils`, which the training program uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

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


def clip_grad_norm(parameters: Iterable[Tensor] | Tensor, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``; returns the norm.

    The norm is taken over every gradient together (parameters without ``.grad`` are skipped). If it
    exceeds ``max_norm``, each gradient is multiplied by ``max_norm / (norm + 1e-6)`` (the handout's
    epsilon, for numerical stability). The fast twin used by the training program (multi-tensor kernels,
    FSDP2 shards, no host sync) is :mod:`cs336_basics.fast_nn_utils`.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total_norm = math.sqrt(sum(float(g.detach().double().square().sum()) for g in grads))
    if total_norm > max_norm:
        scale = max_norm / (total_norm + 1e-6)
        for g in grads:
            g.mul_(scale)
    return total_norm
