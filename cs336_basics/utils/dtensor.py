"""The one DTensor test: FSDP2 parameters and gradients are DTensors; torch builds without
distributed support have no DTensor at all (then nothing is one)."""

from __future__ import annotations

from typing import Any

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch without distributed support
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(t: Any) -> bool:
    """True for a DTensor (an FSDP2 shard, say), False for a plain tensor or anything else."""
    return DTensor is not None and isinstance(t, DTensor)


def local_tensor(t: Any) -> Any:
    """The rank-local storage of a DTensor, or ``t`` itself; in-place ops on it update the DTensor."""
    return t._local_tensor if is_dtensor(t) else t
