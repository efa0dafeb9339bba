"""docs/coming-from.md: its tables are what cs336_basics.tools.dialect_reference renders from the
dialect tables, and they answer for every key of the five documents' examples.

The documents' keys below are copied by hand from the documents (the training crate's example
config, trainkit's runtime notes and logging example, the Accelerate trainer's training block,
training_together.py's argument tables with their defaults): an independent list, so a key the
program forgets is a failure here rather than a row that silently never appears.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cs336_basics.tools.dialect_reference import COMMAND, main, render, table
from cs336_basics.training.dialects import SYSTEMS
from cs336_basics.training.settings import build_parser
from cs336_basics.utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "coming-from.md"

CRATE_KEYS = """tokenizer.tokenizer_json tokenizer.special_tokens data.train_shards data.validation_shards
data.batch_size data.gradient_accumulation_steps data.shuffle_buffer_size optimizer.learning_rate
optimizer.beta1 optimizer.beta2 optimizer.epsilon scheduler.strategy scheduler.total_steps runtime.seed
runtime.log_every_n_steps runtime.checkpoint.directory runtime.checkpoint.every_n_steps
runtime.checkpoint.max_keep runtime.evaluation.every_n_steps runtime.evaluation.max_batches
runtime.evaluation.every_n_epochs runtime.evaluation.best.directory runtime.evaluation.best.max_keep
runtime.logging.enable_stdout runtime.logging.tensorboard runtime.logging.tensorboard_flush_every_n
model.hidden_size model.intermediate_size model.num_layers model.num_attention_heads
model.max_position_embeddings""".split()
TRAINKIT_KEYS = """model.device ddp.backend optimizer.optimizer_name optimizer.muon.GROUP.lr training.skip_validation
training.max_val_iteration training.val_freq_iteration training.grad_accum_steps training.max_train_iteration
logging.backend logging.run_name logging.architecture logging.dataset logging.log_activation_norms
logging.log_weight_norms wandb.entity wandb.project""".split()
ACCELERATE_KEYS = """memory_lr lora_lr base_model_lr training_mode dataset_name dataset_subset dataset_split text_field
max_length distributed_strategy num_gpus fsdp_sharding_strategy batch_size gradient_accumulation_steps max_steps
warmup_steps optimizer weight_decay max_grad_norm scheduler mixed_precision save_precision gradient_checkpointing
save_steps eval_steps save_total_limit save_best_model early_stopping early_stopping_patience
early_stopping_threshold logging_steps log_to_wandb output_dir""".split()
# training_together.py's argument tables: (flag, its documented default); None: required or unset.
TOGETHER_DEFAULTS = {
    "train_data_path": None, "val_data_path": None, "vocab_size": 10000, "context_length": 256, "d_model": 512,
    "num_heads": 8, "d_ff": 2048, "num_layers": 6, "rope_theta": 10000.0, "lr": 6e-4, "weight_decay": 0.1,
    "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "batch_size": 64, "max_iters": 100000, "grad_clip": 1.0,
    "checkpoint_interval": 5000, "eval_interval": 500, "log_interval": 100, "eval_iters": 100, "resume_from": None,
    "device": "auto", "seed": 42, "use_wandb": False, "wandb_project": "transformer-lm", "wandb_run_name": None,
}  # fmt: skip


def page_rows(system: str) -> dict[str, str]:
    """``{key: the row's text}`` of ``system``'s generated table in the checked-in page."""
    m = re.search(
        rf"<!-- generated: {system} .*?-->\n(.*?)<!-- end generated -->", DOC.read_text(encoding="utf-8"), re.S
    )
    assert m, f"docs/coming-from.md has no table for {system}; add its markers and run: {COMMAND}"
    rows = {}
    for line in m.group(1).splitlines()[2:]:
        keys, text = line.strip("|").split(" | ", 1)
        for key in re.findall(r"`([^`]+)`", keys):
            rows[key] = text
    return rows


def test_the_checked_in_tables_are_the_generated_ones():
    page = DOC.read_text(encoding="utf-8")
    assert render(page) == page, f"docs/coming-from.md's tables differ from the dialect tables; regenerate: {COMMAND}"
    for system in SYSTEMS:
        assert table(system) in page


@pytest.mark.parametrize(
    "system, keys",
    [
        ("training_crate", CRATE_KEYS),
        ("trainkit", TRAINKIT_KEYS),
        ("accelerate", [f"training.{k}" for k in ACCELERATE_KEYS]),
    ],
)
def test_every_key_of_the_documents_is_mapped_or_refused_in_the_table(system, keys):
    rows = page_rows(system)
    missing = [k for k in keys if k not in rows]
    assert not missing, f"{system}: no row for {missing}"
    for key in keys:
        text = rows[key]
        assert re.search(r"`--\w+`|\*\*refused\*\*|accepted|only \(what this program does\)", text), (key, text)
    if system == "accelerate":
        assert "**refused**" in rows["training.memory_lr"] and "memory adapters" in rows["training.memory_lr"]
    if system == "training_crate":
        assert "`--lr`" in rows["optimizer.learning_rate"] and "no warmup" in rows["scheduler.strategy"]


def test_the_flags_of_training_together_py_are_ours_with_the_documented_defaults():
    actions = {a.dest: a for a in build_parser()._actions if a.option_strings}
    for flag, default in TOGETHER_DEFAULTS.items():
        assert flag in actions, flag
        assert actions[flag].default == default, (flag, actions[flag].default, default)
    # The two documented differences (the page's 002 table says so).
    assert actions["checkpoint_dir"].default is None and actions["warmup_iters"].default is None
    page = DOC.read_text(encoding="utf-8")
    assert "default `runs/<run_name>`" in page and "10% of `--max_iters`, at most 2000" in page


def test_the_command_rewrites_only_the_blocks(tmp_path, capsys):
    page = tmp_path / "page.md"
    stale = "prose\n<!-- generated: trainkit (x) -->\n| old |\n<!-- end generated -->\nmore prose\n"
    page.write_text(stale, encoding="utf-8")
    assert main([str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("prose\n<!-- generated: trainkit (x) -->\n| key | here |\n") and "| old |" not in text
    assert text.endswith("<!-- end generated -->\nmore prose\n")
    assert "| `logging.backend` | console: `--log_format` trainkit; wandb: `--use_wandb` |" in text
    page.write_text(stale.replace("trainkit", "deepspeed"), encoding="utf-8")
    assert run_cli(main, [str(page)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown system 'deepspeed'" in err
    assert page.read_text(encoding="utf-8") == stale.replace("trainkit", "deepspeed")  # left as it was
