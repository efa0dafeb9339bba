"""scripts/launch_slurm.sh without a cluster: its syntax (``bash -n``), its SBATCH header, and the command
it builds, run with stand-ins for ``srun`` and ``scontrol`` and read back by torchrun's own argument
parser and the training program's settings parser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cs336_basics.training.settings import parse_settings
from tests._train_utils import REPO

SCRIPT = REPO / "scripts" / "launch_slurm.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")

# Stand-ins: scontrol lists two hosts (the second after a pause, as a long list arrives in pieces: a
# reader that stops after the first line leaves it writing into a closed pipe); srun records its
# arguments, one per line, and exits 0.
SCONTROL = """#!/bin/bash
if [[ "$1 $2" == "show hostnames" ]]; then echo gpu-node-07; sleep 0.5; echo gpu-node-08; exit 0; fi
echo "scontrol $*" >> "$STUB_LOG"
"""
SRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$STUB_SRUN_ARGS"
"""


def test_script_syntax():
    p = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_sbatch_header():
    header = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", SCRIPT.read_text(), re.M))
    assert header["ntasks-per-node"] == "1"  # one torchrun per node
    for key in ("nodes", "gpus-per-node", "cpus-per-task", "time", "signal"):
        assert header.get(key), key
    assert "requeue" in header and header["signal"].startswith("B:USR1@")


def _run_with_stubs(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_GPUS_PER_NODE": "h100:4",
        "SLURM_CPUS_PER_TASK": "16",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "STUB_SRUN_ARGS": str(tmp_path / "srun_args"),
        "STUB_LOG": str(tmp_path / "stub_log"),
        "CONFIG": "base.toml",
    }
    p = subprocess.run([BASH, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p, (tmp_path / "srun_args").read_text().splitlines()


def test_srun_torchrun_command(tmp_path):
    p, argv = _run_with_stubs(tmp_path, "--max_iters", "40000")
    assert "2 nodes x 4 GPUs, rendezvous gpu-node-07:29500" in p.stdout
    torchrun = str(tmp_path / ".venv" / "bin" / "torchrun")
    i = argv.index(torchrun)
    assert "--ntasks-per-node=1" in argv[:i] and "--cpus-per-task=16" in argv[:i]

    from torch.distributed.run import get_args_parser

    t = get_args_parser().parse_args(argv[i + 1 :])
    assert (t.nnodes, t.nproc_per_node, t.rdzv_backend) == ("2", "4", "c10d")
    assert (t.rdzv_endpoint, t.rdzv_id, t.max_restarts) == ("gpu-node-07:29500", "4242", 3)
    assert t.module and t.training_script == "cs336_basics.training_together"
    prog = t.training_script_args
    assert prog[:2] == ["--config", "base.toml"] and prog[-2:] == ["--max_iters", "40000"]
    # The training program reads it all (from the submit directory, where the job starts).
    (tmp_path / "base.toml").write_text('train_data_path = "data/train.bin"\nval_data_path = "data/val.bin"\n')
    s = parse_settings(["--config", str(tmp_path / "base.toml"), *prog[2:]])
    assert s.train_data_path == "data/train.bin" and s.max_iters == 40000
    assert s.resume and str(s.checkpoint_dir) == "runs/slurm_4242" and (s.device, s.dtype) == ("cuda", "bf16")
