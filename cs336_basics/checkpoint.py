"""Checkpointing (handout section 5.2): save a run's model, optimizer and step, and restore them.

A checkpoint is three things: the model's ``state_dict()``, the optimizer's ``state_dict()`` (for
AdamW: each parameter's step count and both moment estimates) and the iteration, so training can
continue exactly where it stopped::

    save_checkpoint(model, optimizer, iteration, "ckpt.pt")
    iteration = load_checkpoint("ckpt.pt", model, optimizer)

The training program's checkpoints (``cs336_basics.training.checkpoints``) hold more (the data
position, RNG states, the config) and are written atomically with a checksum.
"""

from __future__ import annotations

import os
from typing import IO, BinaryIO

import torch

Source = str | os.PathLike | BinaryIO | IO[bytes]


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, iteration: int, out: Source) -> None:
    """Write model, optimizer and iteration to a path or a binary file object."""
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration}, out)


def load_checkpoint(src: Source, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore the model (and the optimizer, if given) from ``src``; return the saved iteration."""
    payload = torch.load(src, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    return payload["iteration"]
