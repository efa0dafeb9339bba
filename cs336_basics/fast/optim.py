"""The training program's optimizers: a base whose step can be skipped on the device, the fast AdamW,
and the named parameter groups AdamW and Muon use.

``AdamW`` here is the fast twin of the textbook's ``cs336_basics.optim.AdamW``: the same update
(the course's Algorithm 1) and the same state (``step``, ``exp_avg``, ``exp_avg_sq``), computed with
the multi-tensor ``torch._foreach_*`` kernels, on FSDP2 shards, and skippable without a host sync
(:class:`GroupStepOptimizer`). ``tests/test_optim_ref.py`` holds the two equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from cs336_basics.optim import check_hparam, check_hparams
from cs336_basics.utils.dtensor import local_tensor

__all__ = ["AdamW", "GroupStepOptimizer", "adamw_group_step", "param_groups", "OPTIMIZERS"]


def keep_step_how(opt: torch.optim.Optimizer, keys: Iterable[str], load: Callable[[], None]) -> None:
    """Run ``load`` (a ``load_state_dict``), then put back the groups' ``keys`` as they were before it."""
    how = [{k: g[k] for k in keys if k in g} for g in opt.param_groups]
    load()
    for g, keep in zip(opt.param_groups, how):
        g.update(keep)


class GroupStepOptimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` with the usual ``step(closure)``: evaluate the closure (with grad
    enabled) if one is given, then update each param group with :meth:`group_step`.

    ``step(skip_if=flag)``, with ``flag`` a bool tensor on the device, makes the update a no-op on the
    device when the flag is set (weights and state tensors keep their values), without reading the flag
    back: the ``found_inf`` technique of PyTorch's fused optimizers, written generically (the touched
    tensors are copied first and selected back with ``torch.where``). When the flag is clear the update
    is the same arithmetic as ``step()``. Cost: one copy of the touched tensors (weights and state) per
    step, transient. Integer step counts are host-side, so they advance either way until
    :meth:`settle_skips` reads the flags back (at a logging or checkpoint interval) and takes the
    skipped steps off again; the steps between a skipped one and that read-back use AdamW's bias
    correction for a count that is ahead by the skips (a small deviation, only after a non-finite step; none
    when every step is finite, and none at read-back steps).
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, *, skip_if: Tensor | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if skip_if is None:
            for group in self.param_groups:
                self.group_step(group)
            return loss
        stepped = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    stepped.append(p)
                    if len(self.state[p]) == 0:  # allocated first, so that a skip restores it too
                        self.init_state(p, self.state[p], group)
        touched = [local_tensor(t) for p in stepped for t in (p, *self.state[p].values()) if isinstance(t, Tensor)]
        saved = [t.clone() for t in touched]
        for group in self.param_groups:
            self.group_step(group)
        for t, old in zip(touched, saved):
            torch.where(skip_if, old, t, out=t)
        self.__dict__.setdefault("_pending_skips", []).append((skip_if, stepped))
        return loss

    def settle_skips(self) -> int:
        """Read back the ``skip_if`` flags since the last call (one host sync); take each skipped step
        off the integer step counts of the parameters it would have updated. Returns the skips."""
        pending = self.__dict__.pop("_pending_skips", [])
        if not pending:
            return 0
        flags = torch.stack([flag.reshape(()) for flag, _ in pending]).tolist()
        for skipped, (_, params) in zip(flags, pending):
            if skipped:
                for p in params:
                    if isinstance(self.state[p].get("step"), int):
                        self.state[p]["step"] -= 1
        return int(sum(flags))

    # Group settings that say how a step is computed, not what was learned: a resumed optimizer keeps
    # the ones it was constructed with instead of taking the checkpoint's.
    STEP_HOW_KEYS: tuple[str, ...] = ("foreach",)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        keep_step_how(self, self.STEP_HOW_KEYS, lambda: super(GroupStepOptimizer, self).load_state_dict(state_dict))

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Allocate a parameter's state before its first update (``group_step`` does it otherwise)."""

    def group_step(self, group: dict[str, Any]) -> None:
        raise NotImplementedError


class AdamW(GroupStepOptimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), exactly as the course specifies.

    For each parameter with a gradient, with ``t`` counting that parameter's updates from 1::

        m  = b1 * m + (1 - b1) * g
        v  = b2 * v + (1 - b2) * g**2
        lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)
        p -= lr_t * m / (sqrt(v) + eps)
        p -= lr * weight_decay * p          # decay applied *after* the Adam step

    (``torch.optim.AdamW`` decays *before* the Adam step; the two differ by O(lr^2 * wd).)

    Hyperparameters are read from each param group at every step, so a schedule can set
    ``group["lr"]``. State per parameter: ``step`` (a Python int), ``exp_avg``, ``exp_avg_sq`` (same
    dtype/device as the parameter), allocated once on the first step. ``state_dict()`` /
    ``load_state_dict()`` round-trip all of it, so a resumed run continues bit-for-bit.

    ``foreach=None`` (default) uses the multi-tensor ``torch._foreach_*`` kernels, grouped by
    (device, dtype); ``foreach=False`` uses a plain per-parameter loop (same math, same op order).

    DTensor parameters (FSDP2 shards) work: the math is elementwise, so it runs on each rank's
    local shard, and the state tensors are DTensors sharded like their parameters.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        foreach: bool | None = None,
    ) -> None:
        check_hparams(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        check_hparams(g["lr"], g["betas"], g["eps"], g["weight_decay"])

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        adamw_init_state(p, state)

    def group_step(self, group: dict[str, Any]) -> None:
        adamw_group_step(self.state, group)


def adamw_init_state(p: Tensor, st: dict[str, Any]) -> None:
    st["step"] = 0
    # zeros_like keeps a DTensor parameter's sharding, so the state is sharded too.
    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def adamw_group_step(state: dict, group: dict[str, Any]) -> None:
    """One AdamW update of every parameter in ``group`` that has a gradient (state in ``state[p]``).

    Shared by :class:`AdamW` and the AdamW groups of :class:`cs336_basics.extensions.muon.Muon`, so both run
    exactly the same math. Works on DTensor parameters by updating their local shards.
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    exp_avgs: list[Tensor] = []
    exp_avg_sqs: list[Tensor] = []
    steps: list[int] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("AdamW does not support sparse gradients")
        st = state[p]
        if len(st) == 0:
            adamw_init_state(p, st)
        st["step"] = int(st["step"]) + 1
        params.append(local_tensor(p))
        grads.append(local_tensor(p.grad))
        exp_avgs.append(local_tensor(st["exp_avg"]))
        exp_avg_sqs.append(local_tensor(st["exp_avg_sq"]))
        steps.append(st["step"])
    if not params:
        return
    use_foreach = group.get("foreach")
    if use_foreach is None:
        use_foreach = hasattr(torch, "_foreach_addcdiv_")
    update = _update_foreach if use_foreach else _update_single
    update(params, grads, exp_avgs, exp_avg_sqs, steps, group)


def _step_sizes(steps: list[int], lr: float, beta1: float, beta2: float) -> list[float]:
    """``-lr_t`` per parameter, computed in Python float64 (exact bias corrections)."""
    return [-lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t) for t in steps]


def _update_single(params, grads, exp_avgs, exp_avg_sqs, steps, group) -> None:
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    for p, g, m, v, neg_lr_t in zip(params, grads, exp_avgs, exp_avg_sqs, _step_sizes(steps, lr, beta1, beta2)):
        m.mul_(beta1).add_(g, alpha=1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = v.sqrt().add_(eps)
        p.addcdiv_(m, denom, value=neg_lr_t)
        if wd != 0.0:
            p.mul_(1.0 - lr * wd)


def _update_foreach(params, grads, exp_avgs, exp_avg_sqs, steps, group) -> None:
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    neg_lr_ts = _step_sizes(steps, lr, beta1, beta2)
    # Multi-tensor kernels want one device and dtype per list.
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((p.device, p.dtype, grads[i].dtype), []).append(i)
    for idx in buckets.values():
        ps = [params[i] for i in idx]
        gs = [grads[i] for i in idx]
        ms = [exp_avgs[i] for i in idx]
        vs = [exp_avg_sqs[i] for i in idx]
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, gs, alpha=1.0 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, ms, denom, [neg_lr_ts[i] for i in idx])
        del denom
        if wd != 0.0:
            torch._foreach_mul_(ps, 1.0 - lr * wd)


OPTIMIZERS = ("adamw", "muon")


def _param_role(name: str, p: Tensor) -> str:
    """``embed``, ``head``, ``scalar`` or ``hidden`` from a TransformerLM parameter's name and shape.

    Names are matched on their last components, so the prefixes that wrappers add
    (``_orig_mod.`` from torch.compile, ``module.`` from DDP) do not matter; FSDP2 keeps names.
    """
    if p.dim() < 2:
        return "scalar"
    parts = name.split(".")
    if "token_embeddings" in parts:
        return "embed"
    if "lm_head" in parts:
        return "head"
    if "layers" in parts:
        return "hidden"
    raise ValueError(
        f"param_groups: cannot tell what the {p.dim()}-D parameter {name!r} is "
        "(expected token_embeddings, lm_head, layers.* or a 1-D gain)"
    )


def param_groups(
    model: torch.nn.Module,
    optimizer: str,
    *,
    weight_decay: float,
    lr: float,
    lr_hidden: float | None = None,
    lr_embed: float | None = None,
    lr_head: float | None = None,
    lr_scalar: float | None = None,
) -> list[dict[str, Any]]:
    """Named parameter groups for ``AdamW`` (``optimizer="adamw"``) or ``Muon`` (``"muon"``).

    Every group has ``"name"`` and ``"lr_scale"`` (its peak LR divided by ``lr``), so a training loop
    sets ``group["lr"] = schedule(it) * group["lr_scale"]`` and every group follows the same cosine
    shape; ``"lr"`` starts at ``lr * lr_scale``.

    * ``adamw``: ``decay`` (every >= 2-D weight: matrices, embeddings, head) and ``no_decay`` (1-D
      norm gains: decaying a gain toward 0 only hurts). With a per-group LR that differs from ``lr``
      the groups are Muon's roles instead (``hidden``, ``embed``, ``head``, ``scalar``; the gains
      still without decay), so each role can have its own peak LR; without one the two groups stay
      exactly as they were (the default run's numbers do not move).
    * ``muon``: ``hidden`` (2-D weights inside the blocks, orthogonalised updates), ``embed``
      (token_embeddings), ``head`` (lm_head), ``scalar`` (1-D gains, no decay); the last three are
      stepped with AdamW inside the Muon optimizer (``use_muon: False``). The embedding and head
      are not "hidden" linear maps (one is a lookup table, the other feeds a softmax over the
      vocabulary), which is where Muon's spectral-norm argument does not apply.
    ``lr_hidden`` etc. default to ``lr`` (``lr_scale`` 1.0). Empty groups are left out.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"param_groups: unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
    per_group = {"hidden": lr_hidden, "embed": lr_embed, "head": lr_head, "scalar": lr_scalar}
    for key, value in (("lr", lr), *((f"lr_{k}", v) for k, v in per_group.items()), ("weight_decay", weight_decay)):
        if value is not None or not key.startswith("lr_"):  # the per-group LRs are optional
            try:
                check_hparam(key, value)
            except ValueError as err:
                raise ValueError(f"param_groups: {err}") from None
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def scale(value: float | None) -> float:
        if value is None or value == lr:
            return 1.0
        if lr == 0:
            raise ValueError(f"param_groups: a per-group learning rate ({value}) needs lr > 0")
        return value / lr

    if optimizer == "adamw" and all(v is None or v == lr for v in per_group.values()):
        spec = [
            ("decay", [p for _, p in named if p.dim() >= 2], weight_decay, {}),
            ("no_decay", [p for _, p in named if p.dim() < 2], 0.0, {}),
        ]
        lr_scales = {"decay": 1.0, "no_decay": 1.0}
    else:
        roles: dict[str, list[Tensor]] = {"hidden": [], "embed": [], "head": [], "scalar": []}
        for n, p in named:
            roles[_param_role(n, p)].append(p)
        muon = optimizer == "muon"
        spec = [
            ("hidden", roles["hidden"], weight_decay, {"use_muon": True} if muon else {}),
            ("embed", roles["embed"], weight_decay, {"use_muon": False} if muon else {}),
            ("head", roles["head"], weight_decay, {"use_muon": False} if muon else {}),
            ("scalar", roles["scalar"], 0.0, {"use_muon": False} if muon else {}),
        ]
        lr_scales = {k: scale(v) for k, v in per_group.items()}
    return [
        {
            "params": ps,
            "name": name,
            "lr_scale": lr_scales[name],
            "lr": lr * lr_scales[name],
            "weight_decay": wd,
            **extra,
        }
        for name, ps, wd, extra in spec
        if ps
    ]
