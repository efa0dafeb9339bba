"""Config files written for the systems this program replaces run as written (``--config FILE``):
the training crate's TOML, trainkit's TOML and the Accelerate trainer's YAML
(cs336_basics/training/dialects.py; docs/coming-from.md). Each document's example config is
embedded here and run for a few steps on tiny data made in tmp_path."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cs336_basics import training_together as tt
from cs336_basics.fast.bpe import train_bpe
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.training import dialects, text_data
from cs336_basics.training.settings import ConfigError, parse_settings
from cs336_basics.utils.errors import UserError
from tests._train_utils import records, write_pattern_data

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


# ----------------------------------------------------------------------------------------------
# trainkit: its documented sections and keys, with our own keys for what it does not show (data)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("dialect_data"), n_train=4000, n_val=1000)


def trainkit_toml(data: dict[str, Path], run_dir: Path, optimizer: str = "muon", backend: str = "console") -> str:
    return f"""\
[model]
device = "cpu"
d_model = 32
d_ff = 64
num_layers = 1
num_heads = 2
context_length = 16
vocab_size = 64

[ddp]
backend = "gloo"

[data]
train_data_path = "{data["train"]}"
val_data_path = "{data["val"]}"
checkpoint_dir = "{run_dir}"
batch_size = 8

[optimizer]
optimizer_name = "{optimizer}"
max_lr = 0.003
min_lr = 0.0003
warmup_iters = 1

[optimizer.muon.hidden]
lr = 0.02

[optimizer.muon.embed]
lr = 0.004

[optimizer.muon.head]
lr = 0.002

[optimizer.muon.scalar]
lr = 0.001

[training]
grad_accum_steps = 2
max_train_iteration = 8
skip_validation = false
max_val_iteration = 2
val_freq_iteration = 2

[logging]
backend = "{backend}"
run_name = ""
architecture = "TransformerLM"
dataset = "TinyStoriesV2-GPT4"
log_activation_norms = true
log_weight_norms = true
log_interval = 1

[wandb]
entity = "your-entity"
project = "your-project"
"""


def test_trainkit_config_runs_with_its_console_keys_and_micro_steps(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = tmp_path / "train.toml"
    cfg.write_text(trainkit_toml(data, run_dir), encoding="utf-8")
    s = parse_settings(["--config", str(cfg)])
    assert (s.optimizer, s.lr, s.lr_hidden, s.lr_embed, s.lr_head, s.lr_scalar) == (
        "muon",
        3e-3,
        0.02,
        4e-3,
        2e-3,
        1e-3,
    )
    assert (s.grad_accum_steps, s.max_iters, s.eval_iters, s.eval_interval) == (2, 4, 2, 2)  # 8 micro-steps / 2
    assert (s.log_format, s.log_norms, s.run_name, s.wandb_entity, s.wandb_project) == (
        "trainkit", True, None, "your-entity", "your-project")  # fmt: skip
    assert tt.main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("8 micro-steps is 4 optimizer steps") == 1
    assert "ddp.backend is ignored" in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    train = [r for r in lines if r.get("type") == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for key in ("metrics.loss", "metrics.lr", "metrics.grad_l2_norm", "metrics.lr/hidden", "metrics.lr/embed",
                "metrics.lr/head", "metrics.lr/scalar"):  # fmt: skip
        assert key in train[-1], (key, sorted(train[-1]))
    assert "loss" not in train[-1] and "grad_norm" not in train[-1]
    assert train[1]["metrics.lr/hidden"] == pytest.approx(0.02)  # after the one warmup step: the group's peak
    assert any(k.startswith("metrics.weight_norm/") for k in train[-1])
    # metrics.jsonl keeps our own keys.
    assert "loss" in records(run_dir, "train")[-1]


def test_trainkit_micro_steps_must_divide(data, tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text(trainkit_toml(data, tmp_path / "r").replace("max_train_iteration = 8", "max_train_iteration = 7"))
    with pytest.raises(ConfigError, match=r"training.max_train_iteration = 7: counts micro-steps; it must be a multiple "
                                          r"of grad_accum_steps \(2\)"):  # fmt: skip
        parse_settings(["--config", str(cfg)])


def test_trainkit_adamw_ignores_the_muon_tables_and_our_default_console_keys_stay(data, tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text(trainkit_toml(data, tmp_path / "r", optimizer="adamw", backend="wandb"))
    s = parse_settings(["--config", str(cfg)])
    assert (s.optimizer, s.lr_hidden, s.use_wandb, s.log_format) == ("adamw", None, True, "text")
    assert "optimizer.muon.embed.lr" in " ".join(s.config_notes)


# ----------------------------------------------------------------------------------------------
# the Accelerate trainer: its training block (YAML), with our keys for the data and the model
# ----------------------------------------------------------------------------------------------
# The document's block as written, less what this project refuses (memory/LoRA adapters, a
# Hugging Face data set: tested below) and with training_mode's other documented value.
ACCELERATE_YAML = """\
training:
  # Learning rates (separate for components)
  base_model_lr: 1e-5

  # Training mode
  training_mode: pretraining

  # Dataset
  dataset_subset: null
  max_length: 16

  # Distributed
  distributed_strategy: ddp  # or "fsdp"
  num_gpus: 1
  fsdp_sharding_strategy: FULL_SHARD

  # Hyperparameters
  batch_size: 4
  gradient_accumulation_steps: 4
  max_steps: 10000
  warmup_steps: 100

  # Optimizer
  optimizer: adamw
  weight_decay: 0.01
  max_grad_norm: 1.0

  # Scheduler
  scheduler: cosine  # or "linear", "constant"

  # === Mixed Precision ===
  mixed_precision: bf16        # "no", "fp16", "bf16"
  save_precision: fp32         # Optional: "fp32", "fp16", "bf16"

  # === Checkpointing ===
  gradient_checkpointing: true
  save_steps: 500              # Save checkpoint every N steps
  eval_steps: 500              # Evaluate every N steps
  save_total_limit: 3          # Keep only N recent checkpoints
  save_best_model: true        # Save model with best eval loss

  # === Early Stopping ===
  early_stopping: false        # Stop if no improvement
  early_stopping_patience: 3   # Evals to wait
  early_stopping_threshold: 0.0 # Min improvement required

  # Logging
  logging_steps: 10
  log_to_wandb: false

  # Output
  output_dir: {run_dir}

