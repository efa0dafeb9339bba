"""cs336_basics.tools.sweep: sweep files, scheduling (with fake GPUs), and real sweeps of tiny training runs
(the training program as a subprocess): skip-finished, resume of an interrupted variant, divergence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cs336_basics.tools import sweep as sw

from ._train_utils import REPO, subprocess_env, write_pattern_data

FLAGS = frozenset(
    {
        "train_data_path",
        "val_data_path",
        "lr",
        "min_lr",
        "batch_size",
        "d_model",
        "max_iters",
        "remove_rope",
        "ffn_type",
        "d_ff",
        "device",
        "checkpoint_dir",
        "resume",
    }
)

TINY_BASE = """
[base]
train_data_path = "{train}"
val_data_path = "{val}"
vocab_size = 64
context_length = 16
d_model = 32
num_layers = 2
num_heads = 2
d_ff = 64
batch_size = 8
max_iters = 20
lr = 3e-3
min_lr = 3e-4
warmup_iters = 2
eval_interval = 10
eval_iters = 2
log_interval = 1
checkpoint_interval = 10
device = "cpu"
seed = 1
"""


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------
# sweep files
# ------------------------------------------------------------------------------------------------
def test_grid_expansion_and_named_variants(tmp_path):
    p = _write(
        tmp_path,
        """
