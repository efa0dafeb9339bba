"""Muon (MomentUm Orthogonalized by Newton-Schulz) for hidden matrices, AdamW for everything else.

One optimizer, two kinds of parameter group (the flag is ``use_muon``):

* ``use_muon: True`` (2-D weights inside the transformer blocks)::

      m  = mu * m + (1 - mu) * g                   # momentum as an EMA of the gradients
      u  = (1 - mu) * g + mu * m   (Nesterov)      # or u = m without Nesterov
      O  = NewtonSchulz5(u)                         # ~ U V^T for u = U S V^T (singular values -> ~1)
      p -= lr * wd * p                              # decoupled decay, before the update (as in Muon)
      p -= lr * 0.2 * sqrt(max(rows, cols)) * O

* ``use_muon: False`` (embeddings, LM head, 1-D gains): exactly :class:`cs336_basics.optim.AdamW`'s
  update (the same function runs it), with that group's ``betas``/``eps``/``weight_decay``.

**Why the ``0.2 * sqrt(max(rows, cols))`` scale (Moonshot's, "Muon is Scalable for LLM Training")
rather than modded-nanogpt's ``max(1, rows/cols) ** 0.5``.** An orthogonal ``rows x cols`` matrix has
RMS ``1/sqrt(max(rows, cols))``, so Moonshot's factor gives every Muon update an RMS of about 0.2,
which is what an AdamW update typically has. The same learning rate then means the same step size
in both kinds of group, so ``--lr`` can drive all groups (per-group LR flags default to it) and one
cosine schedule fits all. With the modded-nanogpt scale, Muon's LR lives in different units
(0.02-0.05, "spectral norm per step") and would need its own schedule peak.

**Newton-Schulz precision.** The quintic iteration (coefficients 3.4445, -4.7750, 2.0315, 5 steps)
maximises the slope at zero instead of converging: it maps singular values into a band around 1
(roughly 0.7-1.2), not exactly onto 1, which is known not to hurt training. It is stable in bfloat16,
so it runs in bf16 where bf16 matmuls are fast (CUDA's tensor cores, CPUs with AMX bf16 units:
``utils.devices.fast_bf16_matmuls``) and in float32 elsewhere: other CPUs emulate bf16 matmuls,
several times slower than float32. ``ns_dtype`` overrides the choice.

**FSDP2 (DTensor parameters, sharded on dim 0).** Momentum is elementwise, so it runs on the local
shard. Newton-Schulz needs the whole matrix: the Nesterov update is all-gathered
(``full_tensor()``), every rank orthogonalises it, and each keeps its own rows. Every rank does the
same (redundant) work; spreading the matrices over ranks would cut compute but needs another
exchange, which only pays off for large models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from cs336_basics.fast.optim import GroupStepOptimizer, adamw_group_step, adamw_init_state
from cs336_basics.optim import check_hparam, check_hparams
from cs336_basics.utils.devices import fast_bf16_matmuls
from cs336_basics.utils.dtensor import is_dtensor, local_tensor

__all__ = ["Muon", "newton_schulz", "NS_COEFFS", "MATCHED_RMS"]

NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Target RMS of a Muon update, matched to a typical AdamW update (Moonshot's choice).
MATCHED_RMS = 0.2


def newton_schulz(
    G: Float[Tensor, "... rows cols"], steps: int = 5, dtype: torch.dtype | None = None
) -> Float[Tensor, "... rows cols"]:
    """Approximately orthogonalise each matrix of ``G`` (``U S V^T -> U S' V^T`` with ``S'`` ~ 1).

    The input is scaled to Frobenius norm 1 (so its spectral norm is <= 1, inside the iteration's
    basin), then ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` runs ``steps`` times. Wide
    orientation is used inside (``X X^T`` is then the small Gram matrix). Returns ``dtype``
    (default: bf16 where bf16 matmuls are fast, on CUDA and on CPUs with AMX; float32 otherwise).
    """
    if G.dim() < 2:
        raise ValueError(f"newton_schulz: needs a matrix (or a batch of them), got shape {tuple(G.shape)}")
    if dtype is None:
        dtype = torch.bfloat16 if fast_bf16_matmuls(G.device) else torch.float32
    a, b, c = NS_COEFFS
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if tall else X


def _check_muon_hparams(lr: Any, momentum: Any, ns_steps: Any, weight_decay: Any, nesterov: Any) -> None:
    try:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            check_hparam(name, value)
    except ValueError as err:
        raise ValueError(f"Muon: {err}") from None
    if isinstance(ns_steps, bool) or not (isinstance(ns_steps, int) and ns_steps >= 1):
        raise ValueError(f"Muon: invalid ns_steps={ns_steps!r} (must be an integer >= 1)")
    if not isinstance(nesterov, bool):
        raise ValueError(f"Muon: nesterov must be True or False, got {nesterov!r}")


class Muon(GroupStepOptimizer):
    """Muon for ``use_muon`` groups (2-D), AdamW (the course's, decay after the step) for the rest.

    Build the groups with :func:`cs336_basics.optim.param_groups` (``optimizer="muon"``); a plain
    iterable of tensors is one Muon group. Group keys (defaults from the constructor): ``lr``,
    ``weight_decay``, ``use_muon`` (default True), and ``momentum``/``nesterov``/``ns_steps`` for
    Muon groups, ``betas``/``eps`` for AdamW groups. All are read at every step, so a schedule can
    set ``group["lr"]``.

    State: Muon parameters keep ``momentum_buffer`` (parameter dtype, sharded like the parameter);
    AdamW parameters keep ``step``/``exp_avg``/``exp_avg_sq``. Everything is in ``state_dict()``,
    so a reloaded optimizer continues bit-for-bit (with its own ``ns_dtype`` and ``foreach``, which say
    how a step is computed, not the checkpoint's).
    """

    STEP_HOW_KEYS = ("ns_dtype", "foreach")

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        ns_dtype: torch.dtype | None = None,
        foreach: bool | None = None,
    ) -> None:
        _check_muon_hparams(lr, momentum, ns_steps, weight_decay, nesterov)
        check_hparams(lr, betas, eps, weight_decay)
        if ns_dtype is not None and not (isinstance(ns_dtype, torch.dtype) and ns_dtype.is_floating_point):
            raise ValueError(f"Muon: ns_dtype must be a floating torch dtype or None, got {ns_dtype!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            weight_decay=weight_decay,
            betas=tuple(betas),
            eps=eps,
            use_muon=True,
            ns_dtype=ns_dtype,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        name = f" (group {g['name']!r})" if "name" in g else ""
        if not isinstance(g["use_muon"], bool):
            raise ValueError(f"Muon: use_muon must be True or False{name}, got {g['use_muon']!r}")
        try:
            if g["use_muon"]:
                _check_muon_hparams(g["lr"], g["momentum"], g["ns_steps"], g["weight_decay"], g["nesterov"])
                for p in g["params"]:
                    if p.dim() != 2:
                        raise ValueError(
                            f"Muon: a use_muon group holds only 2-D matrices, got shape {tuple(p.shape)}; "
                            "put embeddings, the LM head and 1-D gains in a group with use_muon=False"
                        )
            else:
                check_hparams(g["lr"], g["betas"], g["eps"], g["weight_decay"])
        except ValueError as err:
            raise ValueError(f"{err}{name}") from None

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group["use_muon"]:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        else:
            adamw_init_state(p, state)

    def group_step(self, group: dict[str, Any]) -> None:
        if group["use_muon"]:
            self._muon_group_step(group)
        else:
            adamw_group_step(self.state, group)

    def _muon_group_step(self, group: dict[str, Any]) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        params: list[Tensor] = []
        updates: list[Tensor] = []  # the full (gathered) Nesterov update of each parameter
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Muon does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            g = local_tensor(p.grad)
            buf = local_tensor(state["momentum_buffer"])
            buf.lerp_(g, 1.0 - mu)
            u = torch.lerp(g, buf, mu) if group["nesterov"] else buf
            if is_dtensor(p):
                # Newton-Schulz mixes all rows: gather the whole matrix from the shards.
                from torch.distributed.tensor import DTensor  # loaded already: p is one

                u = DTensor.from_local(
                    u, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
                ).full_tensor()
            params.append(p)
            updates.append(u)
        if not params:
            return
        # Same-shape matrices are orthogonalised together as one batch (fewer, larger matmuls).
        buckets: dict[tuple, list[int]] = {}
        for i, u in enumerate(updates):
            buckets.setdefault((tuple(u.shape), u.device, u.dtype), []).append(i)
        ortho: list[Tensor | None] = [None] * len(updates)
        for idx in buckets.values():
            batch = newton_schulz(torch.stack([updates[i] for i in idx]), group["ns_steps"], group["ns_dtype"])
            for j, i in enumerate(idx):
                ortho[i] = batch[j]
        for p, o in zip(params, ortho):
            assert o is not None
            rows, cols = p.shape
            scale = MATCHED_RMS * math.sqrt(max(rows, cols))
            if is_dtensor(p):
                # Back to this rank's shard: src_data_rank=None slices locally, no communication
                # (every rank holds the same full result).
                from torch.distributed.tensor import distribute_tensor

                o = distribute_tensor(o, p.device_mesh, p.placements, src_data_rank=None).to_local()
            w = local_tensor(p)
            if wd != 0.0:
                w.mul_(1.0 - lr * wd)
            w.add_(o.to(w.dtype), alpha=-lr * scale)
