"""Config files written for other training systems, run as they are: ``--config FILE``.

Users switching from one of three systems bring its config file; this module reads it into the
training program's settings, one table per system, so nothing else in the program knows these
formats:

* ``training_crate``: the Rust training crate's TOML (``[tokenizer]``, ``[data]``, ``[optimizer]``,
  ``[scheduler]``, ``[runtime.*]``, ``[model]``); its shards are text files, tokenized once into the
  run directory (:mod:`cs336_basics.training.text_data`);
* ``trainkit``: trainkit's TOML (``[model]``, ``[ddp]``, ``[optimizer]`` with
  ``[optimizer.muon.GROUP]``, ``[training]``, ``[logging]``, ``[wandb]``);
* ``accelerate``: the Accelerate trainer's YAML (its ``training:`` block; PyYAML is an optional
  extra, ``uv sync --extra yaml``).

:func:`detect` recognises the system: a YAML file is the Accelerate trainer's; a TOML file whose
keys are all this program's flags is ours, read exactly as before
(:func:`cs336_basics.training.settings.flatten_toml`); otherwise it is the system whose table knows
the most of its other keys. ``--config_dialect`` names the system instead.

Each table maps a key (its dotted path) to a :class:`Rule`: the setting it becomes (maybe
converted); a one-line refusal that says why (memory adapters this project does not have); or a
note, said once at start, for a key that changes nothing here (a shuffle buffer, where every batch
is a random window). A key the table does not list but whose name is one of our flags is read as
ours (``train_data_path`` in trainkit's file, which shows no data paths); anything else is an
unknown key, with a suggestion. After the keys, a system's ``finish`` settles what depends on
several of them (trainkit's micro-steps, the schedules' warmups). Values are returned uncoerced,
with where they came from; the settings module checks them like any config value.
docs/coming-from.md shows every table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from cs336_basics.utils.errors import UserError
from cs336_basics.utils.fsutil import read_toml

DIALECTS = ("auto", "native", "training_crate", "trainkit", "accelerate")
LABELS = {"training_crate": "training-crate", "trainkit": "trainkit", "accelerate": "Accelerate-trainer"}
YAML_SUFFIXES = (".yaml", ".yml")
YAML_HINT = "install PyYAML with `uv sync --extra yaml`"


# ==============================================================================================
# reading a file
# ==============================================================================================
def read_config(path: str, error: type[UserError]) -> dict[str, Any]:
    """The document of ``--config path``: YAML for .yaml/.yml, else TOML; problems are one ``error`` line."""
    if Path(path).suffix.lower() not in YAML_SUFFIXES:
        return read_toml(path, error)
    try:
        import yaml
    except ImportError:
        raise error(f"--config {path}: a YAML config needs PyYAML: {YAML_HINT}") from None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as err:
        from cs336_basics.utils.errors import read_error_line

        raise error(read_error_line(f"--config {path}", err, expected="a .yaml file")) from None
    except yaml.YAMLError as err:
        raise error(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: invalid YAML: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise error(f"{path}: expected a YAML mapping of names to values at the top, got {type(data).__name__}")
    return data


def leaves(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``("a.b.c", value)`` for every value that is not a table (lists are values)."""
    for k, v in data.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            yield from leaves(v, path)
        else:
            yield path, v


def _leaf_name(path: str) -> str:
    return path.rsplit(".", 1)[-1].replace("-", "_")


