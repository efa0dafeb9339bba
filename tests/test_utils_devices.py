"""resolve_device: names parsed by torch's own rules, devices that don't exist refused in one line."""

from __future__ import annotations

import pytest
import torch

from cs336_basics.utils.devices import DeviceError, resolve_device
from cs336_basics.utils.errors import UserError


def test_auto_picks_what_torch_says_is_there():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")
    assert resolve_device("").type == resolve_device("auto").type


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu ", torch.device("cpu")])
def test_cpu_spellings(name):
    assert resolve_device(name) == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu0", "tpu", "cuda:x"])
def test_not_a_device_name_is_one_line_naming_the_flag(name):
    with pytest.raises(DeviceError, match=r"--device .* is not a device name") as info:
        resolve_device(name, what="--device")
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_says_so():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
