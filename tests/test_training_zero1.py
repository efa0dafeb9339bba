"""``--zero1`` (ZeRO-1 through ZeroRedundancyOptimizer) under torchrun: 2 CPU processes (gloo).

One torchrun launch runs several trainings back to back in the same two processes (the process
group is kept between them), so the expensive start-up is paid once:

1. DDP (AdamW), continuing a single-process checkpoint from iteration 2 to 6;
2. ``--zero1`` from the same checkpoint to 4, then 3. ``--zero1`` resuming its own checkpoint to 6;
4. DDP and 5. ``--zero1`` with Muon, 0 to 3.

ZeRO-1 must match DDP (each rank's update of the parameters it owns is DDP's update of them), its
checkpoints must be plain optimizer state dicts (so they cross-load: a single process continues
one exactly like a DDP checkpoint), and each rank must hold only part of the optimizer state.

Each rank writes its RESULT/EXIT lines to its own file: the two ranks share torchrun's one stdout pipe,
where a write of one rank can land inside a line of the other (it once failed CI that way).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from cs336_basics import training_together as tt
from cs336_basics.training import zero1
from tests._train_utils import REPO, assert_weights_equal, base_argv, load_pt, subprocess_env, write_pattern_data

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

# Constant LR (warmup 0, min_lr == lr) so the schedule does not depend on max_iters.
FLAGS = dict(batch_size=4, grad_accum_steps=2, warmup_iters=0, lr=3e-3, min_lr=3e-3, checkpoint_interval=1,
             eval_interval=100, seed=5)  # fmt: skip

WRAPPER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from cs336_basics import training_together as tt
    from cs336_basics.training import runtime

    destroy = runtime.destroy_process_group
    runtime.destroy_process_group = lambda: None  # keep the process group for the next run
    real_loop, label = tt.train_loop, [None]
    results = open(f"{sys.argv[2]}.rank{os.environ['RANK']}", "a")  # this rank's own file

    def report(line):
        results.write(line + "\\n")
        results.flush()

    def loop(run, stop):
        rc = real_loop(run, stop)
        opt = run.state.optimizer
        local = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps this rank's optimizer in .optim
        n = sum(t.numel() for st in local.state.values() for t in st.values() if torch.is_tensor(t) and t.dim() > 0)
        report(f"RESULT run={label[0]} rank={os.environ['RANK']} name={run.settings.run_name} state_numel={n} "
               f"params={sum(p.numel() for p in run.state.model.parameters())}")
        return rc

    tt.train_loop = loop
    for name, argv in json.load(open(sys.argv[1])):
        label[0] = name
        report(f"EXIT run={name} rank={os.environ['RANK']} rc={tt.main(argv)}")
    destroy()
    """
)


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    d = tmp_path_factory.mktemp("zero1")
    data = write_pattern_data(d / "data", n_train=6000, n_val=1000)
    torch.set_num_threads(1)
    single = d / "single"
    assert tt.main(base_argv(data, single, **{**FLAGS, "max_iters": 2})) == 0
    start = str(single / "checkpoint_iter_2.pt")
    runs = {
        "ddp": base_argv(data, d / "ddp", "--resume_from", start, **{**FLAGS, "max_iters": 6}),
        "zero_a": base_argv(data, d / "zero", "--zero1", "--resume_from", start, **{**FLAGS, "max_iters": 4}),
        "zero_b": base_argv(data, d / "zero", "--zero1", "--resume", **{**FLAGS, "max_iters": 6}),
        # (also: --on_checkpoint runs on rank 0 only)
        "ddp_muon": base_argv(
            data,
            d / "ddp_muon",
            "--optimizer",
            "muon",
            "--on_checkpoint",
            'echo "$RANK {step}" >> {run_dir}/hook_ranks',
            **{**FLAGS, "max_iters": 3},
        ),  # fmt: skip
        "zero_muon": base_argv(data, d / "zero_muon", "--optimizer", "muon", "--zero1", **{**FLAGS, "max_iters": 3}),
    }
    (d / "runs.json").write_text(json.dumps(list(runs.items())))
    (d / "wrapper.py").write_text(WRAPPER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(d / "wrapper.py"), str(d / "runs.json"), str(d / "results")]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
    results = "".join((d / f"results.rank{rank}").read_text() for rank in (0, 1))
    return d, data, results