# ==============================================================================================
# rules
# ==============================================================================================
class Reading:
    """One file being translated: the values set so far (``{setting: (value, where)}``) and the notes."""

    def __init__(self, path: str, dialect: str, doc: dict[str, Any], optional: Collection[str]) -> None:
        self.path, self.dialect, self.doc, self.optional = path, dialect, doc, optional
        self.values: dict[str, tuple[Any, str]] = {}
        self.notes: list[str] = []
        self.kept: dict[str, Any] = {}  # keys a system's finish reads (by dotted path)
        self.where, self.value = "", None  # the key being read

    def set(self, setting: str, value: Any, where: str | None = None) -> None:
        where = where or self.where
        if value is None and setting in self.optional:  # YAML's null / an empty choice: unset, as by default
            return
        if setting in self.values:
            raise UserError(f"{self.path}: {setting!r} is set twice ({self.values[setting][1]} and {where})")
        self.values[setting] = (value, where)

    def get(self, setting: str, default: Any = None) -> Any:
        return self.values[setting][0] if setting in self.values else default

    def note(self, text: str) -> None:
        self.notes.append(f"{self.path}: {text}")

    def refuse(self, why: str) -> NoReturn:
        raise UserError(f"{self.path}: {self.where} = {_show(self.value)}: {why}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Rule:
    """What one key of a system's file becomes. ``kind``: maps, note (accepted, changes nothing
    here, said once) or refused; ``doc`` says what, for the docs and the messages."""

    kind: str
    doc: str
    apply: Callable[[Any, Reading], None]


def to(setting: str, convert: Callable[[Any, Reading], Any] | None = None, doc: str = "") -> Rule:
    """The key is our ``setting`` (its value converted by ``convert``)."""
    return Rule("maps", doc or f"--{setting}", lambda v, r: r.set(setting, convert(v, r) if convert else v))


def refused(why: str) -> Rule:
    def apply(v: Any, r: Reading) -> None:
        r.refuse(why)

    return Rule("refused", why, apply)


def noted(why: str) -> Rule:
    """Accepted; it changes nothing here, and the console says so once."""
    return Rule("note", why, lambda v, r: r.note(f"{r.where} is ignored: {why}"))


def only(accepted: Any, why: str, *, refuse: bool = True) -> Rule:
    """``accepted`` changes nothing (it is how this program works anyway); another value is refused
    (or, with ``refuse=False``, noted as ignored: for a switch whose other value would only save a file)."""

    def apply(v: Any, r: Reading) -> None:
        if v == accepted:
            return
        if refuse:
            r.refuse(why)
        r.note(f"{r.where} = {_show(v)} is ignored: {why}")

    return Rule("maps", f"{_show(accepted)} only (what this program does); {why}", apply)


def choice(setting: str, mapping: dict[Any, Any], doc: str = "") -> Rule:
    """The value names one of ``mapping``'s keys; ``setting`` gets what it maps to (None: nothing)."""

    def apply(v: Any, r: Reading) -> None:
        key = v.lower() if isinstance(v, str) else v
        if isinstance(key, int | float) and not isinstance(key, bool) or key not in mapping:
            r.refuse(f"choose one of {', '.join(k for k in mapping if isinstance(k, str))}")
        if mapping[key] is not None:
            r.set(setting, mapping[key])

    shown = ", ".join(f"{k} -> {v}" for k, v in mapping.items() if v is not None and isinstance(k, str))
    return Rule("maps", doc or f"--{setting} ({shown})", apply)


def kept(doc: str) -> Rule:
    """Read by the system's ``finish`` (it depends on other keys)."""

    def apply(v: Any, r: Reading) -> None:
        r.kept[r.where] = v

    return Rule("maps", doc, apply)


def _bool(v: Any, r: Reading) -> bool:
    if not isinstance(v, bool):
        r.refuse("must be true or false")
    return v


def _int(v: Any, r: Reading) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        r.refuse("must be an integer")
    return v


def _paths(v: Any, r: Reading) -> Any:
    """One path, or a list of them (joined by the settings, as comma-separated on the command line)."""
    paths = [v] if isinstance(v, str) else v
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        r.refuse("expected a file path or a list of them")
    return v


# ==============================================================================================
# the training crate (TOML)
# ==============================================================================================
def _crate_finish(r: Reading) -> None:
    """Text shards need the tokenizer (and give the vocab size); a constant schedule has no warmup."""
    text_keys = [k for k in ("data.train_shards", "data.validation_shards") if k in r.kept]
    for key, setting in (("data.train_shards", "train_data_path"), ("data.validation_shards", "val_data_path")):
        if key in r.kept:
            r.where, r.value = key, r.kept[key]
            r.set(setting, _paths(r.kept[key], r), key)
    if text_keys and r.get("tokenizer_json") is None:
        raise UserError(f"{r.path}: {text_keys[0]} are text files: name their tokenizer (tokenizer.tokenizer_json)")
    if r.get("tokenizer_json") is not None:
        if not text_keys:
            raise UserError(f"{r.path}: tokenizer.tokenizer_json tokenizes data.train_shards: add them")
        mixed = [s for s in ("train_data_path", "val_data_path") if s in r.values and r.values[s][1] not in text_keys]
        if mixed:
            raise UserError(
                f"{r.path}: {r.values[mixed[0]][1]} is a token file but data.*_shards are text: give the "
                "validation text as data.validation_shards"
            )
        if "vocab_size" not in r.values:
            from cs336_basics.training.text_data import tokenizer_vocab_size

            r.set("vocab_size", tokenizer_vocab_size(r.get("tokenizer_json"), r.get("special_tokens_file")),
                  "tokenizer.tokenizer_json")  # fmt: skip
    if r.get("lr_schedule") == "constant" and "warmup_iters" not in r.values:
        r.set("warmup_iters", 0, "scheduler.strategy")
    flush = r.kept.get("runtime.logging.tensorboard_flush_every_n")
    if flush is not None and r.get("tensorboard_dir"):  # it tunes TensorBoard: nothing to flush without it
        r.set("tensorboard_flush_every", flush, "runtime.logging.tensorboard_flush_every_n")


CRATE: dict[str, Rule] = {
    "tokenizer.tokenizer_json": to("tokenizer_json", doc="--tokenizer_json (and --vocab_size: the tokenizer's)"),
    "tokenizer.special_tokens": to("special_tokens_file"),
    "data.train_shards": kept("--train_data_path, text files tokenized once into RUN_DIR/data/"),
    "data.validation_shards": kept("--val_data_path, likewise"),
    "data.batch_size": to("batch_size"),
    "data.gradient_accumulation_steps": to("grad_accum_steps"),
    "data.shuffle_buffer_size": noted("batches are random windows of the whole token file, there is no buffer"),
    "optimizer.learning_rate": to("lr"),
    "optimizer.beta1": to("beta1"),
    "optimizer.beta2": to("beta2"),
    "optimizer.epsilon": to("eps"),
    "optimizer.weight_decay": to("weight_decay"),
    "scheduler.strategy": choice(
        "lr_schedule",
        {"constant": "constant", "cosine": "cosine", "linear": "linear"},
        doc="--lr_schedule (constant, cosine, linear); constant has no warmup unless scheduler.warmup_steps",
    ),
    "scheduler.total_steps": to("max_iters"),
    "scheduler.warmup_steps": to("warmup_iters"),
    "runtime.seed": to("seed"),
    "runtime.log_every_n_steps": to("log_interval"),
    "runtime.checkpoint.directory": to("checkpoint_dir", doc="--checkpoint_dir (the run directory)"),
    "runtime.checkpoint.every_n_steps": to("checkpoint_interval"),
    "runtime.checkpoint.every_n_epochs": to("checkpoint_every_epochs"),
    "runtime.checkpoint.max_keep": to("keep_last"),
    "runtime.evaluation.every_n_steps": to("eval_interval"),
    "runtime.evaluation.every_n_epochs": to("eval_every_epochs"),
    "runtime.evaluation.max_batches": to("eval_iters"),
    "runtime.evaluation.best.directory": to("best_checkpoint_dir"),
    "runtime.evaluation.best.max_keep": to("keep_best"),
    "runtime.logging.enable_stdout": only(True, "the console always prints; redirect it (> train.log)", refuse=False),
    "runtime.logging.tensorboard": to("tensorboard_dir", doc="--tensorboard_dir (uv sync --extra tensorboard)"),
    "runtime.logging.tensorboard_flush_every_n": kept("--tensorboard_flush_every (with tensorboard)"),
    "model.hidden_size": to("d_model"),
    "model.intermediate_size": to("d_ff"),
    "model.num_layers": to("num_layers"),
    "model.num_attention_heads": to("num_heads"),
    "model.max_position_embeddings": to("context_length"),
    "model.vocab_size": to("vocab_size"),
}


# ==============================================================================================
# trainkit (TOML)
# ==============================================================================================
MUON_GROUPS = ("hidden", "embed", "head", "scalar")


def _trainkit_finish(r: Reading) -> None:
    """Micro-steps to optimizer steps; the Muon group tables (only with Muon, as in trainkit); norms."""
    micro = r.kept.get("training.max_train_iteration")
    if micro is not None:
        r.where, r.value = "training.max_train_iteration", micro
        accum = r.get("grad_accum_steps", 1)
        if not isinstance(accum, int) or isinstance(accum, bool) or accum < 1:
            accum = 1  # the settings refuse the bad grad_accum_steps itself
        if _int(micro, r) % accum:
            r.refuse(f"counts micro-steps; it must be a multiple of grad_accum_steps ({accum})")
        r.set("max_iters", micro // accum)
        if accum > 1:
            r.note(
                f"training.max_train_iteration = {micro} micro-steps is {micro // accum} optimizer steps of "
                f"{accum} micro-batches (--max_iters {micro // accum})"
            )
    group_keys = sorted(k for k in r.kept if k.startswith("optimizer.muon."))
    if group_keys and r.get("optimizer", "adamw") != "muon":
        r.note(f"{', '.join(group_keys)} ignored: the optimizer is not muon (as in trainkit, AdamW ignores them)")
    elif group_keys:
        for key in group_keys:
            r.set(f"lr_{key.split('.')[2]}", r.kept[key], key)
    norms = [k for k in ("logging.log_activation_norms", "logging.log_weight_norms") if k in r.kept]
    for key in norms:
        r.where, r.value = key, r.kept[key]
        _bool(r.kept[key], r)
    if norms:
        on = [k for k in norms if r.kept[k]]
        r.set("log_norms", bool(on), ", ".join(norms))
        if len(on) == 1:
            r.note(f"{on[0]}: --log_norms logs both the weight and the activation RMS of every layer")


def _run_name(v: Any, r: Reading) -> str | None:
    if not isinstance(v, str):
        r.refuse("must be a string (empty: a timestamp)")
    return v or None  # empty: the default, a UTC timestamp


def _backend(v: Any, r: Reading) -> None:
    if v == "console":
        r.set("log_format", "trainkit")
    elif v == "wandb":
        r.set("use_wandb", True)
    else:
        r.refuse("choose console or wandb")


def _ddp_backend(v: Any, r: Reading) -> None:
    if v not in ("nccl", "gloo"):
        r.refuse("choose nccl or gloo")
    r.note(f"{r.where} is ignored: torchrun's process group takes nccl on CUDA and gloo on the CPU by itself")


TRAINKIT: dict[str, Rule] = {
    "model.device": to("device"),
    "ddp.backend": Rule("note", "torchrun's process group picks nccl (CUDA) or gloo (CPU) by device", _ddp_backend),
    "optimizer.optimizer_name": to("optimizer"),
    "optimizer.max_lr": to("lr"),
    **{
        f"optimizer.muon.{group}.{key}": rule
        for group in MUON_GROUPS
        for key, rule in (
            ("lr", kept(f"--lr_{group}, with optimizer_name = muon only (AdamW ignores the table, as in trainkit)")),
            ("max_lr", kept(f"--lr_{group}, likewise")),
            (
                "min_lr",
                refused(
                    "every group follows the one schedule of --lr, down to its peak times min_lr / lr: set [optimizer] min_lr"
                ),
            ),  # fmt: skip
            *(
                (k, refused(f"{k} is one value for all groups here: set it in [optimizer]"))
                for k in ("weight_decay", "beta1", "beta2", "betas", "eps", "momentum", "nesterov", "ns_steps")
            ),  # fmt: skip
        )
    },
    "training.grad_accum_steps": to("grad_accum_steps"),
    "training.max_train_iteration": kept("--max_iters = this / grad_accum_steps (it counts micro-steps)"),
    "training.skip_validation": to("skip_validation"),
    "training.max_val_iteration": to("eval_iters"),
    "training.val_freq_iteration": to("eval_interval"),
    "logging.backend": Rule("maps", "console: --log_format trainkit; wandb: --use_wandb", _backend),
    "logging.run_name": to("run_name", _run_name, doc="--run_name (empty: the default, a UTC timestamp)"),
    "logging.architecture": only("TransformerLM", "this program trains its TransformerLM"),
    "logging.dataset": noted("a label for the wandb run; run_config.json records the data paths"),
    "logging.log_activation_norms": kept("--log_norms (weight and activation RMS per layer)"),
    "logging.log_weight_norms": kept("--log_norms, likewise"),
    "wandb.entity": to("wandb_entity"),
    "wandb.project": to("wandb_project"),
}


# ==============================================================================================
# the Accelerate trainer (YAML)
# ==============================================================================================
HF_DATA_HINT = (
    "this program trains on token files: tokenize the data set once with `python -m cs336_basics.tokenize_data "
    "--hf_dataset NAME [--hf_subset S --hf_split SPLIT --text_field F] --tokenizer DIR --output train.npy` "
    "and set train_data_path"
)


def _accelerate_finish(r: Reading) -> None:
    """Early stopping as one switch and its settings; Hugging Face's schedules (no warmup unless
    warmup_steps, cosine/linear down to 0)."""
    on = r.kept.get("training.early_stopping")
    if on is not None:
        r.where, r.value = "training.early_stopping", on
        _bool(on, r)
    if on:
        r.set("early_stopping_patience", r.kept.get("training.early_stopping_patience", 3), "training.early_stopping")
        if "training.early_stopping_threshold" in r.kept:
            r.set("early_stopping_threshold", r.kept["training.early_stopping_threshold"],
                  "training.early_stopping_threshold")  # fmt: skip
    if "warmup_iters" not in r.values:
        r.set("warmup_iters", 0, "training.warmup_steps (unset)")
    if r.get("lr_schedule", "cosine") in ("cosine", "linear") and "min_lr" not in r.values:
        r.set("min_lr", 0.0, "training.scheduler")


def _world_size_note(v: Any, r: Reading) -> None:
    n = _int(v, r)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if n != world:
        r.note(
            f"training.num_gpus = {n}, but this run has {world} process(es): torchrun starts them "
            f"(torchrun --nproc_per_node {n} -m cs336_basics.training_together --config {r.path})"
        )


def _accepted_null(why: str) -> Rule:
    """A data-set key: null is fine (no data set); a value is refused with ``why``."""

    def apply(v: Any, r: Reading) -> None:
        if v is not None:
            r.refuse(why)

    return Rule("refused", f"a value (null is fine): {why}", apply)


ACCELERATE: dict[str, Rule] = {
    "training.memory_lr": refused(
        "this project has no memory adapters: the whole model trains at base_model_lr (per-role rates: "
        "lr_hidden, lr_embed, lr_head, lr_scalar)"
    ),
    "training.lora_lr": refused("this project has no LoRA adapters: every weight trains, at base_model_lr"),
    "training.base_model_lr": to("lr"),
    "training.training_mode": only(
        "pretraining",
        "for chats, tokenize them once with `python -m cs336_basics.tokenize_data --chat ...` (a loss mask comes "
        "with them) and set train_data_path",
    ),
    "training.dataset_name": _accepted_null(HF_DATA_HINT),
    "training.dataset_subset": _accepted_null(HF_DATA_HINT),
    "training.dataset_split": _accepted_null(HF_DATA_HINT),
    "training.text_field": _accepted_null(HF_DATA_HINT),
    "training.max_length": to("context_length"),
    "training.distributed_strategy": choice(
        "fsdp", {"ddp": None, "fsdp": True}, doc="ddp: DDP under torchrun (the default); fsdp: --fsdp"
    ),
    "training.num_gpus": Rule("note", "torchrun starts the processes (--nproc_per_node N)", _world_size_note),
    "training.fsdp_sharding_strategy": only(
        "FULL_SHARD", "--fsdp shards fully (FULL_SHARD); for no sharding use distributed_strategy: ddp"
    ),
    "training.batch_size": to("batch_size"),
    "training.gradient_accumulation_steps": to("grad_accum_steps"),
    "training.max_steps": to("max_iters"),
    "training.warmup_steps": to("warmup_iters", doc="--warmup_iters (unset: 0, as in Hugging Face)"),
    "training.optimizer": to("optimizer"),
    "training.weight_decay": to("weight_decay"),
    "training.max_grad_norm": to("grad_clip"),
    "training.scheduler": choice(
        "lr_schedule",
        {"cosine": "cosine", "linear": "linear", "constant": "constant"},
        doc="--lr_schedule (cosine and linear decay to --min_lr 0 unless min_lr is given, as in Hugging Face)",
    ),
    # YAML 1.1 reads an unquoted `no` as false: both mean no mixed precision.
    "training.mixed_precision": choice("dtype", {"no": "fp32", False: "fp32", "fp16": "fp16", "bf16": "bf16"}),
    "training.save_precision": choice(
        "save_precision",
        {"fp32": None, "fp16": "fp16", "bf16": "bf16"},
        doc="fp32: the checkpoints as they are; fp16/bf16: --save_precision (a weights copy beside each checkpoint)",
    ),
    "training.gradient_checkpointing": to("activation_checkpointing"),
    "training.save_steps": to("checkpoint_interval"),
    "training.eval_steps": to("eval_interval"),
    "training.save_total_limit": to("keep_last"),
    "training.save_best_model": only(
        True, "best.pt (the lowest validation loss) is always kept when evaluating", refuse=False
    ),
    "training.early_stopping": kept("on: --early_stopping_patience (default 3); off: no early stopping"),
    "training.early_stopping_patience": kept("--early_stopping_patience, when early_stopping is on"),
    "training.early_stopping_threshold": kept("--early_stopping_threshold, when early_stopping is on"),
    "training.logging_steps": to("log_interval"),
    "training.log_to_wandb": to("use_wandb"),
    "training.output_dir": to("checkpoint_dir", doc="--checkpoint_dir (the run directory)"),
    "training.resume_from_checkpoint": to("resume_from"),
}


# ==============================================================================================
# the systems
# ==============================================================================================
@dataclass(frozen=True)
class Dialect:
    rules: dict[str, Rule]
    finish: Callable[[Reading], None]


SYSTEMS: dict[str, Dialect] = {
    "training_crate": Dialect(CRATE, _crate_finish),
    "trainkit": Dialect(TRAINKIT, _trainkit_finish),
    "accelerate": Dialect(ACCELERATE, _accelerate_finish),
}


def rule_for(dialect: str, path: str) -> Rule | None:
    return SYSTEMS[dialect].rules.get(path)


def key_names(dialect: str) -> list[str]:
    """The key names a system's file may hold (for ``--override``'s check of the last name)."""
    return sorted({p.rsplit(".", 1)[-1] for p in SYSTEMS[dialect].rules}) if dialect in SYSTEMS else []


def detect(path: str, data: dict[str, Any], settings: Collection[str], dialect: str = "auto") -> str:
    """Which system ``data`` (read from ``path``) was written for: ``dialect`` unless auto."""
    if dialect != "auto":
        return dialect
    if Path(path).suffix.lower() in YAML_SUFFIXES:
        return "accelerate"
    foreign = [p for p, _ in leaves(data) if _leaf_name(p) not in settings]
    if not foreign:
        return "native"
    scores = {d: sum(rule_for(d, p) is not None for p in foreign) for d in SYSTEMS if d != "accelerate"}
    best = max(scores.values())
    if best == 0:
        return "native"  # an unknown key of ours: the native reading names it
    winners = [d for d, n in scores.items() if n == best]
    if len(winners) > 1:
        raise UserError(
            f"{path}: cannot tell which system this config was written for ({' or '.join(winners)}): "
            "pass --config_dialect"
        )
    return winners[0]


def translate(
    path: str,
    data: dict[str, Any],
    dialect: str,
    settings: Collection[str],
    optional: Collection[str],
    suggest: Callable[[str, Sequence[str], Any], str | None],
) -> tuple[dict[str, tuple[Any, str]], list[str]]:
    """``({setting: (value, where)}, notes)`` for a file of ``dialect``. ``settings``: our setting
    names (a key of that name is ours); ``optional``: those unset by default (a null leaves them unset);
    ``suggest(key, known, value)``: the known key an unknown one probably meant, or None."""
    system = SYSTEMS[dialect]
    r = Reading(path, dialect, data, optional)
    for key, value in leaves(data):
        r.where, r.value = key, value
        rule = rule_for(dialect, key)
        if rule is not None:
            rule.apply(value, r)
            continue
        name = _leaf_name(key)
        if name in settings:
            if name in ("train_data_path", "val_data_path"):
                _paths(value, r)
            r.set(name, value)
            continue
        known = [*system.rules, *(f"--{s}" for s in settings)]
        close = [c for c in (suggest(key, known, value), suggest(name, known, value)) if c]
        hint = f"; did you mean {close[0].lstrip('-')!r}?" if close else ""
        raise UserError(
            f"{path}: unknown key {key!r} for a {LABELS[dialect]} config{hint} (docs/coming-from.md lists its keys)"
        )
    system.finish(r)
    return r.values, r.notes
