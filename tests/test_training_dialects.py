"""Config files written for the systems this program replaces run as written (``--config FILE``):
the training crate's TOML, trainkit's TOML and the Accelerate trainer's YAML
(cs336_basics/training/dialects.py; docs/coming-from.md). Each document's example config is
embedded here and run for a few steps on tiny data made in tmp_path."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from cs336_basics import training_together as tt
from cs336_basics.fast.bpe import train_bpe
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.training.settings import parse_settings
from tests._train_utils import records

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

# The training crate's example config, exactly as its document shows it.
CRATE_TOML = """\
[tokenizer]
tokenizer_json = "./artifacts/tokenizer.json"
special_tokens = "./artifacts/special_tokens.txt"

[data]
train_shards = ["./data/train.txt"]
validation_shards = ["./data/valid.txt"]
batch_size = 8
gradient_accumulation_steps = 1
shuffle_buffer_size = 128

[optimizer]
learning_rate = 0.0003
beta1 = 0.9
beta2 = 0.95
epsilon = 1e-8

[scheduler]
strategy = "constant"
total_steps = 1000

[runtime]
seed = 42
log_every_n_steps = 10

[runtime.checkpoint]
directory = "./checkpoints"
every_n_steps = 100
max_keep = 3

[runtime.evaluation]
every_n_steps = 200
max_batches = 2

[runtime.evaluation.best]
directory = "./checkpoints/best"
max_keep = 1

[runtime.logging]
enable_stdout = true
tensorboard = "./runs/train"
tensorboard_flush_every_n = 20

[model]
hidden_size = 512
intermediate_size = 2048
num_layers = 6
num_attention_heads = 8
max_position_embeddings = 512
"""

# Its document's --override examples, then a tiny model so the run takes seconds.
CRATE_OVERRIDES = ["runtime.log_every_n_steps=1", "optimizer.learning_rate=0.0001", "scheduler.total_steps=500",
                   "data.train_shards[0]=./alt/train.txt"]  # fmt: skip
TINY_CRATE = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1",
              "model.num_attention_heads=2", "model.max_position_embeddings=16", "scheduler.total_steps=4"]  # fmt: skip
SPECIALS = ["<|endoftext|>", "<pad>"]
STORY = "Once upon a time a small cat sat on the mat. The dog ran to the cat and they played all day.\n"


class FakeWriter:  # tensorboard is an optional extra, not installed for the tests
    def __init__(self, log_dir: str, **_: object) -> None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)

    def add_scalar(self, *a: object, **k: object) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@pytest.fixture
def crate_dir(tmp_path, monkeypatch) -> Path:
    """The example's relative paths, made in tmp_path (the working directory): a tiny tokenizer
    trained on the text, its tokenizer.json and special_tokens.txt, and the text shards."""
    for d in ("artifacts", "data", "alt"):
        (tmp_path / d).mkdir()
    (tmp_path / "data" / "train.txt").write_text((STORY + "<|endoftext|>") * 60, encoding="utf-8")
    (tmp_path / "data" / "valid.txt").write_text((STORY + "<|endoftext|>") * 20, encoding="utf-8")
    (tmp_path / "alt" / "train.txt").write_text(("The cat and the dog played. <|endoftext|>") * 150, encoding="utf-8")
    vocab, merges = train_bpe(tmp_path / "data" / "train.txt", 300, SPECIALS)
    Tokenizer(vocab, merges, SPECIALS).save(tmp_path / "tok")
    (tmp_path / "artifacts" / "tokenizer.json").write_bytes((tmp_path / "tok" / "tokenizer.json").read_bytes())
    (tmp_path / "artifacts" / "special_tokens.txt").write_text("\n".join(SPECIALS) + "\n", encoding="utf-8")
    (tmp_path / "config.toml").write_text(CRATE_TOML, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(tt, "check_extras", lambda *a: None)
    return tmp_path


def crate_argv(*extra: str) -> list[str]:
    argv = ["--config", "config.toml", "--device", "cpu"]
    for item in (*CRATE_OVERRIDES, *TINY_CRATE):
        argv += ["--override", item]
    return [*argv, *extra]


def test_crate_example_is_read_as_the_training_crates(crate_dir):
    s = parse_settings(["--config", "config.toml"])
    assert (s.train_data_path, s.val_data_path) == ("./data/train.txt", "./data/valid.txt")
    assert (s.tokenizer_json, s.special_tokens_file) == ("./artifacts/tokenizer.json", "./artifacts/special_tokens.txt")
    assert (s.batch_size, s.grad_accum_steps, s.lr, s.beta1, s.beta2, s.eps) == (8, 1, 3e-4, 0.9, 0.95, 1e-8)
    assert (s.lr_schedule, s.warmup_iters, s.max_iters, s.seed, s.log_interval) == ("constant", 0, 1000, 42, 10)
    assert (s.checkpoint_dir, s.checkpoint_interval, s.keep_last) == ("./checkpoints", 100, 3)
    assert (s.eval_interval, s.eval_iters, s.best_checkpoint_dir, s.keep_best) == (200, 2, "./checkpoints/best", 1)
    assert (s.tensorboard_dir, s.tensorboard_flush_every) == ("./runs/train", 20)
    assert (s.d_model, s.d_ff, s.num_layers, s.num_heads, s.context_length) == (512, 2048, 6, 8, 512)
    assert s.vocab_size == 300  # the tokenizer's
    assert s.config_dialect == "auto"
    # The document's --override examples, including an array index into the shard list.
    s = parse_settings(crate_argv())
    assert (s.log_interval, s.lr, s.train_data_path) == (1, 1e-4, "./alt/train.txt")
    assert (s.max_iters, s.d_model) == (4, 32)  # the later override wins


def test_crate_example_runs_tokenizes_once_and_constant_means_no_warmup(crate_dir, capsys):
    assert tt.main(crate_argv()) == 0
    out = capsys.readouterr().out
    run = crate_dir / "checkpoints"
    assert "shuffle_buffer_size is ignored" in out and "tokenized 2 text file(s)" in out
    train = records(run, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(r["lr"] == pytest.approx(1e-4) for r in train)  # constant: the peak from step 1
    # The texts became token files in the run directory: the tokenizer's ids of the overridden shard.
    tok = Tokenizer.from_files(crate_dir / "artifacts" / "tokenizer.json", None, SPECIALS)
    expect = tok.encode((crate_dir / "alt" / "train.txt").read_text(encoding="utf-8"))
    assert np.load(run / "data" / "train_0.npy").tolist() == expect
    assert (run / "data" / "val_0.npy").is_file()
    assert (run / "checkpoint_iter_4.pt").is_file()
    best = sorted(p.name for p in (run / "best").glob("checkpoint_iter_*.pt"))
    assert best == ["checkpoint_iter_4.pt"]
    assert (crate_dir / "runs" / "train").is_dir()
    # A resume reuses the token files (the texts and the tokenizer are unchanged).
    assert tt.main(crate_argv("--resume", "--override", "scheduler.total_steps=6")) == 0
    out = capsys.readouterr().out
    assert "reusing the token files" in out and "tokenized" not in out
    assert [r["step"] for r in records(run, "train")][-2:] == [5, 6]
