"""Which device a name means: the one device resolver every entry point uses.

``auto`` -> cuda, then mps, then cpu. An explicit device that does not exist on this machine is a
:class:`DeviceError` raised here, before any work, with one line naming it (``cuda:99`` fails at
once instead of deep inside a copy).
"""

from __future__ import annotations

import functools

import torch

from cs336_basics.utils.errors import UserError


class DeviceError(UserError, ValueError, RuntimeError):
    """An unusable device name. Also a RuntimeError: that is what torch raises for a bad device
    (and what the course's test for ``get_batch(..., device="cuda:99")`` expects)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


@functools.lru_cache(maxsize=32)
def resolve_device(
    name: str | torch.device = "auto", default_cuda_index: int = 0, what: str = "device"
) -> torch.device:
    """Parse ``name`` and check the device exists; a bare ``cuda`` becomes ``cuda:default_cuda_index``.

    ``what`` names the value in errors (``--device`` for a CLI flag).
    """
    text = str(name).strip().lower() or "auto"
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"{what} {str(name)!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{what} {str(name)!r}: CUDA is not available on this machine (use cpu)")
        index = default_cuda_index if dev.index is None else dev.index
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"{what} {str(name)!r}: needs CUDA device {index} but only {count} are visible")
        return torch.device("cuda", index)
    if dev.type == "mps" and not _mps_available():
        raise DeviceError(f"{what} {str(name)!r}: MPS is not available on this machine (use cpu)")
    if dev.type not in ("cpu", "mps"):
        raise DeviceError(f"{what} {str(name)!r}: unsupported device type {dev.type!r}")
    return dev
