"""The Python API's model hook: train any ``nn.Module`` that maps token ids to logits.

``cs336_basics.training_together.train(settings, model=...)`` runs the command line's setup and
loop with this module in place of the TransformerLM; this file checks that the two fit. The
settings' model fields (``d_model``...) then only describe the checkpoint's TransformerLM config
(``generate`` cannot load a custom model's checkpoint); ``vocab_size`` and ``context_length`` still
apply (every token id is checked against the vocab, and batches are ``context_length`` long).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cs336_basics.training.runtime import Runtime
from cs336_basics.utils.errors import UserError


def build_model(model: nn.Module | Callable[[], nn.Module], s: Any, rt: Runtime) -> nn.Module:
    """The module to train, on the run's device; refuses settings that need our TransformerLM's layout."""
    if not isinstance(model, nn.Module):
        model = model()  # built here, after seed_everything: the same initial weights on every rank
        if not isinstance(model, nn.Module):
            raise UserError(f"train(model=...): the function returned {type(model).__name__}, not an nn.Module")
    needs = [flag for flag, on in (("--fsdp", s.fsdp), ("--log_norms", s.log_norms)) if on]
    if needs and not hasattr(model, "layers"):
        raise UserError(
            f"{', '.join(needs)} needs the TransformerLM's blocks (model.layers); {type(model).__name__} has none"
        )
    group_lrs = {f"lr_{k}": getattr(s, f"lr_{k}") for k in ("hidden", "embed", "head", "scalar")}
    if s.optimizer == "muon" or any(v is not None for v in group_lrs.values()):  # groups by role
        from cs336_basics.fast.optim import param_groups

        try:
            param_groups(model, s.optimizer, weight_decay=s.weight_decay, lr=s.lr, **group_lrs)
        except ValueError as err:
            what = "--optimizer muon" if s.optimizer == "muon" else "per-group learning rates"
            raise UserError(f"{what} with a custom model: {err}") from None
    return model.to(rt.device)