name = "demo"
[base]
train_data_path = "t.npy"
val_data_path = "v.npy"
lr = 1e-3
[base.model]            # tables inside [base] only group keys
d_model = 64
[grid]
lr = [1e-3, 3e-3]
batch_size = [8, 16, 32]
[[variants]]
name = "nope"
remove_rope = true
[[variants]]
ffn_type = "silu"
d_ff = 256
""",
    )
    s = sw.load_sweep(p, FLAGS)
    names = [v.name for v in s.variants]
    assert names == [f"lr={lr},batch_size={b}" for lr in ("0.001", "0.003") for b in (8, 16, 32)] + [
        "nope",
        "ffn_type=silu,d_ff=256",
    ]
    by = {v.name: v for v in s.variants}
    assert by["lr=0.003,batch_size=16"].flags == {
        "train_data_path": "t.npy",
        "val_data_path": "v.npy",
        "lr": 0.003,
        "d_model": 64,
        "batch_size": 16,
    }
    assert by["nope"].flags["lr"] == 1e-3 and by["nope"].flags["remove_rope"] is True
    assert by["nope"].overrides == {"remove_rope": True}
    assert s.out_dir == Path("runs/sweeps/demo")
    assert sw.expand_grid({}) == []
    assert len(sw.expand_grid({"a": [1, 2], "b": [3], "c": [4, 5, 6]})) == 6
    # --set overrides the base for every variant; --only keeps some
    s2 = sw.load_sweep(p, FLAGS, sets=sw.parse_set(["d_model=128", "device=cuda"]), only=["nope"], out_dir=tmp_path)
    assert [v.name for v in s2.variants] == ["nope"]
    assert s2.variants[0].flags["d_model"] == 128 and s2.variants[0].flags["device"] == "cuda"
    assert s2.out_dir == tmp_path


@pytest.mark.parametrize(
    "body,needle",
    [
        ("[base]\nlearning_rate = 1e-3", "learning_rate"),
        ("lr = 1e-3\n[base]", "'lr'"),
        ('[base]\ncheckpoint_dir = "x"', "checkpoint_dir"),
        ("[grid]\nlr = 1e-3", "[grid] lr"),
        ("[grid]\nlr = []", "[grid] lr"),
        ("[grid]\nbatchsize = [1, 2]", "batchsize"),
        ('[[variants]]\nname = "a"\n[[variants]]\nname = "a"', "'a'"),
        ('[[variants]]\nname = "a/b"\nlr = 1.0', "a/b"),
        ('[[variants]]\nname = "x"\nbeta = 0.9', "beta"),
        ("[base]\nlr = [1, 2]", "lr"),
        ("[base\n", "invalid TOML"),
    ],
)
def test_bad_sweep_file_one_line_error_naming_the_key(tmp_path, body, needle):
    p = _write(tmp_path, 'name = "bad"\n' + body + "\n")
    with pytest.raises(sw.SweepError) as e:
        sw.load_sweep(p, FLAGS, sets={"train_data_path": "t", "val_data_path": "v"})
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and str(p) in msg


def test_missing_data_path_and_presets(tmp_path):
    p = _write(tmp_path, "[base]\nlr = 1e-3\n")
    with pytest.raises(sw.SweepError, match="train_data_path"):
        sw.load_sweep(p, FLAGS)
    assert {"lr_sweep", "lr_sweep_cpu", "batch_size", "batch_size_cpu", "ablations", "ablations_cpu"} <= set(
        sw.list_presets()
    )
    assert sw.resolve_config("lr_sweep") == sw.PRESET_DIR / "lr_sweep.toml"
    with pytest.raises(sw.SweepError, match="no_such_preset"):
        sw.resolve_config("no_such_preset")


def test_presets_are_valid_against_the_real_training_flags():
    flags = sw.training_flag_names()  # the fields of the training settings
    assert {"lr", "remove_rmsnorm", "use_post_norm", "remove_rope", "ffn_type"} <= flags
    for name in sw.list_presets():
        s = sw.load_sweep(sw.resolve_config(name), flags)
        assert len(s.variants) >= 4, name
        base = s.variants[0].flags
        if name.startswith("ablations"):
            by = {v.name: v.flags for v in s.variants}
            assert by["no_rmsnorm"]["remove_rmsnorm"] and by["post_norm"]["use_post_norm"] and by["nope"]["remove_rope"]
            # SiLU FFN: d_ff = 4*d_model, parameters within 5% of the SwiGLU baseline's 3*d*d_ff
            silu, d = by["silu_ffn"], base["d_model"]
            assert silu["ffn_type"] == "silu" and silu["d_ff"] == 4 * d
            assert abs(2 * d * silu["d_ff"] - 3 * d * by["baseline"]["d_ff"]) < 0.05 * 3 * d * by["baseline"]["d_ff"]
        if name == "leaderboard":  # the course's leaderboard setting: OpenWebText, context 512, vocab 32k
            assert (base["context_length"], base["vocab_size"]) == (512, 32000)
            by = {v.name: v.flags for v in s.variants}
            lb = by["leaderboard"]
            assert lb["optimizer"] == "muon" and lb["ffn_type"] == "relu2" and lb["tie_embeddings"]
            left_out = {"qk_norm", "logit_softcap", "zero_init_proj", "value_residual"}  # by the CPU bench's best
            assert not left_out & set(lb) and lb["embed_norm"]
            assert by["leaderboard_all"]["qk_norm"] and by["leaderboard_all"]["logit_softcap"] == 15.0
            assert 2 * lb["d_ff"] == 3 * base["d_ff"]  # relu2 at the SwiGLU's parameter count
        elif not name.endswith("_cpu"):  # the course's model
            assert (
                base["d_model"],
                base["num_layers"],
                base["num_heads"],
                base["d_ff"],
                base["context_length"],
                base["vocab_size"],
            ) == (512, 4, 16, 1344, 256, 10000)
        if name.startswith("lr_sweep"):
            assert any(v.name == "diverge" for v in s.variants)


def test_preset_variant_configs_pass_the_training_programs_checks(tmp_path):
    """Every preset variant's generated --config is accepted by the training program's own parser
    and checks (the ones it runs before reading any data)."""
    from cs336_basics.training.settings import parse_settings, validate

    for name in sw.list_presets():
        s = sw.load_sweep(sw.resolve_config(name), sw.training_flag_names(), out_dir=tmp_path / name)
        for v in s.variants:
            settings = parse_settings(["--config", str(sw.write_variant_config(s, v))])
            cfg = validate(settings)
            assert cfg.d_model == v.flags["d_model"] and settings.lr == v.flags["lr"]


# ------------------------------------------------------------------------------------------------
# scheduling with fake GPUs
# ------------------------------------------------------------------------------------------------
class FakeProc:
    """Finishes after ``polls`` calls to poll(), with exit status ``code``."""

    def __init__(self, log: list, name: str, slot, polls: int, code: int = 0):
        self.log, self.name, self.slot, self.left, self.code = log, name, slot, polls, code

    def poll(self):
        self.left -= 1
        if self.left <= 0:
            self.log.append(("end", self.name, self.slot))
            return self.code
        return None

    def wait(self, timeout=None):
        return self.code

    def send_signal(self, sig):
        pass


def test_schedule_one_variant_per_gpu():
    events: list = []
    done: dict[str, int] = {}
    jobs = [f"v{i}" for i in range(5)]
    durations = {"v0": 3, "v1": 1, "v2": 2, "v3": 1, "v4": 1}

    def launch(job, slot):
        events.append(("start", job, slot))
        return FakeProc(events, job, slot, durations[job], code=1 if job == "v2" else 0)

    assert sw.schedule(jobs, ["3", "5"], launch, lambda j, c: done.__setitem__(j, c), poll_s=0)
    assert done == {"v0": 0, "v1": 0, "v2": 1, "v3": 0, "v4": 0}  # a failure does not stop the others
    busy: dict[str, str] = {}
    most = 0
    for kind, job, slot in events:
        if kind == "start":
            assert slot not in busy, f"{job} started on GPU {slot} while {busy.get(slot)} ran there"
            busy[slot] = job
            most = max(most, len(busy))
        else:
            assert busy.pop(slot) == job
    assert most == 2
    assert {s for k, _, s in events if k == "start"} == {"3", "5"}
    # one slot: strictly one after another, in order
    events.clear()
    sw.schedule(jobs, [None], launch, lambda j, c: None, poll_s=0)
    assert [j for k, j, _ in events if k == "start"] == jobs
    assert all(events[2 * i] == ("start", jobs[i], None) for i in range(5))


def test_schedule_interrupted_stops_running_variants_gracefully():
    """Ctrl-C (or SIGTERM to the sweep) while variants run: no new start, SIGTERM to the running
    ones (a second SIGINT would make the trainer abort without a checkpoint), their exits recorded."""
    import signal

    signals: list = []
    done: dict = {}

    class Proc(FakeProc):
        def poll(self):
            if self.name == "v1" and not signals:
                raise KeyboardInterrupt  # the Ctrl-C lands while polling
            return None

        def send_signal(self, sig):
            signals.append((self.name, sig))

        def wait(self, timeout=None):
            return 0

    starts = []

    def launch(job, slot):
        starts.append(job)
        return Proc([], job, slot, 99)

    assert not sw.schedule(["v0", "v1", "v2"], ["0", "1"], launch, lambda j, c: done.__setitem__(j, c), poll_s=0)
    assert starts == ["v0", "v1"]
    assert sorted(signals) == [("v0", signal.SIGTERM), ("v1", signal.SIGTERM)]
    assert done == {"v0": 0, "v1": 0}


def test_gpu_slots(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert sw.gpu_slots("auto", all_cpu=False) == ["2", "3"]
    assert sw.gpu_slots("1", all_cpu=False) == ["2"]
    assert sw.gpu_slots("0", all_cpu=False) == [None]
    assert sw.gpu_slots("4,6", all_cpu=False) == ["4", "6"]
    assert sw.gpu_slots("auto", all_cpu=True) == [None]
    with pytest.raises(sw.SweepError, match="--gpus 3"):
        sw.gpu_slots("3", all_cpu=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sw.gpu_slots("auto", all_cpu=False) == [None]


def test_launcher_pins_each_process_to_its_gpu(tmp_path, monkeypatch):
    seen = []

    class Popen:
        def __init__(self, cmd, stdout, stderr, env):
            seen.append((cmd, env.get("CUDA_VISIBLE_DEVICES")))

    monkeypatch.setattr(sw.subprocess, "Popen", Popen)
    s = sw.Sweep("t", "", tmp_path, [sw.Variant("a", {}, {"lr": 0.1}), sw.Variant("b", {}, {"lr": 0.2})], "x")
    launch = sw._popen_launcher(s, resume={"b"})
    launch(s.variants[0], "1")
    launch(s.variants[1], "7")
    assert [g for _, g in seen] == ["1", "7"]
    assert seen[0][0][-2:] == ["--config", str(tmp_path / "configs" / "a.toml")]
    assert seen[1][0][-1] == "--resume"
    cfg = (tmp_path / "configs" / "b.toml").read_text()
    assert "lr = 0.2" in cfg and f'checkpoint_dir = "{tmp_path / "runs" / "b"}"' in cfg


# ------------------------------------------------------------------------------------------------
# real sweeps of tiny runs
# ------------------------------------------------------------------------------------------------
def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _never(v, slot):
    raise AssertionError(f"variant {v.name} should have been skipped")


def test_real_sweep_finish_skip_resume_diverge(tmp_path, monkeypatch):
    for k, v in subprocess_env().items():
        monkeypatch.setenv(k, v)
    data = write_pattern_data(tmp_path / "data")
    p = _write(
        tmp_path,
        'name = "tiny"\n'
        + TINY_BASE.format(train=data["train"], val=data["val"])
        + """
