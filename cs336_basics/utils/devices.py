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


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where there is no such file)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16_matmuls(device: torch.device | str) -> bool:
    """Whether bfloat16 matmuls are faster than float32 ones here: on CUDA, and on CPUs with AMX's
    bf16 units (``amx_bf16``). Other CPUs emulate bf16 matmuls, several times slower than float32
    (``bench_quality --step_time``: a Muon training step 3.4x slower with its Newton-Schulz in bf16 on
    an AMD EPYC without AMX; the iteration itself 3.1x faster in bf16 on a CPU with AMX)."""
    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and "amx_bf16" in _cpu_flags_cached())


@functools.lru_cache(maxsize=1)
def _cpu_flags_cached() -> frozenset[str]:
    return cpu_flags()
