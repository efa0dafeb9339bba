"""One optimizer step, one evaluation, and the guard against non-finite steps.

``train_step`` is the whole of "learning" in the training program: forward and backward over the
micro-batches, unscale, clip, and update the weights only when the loss and gradient norm are
finite. ``NonFiniteGuard`` decides what a run of skipped steps means, and ``evaluate`` measures.
What the loss *is* comes from an objective object chosen once at setup (:func:`build_objective`):
``NextToken`` (the course's cross-entropy), ``diffusion.MaskedDiffusion``, either wrapped in
``WithRouterLoss`` for a mixture-of-experts model; the step and the loop never branch on it.
Nothing here knows about devices, DDP or precision beyond what it is handed (an autocast context
factory, a grad scaler, a ``no_sync`` factory), all decided once in :mod:`cs336_basics.training.runtime`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor, nn

from cs336_basics.corpus.tokens import get_batch
from cs336_basics.fast.nn_utils import clip_grad_norm, clip_grad_norm_on_device, masked_cross_entropy
from cs336_basics.nn_utils import cross_entropy
from cs336_basics.training import runtime
from cs336_basics.training.state import Snapshot, TrainState, make_eval_rng

Batch = tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]
Autocast = Callable[[], contextlib.AbstractContextManager]


# ==============================================================================================
# objectives: what the loss is (chosen once, at setup)
# ==============================================================================================
class Objective(Protocol):
    """The training objective. ``key`` identifies the micro-batch (``(step, i)`` in training,
    ``(split, batch)`` in evaluation), for objectives that draw noise: it makes the draw a pure
    function of where the run is, so resuming replays it exactly."""

    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, autocast: Autocast, key: tuple, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(loss to backpropagate, the LM loss to report)``; with ``mask``, over its targets only."""
        ...

    def eval_batch(
        self, model: nn.Module, x: Tensor, y: Tensor, autocast: Autocast, key: tuple, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Any]:
        """``(mean loss, correct predictions, predictions counted)`` on one batch; with ``mask``,
        ``(summed loss, correct, count)`` over the masked targets (``evaluate`` divides)."""
        ...

    def log_record(self) -> dict[str, Any]:
        """Extra fields for the next train log line (and reset what they summarise)."""
        ...


class NextToken:
    """The course's objective: cross-entropy of the next token at every position.

    ``compile=True`` (the run's ``--compile``) compiles the training loss too: the compiler fuses the
    vocabulary-wide float32 cast, log-sum-exp and their backward into a few passes over the logits,
    where eager runs one pass over the ``[tokens, vocab]`` float32 tensor per operation."""

    def __init__(self, compile: bool = False) -> None:
        self.cross_entropy = torch.compile(cross_entropy) if compile else cross_entropy

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, autocast: Autocast, key: tuple, mask=None):
        with autocast():
            logits = model(x)
        loss = self.cross_entropy(logits, y) if mask is None else masked_cross_entropy(logits, y, mask)
        return loss, loss

    def eval_batch(self, model: nn.Module, x: Tensor, y: Tensor, autocast: Autocast, key: tuple, mask=None):
        with autocast():
            logits = model(x)
        right = logits.argmax(dim=-1) == y
        if mask is None:
            return cross_entropy(logits, y), right.sum(), y.numel()
        return masked_cross_entropy(logits, y, mask, reduction="sum"), (right & (mask != 0)).sum(), mask.sum()

    def log_record(self) -> dict[str, Any]:
        return {}


class WithRouterLoss:
    """An objective plus a mixture-of-experts model's router losses (``moe.RouterLoss``).

    Training adds the weighted router losses to the backpropagated loss; the reported loss stays
    the LM loss, so it compares with a dense model's. Evaluation is the inner objective's.
    """

    def __init__(self, inner: Objective, router_loss: Any) -> None:
        self.inner, self.router_loss = inner, router_loss

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, autocast: Autocast, key: tuple, mask=None):
        total, lm = self.inner.loss(model, x, y, autocast, key, mask)
        return total + self.router_loss(), lm

    def eval_batch(self, model: nn.Module, x: Tensor, y: Tensor, autocast: Autocast, key: tuple, mask=None):
        return self.inner.eval_batch(model, x, y, autocast, key, mask)

    def log_record(self) -> dict[str, Any]:
        return {**self.inner.log_record(), **self.router_loss.take_record()}


