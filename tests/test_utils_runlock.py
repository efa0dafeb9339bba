"""One run per directory: a second trainer, sweep or train_bpe on a directory in use is refused in one
line naming the holder, the holder carries on, and a holder killed by ``kill -9`` leaves no stale lock.

The holder is either a real trainer slowed down per step (forked from the fault-injection harness's
warm server, so it starts in well under a second) or a tiny torch-free helper process that takes the
lock and waits, so nothing here waits on a long run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cs336_basics import training_together as tt
from cs336_basics.utils import runlock
from tests._fault_utils import Launcher
from tests._train_utils import REPO, base_argv, load_pt, subprocess_env, train_losses, write_pattern_data

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs fcntl.flock and fork")

HOLDER = (
    "import sys, time\n"
    "from cs336_basics.utils import runlock\n"
    "lock = runlock.acquire(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture()
def holder(tmp_path):
    """Start a helper process that locks a directory; yields (process, directory)."""
    procs = []

    def start(directory: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], cwd=REPO, env=subprocess_env(),
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"  # blocks until the lock is held (no sleeps)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(30)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("lock_data"), n_train=5_000, n_val=1_000)


def _refusal(err: str, directory: Path, pid: int) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: ") and str(directory) in line, line
    assert f"pid {pid} on host {socket.gethostname()} since " in line, line
    return line


def test_second_trainer_is_refused_and_the_first_finishes_normally(data, tmp_path):
    """Two real trainer processes on one --checkpoint_dir: the second exits 2 at once naming the first
    (pid, host, start time), writes nothing, and the first finishes as if alone."""
    la = Launcher(tmp_path / "logs")
    try:
        run_dir = tmp_path / "run"
        argv = base_argv(data, run_dir, max_iters=12, checkpoint_interval=4, eval_interval=4)
        first = la.start(argv, name="first", faults={"step_delay": 0.2})
        first.wait_for_iter(1, timeout=300)
        config_before = (run_dir / "run_config.json").stat().st_mtime_ns
        second = la.run(base_argv(data, run_dir, max_iters=12, seed=99), name="second", timeout=600)
        assert second.poll() == 2, second.describe()
        line = _refusal(second.stderr, run_dir, first.pid)
        assert "--checkpoint_dir" in line and "--resume" in line
        assert "Loading data" not in second.stdout  # refused before any work
        # The second wrote nothing: the first's run record is its own, the lock still names the first.
        assert (run_dir / "run_config.json").stat().st_mtime_ns == config_before
        assert f'"pid": {first.pid},' in (run_dir / runlock.LOCK_NAME).read_text()
        assert first.wait(600) == 0, first.describe()
    finally:
        la.close()
    assert sorted(train_losses(run_dir)) == list(range(1, 13))  # one run's log, not moved aside
    assert not list(run_dir.glob("metrics.jsonl.*")), sorted(p.name for p in run_dir.iterdir())
    assert load_pt(run_dir / "checkpoint_iter_12.pt")["train_config"]["seed"] == 1234


def test_under_ddp_every_rank_learns_that_rank_0_was_refused(data, tmp_path, holder):
    """Two ranks (started the way torchrun starts them): rank 0 is refused the lock, and both exit 2 at
    once, with the reason said once (by rank 0), instead of rank 1 waiting in a collective."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    run_dir = tmp_path / "run"
    p = holder(run_dir)
    la = Launcher(tmp_path / "logs")
    try:
        env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        ranks = [la.start(base_argv(data, run_dir, max_iters=2, warmup_iters=0), name=f"rank{r}",
                          env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]  # fmt: skip
        for r in ranks:
            assert r.wait(600) == 2, r.describe()
    finally:
        la.close()
    _refusal(ranks[0].stderr, run_dir, p.pid)
    assert ranks[1].stderr.strip() == "", ranks[1].describe()
    assert "Loading data" not in ranks[0].stdout + ranks[1].stdout


def test_kill9_holder_leaves_no_stale_lock(data, tmp_path, holder, capsys):
    run_dir = tmp_path / "run"
    p = holder(run_dir)
    assert tt.main(base_argv(data, run_dir, max_iters=2, warmup_iters=0)) == 2
    _refusal(capsys.readouterr().err, run_dir, p.pid)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    assert (run_dir / runlock.LOCK_NAME).exists()  # the file stays; the kernel dropped the lock
    assert tt.main(base_argv(data, run_dir, max_iters=2, warmup_iters=0, checkpoint_interval=2)) == 0
    assert (run_dir / "checkpoint_iter_2.pt").is_file()


def test_lock_is_released_when_a_run_ends_so_resume_works_in_one_process(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert tt.main(base_argv(data, run_dir, max_iters=2, warmup_iters=0, checkpoint_interval=1)) == 0
    assert tt.main(base_argv(data, run_dir, "--resume", max_iters=3, warmup_iters=0, checkpoint_interval=1)) == 0
    # A run refused for bad input after taking the lock frees it too.
    assert tt.main(base_argv(data, run_dir, "--resume", max_iters=3, warmup_iters=0, d_model=48, d_ff=96)) == 2
    with runlock.hold(run_dir):
        pass
    capsys.readouterr()


def test_train_bpe_output_in_use_is_refused(tmp_path, holder, capsys):
    from cs336_basics.train_bpe import main as train_bpe_main
    from cs336_basics.utils.errors import run_cli

    (tmp_path / "in.txt").write_text("hello world, hello there\n" * 20)
    out = tmp_path / "tok"
    p = holder(out)
    rc = run_cli(train_bpe_main, ["--input", str(tmp_path / "in.txt"), "--vocab_size", "270", "--output", str(out)])
    assert rc == 2
    line = _refusal(capsys.readouterr().err, out, p.pid)
    assert "--output" in line
    assert not (out / "vocab.json").exists()


def test_sweep_directory_in_use_is_refused(tmp_path, holder, capsys, monkeypatch):
    from cs336_basics.tools import sweep
    from cs336_basics.utils.errors import run_cli

    flags = frozenset({"train_data_path", "val_data_path", "device", "max_iters", "lr", "checkpoint_dir", "resume"})
    monkeypatch.setattr(sweep, "training_flag_names", lambda: flags)  # skip reading the trainer's --help
    cfg = tmp_path / "s.toml"
    cfg.write_text('name = "s"\n[base]\ntrain_data_path = "t.npy"\nval_data_path = "v.npy"\ndevice = "cpu"\n'
                   'max_iters = 1\n[grid]\nlr = [1e-3]\n')  # fmt: skip
    out = tmp_path / "sweep"
    p = holder(out)
    assert run_cli(sweep.main, ["--config", str(cfg), "--out_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sweep directory" in _refusal(err, out, p.pid)
    assert not (out / "sweep_state.json").exists()


def test_a_lock_file_left_by_a_dead_process_is_not_a_lock(tmp_path):
    """Only a live flock counts: a file with a dead pid's details in it does not block anyone."""
    d = tmp_path / "d"
    d.mkdir()
    (d / runlock.LOCK_NAME).write_text('{"pid": 1, "host": "elsewhere", "started": "long ago"}\n')
    with runlock.hold(d) as lock:
        assert lock.held
        with pytest.raises(runlock.DirectoryInUse, match=f"pid {os.getpid()} on host"):
            runlock.acquire(d)  # a second descriptor, even in this process, is refused


def test_discard_takes_away_only_what_acquire_created(tmp_path):
    """A run refused during setup: the directories and lock file it made go; what was there stays."""
    fresh = tmp_path / "runs" / "a" / "b"
    lock = runlock.acquire(fresh)
    assert lock.held and (fresh / runlock.LOCK_NAME).is_file()
    lock.discard()
    assert not lock.held and sorted(tmp_path.iterdir()) == []  # runs/, runs/a and runs/a/b were all its own

    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    lock = runlock.acquire(mine / "sub")
    lock.discard()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mine", "sub"]  # only the lock file was new

    (mine / "sub" / runlock.LOCK_NAME).write_text("")  # a lock file from an earlier run is that run's
    runlock.acquire(mine / "sub").discard()
    assert (mine / "sub" / runlock.LOCK_NAME).is_file()

    busy = tmp_path / "busy"
    lock = runlock.acquire(busy)
    (busy / "metrics.jsonl").write_text("{}\n")  # written after the lock: the folder is no longer empty
    lock.discard()
    assert sorted(p.name for p in busy.iterdir()) == [runlock.LOCK_NAME, "metrics.jsonl"]
    runlock.acquire(busy).release()  # and the lock is free again
