"""is_dtensor / local_tensor on plain tensors and on a real DTensor (a one-process gloo mesh)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from cs336_basics.utils.dtensor import is_dtensor, local_tensor


def test_plain_tensors_and_other_things_are_not_dtensors():
    t = torch.ones(3)
    assert not is_dtensor(t) and local_tensor(t) is t
    assert not is_dtensor(torch.nn.Parameter(torch.ones(2)))
    assert not is_dtensor(None) and not is_dtensor([t])


@pytest.fixture
def one_rank_group(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_sharded_tensor_is_one_and_its_local_part_is_shared_storage(one_rank_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    d = distribute_tensor(torch.arange(6.0), mesh, [Shard(0)])
    assert is_dtensor(d)
    local = local_tensor(d)
    assert not is_dtensor(local) and torch.equal(local, torch.arange(6.0))
    local.mul_(2)  # in-place on the local part updates the DTensor
    assert torch.equal(d.full_tensor(), torch.arange(6.0) * 2)
