"""Our AdamW, Muon and clip_grad_norm on FSDP2 (DTensor) parameters: 2 CPU processes (gloo).

A tiny TransformerLM is wrapped with ``fully_shard`` on each block and on the root, so every
parameter is a DTensor sharded on dim 0 (some unevenly: 35 rows over 2 ranks). Each rank trains
on half of every batch; FSDP averages the gradients, which is the full-batch mean gradient. A few
steps with clipping (set low enough to clip every step) must give the same weights and the same
pre-clip norms as one process training on the whole batch with plain tensors. The model is
float64 (RMSNorm still normalises in float32), so half-batch gradients averaged by FSDP differ from
the full-batch gradient only by rounding (~1e-9 relative); a wrong norm or a Newton-Schulz on a
shard instead of the whole matrix would be off by orders of magnitude more.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.multiprocessing as mp

from cs336_basics.extensions.muon import Muon
from cs336_basics.fast.nn_utils import clip_grad_norm
from cs336_basics.fast.optim import AdamW, param_groups
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.nn_utils import cross_entropy

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

# vocab 63 and d_ff 35: embedding, head, w1 and w3 shard unevenly over 2 ranks.
CFG = dict(vocab_size=63, context_length=8, d_model=16, num_layers=2, num_heads=2, d_ff=35)
STEPS, BATCH, MAX_NORM, LR, WD = 4, 4, 0.3, 2e-2, 0.1
WORLD = 2

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo",
)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    v, t = CFG["vocab_size"], CFG["context_length"]
    return [(torch.randint(0, v, (BATCH, t), generator=g), torch.randint(0, v, (BATCH, t), generator=g))
            for _ in range(STEPS)]  # fmt: skip


def _model() -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(ModelConfig(**CFG), dtype=torch.float64)


def _optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "adamw":
        return AdamW(param_groups(model, name, weight_decay=WD, lr=LR), lr=LR, betas=(0.9, 0.95), weight_decay=WD)
    groups = param_groups(model, name, weight_decay=WD, lr=LR, lr_embed=2 * LR)
    return Muon(groups, lr=LR, betas=(0.9, 0.95), weight_decay=WD, ns_dtype=torch.float64)


def _train(model, opt, batches, rank: int = 0, world: int = 1) -> list[float]:
    norms = []
    for x, y in batches:
        per = x.shape[0] // world
        xs, ys = x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]
        loss = cross_entropy(model(xs), ys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(clip_grad_norm(model.parameters(), MAX_NORM))
        opt.step()
    return norms


def _worker(rank: int, init_file: str, out_path: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        results = {}
        for name in ("adamw", "muon"):
            model = _model()
            for block in model.layers:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            assert all(isinstance(p, DTensor) for p in model.parameters())
            opt = _optimizer(name, model)
            norms = _train(model, opt, _batches(), rank, WORLD)
            weights = {n: p.full_tensor().clone() for n, p in model.named_parameters()}
            results[name] = {"norms": norms, "weights": weights}
        if rank == 0:
            torch.save(results, out_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "results.pt"
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.spawn(_worker, args=(str(tmp / "pg_init"), str(out)), nprocs=WORLD, join=True)
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_fsdp2_training_equals_single_process(fsdp_results, name):
    model = _model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref_norms = _train(model, _optimizer(name, model), _batches())
    got = fsdp_results[name]
    # Pre-clip norms: the sharded all-reduced norm is the whole gradient's norm.
    assert got["norms"] == pytest.approx(ref_norms, rel=1e-7)
    assert all(n > MAX_NORM for n in ref_norms), "clipping must be active for the test to mean anything"
    for n, p in model.named_parameters():
        torch.testing.assert_close(got["weights"][n], p.detach(), rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f"{n}: {m}")
        assert not torch.equal(p.detach(), start[n]), f"{n} did not move"
