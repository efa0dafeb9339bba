"""Per-rank memory of weights, gradients and optimizer state: DDP (replicated) vs FSDP2 (sharded).

    uv run python scripts/bench_fsdp.py                     # 2 CPU processes (gloo), the course's TinyStories shape
    uv run python scripts/bench_fsdp.py --world 4 --optimizer muon

Each rank builds the model, takes one real training step (AdamW or Muon, our code) and counts the bytes
it holds itself: under DDP every rank has the whole model, gradients and optimizer state; under FSDP2
(``fully_shard`` per block and the root) each holds its shard (``DTensor.to_local()``). Activations are
not counted (they do not depend on the sharding).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cs336_basics.extensions.muon import Muon  # noqa: E402
from cs336_basics.fast.optim import AdamW, param_groups  # noqa: E402
from cs336_basics.lm.model import ModelConfig, TransformerLM  # noqa: E402
from cs336_basics.nn_utils import cross_entropy  # noqa: E402

SHAPE = dict(vocab_size=10000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344)


def _local_bytes(t: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.to_local()
    return t.numel() * t.element_size()


def _worker(rank: int, world: int, init: str, sharded: bool, optimizer: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = TransformerLM(ModelConfig(**SHAPE))
        if sharded:
            mesh = init_device_mesh("cpu", (world,))
            for block in model.layers:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
        groups = param_groups(model, optimizer, weight_decay=0.1, lr=1e-3)
        opt = (Muon if optimizer == "muon" else AdamW)(groups, lr=1e-3, weight_decay=0.1)
        x = torch.randint(0, SHAPE["vocab_size"], (2, 64))
        loss = cross_entropy(model(x), x)
        loss.backward()
        if not sharded:  # what DDP's all-reduce would do: every rank keeps the whole averaged gradient
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
        opt.step()
        row = {
            "weights": sum(_local_bytes(p) for p in model.parameters()),
            "grads": sum(_local_bytes(p.grad) for p in model.parameters()),
            "optimizer": sum(_local_bytes(v) for st in opt.state.values() for v in st.values() if torch.is_tensor(v)),
        }
        rows = [None] * world
        dist.all_gather_object(rows, row)
        if rank == 0:
            torch.save(rows, out)
    finally:
        dist.destroy_process_group()


def measure(world: int, sharded: bool, optimizer: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.pt")
        mp.spawn(_worker, args=(world, os.path.join(d, "init"), sharded, optimizer, out), nprocs=world, join=True)
        return torch.load(out, weights_only=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=2, help="processes (gloo on CPU)")
    p.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw")
    args = p.parse_args(argv)
    n = sum(q.numel() for q in TransformerLM(ModelConfig(**SHAPE)).parameters())
    print(f"TinyStories shape: {n:,} parameters, fp32, {args.world} ranks, optimizer {args.optimizer}")
    print()
    print("| mode | rank | weights MB | gradients MB | optimizer state MB | total MB |")
    print("|---|---:|---:|---:|---:|---:|")
    totals = {}
    for name, sharded in (("DDP", False), ("FSDP2", True)):
        rows = measure(args.world, sharded, args.optimizer)
        for r, row in enumerate(rows):
            total = sum(row.values())
            print(
                f"| {name} | {r} | {row['weights'] / 2**20:.1f} | {row['grads'] / 2**20:.1f} | "
                f"{row['optimizer'] / 2**20:.1f} | {total / 2**20:.1f} |"
            )
        totals[name] = max(sum(row.values()) for row in rows)
    print(f"\nlargest rank, FSDP2 / DDP: {totals['FSDP2'] / totals['DDP']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
