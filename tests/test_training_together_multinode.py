"""Multi-node training, simulated on one host: two torchrun "nodes" (each its own process tree, one
worker each, gloo on CPU) meet through torchrun's c10d rendezvous on 127.0.0.1.

Three launches run side by side, the same training flags for all (``--resume`` included, as a
cluster job script passes it):

* ``standalone``: ``torchrun --standalone --nproc_per_node 2``, the one-machine yardstick;
* ``two_nodes``: ``torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d ...`` started twice;
* ``restarted``: the same (``--max_restarts 1``) with a small wrapper around the program: the worker
  of rank 1 pauses once at the start of the iteration after the first checkpoint, and the test kills
  it with SIGKILL. Its node's agent restarts the group, both workers resume from that checkpoint.

On CPU at one thread the runs are deterministic, so every checkpoint of both multi-node runs must
equal the standalone run's bit for bit. The run directory is shared (as a cluster's shared file
system would be) and only global rank 0 may write to it; each node runs in its own empty working
directory, which must stay empty.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import torch

from cs336_basics.training import runtime
from tests._train_utils import assert_weights_equal, base_argv, metrics, subprocess_env, write_pattern_data

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process-tree handling assumes Linux")

# Constant LR, 2 micro-batches per step (so DDP's no_sync path runs across nodes), checkpoints every 2.
FLAGS = dict(batch_size=4, grad_accum_steps=2, max_iters=6, warmup_iters=0, lr=3e-3, min_lr=3e-3,
             checkpoint_interval=2, eval_interval=3, eval_iters=2, seed=31)  # fmt: skip
KILL_AFTER = 2  # the checkpoint the killed group resumes from
DEADLINE_S = 420  # all three launches together, on a busy 2-core machine (idle: well under a minute)

# Rank 1, once (no marker yet): at its first training micro-step of iteration KILL_AFTER + 1 (the
# checkpoint of iteration KILL_AFTER is on disk by then: saving ends with a collective that rank 0
# joins after writing), write a marker with its pid and wait to be killed. (Not gated on
# TORCHELASTIC_RESTART_COUNT: each agent counts its own restarts, so the nodes' counts can differ.)
WRAPPER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from cs336_basics import training_together as tt
    from cs336_basics.training import step as train_step

    if os.environ.get("RANK") == "1" and not os.path.exists(os.path.join({marker_dir!r}, "paused")):
        real, calls = train_step.cross_entropy, [0]

        def cross_entropy(logits, targets):
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == {at}:
                    tmp = os.path.join({marker_dir!r}, "tmp")
                    with open(tmp, "w") as f:
                        f.write(str(os.getpid()))
                    os.replace(tmp, os.path.join({marker_dir!r}, "paused"))
                    time.sleep(600)  # the test kills us long before this
            return real(logits, targets)

        train_step.cross_entropy = cross_entropy
    raise SystemExit(tt.main(sys.argv[1:]))
    """
)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open while choosing, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def node_env() -> dict[str, str]:
    env = subprocess_env()
    # A fresh store for the workers of each restart: torchrun's default (workers share the agents'
    # rendezvous store) keeps the previous attempt's keys, and a restarted rank can read its peer's
    # stale address (pytorch/pytorch issue 135712). docs/distributed.md and the SLURM script set it too.
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    if any(name == "lo" for _, name in socket.if_nameindex()):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo would otherwise bind to the interface of the hostname
    return env


