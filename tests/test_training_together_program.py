"""The training program end to end (``cs336_basics.training_together``), on CPU with tiny models.

Most runs call ``main(argv)`` in-process (about a second each); faults are injected by
monkeypatching the loss function the trainer uses, or by sending real signals.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from cs336_basics import training_together as tt
from cs336_basics.optim import lr_cosine_schedule
from cs336_basics.training import step as train_step_mod
from cs336_basics.training.checkpoints import CheckpointError, CheckpointManager
from cs336_basics.training.settings import parse_settings
from tests._train_utils import (
    PYTHON,
    REPO,
    VOCAB,
    assert_weights_equal,
    base_argv,
    load_pt,
    metrics,
    records,
    subprocess_env,
    train_losses,
    write_pattern_data,
)

from ._torch_threads import default_torch_threads, one_torch_thread  # noqa: F401  (fixtures)

ITER_LINE = re.compile(
    r"^Iter +(\d+) \| Loss: \d+\.\d{4} \| LR: \d\.\d\de[-+]\d\d \| Time: \d+\.\dms \| Tokens/sec: \d+ \| MFU: n/a \| ETA \d+:\d\d:\d\d$",
    re.M,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("train_data"))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = tt.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def patch_loss(monkeypatch, effect) -> dict[str, int]:
    """Wrap the trainer's cross_entropy; ``effect(call_no, loss)`` may return a replacement loss.

    Only training calls (grad enabled) are counted, 1, 2, 3, ... (one per micro-step).
    """
    real = train_step_mod.cross_entropy
    calls = {"n": 0}

    def wrapped(logits, targets):
        loss = real(logits, targets)
        if torch.is_grad_enabled():
            calls["n"] += 1
            new = effect(calls["n"], loss)
            if new is not None:
                loss = new
        return loss

    monkeypatch.setattr(train_step_mod, "cross_entropy", wrapped)
    return calls


# ----------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------
def test_tiny_run_learns_and_writes_everything(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = tmp_path / "cfg.toml"
    # Part of the settings from a config file (grouped), the rest on the command line.
    cfg.write_text("[optim]\nlr = 1e-2\nmin_lr = 1e-3\nwarmup_iters = 5\n[run]\nmax_iters = 60\n")
    argv = base_argv(data, run_dir, "--config", str(cfg), eval_interval=20, checkpoint_interval=30, log_interval=10)
    argv = [a for a in argv]  # base_argv sets lr/min_lr/warmup/max_iters: drop them so the file's apply
    for flag in ("--lr", "--min_lr", "--warmup_iters", "--max_iters"):
        i = argv.index(flag)
        del argv[i : i + 2]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    # Console shape (as docs/training.md shows it).
    lines = out.splitlines()
    for want in ("Loading data with memory mapping...", "Initializing model...", "Starting training from iteration 0...",
                 "Device: cpu", "Max iterations: 60", "-" * 80, "Evaluating at iteration 20...",
                 "Evaluating at iteration 40..."):  # fmt: skip
        assert want in lines, f"missing line {want!r}\n{out}"
    assert re.search(r"^Train data size: 20,000 tokens$", out, re.M)
    assert re.search(r"^Validation data size: 2,000 tokens$", out, re.M)
    assert re.search(r"^Total parameters: [\d,]+$", out, re.M) and re.search(
        r"^Trainable parameters: [\d,]+$", out, re.M
    )
    assert re.search(r"^Train loss: \d+\.\d{4} \| Val loss: \d+\.\d{4}$", out, re.M)
    # The first iteration is shown at once (signs of life on a slow machine), then every --log_interval.
    assert [int(m) for m in ITER_LINE.findall(out)] == [1, 10, 20, 30, 40, 50, 60], out
    assert re.search(r"^Final evaluation: Train loss: \d+\.\d{4} \| Val loss: \d+\.\d{4}$", out, re.M)
    assert f"Saved checkpoint to {run_dir / 'checkpoint_iter_30.pt'}" in lines
    assert f"Saved checkpoint to {run_dir / 'checkpoint_iter_60.pt'}" in lines
    assert "Tokens per optimizer step: 128" in out  # 8 x 16 x 1 x 1

    # The loss falls (the pattern is learnable): final val loss far below the initial ln(64).
    tr = records(run_dir, "train")
    assert tr[-1]["loss"] < tr[0]["loss"] and tr[-1]["loss"] < 1.5, [r["loss"] for r in tr]
    final = records(run_dir, "final")[-1]
    assert final["val_loss"] < 1.5 and final["val_accuracy"] > 0.6 and final["step"] == 60
    assert final["val_perplexity"] == pytest.approx(torch.tensor(final["val_loss"]).exp().item(), rel=1e-6)
    # metrics.jsonl keys (contract).
    for key in ("step", "tokens", "time_s", "loss", "lr", "grad_norm", "tokens_per_sec", "iter_time_ms"):
        assert key in tr[0], key
    assert tr[-1]["tokens"] == 60 * 128
    ev = records(run_dir, "eval")
    assert [r["step"] for r in ev] == [20, 40]
    for key in ("tokens", "time_s", "train_loss", "val_loss", "val_perplexity", "val_accuracy"):
        assert key in ev[0]
    # LR follows the schedule (from the config file): warmup then cosine decay to min_lr at max_iters.
    assert tr[0]["lr"] == pytest.approx(lr_cosine_schedule(0, 1e-2, 1e-3, 5, 60))
    assert tr[1]["lr"] == pytest.approx(lr_cosine_schedule(9, 1e-2, 1e-3, 5, 60))

    # Files in the run directory.
    names = {p.name for p in run_dir.iterdir()}
    assert {"checkpoint_iter_30.pt", "checkpoint_iter_30.json", "checkpoint_iter_60.pt", "checkpoint_iter_60.json",
            "best.pt", "best.json", "metrics.jsonl", "run_config.json"} <= names  # fmt: skip
    ck = load_pt(run_dir / "checkpoint_iter_60.pt")
    assert ck["iteration"] == 60 and ck["model_config"]["d_model"] == 32
    assert ck["train_config"]["lr"] == 1e-2 and ck["train_config"]["seed"] == 1234
    assert set(ck["rng"]) >= {"python", "numpy", "torch", "cuda", "data"} and len(ck["rng"]["data"]) == 1
    assert ck["scaler"] is None and ck["best_val_loss"] == pytest.approx(final["val_loss"])
    side = json.loads((run_dir / "checkpoint_iter_60.json").read_text())
    assert (
        side["iteration"] == 60 and side["model_config"]["num_layers"] == 2 and side["train_config"]["max_iters"] == 60
    )
    rc_json = json.loads((run_dir / "run_config.json").read_text())
    assert rc_json["seed"] == 1234 and rc_json["world_size"] == 1 and rc_json["torch_version"] == torch.__version__
    assert rc_json["train_config"]["lr"] == 1e-2 and rc_json["train_config"]["batch_size"] == 8
    # The trained checkpoint is a TransformerLM state dict that loads into a fresh model.
    from cs336_basics.lm.model import ModelConfig, TransformerLM

    m = TransformerLM(ModelConfig.from_dict(ck["model_config"]))
    m.load_state_dict(ck["model"])


def test_bf16_autocast_on_cpu_learns_from_bin_files(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = base_argv(data, run_dir, dtype="bf16", max_iters=40, lr=1e-2, min_lr=1e-3, log_interval=10,
                     eval_interval=40, checkpoint_interval=40, data_dtype="uint16", grad_accum_steps=2)  # fmt: skip
    argv[argv.index("--train_data_path") + 1] = str(data["train_bin"])
    argv[argv.index("--val_data_path") + 1] = str(data["val_bin"])
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    assert "Precision: bf16" in out and "accum 2" in out and "Tokens per optimizer step: 256" in out
    tr = records(run_dir, "train")
    assert tr[-1]["loss"] < tr[0]["loss"] and tr[-1]["loss"] < 1.5, [r["loss"] for r in tr]
    ck = load_pt(run_dir / "checkpoint_iter_40.pt")
    assert all(v.dtype == torch.float32 for v in ck["model"].values())  # master weights stay fp32


def test_log_norms_adds_per_layer_rms(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc, out, err = run(base_argv(data, run_dir, "--log_norms", max_iters=4, log_interval=2), capsys)
    assert rc == 0, err
    tr = records(run_dir, "train")
    assert [r["step"] for r in tr] == [1, 2, 4]  # the first iteration, then every --log_interval
    for r in tr:
        assert set(r["weight_rms"]) == {"token_embeddings", "layers.0", "layers.1", "ln_final", "lm_head"}
        assert set(r["act_rms"]) == {"token_embeddings", "layers.0", "layers.1", "ln_final", "lm_head"}
        assert all(v > 0 for v in r["act_rms"].values())
    ck = load_pt(run_dir / "checkpoint_iter_4.pt")["model"]
    rms = ck["lm_head.weight"].pow(2).mean().sqrt().item()
    assert tr[-1]["weight_rms"]["lm_head"] == pytest.approx(rms, rel=1e-5)
    # Without the flag: no norms, and no hooks left behind.
    rc, _, err = run(base_argv(data, tmp_path / "plain", max_iters=2, warmup_iters=1), capsys)
    assert rc == 0 and "weight_rms" not in records(tmp_path / "plain", "train")[0]


def test_keep_last_best_and_early_stopping(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc, out, err = run(base_argv(data, run_dir, "--keep_last", "2", max_iters=12, checkpoint_interval=2,
                                 eval_interval=4), capsys)  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in run_dir.glob("checkpoint_iter_*.pt")) == [
        "checkpoint_iter_10.pt",
        "checkpoint_iter_12.pt",
    ]
    best = load_pt(run_dir / "best.pt")
    vals = [r["val_loss"] for r in records(run_dir, "eval") + records(run_dir, "final")]
    assert best["best_val_loss"] == pytest.approx(min(vals))

    # lr 0: the val loss never improves after the first eval -> patience 2 stops after 3 evals.
    es_dir = tmp_path / "es"
    rc, out, err = run(base_argv(data, es_dir, "--early_stopping_patience", "2", lr=0.0, min_lr=0.0, max_iters=100,
                                 eval_interval=2, checkpoint_interval=1000), capsys)  # fmt: skip
    assert rc == 0, err
    assert "Early stopping" in out
    assert [r["step"] for r in records(es_dir, "eval")] == [2, 4, 6]
    assert records(es_dir, "final")[-1]["step"] == 6 and (es_dir / "checkpoint_iter_6.pt").is_file()


# ----------------------------------------------------------------------------------------------
# exact resume and determinism
# ----------------------------------------------------------------------------------------------
def test_exact_resume_n_plus_n_equals_2n(data, tmp_path, capsys, default_torch_threads):
    """N steps, then --resume for N more (max_iters raised) == 2N uninterrupted, bit for bit.

    A constant LR (warmup 0, min_lr == lr) makes the schedule independent of max_iters.
    """
    n = 8
    common = dict(lr=3e-3, min_lr=3e-3, warmup_iters=0, eval_interval=4, checkpoint_interval=n)
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(base_argv(data, full, max_iters=2 * n, **common), capsys)[0] == 0
    assert run(base_argv(data, part, max_iters=n, **common), capsys)[0] == 0
    # Determinism: the first N steps of two runs with the same seed and flags are identical.
    a, b = train_losses(full), train_losses(part)
    assert all(a[s] == b[s] for s in range(1, n + 1))
    assert_weights_equal(full / f"checkpoint_iter_{n}.pt", part / f"checkpoint_iter_{n}.pt")

    rc, out, err = run(base_argv(data, part, "--resume", max_iters=2 * n, **common), capsys)
    assert rc == 0, err
    assert f"Resuming from {part / f'checkpoint_iter_{n}.pt'} (iteration {n})" in out
    assert f"Starting training from iteration {n}..." in out
    assert "max_iters: 8 (saved) -> 16 (flag)" in out  # the setting given anew is reported
    assert_weights_equal(full / f"checkpoint_iter_{2 * n}.pt", part / f"checkpoint_iter_{2 * n}.pt")
    a, b = train_losses(full), train_losses(part)
    assert sorted(b) == list(range(1, 2 * n + 1))
    assert a == b
    # Eval losses after the resume match too (eval batches come from their own RNG).
    ev_a = {r["step"]: r["val_loss"] for r in records(full, "eval")}
    ev_b = {r["step"]: r["val_loss"] for r in records(part, "eval")}
    assert ev_a[12] == ev_b[12]
    # Optimizer state is identical as well.
    oa, ob = load_pt(full / "checkpoint_iter_16.pt")["optimizer"], load_pt(part / "checkpoint_iter_16.pt")["optimizer"]
    for pid in oa["state"]:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa["state"][pid][k], ob["state"][pid][k])


@pytest.fixture(scope="module")
def reference_cosine(data, tmp_path_factory) -> Path:
    """Uninterrupted 16 steps with warmup + cosine decay, a checkpoint every 2 steps."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    assert tt.main(base_argv(data, run_dir, max_iters=16, checkpoint_interval=2, eval_interval=5)) == 0
    return run_dir