[[variants]]
name = "ok"
[[variants]]
name = "diverge"
lr = 1e6
min_lr = 1e5
""",
    )
    out = tmp_path / "out"
    s = sw.load_sweep(p, sw.training_flag_names(), out_dir=out)
    results, completed = sw.run_sweep(s, poll_s=0.1)
    assert completed
    by = {r.name: r for r in results}
    assert by["ok"].status == "finished" and by["ok"].exit_code == 0 and by["ok"].steps == 20
    finals = [r for r in _metrics(out / "runs" / "ok") if r["type"] == "final"]
    assert by["ok"].final_val_loss == pytest.approx(finals[0]["val_loss"])
    assert by["ok"].tokens == 20 * 8 * 16
    assert by["diverge"].status == "diverged" and by["diverge"].exit_code == 1
    summary = (out / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
    assert f"{finals[0]['val_loss']:.4f}" in rows["ok"] and "| finished |" in rows["ok"] and "| no | 0 |" in rows["ok"]
    assert "diverged" in rows["diverge"] and "| yes | 1 |" in rows["diverge"] and "lr=1e+06" in rows["diverge"]
    assert "Lowest final val loss: **ok**" in summary and f"`{p}`" in summary
    assert (out / "curves.csv").read_text().startswith("run,step")
    assert (out / "curves.png").stat().st_size > 1000  # matplotlib is in the dev group

    # Again: both are done (finished / diverged): nothing runs.
    results2, _ = sw.run_sweep(sw.load_sweep(p, sw.training_flag_names(), out_dir=out), launch=_never, poll_s=0.1)
    assert [r.status for r in results2] == ["finished", "diverged"]

    # Simulate an interruption after the checkpoint at step 10: drop later records and checkpoints.
    run = out / "runs" / "ok"
    kept = [r for r in _metrics(run) if r["step"] <= 10 and r["type"] != "final"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    for f in ("checkpoint_iter_20.pt", "checkpoint_iter_20.json"):
        (run / f).unlink()
    plans = {pl.variant.name: pl.action for pl in sw.plan(s)}
    assert plans == {"ok": "resume", "diverge": "skip"}
    results3, completed = sw.run_sweep(s, poll_s=0.1)
    assert completed and results3[0].status == "finished" and results3[0].steps == 20
    log = (out / "logs" / "ok.log").read_text()
    assert log.count("--resume") == 1 and "from iteration 10" in log
    steps = [r["step"] for r in _metrics(run) if r["type"] == "train"]
    assert steps == list(range(1, 21))  # resumed at 11, no gap, no duplicate

    # A diverged variant whose run directory was deleted runs again.
    shutil.rmtree(out / "runs" / "diverge")
    assert {pl.variant.name: pl.action for pl in sw.plan(s)} == {"ok": "skip", "diverge": "start"}

    # Changing a finished variant's flags is refused (its results would no longer match the file).
    p.write_text(p.read_text().replace('name = "ok"', 'name = "ok"\nlr = 1e-2'))
    with pytest.raises(sw.SweepError, match=r"'ok'.*lr: 0.003 -> 0.01"):
        sw.run_sweep(sw.load_sweep(p, sw.training_flag_names(), out_dir=out), launch=_never)


def test_cli_bad_config_is_one_line(tmp_path):
    p = _write(tmp_path, 'learnig_rate = 0.1\n[base]\ntrain_data_path = "t"\nval_data_path = "v"\n')
    r = subprocess.run(
        [sys.executable, "-m", "cs336_basics.tools.sweep", "--config", str(p), "--out_dir", str(tmp_path / "o")],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: ") and r.stderr.strip().count("\n") == 0
    assert "learnig_rate" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
