"""The loss and the gradient clip (handout sections 4.1 and 4.5): cross-entropy and global-norm clipping.

Written from scratch (no ``torch.nn.functional``). The training program uses the fast twins in
:mod:`cs336_basics.fast.nn_utils` (multi-tensor kernels, FSDP2 shards, no host sync; a masked loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["cross_entropy", "log_sum_exp", "clip_grad_norm"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def log_sum_exp(logits: Float[Tensor, "... vocab"]) -> Float[Tensor, " ..."]:
    """``log(sum(exp(logits)))`` over the last dimension, with the row max subtracted first, so it stays
    finite for arbitrarily large logits (x1000 etc.). bf16/fp16 logits are upcast to float32 because
    log-sum-exp over a 50k vocab in bf16 loses several bits; the result is float32 then. (The engine's
    losses use this one too.)"""
    # Memory matters here: [batch, seq, vocab] is the largest activation in the model. Only one
    # float32 [..., V] temporary is kept for backward (exp is done in place on the shifted copy).
    low_precision = logits.dtype in _LOW_PRECISION
    work = logits.float() if low_precision else logits
    # The max is a constant shift (its gradient cancels exactly), so detach it: cheaper backward.
    row_max = work.detach().amax(dim=-1, keepdim=True)
    if low_precision:
        shifted = work.sub_(row_max)  # `work` is our own fresh float32 copy
    else:
        shifted = work - row_max
    sum_exp = shifted.exp_().sum(dim=-1)
    return torch.log(sum_exp) + row_max.squeeze(-1)


def cross_entropy(logits: Float[Tensor, "... vocab"], targets: Int[Tensor, ...]) -> Float[Tensor, ""]:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)`` over all batch dims.

    ``loss_i = logsumexp(o_i) - o_i[target_i]`` (:func:`log_sum_exp`: finite for any logits, float32
    for bf16/fp16 ones). Targets must lie in ``[0, V)`` (not checked: that would cost a host sync
    every step).
    """
    if logits.dim() < 1:
        raise ValueError("cross_entropy: logits must have a vocab dimension")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"cross_entropy: targets shape {tuple(targets.shape)} does not match "
            f"logits batch shape {tuple(logits.shape[:-1])}"
        )
    lse = log_sum_exp(logits)
    # The target logit is gathered from the caller's tensor, which is alive anyway.
    target_logit = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1).to(lse.dtype)
    return (lse - target_logit).mean()


def clip_grad_norm(parameters: Iterable[Tensor] | Tensor, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``; returns the norm.

    The norm is taken over every gradient together (parameters without ``.grad`` are skipped). If it
    exceeds ``max_norm``, each gradient is multiplied by ``max_norm / (norm + 1e-6)`` (the handout's
    epsilon, for numerical stability).
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
