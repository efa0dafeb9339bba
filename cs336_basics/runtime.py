"""Where and how the training program runs, decided once at setup.

Rank/world size, the device, the mixed-precision context and grad scaler, the process group, seeds
and RNG snapshots all live here so the training loop itself has no branches on device, dtype or DDP:
it calls ``rt.autocast()``, ``rt.scaler`` and ``print0`` the same way everywhere.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cs336_basics.errors import UserError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class RuntimeConfigError(UserError, ValueError):
    """The requested device/dtype/process setup can't run here (e.g. fp16 on a CPU)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job, read from torchrun's env vars."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them we are a single process."""
    env = os.environ if env is None else env
    try:
        rank = int(env.get("RANK", "0"))
        world = int(env.get("WORLD_SIZE", "1"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise RuntimeConfigError(f"bad RANK/WORLD_SIZE/LOCAL_RANK environment: {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise RuntimeConfigError(f"bad distributed environment: RANK={rank} WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


_INFO = DistInfo()


def print0(*args: Any, **kwargs: Any) -> None:
    """print() on rank 0 only (every rank runs the same code; one console is enough)."""
    if _INFO.is_main:
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def eprint0(*args: Any) -> None:
    """Like print0, to stderr."""
    if _INFO.is_main:
        print(*args, file=sys.stderr, flush=True)


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; under DDP each rank takes cuda:LOCAL_RANK.

    An explicit device that doesn't exist here is a user error, raised before any heavy work.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RuntimeConfigError(f"--device {name!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        index = device.index
        if index is None:
            index = info.local_rank if info.is_distributed else 0
        if index >= torch.cuda.device_count():
            raise RuntimeConfigError(
                f"--device {name}: needs CUDA device {index} but only {torch.cuda.device_count()} are visible"
            )
        device = torch.device("cuda", index)
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise RuntimeConfigError("--device mps: MPS is not available on this machine")
        if info.is_distributed:
            raise RuntimeConfigError("DDP on MPS is not supported; use --device cpu or a CUDA machine")
    elif device.type != "cpu":
        raise RuntimeConfigError(f"--device {name}: unsupported device type {device.type!r}")
    return device


def check_dtype(device: torch.device, dtype_name: str) -> torch.dtype:
    """Refuse dtypes the device can't train in, with one line saying what to use instead."""
    if dtype_name not in DTYPES:
        raise RuntimeConfigError(f"--dtype {dtype_name!r}: choose one of {', '.join(DTYPES)}")
    if dtype_name == "fp16" and device.type == "cpu":
        raise RuntimeConfigError("--dtype fp16 needs a CUDA or MPS device; on CPU use --dtype bf16 or fp32")
    if dtype_name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeConfigError(
            f"--dtype bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use --dtype fp16 or fp32"
        )
    return DTYPES[dtype_name]


def autocast_factory(device: torch.device, dtype_name: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument callable returning the mixed-precision context (a no-op for fp32)."""
    if dtype_name == "fp32":
        return contextlib.nullcontext
    dtype = DTYPES[dtype_name]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype_name: str) -> torch.amp.GradScaler:
    """Loss scaling is only needed for fp16; a disabled scaler is a transparent pass-through."""
    enabled = dtype_name == "fp16"
    return torch.amp.GradScaler(device.type, enabled=enabled)


def set_tf32(enabled: bool) -> None:
    """TF32 matmuls on Ampere+ GPUs: ~fp32 range, faster, slightly less precise. Off by default."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states as plain values/tensors (safe for ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": [int(v) for v in np_state[1]],
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def _as_tuple(value: Any) -> Any:
    """random.setstate wants nested tuples; a checkpoint may hand back lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; missing entries are left alone."""
    if state.get("python") is not None:
        random.setstate(_as_tuple(state["python"]))
    np_state = state.get("numpy")
    if np_state is not None:
        np.random.set_state(
            (
                np_state["algorithm"],
                np.asarray(np_state["keys"], dtype=np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


@dataclass
class Runtime:
    """Everything decided once at setup."""

    info: DistInfo
    device: torch.device
    dtype_name: str
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler
    backend: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def rank(self) -> int:
        return self.info.rank

    def describe(self) -> str:
        return f"{self.device} ({self.dtype_name})"


def setup_runtime(device: str = "auto", dtype: str = "fp32", tf32: bool = False) -> Runtime:
    """Resolve device + dtype and validate them; no process group yet (see :func:`init_process_group`)."""
    global _INFO
    info = dist_info_from_env()
    _INFO = info
    dev = resolve_device(device, info)
    check_dtype(dev, dtype)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    set_tf32(tf32)
    return Runtime(
        info=info,
        device=dev,
        dtype_name=dtype,
        autocast=autocast_factory(dev, dtype),
        scaler=make_grad_scaler(dev, dtype),
    )


def init_process_group(rt: Runtime) -> None:
    """Join the job's process group (gloo for CPU, nccl for CUDA). No-op for a single process."""
    if not rt.info.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if rt.device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = rt.device
    dist.init_process_group(backend=backend, rank=rt.info.rank, world_size=rt.info.world_size, **kwargs)
    rt.backend = backend


def destroy_process_group() -> None:
    """Leave the process group. The barrier first makes every rank finish its last collective
    before any rank tears its connections down: without it a fast rank's teardown can hit a peer
    still mid-transfer, whose gloo thread then aborts the process ("terminate called ...")."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.barrier()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Gather one picklable object per rank, in rank order (``[obj]`` for a single process)."""
    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
