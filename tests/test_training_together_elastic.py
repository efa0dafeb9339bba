"""Elastic restarts: ``torchrun --max-restarts 2 ... --resume``, a worker dies by ``kill -9``, torchrun
restarts the group, and the run ends exactly as an uninterrupted 2-rank run (single node, CPU, gloo).

Each worker runs a small wrapper around ``training_together.main`` that kills itself (SIGKILL, so no
handler, no cleanup: a crash) at a planned moment of a planned restart (``TORCHELASTIC_RESTART_COUNT``):

* DDP, first attempt: rank 1 dies in the middle of iteration 3 (checkpoint 2 exists);
* DDP, second attempt (resumed from 2): rank 0 dies while it is writing checkpoint 6 (inside the fsync
  of the temp file: the moment a crash could leave a torn file);
* FSDP, first attempt: rank 0 dies while writing checkpoint 4.

The yardstick is an uninterrupted torchrun launch with the same flags: final weights equal bit for bit
(and, for DDP, the weights digest both ranks print), every logged loss equal, and the log reads like
one run: each restart is an event, nothing is moved aside as a previous run, no step repeats.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests._train_utils import REPO, assert_weights_equal, base_argv, metrics, subprocess_env, write_pattern_data

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and fork"),
    pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed (gloo)"),
]

MAX_ITERS = 8
# Constant LR and a checkpoint every 2 iterations: a crash loses at most 2 iterations of work.
FLAGS = dict(max_iters=MAX_ITERS, warmup_iters=0, lr=3e-3, min_lr=3e-3, batch_size=4, checkpoint_interval=2,
             eval_interval=4, eval_iters=1, seed=5)  # fmt: skip

WRAPPER = textwrap.dedent(
    """
    import json, os, re, signal, sys

    plan = json.loads(os.environ.get("ELASTIC_PLAN", "{}")).get(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if plan and int(os.environ["RANK"]) == plan["rank"]:
        if "iteration" in plan:  # die in the middle of that iteration (its forward pass)
            from cs336_basics.training import step as train_step

            real, calls = train_step.cross_entropy, [0]

            def cross_entropy(logits, targets):
                import torch

                if torch.is_grad_enabled():
                    calls[0] += 1
                    if calls[0] == plan["iteration"] - plan["start"]:
                        os.kill(os.getpid(), signal.SIGKILL)
                return real(logits, targets)

            train_step.cross_entropy = cross_entropy
        else:  # die inside the fsync of checkpoint N's temp file (written, not yet renamed into place)
            real_fsync, pattern = os.fsync, re.compile(r"^\\.checkpoint_iter_%d\\.pt\\..*\\.tmp$" % plan["checkpoint"])

            def fsync(fd):
                name = os.path.basename(os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}"))
                if pattern.match(name):
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_fsync(fd)

            os.fsync = fsync
    from cs336_basics import training_together as tt

    raise SystemExit(tt.main(sys.argv[1:]))
    """
)


def torchrun(tmp: Path, argv: list[str], plan: dict | None = None) -> subprocess.CompletedProcess:
    wrapper = tmp / "elastic_wrapper.py"
    wrapper.write_text(WRAPPER)
    env = {**subprocess_env(), "ELASTIC_PLAN": json.dumps(plan or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max-restarts", "2", "--monitor-interval", "0.2", str(wrapper), *argv]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
    return p


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("elastic_data"), n_train=5_000, n_val=1_000)


def _digest(out: str) -> str:
    m = re.search(r"^DDP check: weights identical on all 2 ranks \(sha256 ([0-9a-f]+)\)", out, re.M)
    assert m, out[-3000:]
    return m.group(1)


def _train_records(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics(run_dir) if r.get("type") == "train"]


def _check_like_uninterrupted(run_dir: Path, ref_dir: Path, restarts: int) -> None:
    name = f"checkpoint_iter_{MAX_ITERS}.pt"
    assert_weights_equal(run_dir / name, ref_dir / name)
    # Every logged loss equal, each step once: the log reads like the uninterrupted run's.
    assert _train_records(run_dir) == _train_records(ref_dir)
    evals = [(r["type"], r["step"], r["val_loss"]) for r in metrics(run_dir) if r["type"] in ("eval", "final")]
    assert evals == [(r["type"], r["step"], r["val_loss"]) for r in metrics(ref_dir) if r["type"] in ("eval", "final")]
    # Each restart is an event of this run's log, not a new run (no log moved aside).
    got = [r for r in metrics(run_dir) if r.get("event") == "restart"]
    assert [r["count"] for r in got] == list(range(1, restarts + 1)), got
    assert not (run_dir / "metrics.prev.jsonl").exists()
    assert [p.name for p in run_dir.glob(".*.tmp")] == []  # the torn temp file was cleaned up


def test_ddp_worker_killed_twice_torchrun_restarts_and_the_run_ends_identical(data, tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = torchrun(tmp_path, base_argv(data, ref_dir, "--resume", **FLAGS))
    plan = {"0": {"rank": 1, "iteration": 3, "start": 0}, "1": {"rank": 0, "checkpoint": 6}}
    p = torchrun(tmp_path, base_argv(data, run_dir, "--resume", **FLAGS), plan)
    out = p.stdout
    assert "torchrun restart 1 (TORCHELASTIC_RESTART_COUNT=1): continuing from checkpoint_iter_2.pt" in out, out
    # Killed while writing 6: the previous checkpoint (4) is where the second restart continues.
    assert "torchrun restart 2 (TORCHELASTIC_RESTART_COUNT=2): continuing from checkpoint_iter_4.pt" in out, out
    assert "a partial checkpoint left by an interrupted write" in p.stderr, p.stderr[-3000:]
    assert _digest(out) == _digest(ref.stdout)
    _check_like_uninterrupted(run_dir, ref_dir, restarts=2)


def test_fsdp_rank0_killed_while_writing_a_checkpoint_loses_nothing_beyond_the_interval(data, tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    torchrun(tmp_path, base_argv(data, ref_dir, "--fsdp", "--resume", **FLAGS))
    p = torchrun(tmp_path, base_argv(data, run_dir, "--fsdp", "--resume", **FLAGS), {"0": {"rank": 0, "checkpoint": 4}})
    assert "torchrun restart 1 (TORCHELASTIC_RESTART_COUNT=1): continuing from checkpoint_iter_2.pt" in p.stdout
    _check_like_uninterrupted(run_dir, ref_dir, restarts=1)
