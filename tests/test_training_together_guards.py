"""No silent surprises: a checkpoint continued on data from another tokenizer is refused in one line
naming both (``--allow_tokenizer_change`` lets it through with a warning); ids beyond the model's
vocabulary name the data and the checkpoint; a refused run leaves no run folder behind; the Python
API exits without noise; an empty ``--tensorboard_dir`` means no TensorBoard.

Everything runs through the program's entry point (``main``) on tiny tokenizers trained here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cs336_basics import training_together as tt
from cs336_basics.fast.bpe import train_bpe
from cs336_basics.fast.tokenizer import Tokenizer
from tests._corpus_utils import EOT, sentences, tokenize
from tests._train_utils import PYTHON, REPO, load_pt, subprocess_env, write_pattern_data

from ._torch_threads import one_torch_thread  # noqa: F401  (fixture)

SHAPE = ["--d_model", "32", "--num_layers", "1", "--num_heads", "2", "--d_ff", "64", "--context_length", "16"]
FAST = ["--device", "cpu", "--batch_size", "4", "--eval_iters", "1", "--log_interval", "1", "--seed", "3",
        "--max_iters", "2", "--eval_interval", "2", "--checkpoint_interval", "2"]  # fmt: skip


def _tokenizer(d: Path, text: str, vocab_size: int) -> Path:
    (d.parent / f"{d.name}.txt").write_text(text, encoding="utf-8")
    vocab, merges = train_bpe(d.parent / f"{d.name}.txt", vocab_size, [EOT])
    Tokenizer(vocab, merges, [EOT]).save(d)
    return d


def _sha_of(tok_dir: Path) -> str:
    """The tokenizer's identity, worked out here from its files (vocab.json, merges.txt, special_tokens.json)."""
    h = hashlib.sha256()
    for name in ("vocab.json", "merges.txt", "special_tokens.json"):
        if (tok_dir / name).is_file():
            h.update(name.encode() + b"\0" + (tok_dir / name).read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict[str, Path]:
    """Tokenizers A and B (same vocab size, different merges) and S (smaller); data from each; a
    run pretrained on A's data (``pa``) and one on S's (``ps``)."""
    d = tmp_path_factory.mktemp("guards")
    text = EOT.join(sentences(300, seed=1))
    toks = {
        "a": _tokenizer(d / "tok_a", EOT.join(sentences(300, seed=2)), 300),
        "b": _tokenizer(d / "tok_b", EOT.join(s[::-1] for s in sentences(300, seed=3)), 300),
        "s": _tokenizer(d / "tok_s", EOT.join(sentences(300, seed=2)), 262),
    }
    (d / "text.txt").write_text(text, encoding="utf-8")
    out: dict[str, Path] = {"dir": d}
    for k, tok in toks.items():
        out[f"tok_{k}"] = tok
        out[k] = d / f"{k}.npy"
        assert tokenize("--tokenizer", str(tok), "--input", str(d / "text.txt"), "--output", str(out[k])) == 0
    assert Tokenizer.from_dir(toks["a"]).vocab_size == Tokenizer.from_dir(toks["b"]).vocab_size == 300
    assert _sha_of(toks["a"]) != _sha_of(toks["b"])
    assert int(np.load(out["b"]).max()) >= 262  # B's data does not fit S's vocabulary
    out["b_raw"] = d / "b_raw.bin"  # B's ids without a sidecar: nothing says which tokenizer made them
    np.load(out["b"]).astype(np.uint16).tofile(out["b_raw"])
    for k, vocab in (("a", 300), ("s", 262)):
        run = d / f"p{k}"
        argv = ["--train_data_path", str(out[k]), "--val_data_path", str(out[k]), "--vocab_size", str(vocab),
                *SHAPE, *FAST, "--checkpoint_dir", str(run)]  # fmt: skip
        assert tt.main(argv) == 0
        out[f"p{k}"] = run
    return out


def _argv(data: Path, run: Path, *extra: str) -> list[str]:
    return ["--train_data_path", str(data), *FAST, "--checkpoint_dir", str(run), *extra]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_init_from_with_another_tokenizers_data_is_refused_in_one_line_and_leaves_no_run_folder(w, tmp_path, capsys):
    run = tmp_path / "runs" / "ft"  # neither runs/ nor runs/ft exists: both would be this run's
    assert tt.main(_argv(w["b"], run, "--init_from", str(w["pa"]))) == 2
    line = _one_line(capsys.readouterr().err)
    ckpt = w["pa"] / "best.pt"
    assert f"--init_from {ckpt} was trained with tokenizer {w['tok_a']} (sha256 {_sha_of(w['tok_a'])[:12]}" in line
    assert f"but {w['b']} was tokenized with {w['tok_b']} (sha256 {_sha_of(w['tok_b'])[:12]}" in line
    assert "--allow_tokenizer_change" in line
    assert not (tmp_path / "runs").exists()


def test_allow_tokenizer_change_trains_with_a_warning_and_carries_the_datas_tokenizer(w, tmp_path, capsys):
    run = tmp_path / "ft"
    assert tt.main(_argv(w["b"], run, "--init_from", str(w["pa"]), "--allow_tokenizer_change")) == 0
    err = capsys.readouterr().err
    assert err.count(f"warning: --init_from {w['pa'] / 'best.pt'} was trained with tokenizer {w['tok_a']}") == 1
    assert _sha_of(run / "tokenizer") == _sha_of(w["tok_b"])  # the copy is the tokenizer of the ids it trained on
    assert load_pt(run / "checkpoint_iter_2.pt")["tokenizer"]["tokenizer_sha256"] == _sha_of(w["tok_b"])


def test_the_same_tokenizer_says_nothing_new(w, tmp_path, capsys):
    assert tt.main(_argv(w["a"], tmp_path / "ft", "--init_from", str(w["pa"]))) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "share a tokenizer" not in out and "allow_tokenizer_change" not in out


def test_resume_with_another_tokenizers_data_is_refused_and_the_run_folder_is_kept_as_it_was(w, tmp_path, capsys):
    run = shutil.copytree(w["pa"], tmp_path / "pa")
    files = lambda: {p.name: b"" if p.name == ".lock" else p.read_bytes() for p in run.iterdir() if p.is_file()}
    before = files()
    argv = _argv(w["b"], run, "--val_data_path", str(w["b"]), "--vocab_size", "300", *SHAPE, "--max_iters", "4")
    assert tt.main([*argv, "--resume"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"--resume {run / 'checkpoint_iter_2.pt'} was trained with tokenizer {w['tok_a']}" in line
    assert f"but {w['b']} was tokenized with {w['tok_b']}" in line
    assert files() == before  # its checkpoints, metrics and lock file stay
    resume_from = ["--resume_from", str(run / "checkpoint_iter_2.pt")]
    assert tt.main([*argv, *resume_from]) == 2
    assert _one_line(capsys.readouterr().err).startswith(f"error: --resume_from {run / 'checkpoint_iter_2.pt'} was")
    assert tt.main([*argv, "--resume", "--allow_tokenizer_change"]) == 0
    assert load_pt(run / "checkpoint_iter_4.pt")["iteration"] == 4


def test_ids_beyond_the_checkpoints_vocabulary_name_the_data_and_the_checkpoint(w, tmp_path, capsys):
    """Raw ids without a sidecar: the tokenizers cannot be compared (said once), but the ids can."""
    run = tmp_path / "ft"
    assert tt.main(_argv(w["b_raw"], run, "--init_from", str(w["ps"]))) == 2
    out, err = capsys.readouterr()
    ckpt = w["ps"] / "best.pt"
    line = _one_line(err)
    first_bad = int(np.argmax(np.fromfile(w["b_raw"], dtype=np.uint16) >= 262))
    value = int(np.fromfile(w["b_raw"], dtype=np.uint16)[first_bad])
    assert line.startswith(f"error: {w['b_raw']}: token id {value} at position {first_bad:,} is out of range")
    assert f"vocab_size=262, the vocabulary of --init_from {ckpt}" in line
    note = (
        f"Note: cannot check that {w['b_raw']} and --init_from {ckpt} share a tokenizer: {w['b_raw']} has no .meta.json"
    )
    assert out.count(note) == 1
    assert not run.exists()
    # with sidecars, a change of tokenizer that was allowed still cannot put ids past the vocabulary
    assert tt.main(_argv(w["b"], run, "--init_from", str(w["ps"]), "--allow_tokenizer_change")) == 2
    warning, line = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"warning: --init_from {ckpt} was trained with tokenizer {w['tok_s']}")
    assert f"{w['b']}: token id {value} at position {first_bad:,}" in line and f"--init_from {ckpt}" in line
    assert not run.exists()


def test_a_checkpoint_without_a_fingerprint_is_not_refused_and_the_console_says_once_why(w, tmp_path, capsys):
    """A checkpoint trained on raw ids records no tokenizer: fine-tuning from it goes ahead."""
    pre = tmp_path / "pre"
    argv = ["--train_data_path", str(w["b_raw"]), "--vocab_size", "300", *SHAPE, *FAST, "--checkpoint_dir", str(pre)]
    assert tt.main(argv) == 0
    assert load_pt(pre / "checkpoint_iter_2.pt")["tokenizer"] is None
    capsys.readouterr()
    assert tt.main(_argv(w["a"], tmp_path / "ft", "--init_from", str(pre))) == 0
    out, err = capsys.readouterr()
    ckpt = pre / "checkpoint_iter_2.pt"
    assert (
        out.count(f"Note: cannot check that {w['a']} and --init_from {ckpt} share a tokenizer: {ckpt} records no") == 1
    )
    assert "share a tokenizer" not in err


def test_a_refused_run_in_an_existing_folder_keeps_the_folder_and_what_was_in_it(w, tmp_path, capsys):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    assert tt.main(_argv(w["b"], run, "--init_from", str(w["pa"]))) == 2
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # the lock file it made is gone, nothing else
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tt.main(_argv(w["b"], empty, "--init_from", str(w["pa"]))) == 2
    assert empty.is_dir() and not any(empty.iterdir())
    capsys.readouterr()


def test_python_api_exits_without_noise(tmp_path):
    """``train()`` in a script: nothing is printed at interpreter exit (the run lock's __del__)."""
    data = write_pattern_data(tmp_path / "data", n_train=2_000, n_val=500)
    script = textwrap.dedent(f"""
        from cs336_basics.training_together import train
        from cs336_basics.training.settings import TrainSettings
        s = TrainSettings.from_kwargs(train_data_path={str(data["train"])!r}, val_data_path={str(data["val"])!r},
            vocab_size=64, context_length=16, d_model=32, num_layers=1, num_heads=2, d_ff=64, batch_size=4,
            max_iters=2, eval_iters=1, eval_interval=2, device="cpu", checkpoint_dir={str(tmp_path / "run")!r})
        run = train(s)
        print("done", run.state.iteration)
    """)
    proc = subprocess.run([PYTHON, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "done 2" in proc.stdout
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_an_empty_tensorboard_dir_means_no_tensorboard(w, tmp_path, monkeypatch, capsys):
    """``--tensorboard_dir ''`` is off (it was Path(''), the working directory); tensorboard need not
    be installed for it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = ["--train_data_path", str(w["a"]), "--vocab_size", "300", *SHAPE, *FAST, "--run_name", "tb",
            "--tensorboard_dir", ""]  # fmt: skip
    assert tt.main(argv) == 0, capsys.readouterr().err
    assert [p.name for p in cwd.iterdir()] == ["runs"]  # only the run directory, runs/tb
    assert sorted(p.name for p in (cwd / "runs" / "tb").rglob("*events*")) == []
    config = json.loads((cwd / "runs" / "tb" / "run_config.json").read_text())
    assert config.get("tensorboard_dir", config.get("settings", {}).get("tensorboard_dir")) is None
