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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cs336_basics.utils.devices import resolve_device
from cs336_basics.utils.errors import UserError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class RuntimeConfigError(UserError, ValueError):
    """The requested device/dtype/process setup can't run here (e.g. fp16 on a CPU)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job, read from torchrun's env vars."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart_count: int = 0  # TORCHELASTIC_RESTART_COUNT: how often torchrun restarted the group (--max-restarts)

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
        restarts = int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError as err:
        raise RuntimeConfigError(f"bad RANK/WORLD_SIZE/LOCAL_RANK environment: {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise RuntimeConfigError(f"bad distributed environment: RANK={rank} WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local, restart_count=restarts)


_INFO = DistInfo()


# One writer at a time: the signal watcher thread prints too, and print() writes the text and its
# newline separately, so two threads' lines could interleave mid-line. Each call writes whole lines.
_CONSOLE_LOCK = threading.Lock()


# The progress bar's line on a terminal (None: none shown). Every console line clears it first and
# draws it again below, so printed lines and the bar never mix.
_STATUS: str | None = None
_CLEAR_LINE = "\r\x1b[K"  # back to the line's start, erase to its end


def console_write(text: str, file: Any = None) -> None:
    """Write ``text`` plus a newline as one write under the console lock, then flush."""
    stream = sys.stdout if file is None else file
    with _CONSOLE_LOCK:
        if _STATUS is not None:
            sys.stdout.write(_CLEAR_LINE)
            sys.stdout.flush()
        stream.write(text + "\n")
        stream.flush()
        if _STATUS is not None:
            sys.stdout.write(_STATUS)
            sys.stdout.flush()


def show_status(text: str | None) -> None:
    """Draw ``text`` as the status line at the bottom of the terminal (stdout), in place of the
    previous one; None erases it. Only for a terminal: the caller checks ``sys.stdout.isatty()``."""
    global _STATUS
    with _CONSOLE_LOCK:
        sys.stdout.write(_CLEAR_LINE + (text or ""))
        sys.stdout.flush()
        _STATUS = text


# --log_format json: stdout carries only the JSON records, so every other message goes to stderr.
_MESSAGES_TO_STDERR = False


def messages_to_stderr(on: bool) -> None:
    """Send :func:`print0`'s messages to stderr (``--log_format json``), decided once at setup."""
    global _MESSAGES_TO_STDERR
    _MESSAGES_TO_STDERR = on


def print0(*args: Any, sep: str = " ", file: Any = None, flush: bool = True) -> None:
    """print() on rank 0 only (every rank runs the same code; one console is enough), whole lines,
    always flushed (``flush`` is accepted for print()'s signature)."""
    if _INFO.is_main:
        console_write(sep.join(str(a) for a in args), sys.stderr if file is None and _MESSAGES_TO_STDERR else file)


def eprint0(*args: Any) -> None:
    """Like print0, to stderr."""
    print0(*args, file=sys.stderr)


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


@dataclass
class Runtime:
    """Everything decided once at setup."""

    info: DistInfo
    device: torch.device
    dtype_name: str
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def rank(self) -> int:
        return self.info.rank


def setup_runtime(
    device: str = "auto", dtype: str = "fp32", tf32: bool = False, deterministic: bool = False
) -> Runtime:
    """Resolve device + dtype and validate them; no process group yet (see :func:`init_process_group`)."""
    global _INFO
    info = dist_info_from_env()
    _INFO = info
    dev = resolve_device(device, info.local_rank if info.is_distributed else 0, what="--device")
    if dev.type == "mps" and info.is_distributed:
        raise RuntimeConfigError("DDP on MPS is not supported; use --device cpu or a CUDA machine")
    check_dtype(dev, dtype)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    set_tf32(tf32)
    if deterministic:
        set_deterministic()
    return Runtime(
        info=info,
        device=dev,
        dtype_name=dtype,
        autocast=autocast_factory(dev, dtype),
        scaler=make_grad_scaler(dev, dtype),
    )


def set_deterministic() -> None:
    """Bit-for-bit repeatable kernels where torch has them, errors where it doesn't.

    CPU runs are repeatable without this (at a fixed thread count); on CUDA, atomics-based kernels
    (index_add, scatter, some backward passes) and cuBLAS's split-K workspaces vary from run to run.
    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when its handle is created, so this must run before the
    first matmul on the GPU.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def init_process_group(rt: Runtime) -> None:
    """Join the job's process group (gloo for CPU, nccl for CUDA). No-op for a single process."""
    if not rt.info.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if rt.device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = rt.device
    if rt.info.restart_count and _shares_one_agents_store():
        # After a torchrun --max-restarts restart the workers meet in the same store as the attempt
        # before, whose keys (a dead rank's address) the new ranks could read as current ones and then
        # wait on forever: keep each attempt's keys apart under its own prefix. Only on one node: each
        # node's agent counts its own restarts, so the counts (and prefixes) can differ between nodes;
        # there TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives every attempt a fresh store instead.
        store, _, _ = next(dist.rendezvous("env://"))
        kwargs["store"] = dist.PrefixStore(f"restart_{rt.info.restart_count}", store)
    dist.init_process_group(backend=backend, rank=rt.info.rank, world_size=rt.info.world_size, **kwargs)