def two_node_cmds(port: int, rdzv_id: str, target: list[str]) -> list[list[str]]:
    """The command for each node (docs/distributed.md's): identical on both, torchrun assigns node ranks at
    rendezvous. ``--max_restarts 1``: a failed worker on either node restarts both nodes' workers."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", rdzv_id,
           "--local_addr", "127.0.0.1", "--max_restarts", "1", *target]  # fmt: skip
    return [cmd, list(cmd)]


@dataclass
class Node:
    """One torchrun agent (a session of its own) and every process seen under it."""

    name: str
    cwd: Path
    proc: subprocess.Popen
    log: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def watch(self) -> None:
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in self.seen.values():  # torchrun starts its workers in sessions of their own
            with contextlib.suppress(psutil.Error):
                p.kill()  # psutil checks the process is still the one seen (no pid reuse)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(name: str, cmd: list[str], root: Path) -> Node:
    cwd = root / f"cwd_{name}"
    cwd.mkdir(parents=True)
    log = root / f"{name}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=node_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    return Node(name, cwd, proc, log)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    data = write_pattern_data(root / "data", n_train=6_000, n_val=1_000)
    markers = root / "markers"
    markers.mkdir()
    wrapper = root / "pause_rank1.py"
    wrapper.write_text(WRAPPER.replace("{at}", str(2 * KILL_AFTER + 1)).replace("{marker_dir!r}", repr(str(markers))))
    dirs = {k: root / k for k in ("standalone", "two_nodes", "restarted")}
    argv = {k: base_argv(data, d, "--resume", **FLAGS) for k, d in dirs.items()}
    module = ["-m", "cs336_basics.training_together"]
    tag = f"{os.getpid()}_{time.time_ns()}"  # rendezvous ids unique to this test session

    nodes: list[Node] = []
    killed: dict[str, object] = {}
    try:
        standalone = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        nodes.append(start("standalone", standalone + module + argv["standalone"], root))
        port_a, port_b = free_ports(2)
        for i, cmd in enumerate(two_node_cmds(port_a, f"two_{tag}", module + argv["two_nodes"])):
            nodes.append(start(f"two_nodes_{i}", cmd, root))
        restart_cmds = two_node_cmds(port_b, f"restart_{tag}", [str(wrapper), *argv["restarted"]])
        for i, cmd in enumerate(restart_cmds):
            nodes.append(start(f"restarted_{i}", cmd, root))

        deadline = time.monotonic() + DEADLINE_S
        while any(n.proc.poll() is None for n in nodes):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"launches still running after {DEADLINE_S} s:\n" + "\n".join(n.output[-3000:] for n in nodes)
                )
            for n in nodes:
                n.watch()
            paused = markers / "paused"
            if "pid" not in killed and paused.exists():
                pid = int(paused.read_text())
                killed["pid"] = pid
                killed["checkpoint_on_disk"] = (dirs["restarted"] / f"checkpoint_iter_{KILL_AFTER}.pt").exists()
                killed["node"] = next((n.name for n in nodes if pid in n.seen), None)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        for n in nodes:
            n.kill()
    return {"dirs": dirs, "nodes": {n.name: n for n in nodes}, "killed": killed, "markers": markers}


def _ok(node: Node) -> str:
    out = node.output
    assert node.proc.returncode == 0, f"{node.name} exited {node.proc.returncode}:\n{out[-4000:]}"
    return out


def _digest(out: str) -> str:
    m = re.search(r"^DDP check: weights identical on all 2 ranks \(sha256 (\w+)\)", out, re.M)
    assert m, out[-3000:]
    return m.group(1)


def _checkpoints(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("checkpoint_iter_*.pt"))


ATTEMPTS = {"two_nodes": 1, "restarted": 2}


@pytest.mark.parametrize("run", ["two_nodes", "restarted"])
def test_two_nodes_train_exactly_like_one(runs, run):
    dirs, nodes = runs["dirs"], runs["nodes"]
    ref_out = _ok(nodes["standalone"])
    both = "".join(_ok(nodes[f"{run}_{i}"]) for i in (0, 1))
    assert both.count("Tokens per optimizer step: 256 (batch 4 x context 16 x accum 2 x world 2)") == ATTEMPTS[run]
    assert _digest(both) == _digest(ref_out)
    names = _checkpoints(dirs["standalone"])
    assert names == [f"checkpoint_iter_{i}.pt" for i in (2, 4, 6)]
    assert _checkpoints(dirs[run]) == names
    for name in [*names, "best.pt"]:
        assert_weights_equal(dirs["standalone"] / name, dirs[run] / name)


def test_only_global_rank_0_writes(runs):
    dirs, nodes = runs["dirs"], runs["nodes"]
    ref = sorted(p.name for p in dirs["standalone"].iterdir())
    assert {"metrics.jsonl", "run_config.json", "best.pt"} <= set(ref)
    for run, attempts in ATTEMPTS.items():
        assert sorted(p.name for p in dirs[run].iterdir()) == ref, run
        outs = [_ok(nodes[f"{run}_{i}"]) for i in (0, 1)]
        # The console lines come from one rank per attempt (which node holds global rank 0 is decided
        # at each rendezvous), and the run's one log holds one record per step.
        assert sum(o.count("Starting training from iteration") for o in outs) == attempts, run
        if attempts == 1:
            assert sorted("Saved checkpoint to" in o for o in outs) == [False, True], run
        assert [r["step"] for r in metrics(dirs[run]) if r.get("type") == "train"] == list(range(1, 7)), run
    for n in nodes.values():
        assert list(n.cwd.iterdir()) == [], f"{n.name} wrote into its working directory"
    assert sorted(p.name for p in runs["markers"].iterdir()) == ["paused"]


def test_killed_worker_restarts_the_group_from_its_checkpoint(runs):
    dirs, nodes, killed = runs["dirs"], runs["nodes"], runs["killed"]
    assert killed.get("pid"), "rank 1 never paused: the kill was not exercised"
    assert killed["checkpoint_on_disk"], f"checkpoint_iter_{KILL_AFTER}.pt was not written before the kill"
    assert killed["node"] in ("restarted_0", "restarted_1"), "the paused worker was under neither torchrun agent"
    both = "".join(_ok(nodes[f"restarted_{i}"]) for i in (0, 1))
    assert "--resume: no checkpoint in" in both  # the first attempt started fresh
    ck = dirs["restarted"] / f"checkpoint_iter_{KILL_AFTER}.pt"
    assert f"Resuming from {ck} (iteration {KILL_AFTER})" in both  # the second resumed
    # The killed node's agent saw its worker die by SIGKILL (and restarted the group).
    victim = nodes[killed["node"]].output
    assert re.search(rf"exitcode: -9\b.*\(pid: {killed['pid']}\)", victim), victim[-3000:]


def test_resume_disagreement_message():
    assert runtime.resume_disagreement([4, 4, 4], "runs/x") is None
    assert runtime.resume_disagreement([None, None], "runs/x") is None
    msg = runtime.resume_disagreement([4, 4, None, None, None], "runs/x")
    assert msg == (
        "the ranks found different checkpoints to resume in runs/x (iteration 4 on 2 ranks (rank 0, ...); none on "
        "3 ranks (rank 2, ...)); on several machines --checkpoint_dir must be one directory that every node reads "
        "(a shared file system)"
    )


def test_ranks_that_disagree_on_the_checkpoint_refuse_to_start(tmp_path, monkeypatch, capsys):
    """A --checkpoint_dir that only rank 0's node sees (node-local disks): rank 0 would resume, the
    others start afresh. Simulated in one process: the gather reports a second rank without one."""
    from cs336_basics import training_together as tt

    torch.set_num_threads(1)
    data = write_pattern_data(tmp_path / "data", n_train=4_000, n_val=1_000)
    flags = {**FLAGS, "max_iters": 2}
    assert tt.main(base_argv(data, tmp_path / "run", **flags)) == 0
    capsys.readouterr()
    monkeypatch.setattr(runtime, "all_gather_object", lambda obj: [obj, None])
    assert tt.main(base_argv(data, tmp_path / "run", "--resume", **{**flags, "max_iters": 4})) == 2
    err = capsys.readouterr().err
    assert "the ranks found different checkpoints to resume" in err and "iteration 2 on 1 rank (rank 0)" in err
    assert err.strip().count("\n") == 0
    assert not (tmp_path / "run" / "checkpoint_iter_4.pt").exists()
