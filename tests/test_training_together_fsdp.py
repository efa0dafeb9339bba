"""``--fsdp`` under torchrun (2 CPU processes, gloo): the same training as DDP, and checkpoints that
move freely between FSDP, DDP and a single process (they always hold whole tensors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ._train_utils import (
    REPO,
    assert_weights_equal,
    base_argv,
    load_pt,
    subprocess_env,
    train_losses,
    write_pattern_data,
)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed (gloo)")

FLAGS = dict(max_iters=6, warmup_iters=1, checkpoint_interval=3, eval_interval=3, batch_size=4, grad_clip=0.5)


def torchrun(argv: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "cs336_basics.training_together", *argv]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fsdp")
    data = write_pattern_data(d / "data")
    out = {"data": data, "ddp": d / "ddp", "fsdp": d / "fsdp", "fsdp_muon": d / "fsdp_muon", "ddp_muon": d / "ddp_muon"}
    torchrun(base_argv(data, out["ddp"], **FLAGS))
    p = torchrun(base_argv(data, out["fsdp"], "--fsdp", **FLAGS))
    assert "FSDP2: weights, gradients and optimizer state sharded" in p.stdout
    torchrun(base_argv(data, out["ddp_muon"], "--optimizer", "muon", **FLAGS))
    torchrun(base_argv(data, out["fsdp_muon"], "--fsdp", "--optimizer", "muon", **FLAGS))
    return out


def _close(a: Path, b: Path) -> None:
    sa, sb = load_pt(a)["model"], load_pt(b)["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("opt", ["adamw", "muon"])
def test_fsdp_trains_like_ddp(runs, opt):
    ddp, fsdp = (runs["ddp"], runs["fsdp"]) if opt == "adamw" else (runs["ddp_muon"], runs["fsdp_muon"])
    la, lb = train_losses(ddp), train_losses(fsdp)
    assert la.keys() == lb.keys() == set(range(1, 7))
    assert list(lb.values()) == pytest.approx(list(la.values()), rel=1e-4)
    _close(fsdp / "checkpoint_iter_6.pt", ddp / "checkpoint_iter_6.pt")
    # Whole tensors in the file, optimizer state included (it loads anywhere).
    ck = load_pt(fsdp / "checkpoint_iter_6.pt")
    assert ck["model"]["token_embeddings.weight"].shape == (64, 32)
    assert all(torch.is_tensor(v) and type(v) is torch.Tensor for st in ck["optimizer"]["state"].values()
               for v in st.values() if torch.is_tensor(v))  # fmt: skip


def test_fsdp_resume_is_exact_and_checkpoints_move_between_fsdp_ddp_and_one_process(runs, tmp_path):
    data = runs["data"]
    # FSDP checkpoint -> FSDP resume: the same as the uninterrupted FSDP run.
    again = tmp_path / "fsdp_again"
    torchrun(base_argv(data, again, "--fsdp", "--resume_from", str(runs["fsdp"] / "checkpoint_iter_3.pt"), **FLAGS))
    assert_weights_equal(again / "checkpoint_iter_6.pt", runs["fsdp"] / "checkpoint_iter_6.pt")
    assert train_losses(again) == {k: v for k, v in train_losses(runs["fsdp"]).items() if k > 3}
    # FSDP checkpoint -> DDP resume, and DDP checkpoint -> FSDP resume: both continue like the originals.
    to_ddp, to_fsdp = tmp_path / "to_ddp", tmp_path / "to_fsdp"
    torchrun(base_argv(data, to_ddp, "--resume_from", str(runs["fsdp"] / "checkpoint_iter_3.pt"), **FLAGS))
    torchrun(base_argv(data, to_fsdp, "--fsdp", "--resume_from", str(runs["ddp"] / "checkpoint_iter_3.pt"), **FLAGS))
    _close(to_ddp / "checkpoint_iter_6.pt", runs["ddp"] / "checkpoint_iter_6.pt")
    _close(to_fsdp / "checkpoint_iter_6.pt", runs["fsdp"] / "checkpoint_iter_6.pt")
    # FSDP checkpoint -> one process, and that one's checkpoint -> FSDP again.
    single = tmp_path / "single"
    cmd = [sys.executable, "-m", "cs336_basics.training_together",
           *base_argv(data, single, "--resume_from", str(runs["fsdp"] / "checkpoint_iter_3.pt"), **{**FLAGS, "max_iters": 5})]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    back = tmp_path / "back"
    torchrun(base_argv(data, back, "--fsdp", "--resume_from", str(single / "checkpoint_iter_5.pt"), **FLAGS))
    assert load_pt(back / "checkpoint_iter_6.pt")["iteration"] == 6


def test_fsdp_needs_torchrun(tmp_path):
    data = write_pattern_data(tmp_path / "data")
    cmd = [
        sys.executable,
        "-m",
        "cs336_basics.training_together",
        *base_argv(data, tmp_path / "run", "--fsdp", **FLAGS),
    ]
    p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--fsdp" in p.stderr and "torchrun" in p.stderr, p.stderr