def _shares_one_agents_store() -> bool:
    """Every rank of this job was started by one torchrun agent whose store carries over restarts."""
    fresh_store = os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "0") not in ("", "0")
    one_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE")) == os.environ.get("WORLD_SIZE")
    return one_node and not fresh_store


class RefusedOnRankZero(UserError):
    """Rank 0 refused the run (and printed why); the other ranks exit 2 without repeating it."""


def rank0_decides(rt: Runtime, decide: Callable[[], Any]) -> Any:
    """Run ``decide`` on rank 0 only (e.g. taking the run directory's lock) and make every rank
    share the outcome: if it raised a UserError, all ranks raise, so the job ends at once instead
    of the other ranks waiting in a collective that rank 0 never reaches. Returns ``decide()``'s
    value on rank 0, None elsewhere."""
    result, error = None, None
    if rt.is_main:
        try:
            result = decide()
        except UserError as err:
            error = err
    if rt.info.is_distributed and dist.is_initialized():
        said = [None if error is None else str(error)]
        dist.broadcast_object_list(said, src=0)
        if said[0] is not None and not rt.is_main:
            raise RefusedOnRankZero(said[0])
    if error is not None:
        raise error
    return result


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


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks in place (identity for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Gather one picklable object per rank, in rank order (``[obj]`` for a single process)."""
    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def resume_disagreement(found: list[int | None], checkpoint_dir: Any) -> str | None:
    """The error when ranks found different checkpoints to resume (``found[r]``: rank r's iteration,
    None for a fresh start), or None when they all agree."""
    if len(set(found)) <= 1:
        return None
    ranks: dict[int | None, list[int]] = {}
    for rank, it in enumerate(found):
        ranks.setdefault(it, []).append(rank)
    what = "; ".join(
        f"{'iteration ' + str(it) if it is not None else 'none'} on {len(rs)} rank{'s' if len(rs) > 1 else ''} "
        f"(rank {rs[0]}{', ...' if len(rs) > 1 else ''})"
        for it, rs in ranks.items()
    )
    return (
        f"the ranks found different checkpoints to resume in {checkpoint_dir} ({what}); on several machines "
        "--checkpoint_dir must be one directory that every node reads (a shared file system)"
    )


def agree_on_resume(iteration: int | None, checkpoint_dir: Any) -> None:
    """Collective: every rank continues the same checkpoint, or every rank refuses to start (exit 2).

    Each rank finds its checkpoint in its own node's view of ``--checkpoint_dir``. A directory that
    is not shared (node-local disks) would resume rank 0 and start the others afresh, and their loops
    would disagree from the first step on. A no-op for a single process.
    """
    problem = resume_disagreement(all_gather_object(iteration), checkpoint_dir)
    if problem is not None:
        raise RuntimeConfigError(problem)


# ==============================================================================================
# data parallel
# ==============================================================================================
def wrap_model(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """The module the training step calls: DDP around our own (maybe compiled) model, when distributed.

    DDP (torch's DistributedDataParallel) is not a layer: it all-reduces gradients during backward
    so every rank applies the same update. The only buffers are RoPE tables, identical on every
    rank, so they are not re-broadcast each forward (torch >= 2.15 calls that flag
    forward_sync_buffers; older releases broadcast_buffers).
    """
    if not rt.info.is_distributed:
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    params = inspect.signature(DDP.__init__).parameters
    no_sync_kw = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DDP(model, device_ids=device_ids, **{no_sync_kw: False})


def shard_model(model: torch.nn.Module, rt: Runtime) -> None:
    """FSDP2, in place: each Transformer block, then the root, owns 1/world of its parameters.

    ``fully_shard`` turns every parameter into a DTensor sharded on dim 0; a block's full weights
    exist only while it runs (all-gathered before its forward/backward, freed after), and gradients
    are reduce-scattered, so each rank keeps 1/world of the weights, gradients and optimizer state.
    """
    if not rt.info.is_distributed:
        raise RuntimeConfigError("--fsdp shards across processes: launch with torchrun --nproc_per_node >= 2")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(rt.device.type, (rt.world_size,))
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes: ranks of a correct DDP run end with the same digest."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def no_sync(model: torch.nn.Module) -> Callable[[], contextlib.AbstractContextManager]:
    """Context factory for micro-batches that should *not* all-reduce (all but the last one when
    accumulating gradients); a no-op without DDP."""
    return getattr(model, "no_sync", contextlib.nullcontext)
