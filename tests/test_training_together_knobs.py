"""The trainer knobs: --override, --log_format json, --on_checkpoint, epoch cadence, --run_name,
TensorBoard extras and the Python API (``train(settings, model=...)``), through the real program.

(LR schedules: tests/test_extensions_schedules.py; --zero1: tests/test_training_zero1.py.) Tiny models, in-process runs.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from cs336_basics import training_together as tt
from cs336_basics.training import api
from cs336_basics.training.hooks import CheckpointHooks
from cs336_basics.training.overrides import apply_overrides
from cs336_basics.training.settings import ConfigError, TrainSettings, _did_you_mean, parse_settings
from cs336_basics.utils.errors import UserError
from tests._train_utils import MODEL_ARGS, VOCAB, assert_weights_equal, base_argv, metrics, records, write_pattern_data

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

N_TRAIN = 4000  # tokens: 31.25 optimizer steps of 8 x 16 tokens per epoch


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("knob_data"), n_train=N_TRAIN, n_val=1000)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = tt.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------------------------------------
# --override
# ----------------------------------------------------------------------------------------------
def test_override_sets_nested_toml_keys_before_the_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'train_data_path = "a.npy"\n[optim]\nlr = 1e-3\nbatch_size = 4\n[runtime.checkpoint]\nkeep_last = 2\n'
    )
    s = parse_settings(["--config", str(cfg), "--override", "optim.lr=3e-3", "--override", "runtime.checkpoint.keep_last=5",
                        "--override", "batch_size=7", "--override", "model.num_layers=3", "--override", "device=cpu"])  # fmt: skip
    assert (s.lr, s.keep_last, s.batch_size, s.num_layers, s.device) == (3e-3, 5, 7, 3, "cpu")
    # Flags still win over the (overridden) file; overrides work without a file too.
    assert parse_settings(["--config", str(cfg), "--override", "optim.lr=3e-3", "--lr", "5e-3"]).lr == 5e-3
    assert parse_settings(["--train_data_path", "a", "--override", "d_model=48"]).d_model == 48


def test_override_array_indices():
    doc = {"data": {"files": ["a.npy", "b.npy"]}}
    out, touched = apply_overrides(doc, ['data.files[1]="c.npy"'], ["files"], _did_you_mean)
    assert out == {"data": {"files": ["a.npy", "c.npy"]}} and touched == {"files": 'data.files[1]="c.npy"'}
    with pytest.raises(UserError, match=r"data.files\[2\] is out of range \(data.files has 2 elements\)"):
        apply_overrides(doc, ["data.files[2]=1"], ["files"], _did_you_mean)
    with pytest.raises(UserError, match="not an array"):
        apply_overrides({"data": {"files": "x"}}, ["data.files[0]=1"], ["files"], _did_you_mean)


@pytest.mark.parametrize(
    ("item", "needles"),
    [
        ("runtime.checkpoint.warmup_iter=5", ("--override", "warmup_iter", "did you mean 'warmup_iters'")),
        ("optim.batch_size=many", ("--override 'optim.batch_size=many'", "not a valid int")),
        ("optim..lr=1", ("bad path segment",)),
        ("lr", ("expected PATH=VALUE",)),
    ],
)
def test_bad_override_is_one_line(data, tmp_path, capsys, item, needles):
    rc, out, err = run(base_argv(data, tmp_path / "run", "--override", item), capsys)
    line = one_error_line(err)
    assert rc == 2
    for n in needles:
        assert n in line, line


# ----------------------------------------------------------------------------------------------
# --log_format json
# ----------------------------------------------------------------------------------------------
def test_json_console_is_one_record_per_line_and_matches_metrics_jsonl(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = base_argv(data, run_dir, "--log_format", "json", "--on_checkpoint", "true", max_iters=12, eval_interval=5,
                     checkpoint_interval=6)  # fmt: skip
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    recs = [json.loads(line) for line in out.splitlines()]  # every stdout line is one JSON object
    assert recs and all(isinstance(r, dict) for r in recs)
    assert {r["type"] for r in recs} == {"train", "eval", "final", "event"}
    assert recs == metrics(run_dir)  # the same records, the same keys, as metrics.jsonl
    # Setup and progress messages went to stderr.
    assert "Starting training from iteration 0..." in err and "Saved checkpoint to" in err
    assert "Iter " not in out and "Iter " not in err  # no text train lines at all


# ----------------------------------------------------------------------------------------------
# --on_checkpoint
# ----------------------------------------------------------------------------------------------
def test_checkpoint_hook_through_the_cli_runs_for_every_checkpoint_and_a_failure_is_only_a_warning(
    data, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    hook = 'echo "$0" > {run_dir}/hook_{step}.txt; echo step {step}; test {step} -ne 10 || exit 3'
    hook = hook.replace('"$0"', "{path}")
    rc, out, err = run(base_argv(data, run_dir, "--on_checkpoint", hook, max_iters=20, checkpoint_interval=5), capsys)
    assert rc == 0, err
    for step in (5, 10, 15, 20):
        assert (run_dir / f"hook_{step}.txt").read_text().strip() == str(run_dir / f"checkpoint_iter_{step}.pt")
        assert (run_dir / f"checkpoint_iter_{step}.pt").exists()
    events = [r for r in records(run_dir, "event") if r["event"] == "checkpoint_hook"]
    assert [(e["step"], e["exit_code"]) for e in events] == [(5, 0), (10, 3), (15, 0), (20, 0)]
    assert events[1]["output_tail"] == "step 10" and events[1]["path"] == str(run_dir / "checkpoint_iter_10.pt")
    assert "warning: checkpoint hook for iteration 10" in err and "exited 3" in err and "training goes on" in err
    assert "Checkpoint hook: checkpoint hook for iteration 20" in out


def _hooks(tmp_path: Path, template: str, timeout_s: float = 60.0) -> tuple[CheckpointHooks, list]:
    results: list = []
    return CheckpointHooks(template, tmp_path, timeout_s=timeout_s, report=results.append), results


def test_hooks_run_one_at_a_time_in_order_in_the_background(tmp_path):
    # Each hook appends "start N" / "end N"; the first one sleeps, so the others queue behind it.
    hooks, results = _hooks(
        tmp_path, "echo start {step} >> {run_dir}/log; sleep 0.{step}; echo end {step} >> {run_dir}/log"
    )
    for step in (3, 1, 2):
        hooks.submit(tmp_path / f"ck{step}.pt", step)
    assert hooks._running is not None and len(hooks._queue) == 2  # submit returned at once, nothing waited
    hooks.close()
    assert (tmp_path / "log").read_text().split("\n")[:-1] == [
        "start 3", "end 3", "start 1", "end 1", "start 2", "end 2"]  # fmt: skip
    assert [(r.step, r.exit_code) for r in results] == [(3, 0), (1, 0), (2, 0)]


def test_a_hook_past_the_timeout_is_stopped_at_exit_and_queued_ones_are_reported(tmp_path):
    hooks, results = _hooks(tmp_path, "echo started; sleep 60; touch {run_dir}/finished", timeout_s=0.5)
    hooks.submit(tmp_path / "a.pt", 1)
    hooks.submit(tmp_path / "b.pt", 2)
    proc = hooks._running.proc
    hooks.close()
    assert proc.poll() is not None  # stopped, not left behind
    assert not (tmp_path / "finished").exists()
    assert results[0].exit_code is None and "still running after --on_checkpoint_timeout 0.5s" in results[0].note
    assert results[0].output_tail == "started"
    assert results[1].step == 2 and results[1].note.startswith("not run")


# ----------------------------------------------------------------------------------------------
# epoch cadence
# ----------------------------------------------------------------------------------------------
def test_eval_and_checkpoint_every_epochs(data, tmp_path, capsys):
    """31.25 steps per epoch: 0.16 epochs -> every 5 steps, 0.32 -> every 10."""
    run_dir = tmp_path / "run"
    argv = base_argv(data, run_dir, "--eval_every_epochs", "0.16", "--checkpoint_every_epochs", "0.32", max_iters=20)
    argv = [a for i, a in enumerate(argv) if a not in ("--eval_interval", "--checkpoint_interval")
            and argv[i - 1] not in ("--eval_interval", "--checkpoint_interval")]  # fmt: skip
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    assert [r["step"] for r in records(run_dir, "eval")] == [5, 10, 15]
    assert sorted(int(p.stem.split("_")[-1]) for p in run_dir.glob("checkpoint_iter_*.pt")) == [10, 20]
    assert "--eval_every_epochs 0.16: evaluating every 5 steps (an epoch is 31.2 steps" in out
    assert re.search(r"^Iter +1 \|.* \| Epoch 0\.03$", out, re.M) and re.search(
        r"^Iter +20 \|.* \| Epoch 0\.64$", out, re.M
    )
    assert records(run_dir, "train")[-1]["epoch"] == pytest.approx(20 * 128 / N_TRAIN)


def test_epoch_and_step_intervals_together_are_refused(data, tmp_path, capsys):
    rc, _, err = run(
        base_argv(data, tmp_path / "run", "--eval_every_epochs", "1"), capsys
    )  # base_argv sets --eval_interval
    assert rc == 2 and "--eval_every_epochs and --eval_interval" in one_error_line(err)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[ckpt]\ncheckpoint_interval = 7\n")
    with pytest.raises(ConfigError, match="--checkpoint_every_epochs and --checkpoint_interval"):
        parse_settings(["--train_data_path", "a", "--config", str(cfg), "--checkpoint_every_epochs", "1"])
    with pytest.raises(ConfigError, match="--eval_every_epochs and --eval_interval"):
        parse_settings(["--train_data_path", "a", "--eval_every_epochs", "1", "--eval_int", "5"])  # abbreviated


# ----------------------------------------------------------------------------------------------
# --run_name and the default run directory
# ----------------------------------------------------------------------------------------------
def _argv_without_dir(data, *extra, **flags) -> list[str]:
    argv = base_argv(data, Path("unused"), *extra, **flags)
    i = argv.index("--checkpoint_dir")
    return argv[:i] + argv[i + 2 :]


def test_default_run_directory_is_runs_timestamp_and_run_name_names_it(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(_argv_without_dir(data, max_iters=3, checkpoint_interval=3), capsys)
    assert rc == 0, err
    (made,) = list((tmp_path / "runs").iterdir())
    assert re.fullmatch(r"\d{8}-\d{6}", made.name), made.name
    cfg = json.loads((made / "run_config.json").read_text())["train_config"]
    assert cfg["run_name"] == made.name and cfg["checkpoint_dir"] == f"runs/{made.name}"
    assert (made / "checkpoint_iter_3.pt").exists()
    rc, out, err = run(_argv_without_dir(data, "--run_name", "mine", max_iters=3, checkpoint_interval=3), capsys)
    assert rc == 0 and (tmp_path / "runs" / "mine" / "checkpoint_iter_3.pt").exists()
    # Resuming needs to know which run; --run_name is enough.
    rc, out, err = run(_argv_without_dir(data, "--resume", max_iters=3), capsys)
    assert rc == 2 and "--resume needs to know which run" in one_error_line(err)
    rc, out, err = run(_argv_without_dir(data, "--resume", "--run_name", "mine", max_iters=5), capsys)
    assert rc == 0 and "Resuming from runs/mine/checkpoint_iter_3.pt (iteration 3)" in out


def test_resume_keeps_the_checkpoints_run_name(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(base_argv(data, run_dir, "--run_name", "first", max_iters=3, checkpoint_interval=3), capsys)[0] == 0
    assert run(base_argv(data, run_dir, "--resume", max_iters=5), capsys)[0] == 0
    assert json.loads((run_dir / "run_config.json").read_text())["train_config"]["run_name"] == "first"
    rc, _, err = run(base_argv(data, tmp_path / "x", "--run_name", "a/b"), capsys)
    assert rc == 2 and "--run_name 'a/b' must be a plain name" in one_error_line(err)


# ----------------------------------------------------------------------------------------------
# TensorBoard: run subdirectory, flush interval, smoothed loss (a fake SummaryWriter)
# ----------------------------------------------------------------------------------------------
class FakeWriter:
    made: list[FakeWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.flushed_at, self.closed = log_dir, [], [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, value, global_step))

    def flush(self) -> None:
        self.flushed_at.append(self.scalars[-1][2])

    def close(self) -> None:
        self.closed = True


def test_tensorboard_run_dir_flush_every_and_loss_ema(data, tmp_path, monkeypatch, capsys):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(tt, "check_extras", lambda *a: None)  # tensorboard itself is not installed
    FakeWriter.made.clear()
    run_dir, tb = tmp_path / "run", tmp_path / "tb"
    argv = base_argv(data, run_dir, "--tensorboard_dir", str(tb), "--tensorboard_flush_every", "4", "--run_name", "r1",
                     max_iters=12)  # fmt: skip
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    (w,) = FakeWriter.made
    assert w.log_dir == str(tb / "r1") and w.closed
    assert w.flushed_at == [4, 8, 12]
    losses = [r["loss"] for r in records(run_dir, "train")]
    ema, want = 0.0, []
    for n, x in enumerate(losses, start=1):  # bias-corrected EMA, beta 0.9, worked out independently
        ema = 0.9 * ema + 0.1 * x
        want.append(ema / (1 - 0.9**n))
    got = [v for tag, v, _ in w.scalars if tag == "train/loss_ema"]
    assert got == pytest.approx(want, rel=1e-12) and got[0] == pytest.approx(losses[0])
    with pytest.raises(ConfigError, match="--tensorboard_flush_every needs --tensorboard_dir"):
        parse_settings(["--train_data_path", "a", "--tensorboard_flush_every", "3"])


# ----------------------------------------------------------------------------------------------
# the Python API
# ----------------------------------------------------------------------------------------------
class Bigram(nn.Module):
    """A custom model (not our TransformerLM): next-token logits from the current token only."""

    def __init__(self, vocab: int = VOCAB, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Parameter(torch.randn(vocab, d) * 0.1)
        self.unembed = nn.Parameter(torch.randn(d, vocab) * 0.1)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed[ids] @ self.unembed + self.bias


def _api_settings(data, run_dir: Path, **kw) -> TrainSettings:
    model = dict(zip(MODEL_ARGS[::2], MODEL_ARGS[1::2], strict=True))
    base = {k.lstrip("-"): int(v) for k, v in model.items()}
    settings = dict(
        train_data_path=data["train"], val_data_path=data["val"], checkpoint_dir=run_dir, device="cpu", batch_size=8,
        lr=3e-2, min_lr=3e-3, warmup_iters=2, eval_interval=10, eval_iters=2, log_interval=5, checkpoint_interval=10,
        seed=3, lr_schedule="constant", **base,  # constant: the schedule must not depend on max_iters (resume test)
    )  # fmt: skip
    return TrainSettings.from_kwargs(**{**settings, **kw})


def test_python_api_trains_a_custom_model_and_resumes_exactly(data, tmp_path, capsys):
    full = tt.train(_api_settings(data, tmp_path / "full", max_iters=20), model=Bigram)
    assert full.state.iteration == 20 and isinstance(full.state.model, Bigram)
    losses = [r["loss"] for r in records(tmp_path / "full", "train")]
    assert losses[-1] < losses[0] - 0.5, losses  # it learned the counting pattern
    assert records(tmp_path / "full", "final")[0]["step"] == 20
    # Stop at 10, resume to 20 (a module instance this time): the same weights as the uninterrupted run.
    torch.manual_seed(123)  # the instance's own init is overwritten by the checkpoint
    part = tt.train(_api_settings(data, tmp_path / "part", max_iters=20, checkpoint_interval=10), model=Bigram())
    assert part.last_saved == tmp_path / "part" / "checkpoint_iter_20.pt"
    tt.train(_api_settings(data, tmp_path / "half", max_iters=10), model=Bigram)
    resumed = tt.train(_api_settings(data, tmp_path / "half", max_iters=20, resume=True), model=Bigram)
    assert resumed.resumed_from == tmp_path / "half" / "checkpoint_iter_10.pt"
    assert_weights_equal(tmp_path / "half" / "checkpoint_iter_20.pt", tmp_path / "full" / "checkpoint_iter_20.pt")
    capsys.readouterr()


def test_python_settings_are_checked_like_the_command_line(data, tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'; did you mean 'lr'"):
        TrainSettings.from_kwargs(train_data_path="a", learning_rate=1e-3)
    with pytest.raises(ConfigError, match="batch_size"):
        TrainSettings.from_kwargs(train_data_path="a", batch_size="many")
    with pytest.raises(ConfigError, match="train_data_path is required"):
        TrainSettings.from_kwargs(lr=1e-3)
    with pytest.raises(ConfigError, match="--warmup_iters"):
        TrainSettings.from_kwargs(train_data_path="a", max_iters=10, warmup_iters=20)
    s = TrainSettings.from_kwargs(train_data_path="a", lr=1e-3, val_data_path=None)
    assert s.min_lr == 1e-4 and s.warmup_iters == 2000  # the same derived defaults as the CLI
    with pytest.raises(UserError, match="--log_norms needs the TransformerLM's blocks"):
        tt.train(_api_settings(data, tmp_path / "x", max_iters=4, log_norms=True), model=Bigram)


def test_the_api_refuses_a_builder_that_returns_no_module():
    from cs336_basics.training.runtime import setup_runtime

    s = TrainSettings.from_kwargs(train_data_path="t.npy", max_iters=10)
    with pytest.raises(UserError, match=r"train\(model=...\): the function returned int, not an nn.Module"):
        api.build_model(lambda: 3, s, setup_runtime("cpu"))