def test_sigterm_stops_after_the_step_and_resume_is_exact(data, reference_cosine, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"

    def effect(call, loss):
        if call == 6:
            signal.raise_signal(signal.SIGTERM)  # arrives in the middle of iteration 6

    calls = patch_loss(monkeypatch, effect)
    rc, out, err = run(base_argv(data, run_dir, max_iters=16, checkpoint_interval=100, eval_interval=5), capsys)
    assert rc == 0, err
    assert calls["n"] == 6, "training went on past the iteration that got the signal"
    assert "Received SIGTERM: finishing iteration 6 and saving a checkpoint" in out
    assert f"Saved checkpoint to {run_dir / 'checkpoint_iter_6.pt'}" in out
    assert "Final evaluation" not in out
    assert [e["event"] for e in records(run_dir, "event")] == ["signal"]
    assert_weights_equal(run_dir / "checkpoint_iter_6.pt", reference_cosine / "checkpoint_iter_6.pt")
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored (pytest keeps working)

    monkeypatch.undo()
    rc, out, err = run(
        base_argv(data, run_dir, "--resume", max_iters=16, checkpoint_interval=100, eval_interval=5), capsys
    )
    assert rc == 0, err
    assert f"Resuming from {run_dir / 'checkpoint_iter_6.pt'} (iteration 6)" in out
    assert_weights_equal(run_dir / "checkpoint_iter_16.pt", reference_cosine / "checkpoint_iter_16.pt")
    assert train_losses(run_dir) == train_losses(reference_cosine)


def test_resume_skips_a_corrupt_newest_checkpoint(data, reference_cosine, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for it in (8, 10):
        for suffix in (".pt", ".json"):
            (run_dir / f"checkpoint_iter_{it}{suffix}").write_bytes(
                (reference_cosine / f"checkpoint_iter_{it}{suffix}").read_bytes()
            )
    blob = bytearray((run_dir / "checkpoint_iter_10.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (run_dir / "checkpoint_iter_10.pt").write_bytes(bytes(blob))
    rc, out, err = run(
        base_argv(data, run_dir, "--resume", max_iters=16, checkpoint_interval=2, eval_interval=5), capsys
    )
    assert rc == 0, err
    assert re.search(rf"^Skipping {re.escape(str(run_dir / 'checkpoint_iter_10.pt'))}: .*sha256", out, re.M), out
    assert f"Resuming from {run_dir / 'checkpoint_iter_8.pt'} (iteration 8)" in out
    assert_weights_equal(run_dir / "checkpoint_iter_16.pt", reference_cosine / "checkpoint_iter_16.pt")


def test_checkpoint_from_another_run_dir_with_resume_from(data, reference_cosine, tmp_path, capsys):
    run_dir = tmp_path / "run"
    src = reference_cosine / "checkpoint_iter_12.pt"
    rc, out, err = run(base_argv(data, run_dir, "--resume_from", str(src), max_iters=16, checkpoint_interval=2,
                                 eval_interval=5), capsys)  # fmt: skip
    assert rc == 0, err
    assert f"Resuming from {src} (iteration 12)" in out
    assert_weights_equal(run_dir / "checkpoint_iter_16.pt", reference_cosine / "checkpoint_iter_16.pt")


# ----------------------------------------------------------------------------------------------
# faults in the loop
# ----------------------------------------------------------------------------------------------
def test_nan_streak_stops_with_last_good_checkpoint(data, reference_cosine, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    # Iterations 5 and 6: NaN loss (with NaN gradients); 7: NaN loss with *finite* gradients.
    patch_loss(
        monkeypatch,
        lambda call, loss: loss * float("nan") if call in (5, 6) else (loss + float("nan") if call == 7 else None),
    )
    rc, out, err = run(base_argv(data, run_dir, "--max_bad_steps", "3", max_iters=16, checkpoint_interval=100,
                                 eval_interval=5), capsys)  # fmt: skip
    assert rc == 1
    err_lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error: ") and "--lr" in err_lines[0], err
    for k, it in enumerate((5, 6, 7), 1):
        assert f"Non-finite loss at iteration {it} ({k}/3 in a row): update skipped" in out
    assert "Iter      6" in out and "Iter      8" not in out
    assert f"Saved checkpoint to {run_dir / 'checkpoint_iter_4.pt'}" in out
    ev = [e for e in records(run_dir, "event") if e["event"] == "nonfinite"]
    assert [e["step"] for e in ev] == [5, 6, 7]
    # The checkpoint is the last good state: weights and optimizer as after step 4.
    assert_weights_equal(run_dir / "checkpoint_iter_4.pt", reference_cosine / "checkpoint_iter_4.pt")
    got = load_pt(run_dir / "checkpoint_iter_4.pt")
    assert got["iteration"] == 4
    want = load_pt(reference_cosine / "checkpoint_iter_4.pt")
    for pid in want["optimizer"]["state"]:
        assert torch.equal(got["optimizer"]["state"][pid]["exp_avg"], want["optimizer"]["state"][pid]["exp_avg"])
    # ... including the data stream: resuming it replays the uninterrupted run exactly.
    monkeypatch.undo()
    rc, out, err = run(
        base_argv(data, run_dir, "--resume", max_iters=16, checkpoint_interval=2, eval_interval=5), capsys
    )
    assert rc == 0, err
    assert_weights_equal(run_dir / "checkpoint_iter_16.pt", reference_cosine / "checkpoint_iter_16.pt")


def test_single_nan_step_is_skipped_and_training_continues(data, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    patch_loss(monkeypatch, lambda call, loss: loss * float("nan") if call == 3 else None)
    rc, out, err = run(base_argv(data, run_dir, max_iters=6, checkpoint_interval=1), capsys)
    assert rc == 0, err
    assert "Non-finite loss at iteration 3 (1/3 in a row): update skipped" in out
    assert_weights_equal(run_dir / "checkpoint_iter_2.pt", run_dir / "checkpoint_iter_3.pt")
    losses = train_losses(run_dir)
    assert losses[3] is None and all(isinstance(losses[s], float) for s in (1, 2, 4, 5, 6))  # NaN -> null in JSON
    assert [e["step"] for e in records(run_dir, "event") if e["event"] == "nonfinite"] == [3]


def test_grad_scaler_overflow_is_a_logged_skip_not_a_failure(data, tmp_path, capsys, monkeypatch):
    """With loss scaling on (fp16's GradScaler, here forced on for CPU), an overflowing gradient skips
    the update and lowers the scale; it is counted as a "scaler_skip" event, not a bad step."""
    from cs336_basics.training import runtime

    monkeypatch.setattr(
        runtime, "make_grad_scaler", lambda device, dtype: torch.amp.GradScaler("cpu", init_scale=1024.0)
    )

    class InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("inf")

    patch_loss(monkeypatch, lambda call, loss: InfGrad.apply(loss) if call in (3, 4, 5, 6) else None)
    run_dir = tmp_path / "run"
    rc, out, err = run(base_argv(data, run_dir, "--max_bad_steps", "2", max_iters=8, checkpoint_interval=1), capsys)
    assert rc == 0, err  # 4 overflows in a row > --max_bad_steps 2, but they are not failures
    assert "Non-finite" not in out
    assert "Gradient overflow at iteration 3 (fp16 loss scaling): update skipped, loss scale now 512" in out
    ev = [e for e in records(run_dir, "event") if e["event"] == "scaler_skip"]
    assert [e["step"] for e in ev] == [3, 4, 5, 6] and ev[-1]["count"] == 4
    assert_weights_equal(run_dir / "checkpoint_iter_2.pt", run_dir / "checkpoint_iter_6.pt")
    assert load_pt(run_dir / "checkpoint_iter_8.pt")["scaler"]["scale"] == 64.0


@pytest.mark.parametrize("allow", [False, True])
def test_checkpoint_write_failure(data, tmp_path, capsys, monkeypatch, allow):
    run_dir = tmp_path / "run"
    real_save = CheckpointManager.save

    def save(self, payload, iteration, *a, **kw):
        if iteration == 4:
            raise CheckpointError(f"could not write checkpoint {self.path_for(iteration)}: No space left on device")
        return real_save(self, payload, iteration, *a, **kw)

    monkeypatch.setattr(CheckpointManager, "save", save)
    extra = ["--allow_checkpoint_failure"] if allow else []
    rc, out, err = run(base_argv(data, run_dir, *extra, max_iters=6, checkpoint_interval=2), capsys)
    prev = run_dir / "checkpoint_iter_2.pt"
    if not allow:
        assert rc == 1
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: ") and "checkpoint_iter_4.pt" in line and "No space left" in line
        assert f"{prev} is intact" in line
        assert max(train_losses(run_dir)) == 4  # stopped at once
    else:
        assert rc == 0, err
        assert "warning:" in err and "checkpoint_iter_4.pt" in err
        assert (run_dir / "checkpoint_iter_6.pt").is_file()
    assert prev.is_file() and not (run_dir / "checkpoint_iter_4.pt").exists()
    assert any(e["event"] == "checkpoint_failure" for e in records(run_dir, "event"))


def test_sigterm_to_a_real_process_then_resume(data, tmp_path):
    """The real command line: SIGTERM -> checkpoint + exit 0; --resume continues from it."""
    run_dir = tmp_path / "run"
    argv = base_argv(data, run_dir, max_iters=100_000, checkpoint_interval=100_000, eval_interval=100_000)
    proc = subprocess.Popen([PYTHON, "-m", "cs336_basics.training_together", *argv], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    out_lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out_lines.append(line)
            if line.startswith("Iter") and int(line.split()[1]) >= 3:
                break
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=300)  # finishing a step and a checkpoint on a busy machine
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(out_lines) + rest
    assert proc.returncode == 0, err
    m = re.search(r"^Received SIGTERM: finishing iteration (\d+) and saving a checkpoint$", out, re.M)
    assert m, out
    n = int(m.group(1))
    assert f"Saved checkpoint to {run_dir / f'checkpoint_iter_{n}.pt'}" in out
    assert load_pt(run_dir / f"checkpoint_iter_{n}.pt")["iteration"] == n
    assert max(train_losses(run_dir)) == n

    rc = tt.main(
        base_argv(data, run_dir, "--resume", max_iters=n + 2, checkpoint_interval=100_000, eval_interval=100_000)
    )
    assert rc == 0
    assert load_pt(run_dir / f"checkpoint_iter_{n + 2}.pt")["iteration"] == n + 2
    assert sorted(train_losses(run_dir)) == list(range(1, n + 3))


# ----------------------------------------------------------------------------------------------
# config precedence
# ----------------------------------------------------------------------------------------------
def test_config_file_precedence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'train_data_path = "a.npy"\nval_data_path = "b.npy"\nd_model = 48\ncompile = true\n'
        "[model]\nnum_layers = 3\nrope_theta = 500\n[optim]\nlr = 0.01\nbatch_size = 3\n"
    )
    args = parse_settings(["--config", str(cfg)])
    assert (args.d_model, args.num_layers, args.lr, args.batch_size, args.compile) == (48, 3, 0.01, 3, True)
    assert args.rope_theta == 500.0 and isinstance(args.rope_theta, float)
    assert args.train_data_path == "a.npy" and args.d_ff == 2048  # untouched default
    args = parse_settings(
        ["--config", str(cfg), "--lr", "0.02", "--no-compile", "--d_model", "64", "--val_data_path", "c.npy"]
    )
    assert (args.lr, args.compile, args.d_model, args.val_data_path, args.num_layers) == (0.02, False, 64, "c.npy", 3)
    # Without the file the defaults are the course's (docs/training-flags.md).
    args = parse_settings(["--train_data_path", "a", "--val_data_path", "b"])
    defaults = dict(vocab_size=10000, context_length=256, d_model=512, num_heads=8, d_ff=2048, num_layers=6,
                    rope_theta=10000.0, checkpoint_dir=None, eval_interval=500, eval_iters=100,
                    device="auto", use_wandb=False, lr=6e-4, min_lr=6e-5, weight_decay=0.1, beta1=0.9, beta2=0.95,
                    eps=1e-8, batch_size=64, max_iters=100000, warmup_iters=2000, grad_clip=1.0,
                    checkpoint_interval=5000, log_interval=100, resume_from=None, seed=42,
                    wandb_project="transformer-lm", wandb_run_name=None, dtype="fp32", compile=False,
                    grad_accum_steps=1, tf32=False, ffn_type="swiglu", data_dtype="uint16", keep_last=None,
                    early_stopping_patience=None, resume=False, tensorboard_dir=None, log_norms=False,
                    max_bad_steps=3, allow_checkpoint_failure=False)  # fmt: skip
    for k, v in defaults.items():
        assert getattr(args, k) == v, k


# ----------------------------------------------------------------------------------------------
# bad input: exit 2, one "error:" line, before any heavy work
# ----------------------------------------------------------------------------------------------
def _bad_cases(data: dict[str, Path], tmp: Path, ckpt: Path) -> dict[str, tuple[list[str], dict, tuple[str, ...]]]:
    import numpy as np

    np.save(tmp / "empty.npy", np.zeros(0, dtype=np.uint16))
    oob = np.arange(5000, dtype=np.uint16) % VOCAB
    oob[4321] = 999
    oob.tofile(tmp / "oob.bin")
    np.save(tmp / "short.npy", np.arange(10, dtype=np.uint16))
    (tmp / "a_file").write_text("not a directory")
    (tmp / "bad.toml").write_text("lr = = 3\n")
    (tmp / "unknown.toml").write_text("[optim]\nlearning_rate = 0.1\n")
    (tmp / "badtype.toml").write_text('batch_size = "many"\n')
    (data["dir"] / "npy_named.bin").write_bytes(data["train"].read_bytes())  # .npy bytes under a raw name
    return {
        "missing_file": ([], {"train_data_path": tmp / "nope.npy"}, ("nope.npy", "no such file")),
        "empty_file": ([], {"val_data_path": tmp / "empty.npy"}, ("empty.npy",)),
        "id_out_of_range": ([], {"train_data_path": tmp / "oob.bin"}, ("oob.bin", "4,321", "999")),
        "heads_do_not_divide": ([], {"d_model": 30, "num_heads": 4}, ("d_model", "30", "num_heads")),
        "odd_head_dim_with_rope": ([], {"d_model": 30, "num_heads": 2}, ("RoPE", "15")),
        "context_longer_than_data": ([], {"val_data_path": tmp / "short.npy"}, ("short.npy", "context_length")),
        "fp16_on_cpu": ([], {"dtype": "fp16"}, ("fp16", "CPU")),
        "unwritable_checkpoint_dir": ([], {"checkpoint_dir": tmp / "a_file" / "sub"}, ("a_file",)),
        "resume_from_missing": (["--resume_from", str(tmp / "nope.pt")], {}, ("nope.pt",)),
        "warmup_longer_than_run": ([], {"warmup_iters": 2000, "max_iters": 200}, ("--warmup_iters 2000", "--max_iters 200")),
        "negative_lr": (["--lr", "-1e-3"], {}, ("--lr", "-0.001")),
        "npy_under_raw_name": ([], {"train_data_path": data["dir"] / "npy_named.bin"}, ("npy_named.bin", ".npy header")),
        "early_stopping_without_validation": (["--skip_validation", "--early_stopping_patience", "2"], {},
                                              ("--early_stopping_patience", "--skip_validation")),
        "checkpoint_config_mismatch": (["--resume_from", str(ckpt)], {"d_model": 48, "d_ff": 96},
                                       (str(ckpt), "--d_model 48", "d_model is 32", "d_ff is 64")),
        "bad_toml": (["--config", str(tmp / "bad.toml")], {}, ("bad.toml", "invalid TOML")),
        "unknown_toml_key": (["--config", str(tmp / "unknown.toml")], {}, ("unknown.toml", "learning_rate")),
        "bad_toml_value": (["--config", str(tmp / "badtype.toml")], {}, ("batch_size", "many")),
        "negative_batch": ([], {"batch_size": -1}, ("--batch_size",)),
        "bad_device": ([], {"device": "tpu"}, ("--device",)),
    }  # fmt: skip


BAD_CASES = ["missing_file", "empty_file", "id_out_of_range", "heads_do_not_divide", "odd_head_dim_with_rope",
             "context_longer_than_data", "fp16_on_cpu", "unwritable_checkpoint_dir", "resume_from_missing",
             "warmup_longer_than_run", "negative_lr", "npy_under_raw_name", "early_stopping_without_validation",
             "checkpoint_config_mismatch", "bad_toml", "unknown_toml_key", "bad_toml_value", "negative_batch",
             "bad_device"]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_clear_line_and_exit_2(data, reference_cosine, tmp_path, capsys, case):
    extra, overrides, needles = _bad_cases(data, tmp_path, reference_cosine / "checkpoint_iter_2.pt")[case]
    run_dir = Path(overrides.pop("checkpoint_dir", tmp_path / "run"))
    argv = base_argv(data, run_dir, *extra)
    for k, v in overrides.items():  # later flags win in argparse
        argv += [f"--{k}", str(v)]
    rc, out, err = run(argv, capsys)
    assert rc == 2, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert "Initializing model" not in out  # nothing heavy happened
    assert not (run_dir / "metrics.jsonl").exists()


def test_resume_on_an_empty_directory_starts_fresh_with_a_notice(data, tmp_path, capsys):
    """So a job script can always pass --resume (--resume_from PATH stays strict: see the bad cases)."""
    run_dir = tmp_path / "run"
    rc, out, err = run(base_argv(data, run_dir, "--resume", max_iters=4, warmup_iters=1), capsys)
    assert rc == 0, err
    assert f"--resume: no checkpoint in {run_dir} yet; starting a new run" in out
    assert "Starting training from iteration 0..." in out and (run_dir / "checkpoint_iter_4.pt").exists()


def test_unknown_flag_is_one_line_with_a_suggestion(data, tmp_path, capsys):
    rc, out, err = run(base_argv(data, tmp_path / "run", "--learning_rate", "0.1", "--max_itres", "5"), capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err  # not the whole usage text
    assert "--learning_rate (did you mean --lr?)" in lines[0], lines[0]
    assert "--max_itres (did you mean --max_iters?)" in lines[0], lines[0]


def test_lr_zero_and_derived_defaults():
    """--lr 0 is a constant-zero schedule (min_lr follows it); warmup defaults to 10% of a short run."""
    s = parse_settings(["--train_data_path", "a", "--lr", "0", "--max_iters", "200"])
    assert (s.lr, s.min_lr, s.warmup_iters) == (0.0, 0.0, 20)
    s = parse_settings(["--train_data_path", "a", "--lr", "1e-3", "--max_iters", "300000"])
    assert (s.min_lr, s.warmup_iters) == (pytest.approx(1e-4), 2000)  # the course's warmup on long runs


def test_intervals_longer_than_the_run_are_announced(data, tmp_path, capsys):
    rc, out, err = run(base_argv(data, tmp_path / "run", max_iters=6, warmup_iters=1, eval_interval=500,
                                 checkpoint_interval=5000, log_interval=100), capsys)  # fmt: skip
    assert rc == 0, err
    assert "Note: --eval_interval 500 > --max_iters 6: evaluation runs only at the end" in out
    assert "Note: --checkpoint_interval 5000 > --max_iters 6: a checkpoint is written only at the end" in out
    assert "Note: --log_interval 100 > --max_iters 6" in out


def test_argparse_errors_return_2(capsys):
    assert tt.main(["--val_data_path", "x"]) == 2  # required flag missing
    assert "--train_data_path" in capsys.readouterr().err
    assert tt.main(["--help"]) == 0
    assert "--grad_accum_steps" in capsys.readouterr().out


def test_missing_optional_integration_is_a_clear_error(data, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "tensorboard") else real(name, *a)
    )
    rc, out, err = run(base_argv(data, tmp_path / "run", "--use_wandb"), capsys)
    assert rc == 2 and "uv sync --extra wandb" in err
    rc, out, err = run(base_argv(data, tmp_path / "run", "--tensorboard_dir", str(tmp_path / "tb")), capsys)
    assert rc == 2 and "uv sync --extra tensorboard" in err


# ----------------------------------------------------------------------------------------------
# GPU (skipped cleanly without CUDA)
# ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_cuda_run_learns_and_resumes_on_cpu(data, tmp_path, capsys, dtype):
    run_dir = tmp_path / "run"
    rc, out, err = run(base_argv(data, run_dir, device="cuda", dtype=dtype, max_iters=40, lr=1e-2, min_lr=1e-3,
                                 log_interval=10, eval_interval=40, checkpoint_interval=40), capsys)  # fmt: skip
    assert rc == 0, err
    assert "Device: cuda" in out
    tr = records(run_dir, "train")
    assert tr[-1]["loss"] < tr[0]["loss"] - 1.0
    ck = load_pt(run_dir / "checkpoint_iter_40.pt")
    assert (ck["scaler"] is not None) == (dtype == "fp16")
    # A CUDA checkpoint continues on the CPU.
    rc, out, err = run(base_argv(data, run_dir, "--resume", device="cpu", dtype="fp32", max_iters=42,
                                 log_interval=10, eval_interval=40, checkpoint_interval=40), capsys)  # fmt: skip
    assert rc == 0, err
    assert metrics(run_dir)


# ----------------------------------------------------------------------------------------------
# progress on slow steps, and which tokenizer made the data
# ----------------------------------------------------------------------------------------------
def test_first_iteration_and_a_heartbeat_print_whatever_the_log_interval(data, tmp_path, capsys, monkeypatch):
    """With slow steps and a --log_interval longer than the run, lines still come: the first
    iteration at once, then one whenever --heartbeat_s passed without a line."""
    import time

    patch_loss(monkeypatch, lambda call, loss: time.sleep(0.25))
    rc, out, err = run(base_argv(data, tmp_path / "run", max_iters=10, warmup_iters=1, log_interval=1000,
                                 heartbeat_s=0.6), capsys)  # fmt: skip
    assert rc == 0, err
    steps = [int(m) for m in ITER_LINE.findall(out)]
    assert steps[0] == 1, out
    assert len(steps) >= 3 and all(0 < s <= 10 for s in steps), out  # 10 x 0.25 s at >= one line per 0.6 s
    assert len(records(tmp_path / "run", "train")) == len(steps)


def test_the_data_sidecar_is_checked_and_recorded(data, tmp_path, capsys):
    """tokenize_data writes which tokenizer made a token file; a --vocab_size that differs is warned
    about, and the tokenizer's identity goes into the checkpoint (generate checks it there)."""
    d = tmp_path / "data"
    d.mkdir()
    for split in ("train", "val"):
        (d / f"{split}.npy").write_bytes(data[split].read_bytes())
    meta = {"vocab_size": 60, "tokenizer_sha256": "ab" * 32, "tokenizer_dir": "tok", "special_tokens": [],
            "dtype": "uint16", "num_tokens": 20_000, "source": "train.txt"}  # fmt: skip
    (d / "train.npy.meta.json").write_text(json.dumps(meta))
    (d / "val.npy.meta.json").write_text(json.dumps({**meta, "tokenizer_sha256": "cd" * 32, "tokenizer_dir": "other"}))
    argv = base_argv({"train": d / "train.npy", "val": d / "val.npy"}, tmp_path / "run", max_iters=2, warmup_iters=1)
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    assert "warning: --vocab_size 64 differs from the tokenizer that made" in err and "--vocab_size 60" in err
    assert "made by different tokenizers" in err
    assert load_pt(tmp_path / "run" / "checkpoint_iter_2.pt")["tokenizer"] == meta


@pytest.mark.parametrize("how", ["no_val_path", "skip_validation"])
def test_training_without_validation(data, tmp_path, capsys, how):
    run_dir = tmp_path / "run"
    argv = base_argv(data, run_dir, max_iters=6, warmup_iters=1, eval_interval=2, checkpoint_interval=3)
    if how == "no_val_path":
        i = argv.index("--val_data_path")
        del argv[i : i + 2]
    else:
        argv.append("--skip_validation")
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    assert "Validation: none (no evaluation, no best.pt)" in out and "Evaluating" not in out
    assert records(run_dir, "eval") == [] and records(run_dir, "final") == []
    assert not (run_dir / "best.pt").exists()
    assert sorted(p.name for p in run_dir.glob("checkpoint_iter_*.pt")) == [
        "checkpoint_iter_3.pt",
        "checkpoint_iter_6.pt",
    ]


# ----------------------------------------------------------------------------------------------
# Muon
# ----------------------------------------------------------------------------------------------
def test_muon_from_flags_and_toml_logs_group_lrs_and_resumes_exactly(data, tmp_path, capsys, default_torch_threads):
    cfg = tmp_path / "muon.toml"
    cfg.write_text('[optim]\noptimizer = "muon"\nlr_hidden = 0.02\nlr_embed = 0.006\n')
    common = dict(lr=3e-3, min_lr=3e-3, warmup_iters=0, eval_interval=4, checkpoint_interval=4)
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(base_argv(data, full, "--config", str(cfg), max_iters=8, **common), capsys)[0] == 0
    tr = records(full, "train")
    # Each group's LR follows the schedule scaled by its peak over --lr (a constant schedule here).
    assert tr[-1]["group_lrs"] == {"hidden": pytest.approx(0.02), "embed": pytest.approx(0.006),
                                   "head": pytest.approx(3e-3), "scalar": pytest.approx(3e-3)}  # fmt: skip
    ck = load_pt(full / "checkpoint_iter_8.pt")
    assert [g["name"] for g in ck["optimizer"]["param_groups"]] == ["hidden", "embed", "head", "scalar"]
    assert tr[-1]["loss"] < tr[0]["loss"]
    # Interrupted at 4 and resumed: bit-identical to the uninterrupted run (momentum buffers saved).
    assert run(base_argv(data, part, "--config", str(cfg), max_iters=4, **common), capsys)[0] == 0
    assert run(base_argv(data, part, "--config", str(cfg), "--resume", max_iters=8, **common), capsys)[0] == 0
    assert_weights_equal(part / "checkpoint_iter_8.pt", full / "checkpoint_iter_8.pt")
    assert train_losses(part) == train_losses(full)


def test_group_lrs_apply_to_adamw_too(data, tmp_path, capsys):
    """Per-component learning rates (the Accelerate trainer's habit) with AdamW: each group follows the
    schedule of --lr, scaled to its own peak."""
    run_dir = tmp_path / "run"
    rc, out, err = run(
        base_argv(data, run_dir, "--lr", "1e-3", "--lr_embed", "3e-3", max_iters=2, warmup_iters=1), capsys
    )
    assert rc == 0, err
    groups = {g["name"]: g for g in load_pt(run_dir / "checkpoint_iter_2.pt")["optimizer"]["param_groups"]}
    assert list(groups) == ["hidden", "embed", "head", "scalar"]
    assert groups["embed"]["lr"] == pytest.approx(3 * groups["hidden"]["lr"]) and groups["hidden"]["lr"] > 0
    assert groups["head"]["lr"] == pytest.approx(groups["hidden"]["lr"]) and groups["scalar"]["weight_decay"] == 0.0
