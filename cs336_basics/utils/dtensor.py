"""The one DTensor test: FSDP2 parameters and gradients are DTensors; torch builds without
distributed support have no DTensor at all (then nothing is one).

``torch.distributed.tensor`` is not imported here: it takes seconds to import, and every program
(and every test subprocess) would pay for it. A DTensor can only exist once that module has been
imported (by FSDP2, or by whoever made the DTensor), so until then nothing is one; after that, the test
is the same ``isinstance`` as always.
"""

from __future__ import annotations

import sys
from typing import Any

_MODULE = "torch.distributed.tensor"


def _dtensor_class() -> type | None:
    module = sys.modules.get(_MODULE)
    return getattr(module, "DTensor", None) if module is not None else None


def is_dtensor(t: Any) -> bool:
    """True for a DTensor (an FSDP2 shard, say), False for a plain tensor or anything else."""
    cls = _dtensor_class()
    return cls is not None and isinstance(t, cls)


def local_tensor(t: Any) -> Any:
    """The rank-local storage of a DTensor, or ``t`` itself; in-place ops on it update the DTensor."""
    return t._local_tensor if is_dtensor(t) else t


def __getattr__(name: str) -> Any:
    """``DTensor`` itself, imported on first use (None for torch without distributed support)."""
    if name != "DTensor":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    return DTensor
