"""Fault-injection tests: the trainer and tokenizer tools survive crashes, bad files
and bad numbers, and lose nothing.

Every run under test is a real process (forked from a warm server, see tests/_fault_utils.py), so
``kill -9``, SIGTERM/SIGINT, exit codes and files left on disk are exactly what a user would see.
Faults are injected by monkeypatching inside that process (``os.fsync`` for slow / failing /
killed checkpoint writes, ``os.fdopen`` for a disk that fills up mid-write,
``nn_utils.cross_entropy`` for NaN/Inf and for delays that let signals land mid-run), never by
production hooks. ``RELIABILITY_MUTATION=<code>`` (see tests/_fault_utils.py) runs extra code in
every run, to break a guarantee on purpose and watch these tests fail.

The yardstick for "loses nothing" is one uninterrupted reference run (same flags): training on
CPU is deterministic, so the state after step N of any interrupted run must equal the reference's
``checkpoint_iter_N.pt`` bit for bit, and so must every resumed run's final weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._fault_utils import Launcher, Run, leftover_temp_files
from tests._torch_threads import DEFAULT_THREADS

# The harness finds the file being fsynced through /proc/self/fd and forks runs from a warm server.
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="fault injection needs Linux (/proc, fork)"
)

VOCAB = 64
CTX = 16
MAX_ITERS = 20
CKPT_EVERY = 2
SEED = 1234

# Flags that change nothing numerically (checkpoint_dir/interval, log_interval) may differ between a
# run under test and the reference; everything else must be identical.
MODEL_FLAGS = [
    "--vocab_size", str(VOCAB), "--context_length", str(CTX), "--d_model", "32", "--num_layers", "2",
    "--num_heads", "2", "--d_ff", "64",
]  # fmt: skip
TRAIN_FLAGS = [
    "--batch_size", "4", "--max_iters", str(MAX_ITERS), "--lr", "3e-3", "--min_lr", "3e-4",
    "--warmup_iters", "2", "--eval_interval", "10", "--eval_iters", "2", "--log_interval", "1",
    "--device", "cpu", "--seed", str(SEED),
]  # fmt: skip

ITER_LINE = re.compile(r"^Iter\s+(\d+)", re.M)
SAVED_LINE = re.compile(r"^Saved checkpoint to (\S+)", re.M)
RESUMING_LINE = re.compile(r"^Resuming from (\S+) \(iteration (\d+)\)", re.M)
CKPT_NAME = re.compile(r"^checkpoint_iter_(\d+)\.pt$")


# ----------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    la = Launcher(tmp_path_factory.mktemp("reliability_logs"))
    yield la
    la.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reliability_data")
    rng = np.random.default_rng(0)
    # Some structure (a repeating pattern with noise) so the loss actually moves.
    base = np.tile(np.arange(VOCAB, dtype=np.uint16), 200)
    noise = rng.integers(0, VOCAB, size=base.shape, dtype=np.uint16)
    train = np.where(rng.random(base.shape) < 0.2, noise, base).astype(np.uint16)
    val = rng.integers(0, VOCAB, size=2000, dtype=np.uint16)
    np.save(d / "train.npy", train)
    np.save(d / "val.npy", val)
    return {"train": d / "train.npy", "val": d / "val.npy", "dir": d}


def trainer_argv(data: dict[str, Path], run_dir: Path, *extra: str, ckpt_every: int = CKPT_EVERY,
                 model_flags: list[str] | None = None) -> list[str]:  # fmt: skip
    return [
        "--train_data_path", str(data["train"]), "--val_data_path", str(data["val"]),
        *(model_flags or MODEL_FLAGS), *TRAIN_FLAGS,
        "--checkpoint_dir", str(run_dir), "--checkpoint_interval", str(ckpt_every), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fresh_process_run(launcher, data, tmp_path_factory) -> tuple[Run, Path]:
    """The reference flags run by the real ``python -m`` command line in a fresh interpreter.

    Started first (while the fork server is still importing torch, so the two overlap); the
    determinism test compares it with the reference at the end.
    """
    run_dir = tmp_path_factory.mktemp("fresh_process") / "run"
    return launcher.start(trainer_argv(data, run_dir), name="determinism_real_cli", fresh_interpreter=True), run_dir


@pytest.fixture(scope="module")
def reference(launcher, data, tmp_path_factory, fresh_process_run) -> Path:
    """One uninterrupted run to MAX_ITERS: checkpoint_iter_{2,4,...,20}.pt and metrics.jsonl."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    r = launcher.run(trainer_argv(data, run_dir), name="reference")
    assert r.poll() == 0, r.describe()
    for n in range(CKPT_EVERY, MAX_ITERS + 1, CKPT_EVERY):
        assert (run_dir / f"checkpoint_iter_{n}.pt").is_file(), f"reference run wrote no checkpoint {n}\n{r.describe()}"
    return run_dir


def load_pt(path: Path) -> dict:
    """Independent reader (not the project's): plain torch.load with weights_only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_state_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: different keys {sorted(set(a) ^ set(b))}"
    for k in a:
        assert torch.equal(a[k], b[k]), (
            f"{what}: tensor {k} differs (max abs diff {(a[k].float() - b[k].float()).abs().max()})"
        )


def assert_weights_equal(path_a: Path, path_b: Path) -> None:
    assert_state_equal(load_pt(path_a)["model"], load_pt(path_b)["model"], f"model weights {path_a} vs {path_b}")


def optimizer_tensors(payload: dict) -> dict[str, torch.Tensor]:
    """Flatten the tensors of ``payload['optimizer']['state']`` (moments, step counts)."""
    out = {}
    for pid, st in payload["optimizer"]["state"].items():
        for k, v in st.items():
            out[f"{pid}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return out


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    assert path.is_file(), f"no metrics.jsonl in {run_dir}"
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AssertionError(f"{path}:{i} is not valid JSON ({err}): {line[:200]!r}") from None
    return out


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss of the *last* train record for that step (a resumed run appends its own)."""
    return {int(r["step"]): r["loss"] for r in metrics(run_dir) if r.get("type") == "train"}


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    return [r for r in metrics(run_dir) if r.get("type") == "event" and (kind is None or r.get("event") == kind)]


def ckpt_iters(run_dir: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := CKPT_NAME.match(p.name)))


