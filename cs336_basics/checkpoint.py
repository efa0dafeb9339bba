"""Checkpointing, the course's interface: save and restore a run's model, optimizer and step.

A checkpoint is three things: the model's ``state_dict()``, the optimizer's ``state_dict()`` (for
AdamW: the step count and both moment estimates of every parameter) and the iteration, so that
training can continue exactly where it stopped::

    save_checkpoint(model, optimizer, iteration, "ckpt.pt")
    iteration = load_checkpoint("ckpt.pt", model, optimizer)

The model's config travels with it (``model_config``), so a checkpoint can be loaded without
repeating its flags. What makes these files safe to rely on -- an atomic write with a sha256
sidecar, ``weights_only`` loading with one-line errors, a fit check that names the config
difference -- lives in :mod:`cs336_basics.training.checkpoints`, beside the run's checkpoint manager.
"""

from __future__ import annotations

from typing import Any

import torch

from cs336_basics.training.checkpoints import (
    Source,
    build_payload,
    checkpoint_iteration,
    load_model_weights,
    load_optimizer_state,
    read_checkpoint,
    write_checkpoint,
)


def save_checkpoint(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, iteration: int, out: Source, **extra: Any
) -> None:
    """Save model, optimizer and iteration (plus ``extra`` keys) to a path or a binary file object."""
    payload = build_payload(model, optimizer, iteration, **extra)  # {"model", "optimizer", "iteration", ...}
    write_checkpoint(payload, out)


def load_checkpoint(src: Source, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore the model (and the optimizer, if given) from ``src``; return the saved iteration."""
    payload = read_checkpoint(src)
    load_model_weights(model, payload, src)
    if optimizer is not None:
        load_optimizer_state(optimizer, payload, src)
    return checkpoint_iteration(payload, src)
