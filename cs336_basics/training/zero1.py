"""``--zero1``: shard the optimizer state across data-parallel ranks (ZeRO stage 1).

Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
stage 1, through torch's ``ZeroRedundancyOptimizer``: each rank owns whole parameters adding up to
about 1/world of the model (a greedy split by size), keeps only their AdamW moments / Muon momenta,
steps only them with our own optimizer class (``optimizer_class=AdamW`` or ``Muon``; both update one
parameter at a time, so a rank needs no other rank's tensors), and broadcasts the updated weights.
Weights and gradients stay replicated, as in DDP: the gradients are all-reduced by DDP as before,
so every rank's update is the one DDP would make.

Checkpoints: :meth:`Zero1.state_dict` is collective (every rank sends its part to rank 0,
``consolidate_state_dict(to=0)``); on rank 0 it is a plain optimizer state dict (global parameter
indices, the same groups), exactly what AdamW/Muon would return in one process, so a ``--zero1``
checkpoint loads into a single process, DDP, FSDP or ``--zero1`` under any world size, and the
other way round (:meth:`Zero1.load_state_dict` takes a plain state dict; each rank keeps its part).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.optim import ZeroRedundancyOptimizer

from cs336_basics.fast.optim import keep_step_how
from cs336_basics.training.runtime import Runtime, RuntimeConfigError


class Zero1(ZeroRedundancyOptimizer):
    """``ZeroRedundancyOptimizer`` whose state dict is the plain (unsharded) one, gathered on rank 0."""

    def state_dict(self) -> dict[str, Any]:
        """Collective: the whole optimizer state on rank 0 (``{}`` on the other ranks, which write nothing)."""
        self.consolidate_state_dict(to=0)
        if self.rank != 0:
            return {}
        try:
            return super().state_dict()
        finally:
            self._all_state_dicts = []  # the gathered copy lives in the returned dict only

    def settle_skips(self) -> int:
        """The wrapped optimizer's device-side skips, read back (see ``optim.GroupStepOptimizer``)."""
        return self.optim.settle_skips()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a plain optimizer state dict (from any world size); each rank keeps its parameters' part."""
        # ZeroRedundancyOptimizer blanks the other ranks' entries of the dict it is given: hand it a copy.
        # As in our optimizers' own load_state_dict, the constructed step settings (ns_dtype, foreach)
        # stay; each step syncs these groups into the local optimizer.
        copy = {**state_dict, "state": dict(state_dict["state"])}
        keep_step_how(self, type(self.optim).STEP_HOW_KEYS, lambda: super(Zero1, self).load_state_dict(copy))
        # The base class also filed this rank's entries in the (unused) global ``state``: drop that copy.
        self.state.clear()


def check_launch(rt: Runtime) -> None:
    """``--zero1`` shards across processes: refuse a single process in one line."""
    if not rt.info.is_distributed:
        raise RuntimeConfigError(
            "--zero1 shards the optimizer state across processes: launch with torchrun --nproc_per_node >= 2"
        )


def make_zero1(groups: list[dict[str, Any]], optimizer_class: type[torch.optim.Optimizer], **defaults: Any) -> Zero1:
    """Our optimizer class inside ZeroRedundancyOptimizer, over the same named groups (``lr_scale`` kept)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):  # e.g. lr_find, which runs in one process
        raise RuntimeConfigError("--zero1 needs a process group: launch the training program with torchrun")
    return Zero1(groups, optimizer_class=optimizer_class, **defaults)