def build_objective(s: Any, model: nn.Module, rank: int) -> Objective:
    """The objective of a run's settings (``--objective``, and ``--ffn_type moe``'s router losses)."""
    objective: Objective = NextToken(compile=s.compile)
    if s.objective == "diffusion":
        from cs336_basics.extensions.diffusion import MaskedDiffusion

        objective = MaskedDiffusion(model.config.mask_token_id, s.diffusion_eps, seed=s.seed, rank=rank)
    if s.ffn_type == "moe":
        from cs336_basics.extensions.moe import RouterLoss

        coefs = (s.moe_load_balance_coef, s.moe_aux_coef, s.moe_z_coef)
        objective = WithRouterLoss(objective, RouterLoss(model, *coefs))
    return objective


# ==============================================================================================
# one step, one evaluation
# ==============================================================================================


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over micro-batches and ranks (NaN/Inf when the step went bad)
    grad_norm: float  # global gradient norm before clipping
    applied: bool  # the optimizer updated the weights
    scaler_skipped: bool = False  # fp16 only: the loss scaler found overflowed gradients and skipped


@dataclass(frozen=True)
class DeviceStepResult:
    """A step's outcome still on the device (no host sync): ``NonFiniteGuard.settle`` reads it back."""

    loss: Tensor
    grad_norm: Tensor
    skipped: Tensor  # bool: the update was a no-op (non-finite loss or norm, or the guard gave up)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: Iterable[Batch],
    *,
    accum_steps: int,
    grad_clip: float,
    autocast: Callable[[], contextlib.AbstractContextManager],
    no_sync: Callable[[], contextlib.AbstractContextManager],
    objective: Objective | None = None,
    step: int = 0,
    guard: NonFiniteGuard | None = None,
) -> StepResult | DeviceStepResult:
    """Accumulate gradients over ``accum_steps`` micro-batches, clip, and step if all is finite.

    ``objective`` (default :class:`NextToken`) computes each micro-batch's loss; ``step`` is the
    iteration being taken (objectives that draw noise key it on ``(step, micro-batch)``).

    With a ``guard`` (and no fp16 loss scaler) nothing is read back to the host: the loss, the norm
    and a ``found_nonfinite`` flag stay on the device, the optimizer's update is a no-op there when the
    flag is set, and the result is a :class:`DeviceStepResult` for ``guard.settle`` to read back at the
    next logging or checkpoint interval. With fp16 the scaler checks the gradients itself (one sync).
    """
    objective = NextToken() if objective is None else objective
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses = []
    for i, batch in enumerate(batches):
        x, y = batch[0], batch[1]
        mask = batch[2] if len(batch) == 3 else None  # the loss mask of y (conversation data)
        last = i == accum_steps - 1
        # Under DDP only the last micro-batch's backward all-reduces the (accumulated) gradients.
        with contextlib.nullcontext() if last else no_sync():
            total, loss = objective.loss(model, x, y, autocast, (step, i), mask)
            # Dividing by accum_steps makes the accumulated gradient the mean over micro-batches;
            # the scaler multiplies fp16 losses up so small gradients don't underflow.
            scaler.scale(total / accum_steps).backward()
        losses.append(loss.detach().float())
    scaler.unscale_(optimizer)  # true gradients again, so clipping sees their real norm
    if guard is not None and not scaler.is_enabled():
        norm = clip_grad_norm_on_device(params, grad_clip if grad_clip > 0 else math.inf)
        loss_t = runtime.all_reduce_mean(torch.stack(losses).mean())
        found_nonfinite = ~(torch.isfinite(loss_t) & torch.isfinite(norm))
        skip = guard.skip_flag(found_nonfinite)
        optimizer.step(skip_if=skip)
        optimizer.zero_grad(set_to_none=True)
        return DeviceStepResult(loss_t, norm, skip)
    grad_norm = clip_grad_norm(params, grad_clip if grad_clip > 0 else math.inf)
    mean_loss = runtime.all_reduce_mean(torch.stack(losses).mean()).item()  # the one host sync per step

    applied = scaler_skipped = False
    # fp16: an overflowed (inf) norm is the scaler's business (it skips and lowers its scale).
    if math.isfinite(mean_loss) and (math.isfinite(grad_norm) or scaler.is_enabled()):
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        scaler_skipped = scale_before is not None and scaler.get_scale() < scale_before
        applied = not scaler_skipped
    else:
        scaler.update()  # keeps the scaler's bookkeeping consistent after unscale_
    optimizer.zero_grad(set_to_none=True)
    return StepResult(mean_loss, grad_norm, applied, scaler_skipped)


