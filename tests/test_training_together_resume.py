"""Resume continues the run: the checkpoint's saved settings are the base, flags given override them.

The original training_together.py's "Resume from Checkpoint" command (only the data paths, ``--resume_from FILE`` and
``--max_iters``) must continue a run trained with a non-default vocabulary, shape and learning
rate; a shape flag that contradicts the checkpoint is refused in one line; ``--resume_from`` a run
directory takes its newest intact checkpoint. Also ``--epochs`` (the run length in epochs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cs336_basics import training_together as tt
from cs336_basics.optim import lr_cosine_schedule
from cs336_basics.training.settings import ConfigError, TrainSettings
from tests._train_utils import base_argv, load_pt, records, write_pattern_data


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("resume_data"))


@pytest.fixture(scope="module")
def my_run(data, tmp_path_factory) -> Path:
    """6 steps at lr 3e-3 (the default is 6e-4), vocab 64, d_model 32; checkpoints at 3 and 6."""
    run_dir = tmp_path_factory.mktemp("checkpoints") / "my_run"
    argv = base_argv(data, run_dir, max_iters=6, checkpoint_interval=3, eval_interval=3, warmup_iters=2)
    assert tt.main(argv) == 0
    return run_dir


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = tt.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def doc_command(data: dict[str, Path], resume_from: Path, max_iters: int, *extra: str) -> list[str]:
    """The original training_together.py's "Resume from Checkpoint" command, with the tiny run's paths."""
    return ["--train_data_path", str(data["train"]), "--val_data_path", str(data["val"]),
            "--resume_from", str(resume_from), "--max_iters", str(max_iters), *extra]  # fmt: skip


def new_run_dir(cwd: Path) -> Path:
    (found,) = (cwd / "runs").iterdir()  # no --checkpoint_dir: runs/<run_name>, as for any run
    return found


def test_the_documents_resume_command_continues_the_run(data, my_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(doc_command(data, my_run / "checkpoint_iter_6.pt", 10), capsys)
    assert rc == 0, err
    assert f"Resuming from {my_run / 'checkpoint_iter_6.pt'} (iteration 6)" in out
    # Only what was given is reported against the saved value, once.
    assert re.findall(r"^.*\(saved\) -> .*$", out, re.M) == ["max_iters: 6 (saved) -> 10 (flag)"], out
    run_dir = new_run_dir(tmp_path)
    assert records(run_dir, "final")[-1]["step"] == 10
    tr = records(run_dir, "train")  # the first step at once, then every --log_interval (a run setting: 100)
    assert tr[0]["step"] == 7
    # The saved lr 3e-3 / min_lr 3e-4 / warmup 2, over the new length (not the defaults 6e-4...).
    for r in tr:
        assert r["lr"] == pytest.approx(lr_cosine_schedule(r["step"] - 1, 3e-3, 3e-4, 2, 10)), r
    final = load_pt(run_dir / "checkpoint_iter_10.pt")
    assert final["model_config"]["vocab_size"] == 64 and final["model_config"]["d_model"] == 32
    assert final["train_config"]["lr"] == 3e-3 and final["train_config"]["batch_size"] == 8


def test_a_flag_given_overrides_the_saved_setting_and_is_printed_once(data, my_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(doc_command(data, my_run / "checkpoint_iter_6.pt", 8, "--lr", "1e-3"), capsys)
    assert rc == 0, err
    assert out.count("lr: 0.003 (saved) -> 0.001 (flag)") == 1, out
    assert out.count("max_iters: 6 (saved) -> 8 (flag)") == 1, out
    assert records(new_run_dir(tmp_path), "final")[-1]["step"] == 8
    tr = records(new_run_dir(tmp_path), "train")
    # min_lr is saved (3e-4), not re-derived from the new lr.
    assert tr[0]["step"] == 7 and tr[0]["lr"] == pytest.approx(lr_cosine_schedule(6, 1e-3, 3e-4, 2, 8))


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--d_model", "48"], ("--d_model 48", "d_model is 32")),
        (["--vocab_size", "10000"], ("--vocab_size 10000", "vocab_size is 64")),
    ],
)
def test_a_contradicting_shape_flag_is_refused_in_one_line(data, my_run, tmp_path, capsys, monkeypatch, extra, needles):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(doc_command(data, my_run / "checkpoint_iter_6.pt", 8, *extra), capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in (*needles, "checkpoint_iter_6.pt"):
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_resume_from_a_run_directory_takes_its_newest_intact_checkpoint(data, my_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for p in my_run.glob("checkpoint_iter_*"):
        (run_dir / p.name).write_bytes(p.read_bytes())
    blob = bytearray((run_dir / "checkpoint_iter_6.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # the newest no longer matches its sidecar
    (run_dir / "checkpoint_iter_6.pt").write_bytes(bytes(blob))
    rc, out, err = run(doc_command(data, run_dir, 5), capsys)
    assert rc == 0, err
    assert re.search(rf"^Skipping {re.escape(str(run_dir / 'checkpoint_iter_6.pt'))}: ", out, re.M), out
    assert f"Resuming from {run_dir / 'checkpoint_iter_3.pt'} (iteration 3)" in out
    assert records(new_run_dir(tmp_path), "final")[-1]["step"] == 5


def test_resume_from_a_directory_without_checkpoints_is_one_line(data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, out, err = run(doc_command(data, tmp_path / "empty", 5), capsys)
    assert rc == 2 and err.count("\n") == 1 and "empty" in err and "no checkpoint" in err, err


def test_the_python_api_takes_the_saved_settings_too(data, my_run):
    s = TrainSettings.from_kwargs(
        train_data_path=data["train"], val_data_path=data["val"], resume_from=my_run / "checkpoint_iter_6.pt",
        max_iters=9,
    )  # fmt: skip
    assert (s.vocab_size, s.d_model, s.num_layers, s.lr, s.min_lr, s.batch_size, s.max_iters) == (
        64, 32, 2, 3e-3, 3e-4, 8, 9
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"--num_layers 4 contradicts .*its num_layers is 2"):
        TrainSettings.from_kwargs(
            train_data_path=data["train"], val_data_path=data["val"], resume_from=my_run / "checkpoint_iter_6.pt",
            num_layers=4,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# --epochs
# ----------------------------------------------------------------------------------------------
def test_epochs_sets_the_run_length_and_says_so(data, tmp_path, capsys):
    # 20,000 train tokens / (8 x 16 tokens per step) = 156.25 steps per epoch: 0.05 epochs = 8 steps.
    argv = base_argv(data, tmp_path / "run", "--epochs", "0.05", checkpoint_interval=100, eval_interval=100)
    argv.remove("--max_iters")
    argv.remove("20")
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    assert "--epochs 0.05: 8 optimizer steps" in out, out
    assert records(tmp_path / "run", "final")[-1]["step"] == 8


def test_epochs_with_max_iters_is_refused_in_one_line(data, tmp_path, capsys):
    rc, out, err = run(base_argv(data, tmp_path / "run", "--epochs", "2", max_iters=20), capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--epochs" in lines[0] and "--max_iters" in lines[0], err
