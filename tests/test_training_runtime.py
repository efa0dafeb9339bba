"""The runtime decided once at setup: torchrun's environment, dtype checks, autocast, whole console lines."""

from __future__ import annotations

import io
import threading

import pytest
import torch

from cs336_basics.training import runtime
from cs336_basics.training.runtime import (
    DistInfo,
    RuntimeConfigError,
    autocast_factory,
    check_dtype,
    console_write,
    dist_info_from_env,
    make_grad_scaler,
)


def test_dist_info_from_torchrun_variables():
    assert dist_info_from_env({}) == DistInfo(0, 1, 0)
    info = dist_info_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.is_distributed, info.is_main) == (3, 4, 1, True, False)


@pytest.mark.parametrize("env", [{"RANK": "x"}, {"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "0"}])
def test_bad_distributed_environment_is_one_line(env):
    with pytest.raises(RuntimeConfigError, match="RANK|WORLD_SIZE|distributed"):
        dist_info_from_env(env)


def test_dtype_checks_on_cpu():
    cpu = torch.device("cpu")
    assert check_dtype(cpu, "fp32") is torch.float32 and check_dtype(cpu, "bf16") is torch.bfloat16
    with pytest.raises(RuntimeConfigError, match="fp16 needs a CUDA or MPS device"):
        check_dtype(cpu, "fp16")
    with pytest.raises(RuntimeConfigError, match="choose one of"):
        check_dtype(cpu, "fp8")


def test_autocast_is_a_no_op_for_fp32_and_bf16_matmuls_otherwise():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast_factory(torch.device("cpu"), "fp32")():
        assert (a @ b).dtype is torch.float32
    with autocast_factory(torch.device("cpu"), "bf16")():
        assert (a @ b).dtype is torch.bfloat16
    assert not make_grad_scaler(torch.device("cpu"), "bf16").is_enabled()


def test_console_lines_from_two_threads_never_interleave():
    class Slow(io.StringIO):  # yields the GIL inside each write, as a real pipe can
        def write(self, s):
            for ch in s:
                super().write(ch)
                threading.Event().wait(0)
            return len(s)

    out = Slow()
    lines = {"A" * 40, "B" * 40}

    def spam(text):
        for _ in range(30):
            console_write(text, out)

    threads = [threading.Thread(target=spam, args=(t,)) for t in lines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = out.getvalue().splitlines()
    assert len(got) == 60 and set(got) == lines


def test_print0_prints_on_rank_0_only(capsys, monkeypatch):
    runtime.print0("a", 1)
    monkeypatch.setattr(runtime, "_INFO", DistInfo(1, 2, 1))
    runtime.print0("hidden")
    assert capsys.readouterr().out == "a 1\n"
