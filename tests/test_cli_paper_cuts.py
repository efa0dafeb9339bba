"""Small things a new user tripped on, each pinned down: a finished run resumed again, a changed optimizer on
resume, a cut prompt, output piped into ``head``, a missing output folder, an empty input, a sweep's two
clocks and a diverged variant's legend entry, a path passed as text, a GPU-sized model on a CPU, and labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cs336_basics import training_together as tt
from cs336_basics.utils.errors import run_cli
from tests._train_utils import REPO, base_argv, load_pt, records, subprocess_env, write_pattern_data

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("cuts_data"), n_train=5_000, n_val=1_000)


def _one_error_line(err: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# resume
# ----------------------------------------------------------------------------------------------
def test_resume_of_a_finished_run_says_so_and_touches_nothing(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    flags = dict(max_iters=3, warmup_iters=0, checkpoint_interval=3, eval_interval=3)
    assert tt.main(base_argv(data, run_dir, **flags)) == 0
    capsys.readouterr()
    files = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != ".lock"}
    assert tt.main(base_argv(data, run_dir, "--resume", **flags)) == 0
    out = capsys.readouterr().out
    assert "already finished at iteration 3" in out and "--max_iters" in out, out
    assert "Starting training" not in out
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != ".lock"} == files  # untouched
    assert len(records(run_dir, "final")) == 1
    # A grown --max_iters continues it.
    assert tt.main(base_argv(data, run_dir, "--resume", **{**flags, "max_iters": 4})) == 0
    assert load_pt(run_dir / "checkpoint_iter_4.pt")["iteration"] == 4
    capsys.readouterr()


def test_resume_with_another_optimizer_names_both(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert tt.main(base_argv(data, run_dir, max_iters=2, warmup_iters=0, checkpoint_interval=1)) == 0
    capsys.readouterr()
    rc = tt.main(base_argv(data, run_dir, "--resume_from", str(run_dir / "checkpoint_iter_1.pt"), "--optimizer",
                           "muon", max_iters=2, warmup_iters=0))  # fmt: skip
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "checkpoint_iter_1.pt", "optimizer is adamw", "--optimizer muon")


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from cs336_basics.fast.tokenizer import Tokenizer
    from cs336_basics.lm.model import ModelConfig, TransformerLM
    from cs336_basics.training.checkpoints import save_checkpoint

    d = tmp_path_factory.mktemp("gen")
    vocab = {0: EOT.encode(), **{i + 1: bytes([i]) for i in range(256)}}
    Tokenizer(vocab, [], [EOT]).save(d / "tokenizer")
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=257, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32))
    (d / "model").mkdir()
    save_checkpoint(model, None, 1, d / "model" / "checkpoint_iter_1.pt")
    return d


def test_generate_says_once_when_the_prompt_is_cut_and_every_sample_ends_with_a_newline(tiny_model, capsys):
    from cs336_basics import generate

    argv = ["--checkpoint", str(tiny_model / "model" / "checkpoint_iter_1.pt"), "--tokenizer",
            str(tiny_model / "tokenizer"), "--max_new_tokens", "3", "--seed", "0", "--num_samples", "2"]  # fmt: skip
    assert run_cli(generate.main, [*argv, "--prompt", "abcdefghijkl"]) == 0  # 12 byte tokens > context 8
    out, err = capsys.readouterr()
    assert err.count("note: the prompt is 12 tokens") == 1 and "context_length 8" in err and "last 7" in err, err
    assert out.endswith("\n") and out.count("--- sample") == 2
    assert run_cli(generate.main, [*argv, "--prompt", "abc"]) == 0
    assert "note: the prompt" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# output piped into a reader that stops early
# ----------------------------------------------------------------------------------------------
# (argparse's own --help output already swallows a closed pipe; these print with plain print().)
@pytest.mark.parametrize(
    "argv", [["cs336_basics.tools.sweep", "--list"], ["cs336_basics.tools.accounting", "--preset", "gpt2-small"]]
)
def test_closed_stdout_pipe_is_a_quiet_exit_not_a_traceback(argv):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write: every write fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=subprocess_env(), stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=600)  # fmt: skip
    finally:
        os.close(w)
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr
    assert p.returncode == 141, (p.returncode, p.stderr)


# ----------------------------------------------------------------------------------------------
# tokenize_data
# ----------------------------------------------------------------------------------------------
def test_tokenize_data_makes_a_missing_output_folder_and_refuses_an_empty_input(tiny_model, tmp_path, capsys):
    import numpy as np

    from cs336_basics import tokenize_data

    src = tmp_path / "in.txt"
    src.write_text("hello there" + EOT + "bye")
    out = tmp_path / "new" / "folder" / "ids.npy"
    argv = ["--tokenizer", str(tiny_model / "tokenizer"), "--workers", "1", "--quiet"]
    assert run_cli(tokenize_data.main, [*argv, "--input", str(src), "--output", str(out)]) == 0
    assert len(np.load(out)) == len("hello there") + 1 + len("bye")
    capsys.readouterr()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert run_cli(tokenize_data.main, [*argv, "--input", str(empty), "--output", str(tmp_path / "e.npy")]) == 2
    _one_error_line(capsys.readouterr().err, "empty.txt", "empty")
    assert not (tmp_path / "e.npy").exists()


# ----------------------------------------------------------------------------------------------
# sweep: two clocks named, a diverged variant visible in the legend
# ----------------------------------------------------------------------------------------------
def _write_metrics(run_dir: Path, losses: list[float]) -> None:
    run_dir.mkdir(parents=True)
    recs = [{"type": "train", "step": i + 1, "time_s": 2.0 * (i + 1), "loss": x} for i, x in enumerate(losses)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_sweep_names_its_clocks_and_marks_a_diverged_variant_in_the_legend(tmp_path, monkeypatch):
    from cs336_basics.tools import plot_metrics as pm
    from cs336_basics.tools import sweep as sw

    s = sw.Sweep("t", "", tmp_path, [sw.Variant("ok", {}, {}), sw.Variant("blew", {}, {})], str(tmp_path / "t.toml"))
    _write_metrics(s.run_dir(s.variants[0]), [4.0, 3.5, 3.0])
    _write_metrics(s.run_dir(s.variants[1]), [4.0, 1e6, 1e9])  # diverged after one step

    class Done:
        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

        def send_signal(self, sig):
            pass

    plotted = {}
    monkeypatch.setattr(pm, "plot", lambda curves, out, title=None: plotted.update({c.name: c.train for c in curves}))
    said = []
    monkeypatch.setattr(sw, "classify", lambda res, code, log: sw.VariantResult(
        res.name, status="diverged" if res.name == "blew" else "finished", exit_code=code, wall_s=res.wall_s))  # fmt: skip
    sw.run_sweep(s, launch=lambda v, slot: Done(), progress=said.append, poll_s=0.01)
    ok_line = next(m for m in said if m.startswith("[ok] finished"))
    assert "process time" in ok_line and "train time 6s" in ok_line, ok_line
    assert "| train time |" in (tmp_path / "summary.md").read_text()
    assert set(plotted) == {"ok", "blew (diverged)"}, plotted
    assert len(plotted["blew (diverged)"]) == 1  # only its first point is under the cap


# ----------------------------------------------------------------------------------------------
# the rest
# ----------------------------------------------------------------------------------------------
def test_train_bpe_on_text_refuses_a_file_path_for_text(tmp_path):
    from cs336_basics.bpe import train_bpe_on_text

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("low lower lowest " * 10)
    for wrong in (str(corpus), corpus):
        with pytest.raises(ValueError, match="corpus.txt.*file path"):
            train_bpe_on_text(wrong, 260)
    vocab, merges = train_bpe_on_text(corpus.read_text(), 260)
    assert len(merges) == 4 and len(vocab) == 260


def test_a_gpu_sized_model_on_a_cpu_gets_one_hint_and_a_small_one_none():
    from cs336_basics.lm.model import TransformerLM
    from cs336_basics.training.metrics import cpu_step_hint
    from cs336_basics.training.settings import parse_settings

    def step_flops(*flags: str) -> float:
        s = parse_settings(["--train_data_path", "a.npy", "--val_data_path", "b.npy", *flags])
        model = TransformerLM(s.model_config(), device=torch.device("meta"))
        return 3 * model.flops_per_token(s.context_length) * s.batch_size * s.context_length * s.grad_accum_steps

    default = step_flops()  # the course's model: ~75 s a step on a 2-core CPU
    hint = cpu_step_hint(torch.device("cpu"), default)
    assert hint is not None and "quickstart" in hint and "\n" not in hint
    assert cpu_step_hint(torch.device("cuda"), default) is None
    small = step_flops("--d_model", "128", "--num_layers", "4", "--num_heads", "4", "--d_ff", "384",
                       "--context_length", "128", "--batch_size", "32")  # fmt: skip
    assert cpu_step_hint(torch.device("cpu"), small) is None


def test_lr_find_does_not_talk_about_best_pt(data, tmp_path, capsys):
    from cs336_basics.tools import lr_find

    argv = base_argv(data, tmp_path / "run", "--num_steps", "10", "--csv", "", "--plot", "")
    assert lr_find.main(argv) == 0
    out = capsys.readouterr().out
    assert "best.pt" not in out and "Train data size" in out


def test_train_bpe_without_workers_does_not_report_a_worker(tmp_path, capsys, monkeypatch):
    from cs336_basics import train_bpe

    monkeypatch.setattr(train_bpe, "_peak_rss_mb", lambda: (50.0, 0.0))
    (tmp_path / "in.txt").write_text("hello world " * 50)
    argv = ["--input", str(tmp_path / "in.txt"), "--vocab_size", "260", "--output", str(tmp_path / "tok"), "--quiet"]
    assert run_cli(train_bpe.main, argv) == 0
    out = capsys.readouterr().out
    assert "Peak memory: 50 MiB (main process) (no worker processes)" in out and "largest worker" not in out


def test_plot_labels_are_the_shortest_unique_paths():
    from cs336_basics.tools.plot_metrics import shortest_unique_names

    assert shortest_unique_names(["runs/quickstart/model"]) == ["model"]
    assert shortest_unique_names(["runs/quickstart/model", "runs/big/model"]) == ["quickstart/model", "big/model"]
    assert shortest_unique_names(["x/a/model", "y/a/model", "z/b"]) == ["x/a/model", "y/a/model", "b"]