def test_every_run_succeeds_and_ranks_agree_on_the_run_name(launch):
    _, _, out = launch
    exits = re.findall(r"^EXIT run=(\w+) rank=(\d) rc=(\d+)$", out, re.M)
    assert sorted(exits) == sorted((r, k, "0") for r in ("ddp", "zero_a", "zero_b", "ddp_muon", "zero_muon")
                                   for k in "01"), out  # fmt: skip
    names = {}
    for run, _rank, name in re.findall(r"^RESULT run=(\w+) rank=(\d) name=(\S+)", out, re.M):
        names.setdefault(run, set()).add(name)
    assert sorted(names) == sorted(("ddp", "zero_a", "zero_b", "ddp_muon", "zero_muon")), out
    assert all(len(v) == 1 for v in names.values()), names  # rank 0 chose the timestamp, rank 1 got it


def test_each_rank_keeps_part_of_the_optimizer_state(launch):
    _, _, out = launch
    for run, moments in (("zero_b", 2), ("ddp", 2)):  # AdamW: exp_avg and exp_avg_sq per parameter
        rows = re.findall(rf"^RESULT run={run} rank=(\d) \S+ state_numel=(\d+) params=(\d+)$", out, re.M)
        sizes = {int(rank): int(n) for rank, n, _ in rows}
        assert sorted(sizes) == [0, 1], (run, out)
        total = moments * int(rows[0][2])
        if run == "ddp":
            assert sizes == {0: total, 1: total}  # replicated
        else:
            assert sizes[0] + sizes[1] == total and max(sizes.values()) < 0.75 * total, (sizes, total)


def test_zero1_trains_like_ddp_and_resumes_exactly(launch):
    d, _, _ = launch
    for step in (3, 4, 5, 6):  # 3-4 from the plain checkpoint, 5-6 after resuming zero1's own checkpoint
        assert_weights_equal(d / "zero" / f"checkpoint_iter_{step}.pt", d / "ddp" / f"checkpoint_iter_{step}.pt")
    z, p = (
        load_pt(d / "zero" / "checkpoint_iter_6.pt")["optimizer"],
        load_pt(d / "ddp" / "checkpoint_iter_6.pt")["optimizer"],
    )
    # A plain optimizer state dict: the same groups and parameter indices as DDP's, the same tensors.
    assert z["param_groups"] == p["param_groups"]
    assert z["state"].keys() == p["state"].keys()
    for i in p["state"]:
        assert z["state"][i].keys() == p["state"][i].keys()
        for k, v in p["state"][i].items():
            assert torch.equal(z["state"][i][k], v) if torch.is_tensor(v) else z["state"][i][k] == v, (i, k)


def test_checkpoint_hooks_run_on_rank_0_only(launch):
    d, _, _ = launch
    assert (d / "ddp_muon" / "hook_ranks").read_text().splitlines() == ["0 1", "0 2", "0 3"]


def test_zero1_wraps_muon(launch):
    d, _, _ = launch
    a, b = load_pt(d / "zero_muon" / "checkpoint_iter_3.pt"), load_pt(d / "ddp_muon" / "checkpoint_iter_3.pt")
    for k in b["model"]:  # Newton-Schulz batches same-shaped matrices: a rank's batch holds only its own
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_a_zero1_checkpoint_continues_in_one_process_like_a_ddp_one(launch, tmp_path, capsys):
    d, data, _ = launch
    for src in ("zero", "ddp"):
        argv = base_argv(data, tmp_path / src, "--resume_from", str(d / src / "checkpoint_iter_6.pt"),
                         **{**FLAGS, "max_iters": 8})  # fmt: skip
        assert tt.main(argv) == 0
    assert_weights_equal(tmp_path / "zero" / "checkpoint_iter_8.pt", tmp_path / "ddp" / "checkpoint_iter_8.pt")
    capsys.readouterr()


def test_zero1_is_refused_without_torchrun_and_with_fsdp(tmp_path, capsys):
    data = write_pattern_data(tmp_path / "data", n_train=2000, n_val=500)
    for extra, needle in ((["--zero1"], "launch with torchrun"), (["--zero1", "--fsdp"], "pick one")):
        rc = tt.main(base_argv(data, tmp_path / "run", *extra))
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and needle in lines[0], err


def test_zero1_in_one_process_is_refused_in_one_line():
    from cs336_basics.training.runtime import RuntimeConfigError, setup_runtime

    with pytest.raises(RuntimeConfigError, match="--zero1 shards the optimizer state across processes"):
        zero1.check_launch(setup_runtime("cpu"))
