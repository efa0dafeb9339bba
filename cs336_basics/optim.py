"""AdamW and the cosine learning-rate schedule (handout sections 4.3 and 4.4).

Only the ``torch.optim.Optimizer`` base class is used (for param groups, ``state`` and
``state_dict``/``load_state_dict``); the update itself is written out here, one parameter at a time.
The training program uses the fast twin, ``cs336_basics.fast.optim.AdamW`` (multi-tensor kernels,
updates that can be skipped on the device): the same arithmetic and the same state, so a checkpoint
of one resumes in the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

# The rule of each optimizer hyperparameter, written once (the training program's flags, Muon and the
# engine's parameter groups check with it too): the decay rate of a moving average (beta1, beta2,
# Muon's momentum) is a number in [0, 1); every other one (a learning rate, eps, a weight decay) is a
# finite number >= 0.
MOVING_AVERAGE_RATES = ("beta1", "beta2", "momentum")


def check_hparam(name: str, value: object) -> None:
    """Refuse a bad value of the hyperparameter ``name`` with a ValueError naming it."""
    if name in MOVING_AVERAGE_RATES:
        rule = "in [0, 1)"
        ok = isinstance(value, (int, float)) and 0.0 <= value < 1.0
    else:
        rule = "a finite number >= 0"
        ok = isinstance(value, (int, float)) and value >= 0.0 and math.isfinite(value)
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def check_hparams(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """Refuse bad hyperparameters at construction with one line, not NaNs at step 1000."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"AdamW: betas must be a pair (beta1, beta2), got {betas!r}") from None
    try:
        for name, value in (
            ("lr", lr),
            ("beta1", beta1),
            ("beta2", beta2),
            ("eps", eps),
            ("weight_decay", weight_decay),
        ):
            check_hparam(name, value)
    except ValueError as err:
        raise ValueError(f"AdamW: {err}") from None


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay, the course's Algorithm 1. For each parameter with a gradient,
    with ``t`` counting that parameter's updates from 1::

        m  = b1 * m + (1 - b1) * g
        v  = b2 * v + (1 - b2) * g**2
        lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)
        p -= lr_t * m / (sqrt(v) + eps)
        p -= lr * weight_decay * p          # decay applied after the Adam step

    (``torch.optim.AdamW`` decays before the Adam step; the two differ by O(lr^2 * wd).) The
    hyperparameters are read from each param group at every step, so a schedule can set
    ``group["lr"]``. State per parameter: ``step`` (int), ``exp_avg`` (m), ``exp_avg_sq`` (v).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        check_hparams(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                lr_t = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
        return loss


def lr_cosine_schedule(it: int, max_lr: float, min_lr: float, warmup_iters: int, cosine_cycle_iters: int) -> float:
    """Linear warmup to ``max_lr``, cosine decay to ``min_lr`` at ``cosine_cycle_iters``, then flat.

    ``it < Tw``: ``it / Tw * max_lr``; ``Tw <= it <= Tc``:
    ``min + 0.5 * (1 + cos(pi * (it - Tw) / (Tc - Tw))) * (max - min)``; ``it > Tc``: ``min_lr``.
    A pure function of the step, so a resumed run gets the same rate with no scheduler state.
    ``Tw == 0`` means no warmup; ``Tc == Tw`` means ``max_lr`` at ``it == Tw``, then ``min_lr``.
    """
    if it < 0:
        raise ValueError(f"lr_cosine_schedule: iteration must be >= 0, got {it}")
    if warmup_iters < 0 or cosine_cycle_iters < 0:
        raise ValueError(
            f"lr_cosine_schedule: warmup_iters ({warmup_iters}) and cosine_cycle_iters "
            f"({cosine_cycle_iters}) must be >= 0"
        )
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    if it > cosine_cycle_iters:
        return min_lr
    span = cosine_cycle_iters - warmup_iters
    if span <= 0:  # it == Tw == Tc: the start of a zero-length decay
        return max_lr
    progress = (it - warmup_iters) / span
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
