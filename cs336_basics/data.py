"""Batches of training data (handout section 5.1): random windows of a long array of token ids.

The ids of a whole corpus sit in one 1-D array, usually a ``np.memmap`` of a ``.npy`` file (only the
windows that are read leave the disk). The training program's twin, ``cs336_basics.corpus.tokens
.get_batch``, draws the same windows from the same generator, and adds pinned, non-blocking copies
to the GPU and sampling across several token files.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Int
from torch import Tensor


def get_batch(
    dataset: npt.NDArray, batch_size: int, context_length: int, device: str, rng: np.random.Generator | None = None
) -> tuple[Int[Tensor, "batch context"], Int[Tensor, "batch context"]]:
    """``batch_size`` random windows: inputs ``x = data[s : s+T]`` and targets ``y = data[s+1 : s+T+1]``.

    Starts ``s`` are uniform over every valid start ``0 .. len - T - 1``, drawn from ``rng`` (default:
    NumPy's global generator, seeded by ``np.random.seed``). Both come back as int64 on ``device``.
    """
    num_starts = len(dataset) - context_length
    if num_starts <= 0:
        raise ValueError(
            f"get_batch: dataset has {len(dataset)} tokens, need more than context_length={context_length}"
        )
    if rng is None:
        starts = np.random.randint(0, num_starts, size=batch_size, dtype=np.int64)
    else:
        starts = rng.integers(0, num_starts, size=batch_size, dtype=np.int64)
    windows = np.stack([dataset[s : s + context_length + 1] for s in starts]).astype(np.int64)  # [B, T+1]
    x = torch.from_numpy(windows[:, :-1].copy())
    y = torch.from_numpy(windows[:, 1:].copy())
    return x.to(device), y.to(device)
