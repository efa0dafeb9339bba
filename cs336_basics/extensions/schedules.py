"""Learning-rate schedules beyond the course's cosine: ``--lr_schedule cosine|linear|constant|wsd``.

Every schedule here is a pure function of the step (so a resumed run gets the same rate with no
scheduler state) and starts with the same linear warmup as :func:`cs336_basics.optim.lr_cosine_schedule`
(``it / Tw * max_lr`` for ``it < Tw``). The cosine schedule stays the handout's function, called with
exactly its arguments, so the default run is unchanged.

* ``linear``: after warmup, a straight line from ``max_lr`` at ``Tw`` to ``min_lr`` at ``T`` (``--max_iters``).
* ``constant``: ``max_lr`` after warmup.
* ``wsd`` (warmup-stable-decay; Zhai et al. 2022 "Scaling Vision Transformers", Hu et al. 2024
  "MiniCPM", Hägele et al. 2024 "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
  Durations"): ``max_lr`` until the last ``decay_frac`` of the run, then a decay to ``min_lr`` at
  ``T``, linear, ``sqrt`` (``1 - sqrt(progress)``, the cooldown Hägele et al. found best) or ``cosine``.

:func:`make_schedule` picks one once at setup and returns ``step -> lr``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from cs336_basics.optim import lr_cosine_schedule

LR_SCHEDULES = ("cosine", "linear", "constant", "wsd")
DECAY_SHAPES = ("linear", "sqrt", "cosine")


def _warmup(it: int, max_lr: float, warmup_iters: int) -> float:
    """The shared linear warmup (the handout's): ``it / Tw * max_lr``; valid for ``it < Tw``."""
    return it / warmup_iters * max_lr


def _check(it: int, warmup_iters: int, max_iters: int, name: str) -> None:
    if it < 0:
        raise ValueError(f"{name}: iteration must be >= 0, got {it}")
    if warmup_iters < 0 or max_iters < 0:
        raise ValueError(f"{name}: warmup_iters ({warmup_iters}) and max_iters ({max_iters}) must be >= 0")


def lr_linear_schedule(it: int, max_lr: float, min_lr: float, warmup_iters: int, max_iters: int) -> float:
    """Warmup, then ``max_lr`` falling linearly to ``min_lr`` at ``max_iters``, then ``min_lr``."""
    _check(it, warmup_iters, max_iters, "lr_linear_schedule")
    if it < warmup_iters:
        return _warmup(it, max_lr, warmup_iters)
    if it >= max_iters:
        return min_lr
    span = max_iters - warmup_iters
    return max_lr - (max_lr - min_lr) * (it - warmup_iters) / span


def lr_constant_schedule(it: int, max_lr: float, warmup_iters: int) -> float:
    """Warmup, then ``max_lr`` for good."""
    _check(it, warmup_iters, 0, "lr_constant_schedule")
    return _warmup(it, max_lr, warmup_iters) if it < warmup_iters else max_lr


def check_decay_frac(decay_frac: float) -> None:
    """The rule of ``decay_frac`` (the flag's and the schedule's): a fraction of the run in (0, 1]; 0
    would be no decay at all (``--lr_schedule constant`` says that), 1 the whole run."""
    if isinstance(decay_frac, bool) or not (isinstance(decay_frac, (int, float)) and 0.0 < decay_frac <= 1.0):
        raise ValueError(f"decay_frac must be in (0, 1], got {decay_frac!r}")


def wsd_decay_start(max_iters: int, decay_frac: float) -> float:
    """The step where the decay of a WSD schedule begins: the last ``decay_frac`` of ``max_iters``."""
    return max_iters * (1.0 - decay_frac)


def lr_wsd_schedule(
    it: int,
    max_lr: float,
    min_lr: float,
    warmup_iters: int,
    max_iters: int,
    decay_frac: float = 0.2,
    decay_shape: str = "linear",
) -> float:
    """Warmup, stable at ``max_lr``, then decay to ``min_lr`` over the last ``decay_frac`` of the run.

    With ``D = max_iters * (1 - decay_frac)`` and ``p = (it - D) / (max_iters - D)``:
    ``linear``: ``max - (max - min) * p``; ``sqrt``: ``max - (max - min) * sqrt(p)``;
    ``cosine``: ``min + (max - min) * (1 + cos(pi p)) / 2``. ``min_lr`` from ``max_iters`` on.
    """
    _check(it, warmup_iters, max_iters, "lr_wsd_schedule")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"lr_wsd_schedule: decay_shape {decay_shape!r}: choose one of {', '.join(DECAY_SHAPES)}")
    try:
        check_decay_frac(decay_frac)
    except ValueError as err:
        raise ValueError(f"lr_wsd_schedule: {err}") from None
    if it < warmup_iters:
        return _warmup(it, max_lr, warmup_iters)
    if it >= max_iters:
        return min_lr
    start = wsd_decay_start(max_iters, decay_frac)
    if it < start:
        return max_lr
    p = (it - start) / (max_iters - start)
    if decay_shape == "linear":
        return max_lr - (max_lr - min_lr) * p
    if decay_shape == "sqrt":
        return max_lr - (max_lr - min_lr) * math.sqrt(p)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * p)) * (max_lr - min_lr)


def make_schedule(
    kind: str,
    *,
    max_lr: float,
    min_lr: float,
    warmup_iters: int,
    max_iters: int,
    decay_frac: float = 0.2,
    decay_shape: str = "linear",
) -> Callable[[int], float]:
    """``step -> lr`` for ``--lr_schedule kind``, chosen once (the loop calls it without branching)."""
    if kind == "cosine":  # the handout's function with exactly the arguments the loop always passed
        return functools.partial(lr_cosine_schedule, max_lr=max_lr, min_lr=min_lr, warmup_iters=warmup_iters,
                                 cosine_cycle_iters=max_iters)  # fmt: skip
    if kind == "linear":
        return functools.partial(lr_linear_schedule, max_lr=max_lr, min_lr=min_lr, warmup_iters=warmup_iters,
                                 max_iters=max_iters)  # fmt: skip
    if kind == "constant":
        return functools.partial(lr_constant_schedule, max_lr=max_lr, warmup_iters=warmup_iters)
    if kind == "wsd":
        return functools.partial(lr_wsd_schedule, max_lr=max_lr, min_lr=min_lr, warmup_iters=warmup_iters,
                                 max_iters=max_iters, decay_frac=decay_frac, decay_shape=decay_shape)  # fmt: skip
    raise ValueError(f"unknown lr schedule {kind!r}: choose one of {', '.join(LR_SCHEDULES)}")