data:
  train_data_path: {train}
  val_data_path: {val}
model:
  vocab_size: 64
  d_model: 32
  d_ff: 64
  num_layers: 1
  num_heads: 2
  device: cpu
"""


def accelerate_yaml(data: dict[str, Path], run_dir: Path, **replace: str) -> str:
    text = ACCELERATE_YAML.format(run_dir=run_dir, train=data["train"], val=data["val"])
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


def test_accelerate_yaml_runs_as_written(data, tmp_path, capsys):
    pytest.importorskip("yaml")
    run_dir = tmp_path / "outputs"
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(accelerate_yaml(data, run_dir), encoding="utf-8")
    s = parse_settings(["--config", str(cfg)])
    assert (s.lr, s.context_length, s.fsdp, s.batch_size, s.grad_accum_steps, s.max_iters, s.warmup_iters) == (
        1e-5, 16, False, 4, 4, 10000, 100)  # fmt: skip
    assert (s.optimizer, s.weight_decay, s.grad_clip, s.lr_schedule, s.min_lr, s.dtype, s.save_precision) == (
        "adamw", 0.01, 1.0, "cosine", 0.0, "bf16", None)  # fmt: skip
    assert (s.activation_checkpointing, s.checkpoint_interval, s.eval_interval, s.keep_last) == (True, 500, 500, 3)
    assert (s.early_stopping_patience, s.log_interval, s.use_wandb, s.checkpoint_dir) == (None, 10, False, str(run_dir))
    argv = ["--config", str(cfg), "--max_iters", "3", "--warmup_iters", "1", "--log_interval", "1"]
    assert tt.main(argv) == 0
    capsys.readouterr()
    assert [r["step"] for r in records(run_dir, "train")] == [1, 2, 3]
    assert (run_dir / "checkpoint_iter_3.pt").is_file() and (run_dir / "best.pt").is_file()
    assert not list(run_dir.glob("*.safetensors"))  # save_precision fp32: the checkpoints as they are


def test_accelerate_save_precision_and_early_stopping_threshold(data, tmp_path, capsys):
    pytest.importorskip("yaml")
    from cs336_basics.interop.safetensors_io import load_file

    run_dir = tmp_path / "outputs"
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(accelerate_yaml(data, run_dir, **{
        "save_precision: fp32": "save_precision: bf16", "early_stopping: false": "early_stopping: true",
        "early_stopping_threshold: 0.0": "early_stopping_threshold: 0.05", "mixed_precision: bf16": "mixed_precision: no",
        "save_steps: 500": "save_steps: 2", "eval_steps: 500": "eval_steps: 1"}), encoding="utf-8")  # fmt: skip
    s = parse_settings(["--config", str(cfg)])
    assert (s.save_precision, s.early_stopping_patience, s.early_stopping_threshold, s.dtype) == (
        "bf16",
        3,
        0.05,
        "fp32",
    )
    assert tt.main(["--config", str(cfg), "--max_iters", "4", "--warmup_iters", "1", "--lr", "1e-3"]) == 0
    capsys.readouterr()
    copy = load_file(run_dir / "checkpoint_iter_4.bf16.safetensors")
    full = torch.load(run_dir / "checkpoint_iter_4.pt", weights_only=False)["model"]
    assert set(copy) == set(full) and all(v.dtype == torch.bfloat16 for v in copy.values())
    assert all(torch.equal(copy[k], full[k].bfloat16()) for k in full)
    assert (run_dir / "best.bf16.safetensors").is_file()


# ----------------------------------------------------------------------------------------------
# refusals, recognition, the native form
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("replace", "needles"),
    [
        ({"base_model_lr: 1e-5": "memory_lr: 2e-4"}, ("training.memory_lr = ", "no memory adapters")),
        ({"base_model_lr: 1e-5": "lora_lr: 1e-4"}, ("training.lora_lr = ", "no LoRA adapters")),
        ({"training_mode: pretraining": "dataset_name: HuggingFaceH4/ultrachat_200k"},
         ("training.dataset_name = 'HuggingFaceH4/ultrachat_200k'", "tokenize_data --hf_dataset")),
        ({"training_mode: pretraining": "training_mode: instruction_finetuning"},
         ("training.training_mode = 'instruction_finetuning'", "--chat")),
        ({"scheduler: cosine": "scheduler: polynomial"}, ("training.scheduler = 'polynomial'", "choose one of")),
        ({"base_model_lr: 1e-5": "base_model_lrr: 1e-5"}, ("unknown key 'training.base_model_lrr'", "base_model_lr")),
    ],
)  # fmt: skip
def test_accelerate_keys_this_project_has_no_use_for_are_refused_in_one_line(data, tmp_path, replace, needles):
    pytest.importorskip("yaml")
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(accelerate_yaml(data, tmp_path / "out", **replace), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        parse_settings(["--config", str(cfg)])
    line = str(info.value)
    assert "\n" not in line and str(cfg) in line, line
    for needle in needles:
        assert needle in line, line


def test_a_yaml_config_without_pyyaml_is_one_line_with_the_install_hint(tmp_path, monkeypatch):
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text("training:\n  max_steps: 3\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    with pytest.raises(ConfigError, match=r"adapter.yaml: a YAML config needs PyYAML: install PyYAML with `uv sync "
                                          r"--extra yaml`$"):  # fmt: skip
        parse_settings(["--config", str(cfg)])


def test_our_flat_toml_stays_native_and_a_dialect_can_be_named(data, tmp_path):
    ours = tmp_path / "ours.toml"
    ours.write_text(f'train_data_path = "{data["train"]}"\nlr = 0.002\n[optim]\nbeta2 = 0.9\n', encoding="utf-8")
    s = parse_settings(["--config", str(ours)])
    assert (s.lr, s.beta2, s.config_notes) == (0.002, 0.9, [])
    # The training crate's keys in a file named for trainkit: trainkit's table does not know them.
    crate = tmp_path / "crate.toml"
    crate.write_text(f'train_data_path = "{data["train"]}"\n[optimizer]\nlearning_rate = 0.001\n', encoding="utf-8")
    assert parse_settings(["--config", str(crate)]).lr == 0.001
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer.learning_rate' for a trainkit config"):
        parse_settings(["--config", str(crate), "--config_dialect", "trainkit"])
    with pytest.raises(ConfigError, match="--config_dialect trainkit says how to read --config FILE"):
        parse_settings(["--train_data_path", str(data["train"]), "--config_dialect", "trainkit"])


def test_a_file_is_recognised_by_its_sections_and_keys():
    ours = {"train_data_path", "lr", "batch_size"}
    assert dialects.detect("a.toml", {"lr": 1e-3, "optim": {"batch_size": 8}}, ours) == "native"
    assert dialects.detect("a.toml", {"optimizer": {"learning_rate": 1e-3}, "lr": 1}, ours) == "training_crate"
    assert dialects.detect("a.toml", {"optimizer": {"max_lr": 1e-3}, "logging": {"backend": "console"}}, ours) == (
        "trainkit"
    )
    assert dialects.detect("a.YAML", {"lr": 1e-3}, ours) == "accelerate"  # YAML is the Accelerate trainer's
    assert dialects.detect("a.toml", {"optimizer": {"learning_rate": 1e-3}}, ours, "trainkit") == "trainkit"
    assert dialects.detect("a.toml", {"lrr": 1e-3}, ours) == "native"  # a typo of ours: the native reading names it
    # A key each of two systems knows, and nothing else: which one is not guessed.
    both = {"data": {"batch_size": 8}, "training": {"grad_accum_steps": 2}}
    with pytest.raises(UserError, match=r"a.toml: cannot tell .*training_crate or trainkit.*: pass --config_dialect"):
        dialects.detect("a.toml", both, set())


def test_the_special_tokens_file_is_one_token_per_line(tmp_path):
    path = tmp_path / "special_tokens.txt"
    path.write_bytes(b"<|endoftext|>\r\n\n<|pad|>\n  \n")
    assert text_data.read_special_tokens_file(path) == ["<|endoftext|>", "<|pad|>"]
    with pytest.raises(UserError, match=r"^--special_tokens_file .*missing.txt: ") as err:
        text_data.read_special_tokens_file(tmp_path / "missing.txt")
    assert "\n" not in str(err.value)