def sha_ok(path: Path) -> bool:
    """Independent sidecar check: sha256 of the file equals the sidecar's."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return False
    meta = json.loads(side.read_text())
    return hashlib.sha256(path.read_bytes()).hexdigest() == meta.get("sha256")


def assert_clean_error(r: Run, rc: int, *needles: str) -> str:
    """Exit ``rc``, no traceback, and the last stderr line is ``error: ...`` containing ``needles``."""
    err = r.stderr
    assert r.poll() == rc, f"expected exit {rc}\n{r.describe()}"
    assert "Traceback" not in err, f"traceback on stderr\n{r.describe()}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert errors, f"no 'error: ...' line on stderr\n{r.describe()}"
    msg = errors[-1]
    for n in needles:
        assert n.lower() in msg.lower(), f"error line does not mention {n!r}: {msg}"
    return msg


def assert_resumed_equals_reference(run_dir: Path, reference: Path, resumed_at: int) -> None:
    """Final weights bit-identical, and every loss logged after the resume point identical."""
    assert_weights_equal(run_dir / f"checkpoint_iter_{MAX_ITERS}.pt", reference / f"checkpoint_iter_{MAX_ITERS}.pt")
    got, want = train_losses(run_dir), train_losses(reference)
    for step in range(resumed_at + 1, MAX_ITERS + 1):
        assert step in got, f"step {step} missing from {run_dir}/metrics.jsonl after resuming at {resumed_at}"
        assert got[step] == want[step], f"step {step}: loss {got[step]!r} after resume, {want[step]!r} uninterrupted"
    # The log reads like an uninterrupted run's: work lost since the checkpoint is not logged twice.
    steps = [int(r["step"]) for r in metrics(run_dir) if r.get("type") == "train"]
    assert steps == sorted(set(steps)), f"train steps in metrics.jsonl repeat or go backwards: {steps}"
    assert all(got[s] == want[s] for s in steps), "logged losses before the resume point differ from the reference"
    evals = {(r["type"], r["step"]): r["val_loss"] for r in metrics(run_dir) if r.get("type") in ("eval", "final")}
    ref_evals = {
        (r["type"], r["step"]): r["val_loss"] for r in metrics(reference) if r.get("type") in ("eval", "final")
    }
    for key, v in ref_evals.items():
        if key[1] > resumed_at:
            assert evals.get(key) == v, f"{key}: val_loss {evals.get(key)!r} after resume, {v!r} uninterrupted"


def resume_and_check(launcher: Launcher, data, run_dir: Path, reference: Path, name: str) -> int:
    """``--resume`` the run in ``run_dir`` to MAX_ITERS; returns the iteration it resumed from."""
    intact_before = [n for n in ckpt_iters(run_dir) if sha_ok(run_dir / f"checkpoint_iter_{n}.pt")]
    r = launcher.run(trainer_argv(data, run_dir, "--resume"), name=name)
    assert r.poll() == 0, r.describe()
    m = RESUMING_LINE.search(r.stdout)
    assert m, f"no 'Resuming from <path> (iteration N)' line\n{r.describe()}"
    path, n = Path(m.group(1)), int(m.group(2))
    assert CKPT_NAME.match(path.name), f"resumed from {path}, which is not a finished checkpoint file name"
    assert path.name == f"checkpoint_iter_{n}.pt", m.group(0)
    if intact_before:
        # The newest checkpoint that verified before the resume must not be passed over.
        assert n >= max(intact_before), f"resumed from {n}, but checkpoint {max(intact_before)} was intact"
    assert_resumed_equals_reference(run_dir, reference, n)
    return n


# ----------------------------------------------------------------------------------------------
# 1. kill -9 at any moment
# ----------------------------------------------------------------------------------------------
KILL_CASES = [
    # (case id, kind): "timed" = external SIGKILL at a seeded random moment of a seeded random step;
    # "during_pt_write" = external SIGKILL while checkpoint 8's temp file is being fsynced (slowed down);
    # "before_sidecar" = SIGKILL from inside the fsync of checkpoint 8's sidecar (the .pt is renamed
    # into place, the sidecar is not).
    ("seed0", "timed"),
    ("seed1", "timed"),
    ("seed2", "timed"),
    ("during_pt_write", "during_pt_write"),
    ("before_sidecar", "before_sidecar"),
]


@pytest.mark.parametrize("case,kind", KILL_CASES, ids=[c for c, _ in KILL_CASES])
def test_kill9_then_resume_matches_uninterrupted(launcher, data, reference, tmp_path, case, kind):
    run_dir = tmp_path / "run"
    markers = tmp_path / "markers"
    markers.mkdir()
    argv = trainer_argv(data, run_dir)
    if kind == "timed":
        rng = random.Random(case)
        delay = 0.02
        kill_step = rng.randint(3, MAX_ITERS - 6)  # >= 6 steps (>= 120 ms) left: the kill lands mid-run
        # Parked at step kill_step + 3, so however slow the machine the kill lands before the end.
        r = launcher.start(argv, name=f"kill_{case}", faults={"step_delay": delay, "hold_at": kill_step + 3})
        r.wait_for_iter(kill_step)
        time.sleep(rng.random() * delay * 1.5)
        r.kill()
    elif kind == "during_pt_write":
        rule = {"pattern": r"checkpoint_iter_8\.pt", "action": "sleep", "sleep": 600, "marker_dir": str(markers)}
        r = launcher.start(argv, name=f"kill_{case}", faults={"fsync_rules": [rule]})
        r.wait_for(lambda: any(markers.iterdir()), 300, "checkpoint 8 write to start")
        temps = leftover_temp_files(run_dir)
        assert temps, (
            f"checkpoint 8 is being fsynced but no temp file exists: {sorted(p.name for p in run_dir.iterdir())}"
        )
        assert not (run_dir / "checkpoint_iter_8.pt").exists(), "final name exists before the write finished"
        r.kill()
    else:
        rule = {"pattern": r"checkpoint_iter_8\.json", "action": "kill"}
        r = launcher.start(argv, name=f"kill_{case}", faults={"fsync_rules": [rule]})
    rc = r.wait(300)
    assert rc == -signal.SIGKILL, f"run was not killed (finished first, or the hook never fired)\n{r.describe()}"
    n = resume_and_check(launcher, data, run_dir, reference, f"resume_{case}")
    if kind == "during_pt_write":
        assert n == 6, f"killed while writing checkpoint 8: expected to resume from 6, resumed from {n}"
    # The resumed run cleans up what the killed writer left behind (a partial file can be huge).
    assert leftover_temp_files(run_dir) == [], f"stale temp files after resume: {leftover_temp_files(run_dir)}"
    assert n >= CKPT_EVERY


# ----------------------------------------------------------------------------------------------
# 2. graceful stop
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully_and_resume_is_exact(launcher, data, reference, tmp_path, sig):
    run_dir = tmp_path / "run"
    # Steps from the 6th on take 1 s each: however busy the machine, the signal lands before the end.
    r = launcher.start(trainer_argv(data, run_dir, ckpt_every=1000), name=f"signal_{sig.name}",
                       faults={"step_delay": 0.03, "slow_from": {"call": 6, "seconds": 1.0}})  # fmt: skip
    r.wait_for_iter(5)
    r.send_signal(sig)
    assert r.wait(300) == 0, r.describe()
    out = r.stdout
    assert re.search(rf"^Received {sig.name}: finishing iteration \d+ and saving a checkpoint", out, re.M), r.describe()
    saved = SAVED_LINE.findall(out)
    assert saved, f"no 'Saved checkpoint to' line\n{r.describe()}"
    path = Path(saved[-1])
    m = CKPT_NAME.match(path.name)
    assert m and path.is_file(), f"'Saved checkpoint to {path}' but no such checkpoint file"
    n = int(m.group(1))
    assert 5 <= n < MAX_ITERS, f"stopped at iteration {n}"
    assert sha_ok(path), f"{path} does not match its sidecar sha256"
    assert load_pt(path)["iteration"] == n
    last_logged = max(train_losses(run_dir))
    assert last_logged == n, f"checkpoint is for iteration {n} but the last logged step is {last_logged}"
    if n % CKPT_EVERY == 0:
        assert_weights_equal(path, reference / f"checkpoint_iter_{n}.pt")
    assert events(run_dir, "signal"), "the signal was not logged as an event in metrics.jsonl"
    resumed = resume_and_check(launcher, data, run_dir, reference, f"resume_{sig.name}")
    assert resumed == n


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_ddp(launcher: Launcher, argv: list[str], name: str, faults: dict | None = None) -> list[Run]:
    """Two CPU ranks (gloo) of the same run, started the way torchrun would (env variables)."""
    port = str(_free_port())
    return [
        launcher.start(
            argv,
            name=f"{name}_rank{rank}",
            faults=faults,
            env={
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )  # fmt: skip
        for rank in (0, 1)
    ]


def test_ddp_signal_to_one_rank_stops_all_ranks_together(launcher, data, tmp_path):
    """SIGTERM to rank 1 only: both ranks stop after the same step and exit 0, rank 0 writes one
    checkpoint holding both ranks' data streams, and resuming with 2 ranks ends bit-identical to an
    uninterrupted 2-rank run."""
    ref_dir, run_dir = tmp_path / "ddp_ref", tmp_path / "ddp_run"
    ref = _start_ddp(launcher, trainer_argv(data, ref_dir, ckpt_every=1000), "ddp_ref")
    for r in ref:
        assert r.wait(600) == 0, r.describe()
    slow = {"step_delay": 0.03, "slow_from": {"call": 5, "seconds": 1.0}}  # the signal lands before the end
    ranks = _start_ddp(launcher, trainer_argv(data, run_dir, ckpt_every=1000), "ddp_sig", faults=slow)
    ranks[0].wait_for_iter(4)
    ranks[1].send_signal(signal.SIGTERM)
    for r in ranks:
        assert r.wait(300) == 0, r.describe()
    out = ranks[0].stdout
    assert re.search(r"^Received SIGTERM: finishing iteration \d+", out, re.M), ranks[0].describe()
    saved = SAVED_LINE.findall(out)
    assert saved, ranks[0].describe()
    path = Path(saved[-1])
    n = int(CKPT_NAME.match(path.name).group(1))
    assert n < MAX_ITERS and ckpt_iters(run_dir) == [n], f"checkpoints: {ckpt_iters(run_dir)}"
    payload = load_pt(path)
    assert len(payload["rng"]["data"]) == 2, "the checkpoint does not hold both ranks' data streams"
    resumed = _start_ddp(launcher, trainer_argv(data, run_dir, "--resume", ckpt_every=1000), "ddp_resume")
    for r in resumed:
        assert r.wait(600) == 0, r.describe()
    assert f"(iteration {n})" in resumed[0].stdout
    assert_weights_equal(run_dir / f"checkpoint_iter_{MAX_ITERS}.pt", ref_dir / f"checkpoint_iter_{MAX_ITERS}.pt")


def test_second_sigint_aborts_immediately(launcher, data, tmp_path):
    """A second Ctrl-C while the stop checkpoint is being written aborts (exit 130), leaving no
    partially written file under a checkpoint name."""
    run_dir = tmp_path / "run"
    markers = tmp_path / "markers"
    markers.mkdir()
    rule = {"pattern": r"checkpoint_iter_\d+\.pt", "action": "sleep", "sleep": 600, "marker_dir": str(markers)}
    r = launcher.start(trainer_argv(data, run_dir, ckpt_every=1000), name="double_sigint",
                       faults={"step_delay": 0.03, "fsync_rules": [rule]})  # fmt: skip
    r.wait_for_iter(3)
    r.send_signal(signal.SIGINT)
    r.wait_for(lambda: any(markers.iterdir()), 300, "the stop checkpoint write to start")
    r.send_signal(signal.SIGINT)
    rc = r.wait(240)  # far less than the write's 600 s: an abort that waited for the write would fail
    assert rc in (130, -signal.SIGINT), f"second SIGINT: expected exit 130\n{r.describe()}"
    for n in ckpt_iters(run_dir):
        assert sha_ok(run_dir / f"checkpoint_iter_{n}.pt"), f"checkpoint_iter_{n}.pt left behind unverifiable"
    assert leftover_temp_files(run_dir) == [], f"the aborted write left temp files: {leftover_temp_files(run_dir)}"


def test_ctrl_c_during_a_long_step_is_acknowledged_at_once_and_a_second_aborts_at_once(launcher, data, tmp_path):
    """One step spends seconds inside a single torch call, where Python signal handlers cannot run:
    the first Ctrl-C is still acknowledged during that call, and a second one ends the process during
    it (exit 130) instead of being merged into the first and ignored."""
    run_dir = tmp_path / "run"
    r = launcher.start(trainer_argv(data, run_dir, ckpt_every=1000), name="long_step_sigint",
                       faults={"slow_c_step": {"call": 3, "seconds": 20}})  # fmt: skip
    r.wait_for(lambda: "SLOW STEP START" in r.stdout, 300, "the long step to start")
    r.send_signal(signal.SIGINT)
    # "At once" is judged by the long call still running (no SLOW STEP END), not by a stopwatch.
    r.wait_for(lambda: "Received SIGINT" in r.stdout, 60, "the first Ctrl-C to be acknowledged")
    assert "SLOW STEP END" not in r.stdout, f"acknowledged only after the long call returned\n{r.describe()}"
    assert "Ctrl-C again to abort" in r.stdout
    r.send_signal(signal.SIGINT)
    rc = r.wait(120)
    assert rc == 130, f"second SIGINT: expected exit 130\n{r.describe()}"
    assert "SLOW STEP END" not in r.stdout, f"aborted only after the long call returned\n{r.describe()}"
    assert "second Ctrl-C" in r.stderr


# ----------------------------------------------------------------------------------------------
# 3 + 4. corrupt, foreign and malicious checkpoints
# ----------------------------------------------------------------------------------------------
class _Evil:
    """Unpickling this runs ``exec`` of code that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _write_sidecar_for(path: Path, iteration: int) -> None:
    """A sidecar whose sha256 *matches* (so only the loader can stop the file, not the hash)."""
    blob = path.read_bytes()
    path.with_suffix(".json").write_text(
        json.dumps(
            {"file": path.name, "iteration": iteration, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
        )
    )


@pytest.fixture(scope="module")
def foreign_ckpt(launcher, data, tmp_path_factory) -> Path:
    """A real checkpoint from the trainer with a different model (d_model 48)."""
    run_dir = tmp_path_factory.mktemp("foreign") / "run"
    flags = [*MODEL_FLAGS]
    flags[flags.index("--d_model") + 1] = "48"
    argv = trainer_argv(data, run_dir, model_flags=flags)
    argv[argv.index("--max_iters") + 1] = "2"
    argv[argv.index("--warmup_iters") + 1] = "1"
    r = launcher.run(argv, name="foreign")
    assert r.poll() == 0, r.describe()
    return run_dir / "checkpoint_iter_2.pt"


def make_bad_checkpoints(
    reference: Path, foreign: Path, d: Path, marker: Path
) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """kind -> (file, words one of which the error reason must contain)."""
    d.mkdir(parents=True, exist_ok=True)
    good = reference / "checkpoint_iter_4.pt"
    blob = good.read_bytes()
    out = {}

    p = d / "truncated" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    p.write_bytes(blob[: len(blob) // 2])
    shutil.copy(good.with_suffix(".json"), p.with_suffix(".json"))
    out["truncated"] = (p, ("truncat", "size", "corrupt"))

    p = d / "truncated_nosidecar" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    p.write_bytes(blob[: len(blob) * 2 // 3])
    out["truncated_nosidecar"] = (p, ("truncat", "corrupt"))

    p = d / "flipped" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    ba = bytearray(blob)
    ba[len(ba) // 2] ^= 0x01  # inside tensor data: torch.load alone would not notice
    p.write_bytes(bytes(ba))
    shutil.copy(good.with_suffix(".json"), p.with_suffix(".json"))
    out["flipped"] = (p, ("sha256", "checksum", "hash"))

    p = d / "foreign" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    shutil.copy(foreign, p)
    _write_sidecar_for(p, 4)
    out["foreign"] = (p, ("d_model", "config", "shape"))

    p = d / "random" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    out["random"] = (p, ("not a", "corrupt", "truncat"))

    p = d / "text" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    p.write_text("import os\nprint('this is not a checkpoint')\n")
    out["text"] = (p, ("not a", "corrupt", "truncat"))

    p = d / "evil_zip" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    torch.save({"model": _Evil(marker), "iteration": 4}, p)
    _write_sidecar_for(p, 4)
    out["evil_zip"] = (p, ("unpickl", "unsafe", "refuse", "weights_only"))

    p = d / "evil_raw" / "checkpoint_iter_4.pt"
    p.parent.mkdir()
    p.write_bytes(pickle.dumps({"model": _Evil(marker), "iteration": 4}, protocol=2))
    out["evil_raw"] = (p, ("unpickl", "unsafe", "refuse", "weights_only"))
    return out


def test_malicious_pickle_payload_is_live(tmp_path):
    """Control: the crafted files really run code when unpickled unsafely (so the tests below can fail)."""
    marker = tmp_path / "marker"
    p = tmp_path / "evil.pt"
    torch.save({"model": _Evil(marker), "iteration": 4}, p)
    torch.load(p, weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(pickle.dumps(_Evil(marker), protocol=2))
    assert marker.exists()


def test_read_checkpoint_rejects_bad_files(reference, foreign_ckpt, tmp_path):
    from cs336_basics.training.checkpoints import CheckpointError, read_checkpoint, verify_checkpoint

    marker = tmp_path / "marker"
    bad = make_bad_checkpoints(reference, foreign_ckpt, tmp_path / "bad", marker)
    for kind, (path, words) in bad.items():
        if kind == "foreign":
            continue  # a foreign checkpoint is a valid file; the trainer rejects it (below)
        with pytest.raises(CheckpointError) as ei:
            read_checkpoint(path)
        msg = str(ei.value)
        assert "\n" not in msg and str(path) in msg, f"{kind}: {msg!r}"
        assert any(w in msg.lower() for w in words), f"{kind}: reason not given: {msg!r}"
        assert not marker.exists(), f"{kind}: loading ran code from the file"
    # The sidecar catches the flipped byte on its own; torch.load alone does not notice it.
    torch.load(bad["flipped"][0], map_location="cpu", weights_only=True)
    with pytest.raises(CheckpointError, match="sha256"):
        verify_checkpoint(bad["flipped"][0])
    # Even without a sidecar, the crafted pickle is refused.
    evil = bad["evil_zip"][0]
    evil.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError):
        read_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "kind", ["truncated", "truncated_nosidecar", "flipped", "foreign", "random", "text", "evil_zip", "evil_raw"]
)
def test_resume_from_bad_checkpoint_is_a_clean_error(launcher, data, reference, foreign_ckpt, tmp_path, kind):
    marker = tmp_path / "marker"
    bad = make_bad_checkpoints(reference, foreign_ckpt, tmp_path / "bad", marker)
    path, words = bad[kind]
    run_dir = tmp_path / "run"
    r = launcher.run(trainer_argv(data, run_dir, "--resume_from", str(path)), name=f"resume_from_{kind}")
    msg = assert_clean_error(r, 2, str(path))
    assert any(w in msg.lower() for w in words), f"{kind}: reason missing from {msg!r}"
    assert not marker.exists(), "the checkpoint ran code"
    assert not ITER_LINE.search(r.stdout), "training started despite the bad checkpoint"


def test_resume_skips_bad_checkpoints_and_falls_back(launcher, data, reference, foreign_ckpt, tmp_path):
    """Newest-first: evil (valid sha!), text, random, foreign, flipped, truncated are all skipped
    with a reason; the run resumes from the intact checkpoint 2 and ends bit-identical."""
    marker = tmp_path / "marker"
    bad = make_bad_checkpoints(reference, foreign_ckpt, tmp_path / "bad", marker)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(reference / f"checkpoint_iter_2{suffix}", run_dir / f"checkpoint_iter_2{suffix}")
    placed = {}
    for it, kind in zip((4, 6, 8, 10, 12, 14), ("truncated", "flipped", "foreign", "random", "text", "evil_zip")):
        src = bad[kind][0]
        dst = run_dir / f"checkpoint_iter_{it}.pt"
        shutil.copy(src, dst)
        if src.with_suffix(".json").exists():
            meta = json.loads(src.with_suffix(".json").read_text())
            meta["iteration"] = it
            meta["file"] = dst.name
            dst.with_suffix(".json").write_text(json.dumps(meta))
        placed[it] = kind
    r = launcher.run(trainer_argv(data, run_dir, "--resume"), name="resume_fallback")
    assert r.poll() == 0, r.describe()
    out = r.stdout
    for it, kind in placed.items():
        p = run_dir / f"checkpoint_iter_{it}.pt"
        assert re.search(rf"^Skipping {re.escape(str(p))}: \S", out, re.M), (
            f"no 'Skipping {p}: <reason>' ({kind})\n{r.describe()}"
        )
    m = RESUMING_LINE.search(out)
    assert m and Path(m.group(1)) == run_dir / "checkpoint_iter_2.pt" and m.group(2) == "2", r.describe()
    assert out.index("Skipping") < out.index("Resuming from")
    assert not marker.exists(), "a checkpoint ran code during --resume"
    assert_resumed_equals_reference(run_dir, reference, 2)


def _tiny_tokenizer_dir(d: Path) -> Path:
    """vocab.json/merges.txt written by hand in GPT-2's byte-to-unicode convention (64 ids)."""
    from cs336_basics.fast.tokenizer import bytes_to_unicode

    b2u = bytes_to_unicode()
    d.mkdir(parents=True, exist_ok=True)
    vocab = {b2u[b]: i for i, b in enumerate(range(32, 32 + VOCAB - 1))}
    vocab["<|endoftext|>"] = VOCAB - 1
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (d / "merges.txt").write_text("#version: 0.2\n")
    (d / "special_tokens.json").write_text(json.dumps(["<|endoftext|>"]))
    return d


@pytest.mark.parametrize("kind", ["evil_zip", "evil_raw"])
def test_generate_cli_refuses_malicious_checkpoint(launcher, reference, foreign_ckpt, tmp_path, kind):
    marker = tmp_path / "marker"
    bad = make_bad_checkpoints(reference, foreign_ckpt, tmp_path / "bad", marker)
    tok = _tiny_tokenizer_dir(tmp_path / "tok")
    path = bad[kind][0]
    r = launcher.run(["--checkpoint", str(path), "--tokenizer", str(tok), "--max_new_tokens", "2", "--device", "cpu"],
                     module="cs336_basics.generate", name=f"generate_{kind}")  # fmt: skip
    assert_clean_error(r, 2, str(path))
    assert not marker.exists(), "the generation CLI ran code from the checkpoint"


def test_tokenizer_files_are_parsed_not_evaluated(tmp_path):
    from cs336_basics.fast.tokenizer import Tokenizer, TokenizerError, bytes_to_unicode

    marker = tmp_path / "marker"
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"
    b2u = bytes_to_unicode()
    base_vocab = {b2u[b]: b for b in range(256)}

    # 1) vocab.json that is Python, not JSON -> a TokenizerError, and nothing runs.
    d = tmp_path / "py_vocab"
    d.mkdir()
    (d / "vocab.json").write_text("{'a': 0} if " + code + " else {}")
    (d / "merges.txt").write_text("")
    with pytest.raises(TokenizerError) as ei:
        Tokenizer.from_files(d / "vocab.json", d / "merges.txt")
    assert str(d / "vocab.json") in str(ei.value)

    # 2) valid JSON whose keys/merges are code strings: parsed as data (loads, or a clear error).
    d = tmp_path / "str_vocab"
    d.mkdir()
    vocab = dict(base_vocab)
    vocab[code.replace(" ", "")] = 256
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text(f"{code.replace(' ', '')} x\n")
    (d / "special_tokens.json").write_text(json.dumps([code]))
    try:
        tok = Tokenizer.from_dir(d)
        assert code in tok.special_tokens or code.replace(" ", "") in {v.decode("latin-1") for v in tok.vocab.values()}
    except TokenizerError:
        pass
    assert not marker.exists(), "tokenizer files were evaluated as code"


# ----------------------------------------------------------------------------------------------
# 5. disk full while checkpointing
# ----------------------------------------------------------------------------------------------
ENOSPC_FAULTS = {
    # the disk fills up in the middle of writing checkpoint 4 (write() fails after 20 kB) ...
    "write": {"write_rules": [{"pattern": r"checkpoint_iter_4\.pt", "limit": 20000}]},
    # ... or the data only fails to reach the disk at fsync (quota / network filesystems)
    "fsync": {"fsync_rules": [{"pattern": r"checkpoint_iter_4\.pt", "action": "enospc"}]},
    # ... or the .pt made it to disk but its sidecar (the proof it is complete) did not
    "sidecar": {"fsync_rules": [{"pattern": r"checkpoint_iter_4\.json", "action": "enospc"}]},
}


@pytest.mark.parametrize("where", ["write", "fsync", "sidecar"])
def test_enospc_stops_cleanly_and_keeps_previous_checkpoint(launcher, data, reference, tmp_path, where):
    run_dir = tmp_path / "run"
    r = launcher.run(trainer_argv(data, run_dir), name=f"enospc_{where}", faults=ENOSPC_FAULTS[where])
    msg = assert_clean_error(r, 1, "checkpoint_iter_4", "intact", "checkpoint_iter_2.pt")
    assert "space" in msg.lower(), msg
    if where == "sidecar":  # a .pt without its sidecar may stay; it must never pass verification
        assert ckpt_iters(run_dir) in ([2], [2, 4]) and not sha_ok(run_dir / "checkpoint_iter_4.pt")
    else:
        assert ckpt_iters(run_dir) == [2], f"checkpoints on disk: {ckpt_iters(run_dir)}"
    prev = run_dir / "checkpoint_iter_2.pt"
    assert sha_ok(prev)
    assert_weights_equal(prev, reference / "checkpoint_iter_2.pt")
    assert leftover_temp_files(run_dir) == [], f"temp files left: {leftover_temp_files(run_dir)}"
    assert max(train_losses(run_dir)) == 4, "training did not stop at the failed checkpoint"
    # ... and the run can be resumed from the intact checkpoint to the same end.
    resume_and_check(launcher, data, run_dir, reference, f"resume_after_enospc_{where}")


def test_enospc_with_allow_checkpoint_failure_continues(launcher, data, reference, tmp_path):
    run_dir = tmp_path / "run"
    r = launcher.run(trainer_argv(data, run_dir, "--allow_checkpoint_failure"), name="enospc_allowed",
                     faults=ENOSPC_FAULTS["write"])  # fmt: skip
    assert r.poll() == 0, r.describe()
    assert "checkpoint_iter_4" in r.stdout + r.stderr, "the failed checkpoint write was not reported"
    assert "Traceback" not in r.stderr, r.describe()
    assert 4 not in ckpt_iters(run_dir)
    assert sha_ok(run_dir / "checkpoint_iter_2.pt")
    assert leftover_temp_files(run_dir) == [], f"temp files left: {leftover_temp_files(run_dir)}"
    # A failed save must not perturb training: the end state is the reference's.
    assert_weights_equal(run_dir / f"checkpoint_iter_{MAX_ITERS}.pt", reference / f"checkpoint_iter_{MAX_ITERS}.pt")


def test_enospc_on_metrics_log_is_a_clean_failure(launcher, data, reference, tmp_path):
    """The disk fills up while appending to metrics.jsonl (after checkpoint 4): the run stops with
    exit 1 and one 'error:' line naming the file (no traceback), and checkpoint 4 stays usable."""
    run_dir = tmp_path / "run"
    faults = {"open_rules": [{"pattern": r"^metrics\.jsonl$", "limit": 6 * 260}]}  # ~6 train records
    r = launcher.run(trainer_argv(data, run_dir, ckpt_every=4), name="enospc_metrics", faults=faults)
    assert_clean_error(r, 1, "metrics.jsonl", "space")
    assert 4 in ckpt_iters(run_dir) and sha_ok(run_dir / "checkpoint_iter_4.pt")
    assert_weights_equal(run_dir / "checkpoint_iter_4.pt", reference / "checkpoint_iter_4.pt")
    assert leftover_temp_files(run_dir) == [], f"temp files left: {leftover_temp_files(run_dir)}"


# ----------------------------------------------------------------------------------------------
# 6. bad numbers
# ----------------------------------------------------------------------------------------------
def test_single_nonfinite_steps_are_skipped(launcher, data, reference, tmp_path):
    """A NaN loss at step 3 and an infinite gradient (finite loss) at step 7 are not applied: the
    state after each equals the state before it, the events are logged, and the run finishes."""
    run_dir = tmp_path / "run"
    r = launcher.run(trainer_argv(data, run_dir, ckpt_every=1), name="nan_single",
                     faults={"loss_faults": {"3": "nan", "7": "inf_grad"}})  # fmt: skip
    assert r.poll() == 0, r.describe()
    assert re.search(r"^Non-finite loss at iteration 3 \(1/3 in a row\): update skipped", r.stdout, re.M), r.describe()
    ev = events(run_dir, "nonfinite")
    assert sorted(int(e["step"]) for e in ev) == [3, 7], f"nonfinite events logged: {ev}"
    assert_weights_equal(run_dir / "checkpoint_iter_2.pt", reference / "checkpoint_iter_2.pt")
    for bad in (3, 7):
        before, after = (
            load_pt(run_dir / f"checkpoint_iter_{bad - 1}.pt"),
            load_pt(run_dir / f"checkpoint_iter_{bad}.pt"),
        )
        assert_state_equal(before["model"], after["model"], f"weights changed by the skipped step {bad}")
        assert_state_equal(
            optimizer_tensors(before), optimizer_tensors(after), f"optimizer state changed by skipped step {bad}"
        )
    assert_weights_equal(run_dir / "checkpoint_iter_3.pt", run_dir / "checkpoint_iter_2.pt")
    moved = load_pt(run_dir / "checkpoint_iter_4.pt")["model"]
    assert any(not torch.equal(v, load_pt(run_dir / "checkpoint_iter_3.pt")["model"][k]) for k, v in moved.items()), \
        "training stopped updating after the skipped step"  # fmt: skip
    final = load_pt(run_dir / f"checkpoint_iter_{MAX_ITERS}.pt")["model"]
    assert all(torch.isfinite(v).all() for v in final.values())
    losses = train_losses(run_dir)
    assert all(np.isfinite(losses[s]) for s in range(8, MAX_ITERS + 1)), losses


def test_consecutive_nonfinite_steps_stop_with_last_good_checkpoint(launcher, data, reference, tmp_path):
    run_dir = tmp_path / "run"
    r = launcher.run(trainer_argv(data, run_dir, "--max_bad_steps", "3", ckpt_every=1000), name="nan_streak",
                     faults={"loss_faults": {"3": "nan", "4": "nan", "5": "inf"}})  # fmt: skip
    msg = assert_clean_error(r, 1)
    assert "lr" in msg.lower() or "learning rate" in msg.lower(), f"no hint to lower the LR: {msg}"
    for k in (1, 2, 3):
        assert re.search(rf"^Non-finite loss at iteration {k + 2} \({k}/3 in a row\)", r.stdout, re.M), r.describe()
    assert not re.search(r"^Iter\s+6\b", r.stdout, re.M), "training went on after K bad steps"
    iters = ckpt_iters(run_dir)
    assert iters, f"no checkpoint of the last good state was written\n{r.describe()}"
    path = run_dir / f"checkpoint_iter_{iters[-1]}.pt"
    assert sha_ok(path)
    got, want = load_pt(path), load_pt(reference / "checkpoint_iter_2.pt")
    assert_state_equal(got["model"], want["model"], "checkpoint after the NaN streak vs last good state (step 2)")
    assert_state_equal(optimizer_tensors(got), optimizer_tensors(want), "optimizer state after the NaN streak")


# fp16 needs a GPU; on CPU the trainer's GradScaler handling is exercised with a scaler forced on
# (fp32 grads, loss scaled by 2**16: numerically harmless) and an infinite gradient injected.
_FORCE_SCALER = """
import torch
from cs336_basics.training import runtime
runtime.make_grad_scaler = lambda device, dtype_name: torch.amp.GradScaler(device.type, enabled=True)
"""


def test_grad_scaler_skips_are_counted_not_failures(launcher, data, tmp_path):
    """Four overflowing steps in a row with --max_bad_steps 3: the scaler skips them, each is logged
    as a scaler_skip event, the weights are untouched by them, and the run still succeeds."""
    run_dir = tmp_path / "run"
    r = launcher.run(trainer_argv(data, run_dir, "--max_bad_steps", "3", ckpt_every=1), name="scaler_skip",
                     faults={"exec": _FORCE_SCALER, "loss_faults": {str(s): "inf_grad" for s in (3, 4, 5, 6)}})  # fmt: skip
    assert r.poll() == 0, r.describe()
    skips = sorted(int(e["step"]) for e in events(run_dir, "scaler_skip"))
    assert skips == [3, 4, 5, 6], f"scaler_skip events: {skips}"
    assert not events(run_dir, "nonfinite") and "Non-finite loss" not in r.stdout, (
        "scaler skips were counted as bad steps"
    )
    for s in (3, 4, 5, 6):
        assert_weights_equal(run_dir / f"checkpoint_iter_{s}.pt", run_dir / "checkpoint_iter_2.pt")
    final = load_pt(run_dir / f"checkpoint_iter_{MAX_ITERS}.pt")
    assert all(torch.isfinite(v).all() for v in final["model"].values())
    assert final.get("scaler"), "the grad scaler state is not checkpointed"


# ----------------------------------------------------------------------------------------------
# 7. bad data
# ----------------------------------------------------------------------------------------------
def _bad_data_cases(d: Path) -> list[tuple[str, list[str], Path, tuple[str, ...], tuple[str, ...]]]:
    """(name, extra flags, offending file, numbers the error must contain, words one of which it must contain)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    cases = []

    a = rng.integers(0, VOCAB, 5000, dtype=np.uint16)
    a[1234] = 70
    np.save(d / "oob.npy", a)
    cases.append(
        ("out_of_range", ["--train_data_path", str(d / "oob.npy")], d / "oob.npy", ("1234", "70"), ("range", "vocab"))
    )

    # Past the first validation chunk (16M ids would be too big for a unit test; 3M still checks
    # the scan runs to the end of the file rather than sampling its head).
    big = rng.integers(0, VOCAB, 3_000_000, dtype=np.uint16)
    big[2_999_990] = 64
    big.tofile(d / "oob_late.bin")
    cases.append(("out_of_range_late_bin", ["--train_data_path", str(d / "oob_late.bin")], d / "oob_late.bin",
                  ("2999990", "64"), ("range", "vocab")))  # fmt: skip

    neg = rng.integers(0, VOCAB, 500, dtype=np.int32)
    neg[5] = -1
    np.save(d / "neg_val.npy", neg)
    cases.append(
        (
            "negative_val",
            ["--val_data_path", str(d / "neg_val.npy")],
            d / "neg_val.npy",
            ("-1", "5"),
            ("range", "negative"),
        )
    )

    # uint16 ids read as uint32: pairs fuse into ids >= 65536 (or the size is not a multiple of 4).
    rng.integers(0, VOCAB, 2000, dtype=np.uint16).tofile(d / "u16_even.bin")
    cases.append(("wrong_dtype", ["--train_data_path", str(d / "u16_even.bin"), "--data_dtype", "uint32"],
                  d / "u16_even.bin", (), ("dtype",)))  # fmt: skip
    rng.integers(0, VOCAB, 2001, dtype=np.uint16).tofile(d / "u16_odd.bin")
    cases.append(("wrong_dtype_odd_size", ["--train_data_path", str(d / "u16_odd.bin"), "--data_dtype", "uint32"],
                  d / "u16_odd.bin", (), ("dtype",)))  # fmt: skip

    np.save(d / "empty.npy", np.zeros(0, dtype=np.uint16))
    cases.append(
        ("empty_npy", ["--train_data_path", str(d / "empty.npy")], d / "empty.npy", (), ("empty", "no tokens"))
    )
    (d / "empty.bin").write_bytes(b"")
    cases.append(("empty_bin", ["--val_data_path", str(d / "empty.bin")], d / "empty.bin", (), ("empty", "no tokens")))
    np.save(d / "short.npy", np.arange(10, dtype=np.uint16))
    cases.append(
        ("too_short", ["--train_data_path", str(d / "short.npy")], d / "short.npy", ("10", "16"), ("short", "context"))
    )
    cases.append(
        ("missing", ["--train_data_path", str(d / "nope.npy")], d / "nope.npy", (), ("no such", "not found", "missing"))
    )
    # A .npy holding pickled Python objects (one would run code if unpickled): refused, never loaded.
    evil = np.empty(3, dtype=object)
    evil[0] = _Evil(d / "npy_marker")
    np.save(d / "objects.npy", evil, allow_pickle=True)
    cases.append(
        (
            "object_npy",
            ["--train_data_path", str(d / "objects.npy")],
            d / "objects.npy",
            (),
            ("pickle", "object", "integer", "not a"),
        )
    )
    return cases


def test_bad_token_files_are_clean_errors(launcher, data, tmp_path):
    runs = []
    for name, flags, path, numbers, words in _bad_data_cases(tmp_path / "bad"):
        argv = trainer_argv(data, tmp_path / f"run_{name}") + flags  # later flags win in argparse
        runs.append((name, path, numbers, words, launcher.start(argv, name=f"data_{name}")))
    for name, path, numbers, words, r in runs:
        r.wait(120)
        msg = assert_clean_error(r, 2, str(path))
        # Numbers are looked for outside the file name; "2,999,990" counts as 2999990.
        digits = re.sub(r"(?<=\d)[,_](?=\d)", "", msg.replace(str(path), "<file>"))
        for n in numbers:
            assert re.search(rf"(?<![\d.]){re.escape(n)}(?!\d)", digits), f"{name}: error does not mention {n}: {msg}"
        assert any(w in msg.lower() for w in words), f"{name}: error gives no reason ({' / '.join(words)}): {msg}"
        assert not ITER_LINE.search(r.stdout), f"{name}: training started"
    assert not (tmp_path / "bad" / "npy_marker").exists(), "loading a token file ran code"


def _invalid_utf8_corpus(path: Path, head_repeats: int = 40, tail_repeats: int = 40) -> int:
    """A text file with one invalid byte; returns its byte offset."""
    head = ("hello world. the cat sat on the mat.\n" * head_repeats).encode()
    tail = ("more text after the bad byte.\n" * tail_repeats).encode()
    path.write_bytes(head + b"\xff" + tail)
    return len(head)


def test_train_bpe_invalid_utf8_names_file_and_offset(launcher, tmp_path):
    corpus = tmp_path / "corpus.txt"
    # Deep in a ~1 MB file, so with 2 workers the bad byte is not in the first chunk.
    offset = _invalid_utf8_corpus(corpus, head_repeats=20000, tail_repeats=8000)
    out = tmp_path / "tok"
    r = launcher.run(["--input", str(corpus), "--vocab_size", "300", "--output", str(out), "--workers", "2", "--quiet"],
                     module="cs336_basics.train_bpe", name="train_bpe_utf8")  # fmt: skip
    msg = assert_clean_error(r, 2, str(corpus))
    assert str(offset) in re.sub(r"(?<=\d),(?=\d)", "", msg), f"byte offset {offset} not in: {msg}"
    assert not out.exists() or not any((out / n).exists() for n in ("vocab.json", "merges.txt")), \
        "tokenizer files written despite the error"  # fmt: skip


@pytest.fixture()
def tok_dir(tmp_path) -> Path:
    from cs336_basics.fast.tokenizer import Tokenizer

    d = tmp_path / "tokenizer"
    Tokenizer({i: bytes([i]) for i in range(256)} | {256: b"<|endoftext|>"}, [], ["<|endoftext|>"]).save(d)
    return d


def test_tokenize_data_invalid_utf8_leaves_no_output(launcher, tok_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    # Bad byte deep in a ~1 MB file: chunks before it have already been written to the output.
    offset = _invalid_utf8_corpus(corpus, head_repeats=20000, tail_repeats=8000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "tokens.npy"
    r = launcher.run(["--tokenizer", str(tok_dir), "--input", str(corpus), "--output", str(out)],
                     module="cs336_basics.tokenize_data", name="tokenize_utf8")  # fmt: skip
    msg = assert_clean_error(r, 2, str(corpus))
    assert str(offset) in re.sub(r"(?<=\d),(?=\d)", "", msg), f"byte offset {offset} not in: {msg}"
    assert not out.exists(), "a truncated output file was left behind"
    assert list(out_dir.iterdir()) == [], f"files left in the output dir: {list(out_dir.iterdir())}"
    # An existing output file is left exactly as it was when the new tokenization fails.
    old = np.arange(100, dtype=np.uint16)
    np.save(out, old)
    before = out.read_bytes()
    r = launcher.run(["--tokenizer", str(tok_dir), "--input", str(corpus), "--output", str(out)],
                     module="cs336_basics.tokenize_data", name="tokenize_utf8_existing")  # fmt: skip
    assert_clean_error(r, 2, str(corpus))
    assert out.read_bytes() == before, "a failed run damaged the existing output file"
    assert sorted(p.name for p in out_dir.iterdir()) == ["tokens.npy"], list(out_dir.iterdir())


def test_tokenize_data_killed_mid_write_leaves_no_output(launcher, tok_dir, tmp_path):
    """kill -9 while the output is being made durable: the final name never holds a partial file."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 20000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "tokens.npy"
    markers = tmp_path / "markers"
    markers.mkdir()
    rule = {"pattern": r"tokens", "action": "sleep", "sleep": 600, "marker_dir": str(markers)}
    r = launcher.start(["--tokenizer", str(tok_dir), "--input", str(corpus), "--output", str(out)],
                       module="cs336_basics.tokenize_data", name="tokenize_kill", faults={"fsync_rules": [rule]})  # fmt: skip
    r.wait_for(lambda: any(markers.iterdir()), 300, "the output write to reach fsync")
    r.kill()
    assert r.wait(120) == -signal.SIGKILL
    assert not out.exists(), "the final output name exists although the write never finished"


# ----------------------------------------------------------------------------------------------
# 8. determinism and the run record
# ----------------------------------------------------------------------------------------------
def test_determinism_and_run_record(launcher, data, reference, fresh_process_run, tmp_path):
    """Same seed+flags in a fresh ``python -m`` process -> identical losses and weights; the seed and
    settings are recorded; a different seed actually changes the run."""
    r, run_dir = fresh_process_run
    assert r.wait(300) == 0, r.describe()
    assert train_losses(run_dir) == train_losses(reference)
    assert len(train_losses(reference)) == MAX_ITERS
    assert_weights_equal(run_dir / f"checkpoint_iter_{MAX_ITERS}.pt", reference / f"checkpoint_iter_{MAX_ITERS}.pt")

    cfg = json.loads((reference / "run_config.json").read_text())
    flat: dict[str, object] = {}

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                flat.setdefault(k, v)
                walk(v)

    walk(cfg)
    assert flat.get("seed") == SEED, f"seed not recorded in run_config.json: {cfg}"
    for key, want in (
        ("d_model", 32),
        ("batch_size", 4),
        ("max_iters", MAX_ITERS),
        ("lr", 3e-3),
        ("vocab_size", VOCAB),
    ):
        assert flat.get(key) == want, f"run_config.json {key}={flat.get(key)!r}, expected {want!r}"
    assert any("torch" in str(k).lower() for k in flat), "torch version not recorded"
    # The guarantee is for default settings: these runs used torch's default thread count (2 on a
    # 2-core machine), where the embedding backward used to make repeated runs differ.
    assert cfg["torch_threads"] == DEFAULT_THREADS or "OMP_NUM_THREADS" in os.environ, cfg["torch_threads"]

    other = tmp_path / "other_seed"
    argv = trainer_argv(data, other)
    argv[argv.index("--seed") + 1] = str(SEED + 1)
    argv[argv.index("--max_iters") + 1] = "4"
    r = launcher.run(argv, name="other_seed")
    assert r.poll() == 0, r.describe()
    a, b = train_losses(other), train_losses(reference)
    # Step 1's loss depends only on the initial weights and the first batch (same LR in warmup).
    assert a[1] != b[1], "a different --seed gave the same first loss: the seed is ignored"