class NonFiniteGuard:
    """Counts consecutive non-finite steps and remembers the last good state before them.

    A skipped step leaves weights and optimizer untouched, so "the last good state" is just the
    step counter and the data stream as they were before the first bad step of the streak.
    """

    def __init__(self, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self.streak = 0
        self.last_good: Snapshot | None = None
        self.scaler_skips = 0  # fp16 overflow skips: expected now and then, counted, never a failure
        # The device-side twin of the streak (see skip_flag) and the steps not yet read back.
        self._device_streak: Tensor | None = None
        self._gave_up_on_device: Tensor | None = None
        self._pending: list[tuple[DeviceStepResult, Snapshot]] = []

    def skip_flag(self, found_nonfinite: Tensor) -> Tensor:
        """The device flag that skips this step's update: non-finite, or the streak already reached
        ``max_bad_steps`` since the last read-back. The second part keeps the weights at the last good
        state until the loop reads the flags back and stops, as if it had stopped at once."""
        if self._device_streak is None:
            self._device_streak = torch.zeros((), dtype=torch.int64, device=found_nonfinite.device)
            self._gave_up_on_device = torch.zeros((), dtype=torch.bool, device=found_nonfinite.device)
        skip = found_nonfinite | self._gave_up_on_device
        self._device_streak = (self._device_streak + 1) * found_nonfinite
        self._gave_up_on_device = self._gave_up_on_device | (self._device_streak >= self.max_bad_steps)
        return skip

    def record(self, result: DeviceStepResult, before: Snapshot) -> None:
        self._pending.append((result, before))

    def settle(self) -> list[tuple[int, StepResult, str | None, int]]:
        """Read back the steps recorded since the last call (one host sync) and :meth:`observe` each
        in order, stopping where the guard gives up: (iteration, result, problem line, streak) each."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        values = torch.stack(
            [torch.stack([r.loss.float(), r.grad_norm.float(), r.skipped.float()]) for r, _ in pending]
        ).tolist()
        out = []
        for (loss, norm, skipped), (_, before) in zip(values, pending):
            result = StepResult(loss, norm, applied=not skipped)
            problem = self.observe(result, before)
            out.append((before.iteration + 1, result, problem, self.streak))
            if self.gave_up:
                break
        return out

    def observe(self, result: StepResult, before: Snapshot) -> str | None:
        """Record one step; a one-line description when it was non-finite, else None."""
        self.scaler_skips += result.scaler_skipped
        if result.applied or result.scaler_skipped:
            self.streak, self.last_good = 0, None
            return None
        if self.streak == 0:
            self.last_good = before
        self.streak += 1
        what = "loss" if not math.isfinite(result.loss) else "gradient norm"
        return f"Non-finite {what} at iteration {before.iteration + 1} ({self.streak}/{self.max_bad_steps} in a row): update skipped"

    @property
    def gave_up(self) -> bool:
        return self.streak >= self.max_bad_steps


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: np.ndarray,
    state: TrainState,
    *,
    split: str,
    batches: int,
    batch_size: int,
    context_length: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    objective: Objective | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[float, float]:
    """Mean loss and next-token accuracy over ``batches`` fixed batches (averaged over ranks); with a
    loss mask, both over the masked targets of all batches and ranks. ``on_batch(n)`` is told each
    batch done (the progress bar).

    With ``diffusion.MaskedDiffusion`` the loss is the diffusion bound (nats/token) and the accuracy
    is over the masked positions.
    """
    objective = NextToken() if objective is None else objective
    rng = make_eval_rng(state.seed, state.rank, split)
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, correct, count, masked?
    try:
        for b in range(batches):
            batch = get_batch(data, batch_size, context_length, device, rng=rng)
            x, y, mask = batch[0], batch[1], (batch[2] if len(batch) == 3 else None)
            loss, correct, count = objective.eval_batch(model, x, y, autocast, (split, b), mask)
            totals[0] += loss.double()
            totals[1] += correct.double()
            totals[2] += count
            totals[3] += mask is not None  # masked: sums over the masked targets, divided by their count below
            if on_batch is not None:
                on_batch(b + 1)
    finally:
        model.train(was_training)
    runtime.all_reduce_sum(totals)
    loss_sum, correct, count, masked = totals.tolist()
    if masked:
        return loss_sum / max(count, 1.0), correct / max(count, 1.0)
    return loss_sum / (batches * state.world_size), correct / max(count, 1.0)
