"""The next step's batches, gathered in a background thread while this step runs.

``get_batch`` (:mod:`cs336_basics.corpus.tokens`'s, the twin of the textbook's in :mod:`cs336_basics.data`)
draws the window starts, gathers them from the memory-mapped token file, copies them to the device. On a GPU the gather (page faults into the
memmap, fancy indexing) and the pinned host-to-device copy are time the GPU waits for. The
:class:`Prefetcher` starts step N+1's ``get_batch`` calls on a worker thread as soon as step N's are
handed out, the usual double buffering of data loaders (e.g. ``torch.utils.data.DataLoader`` with
``pin_memory`` and prefetching, nanoGPT's pinned ``non_blocking`` copy).

The batches are the same, in the same order, bit for bit: the worker draws from its own copy of the
caller's random generator, started from the state the caller's generator has when it hands out the
batches. When the caller's generator is asked for step N+1, its state is compared with the state the
worker started from; if they match (the normal case), the worker's batches are used and the caller's
generator is moved to the state after them, exactly as if it had drawn them itself. If they differ (a
rewind, a resume, another draw in between) the batches are gathered on the spot. So checkpoints hold
the same data stream state with and without prefetching, and resume stays exact.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from cs336_basics.corpus.tokens import get_batch

Batch = tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]

__all__ = ["Prefetcher"]


class Prefetcher:
    """``batches(rng)``: the ``accum_steps`` batches ``get_batch`` would give from ``rng`` now, with
    the next call's batches already being gathered in the background."""

    def __init__(
        self, data: np.ndarray, batch_size: int, context_length: int, device: torch.device, accum_steps: int
    ) -> None:
        self.data, self.batch_size, self.context_length = data, batch_size, context_length
        self.device, self.accum_steps = device, accum_steps
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._next: tuple[dict[str, Any], Future] | None = None  # (rng state it starts from, its batches)
        self.hits = self.misses = 0

    def _gather(self, kind: type, state: dict[str, Any]) -> tuple[list[Batch], dict[str, Any]]:
        rng = np.random.Generator(kind())
        rng.bit_generator.state = state
        out = [get_batch(self.data, self.batch_size, self.context_length, self.device, rng=rng)
               for _ in range(self.accum_steps)]  # fmt: skip
        return out, rng.bit_generator.state

    def batches(self, rng: np.random.Generator) -> list[Batch]:
        kind, state = type(rng.bit_generator), rng.bit_generator.state
        ready, self._next = self._next, None
        if ready is not None and ready[0] == state:
            out, after = ready[1].result()
            self.hits += 1
        else:
            if ready is not None:
                ready[1].cancel()
            out, after = self._gather(kind, state)
            self.misses += 1
        rng.bit_generator.state = after  # as if the caller had drawn these batches itself
        self._next = (after, self._pool.submit(self._gather, kind, after))
        return out

    def close(self) -> None:
        self._next = None
        self._pool.shutdown(wait=True, cancel_futures=True)
