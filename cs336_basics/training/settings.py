"""The training program's settings: one typed dataclass, its command-line flags and TOML file.

Each setting is written once, as a field of :class:`TrainSettings` (type, default, help); the
argparse parser and the TOML reader are built from those fields, so a flag, a config key and the
attribute the code reads can never disagree. Precedence: defaults < ``--config FILE.toml`` <
command line. :func:`parse_settings` also validates every value cheaply (before any file is read)
and raises :class:`ConfigError` with one line naming the flag.

Two defaults follow ``--max_iters`` and ``--lr`` unless given: ``--warmup_iters`` is 10% of the run
(at most 2000, the course's value) and ``--min_lr`` is ``--lr / 10`` (6e-5 at the default LR).

On resume (``--resume``, ``--resume_from``) the checkpoint's own settings are the base instead of the
defaults: its model shape, objective and optimizer (a given flag that contradicts them is refused)
and every setting of what is trained (lr, schedule, betas, batch, ``--max_iters``...); settings given
explicitly override those. How this process runs (device, precision, paths, intervals, logging:
:data:`RESUME_FROM_FLAGS`) follows the flags as for a new run.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cs336_basics.extensions.diffusion import DEFAULT_EPS, OBJECTIVES, data_shape, with_mask_token
from cs336_basics.extensions.schedules import DECAY_SHAPES, LR_SCHEDULES, check_decay_frac
from cs336_basics.fast.optim import OPTIMIZERS
from cs336_basics.lm.model import (
    ATTENTION_TYPES,
    EMBEDDING_TYPES,
    FFN_TYPES,
    IMPLEMENTATION_FIELDS,
    MODEL_FIELDS,
    OBJECTIVE_MODEL_FIELDS,
    ModelConfig,
)
from cs336_basics.optim import check_hparam
from cs336_basics.training.dialects import DIALECTS, detect, key_names, read_config, translate
from cs336_basics.training.overrides import apply_overrides
from cs336_basics.training.state import peek_resume, same_value
from cs336_basics.utils.errors import UserError

_MODEL_DEFAULTS = ModelConfig()
# Settings that may differ on resume without comment (where the data lives, how it is logged).
RESUME_NEUTRAL = ("resume", "resume_from", "config", "checkpoint_dir", "train_data_path", "val_data_path",
                  "use_wandb", "wandb_project", "wandb_run_name", "tensorboard_dir")  # fmt: skip
# ... and the trainer knobs that only change where things go or how they are shown.
RESUME_NEUTRAL += ("run_name", "log_format", "on_checkpoint", "on_checkpoint_timeout", "tensorboard_flush_every",
                   "allow_tokenizer_change", "progress")  # fmt: skip
# ... and the settings other systems' config files brought (cs336_basics.training.dialects).
RESUME_NEUTRAL += ("config_dialect", "tokenizer_json", "special_tokens_file", "best_checkpoint_dir", "keep_best",
                   "save_precision", "wandb_entity")  # fmt: skip

# On resume, these follow the flags (and their defaults) as in a new run: they say how this process
# runs (where, in what precision, with which paths, intervals and logging), not what is trained.
# Every other setting saved with the run is the base a resumed run starts from (flags override).
RESUME_FROM_FLAGS = (*RESUME_NEUTRAL, *IMPLEMENTATION_FIELDS, "data_dtype", "device", "dtype", "compile", "tf32",
                     "fsdp", "zero1", "activation_checkpointing", "deterministic", "prefetch", "muon_ns_dtype",
                     "max_bad_steps", "eval_interval", "eval_iters", "eval_every_epochs", "skip_validation",
                     "log_interval", "heartbeat_s", "log_norms", "checkpoint_interval", "checkpoint_every_epochs",
                     "keep_last", "allow_checkpoint_failure", "init_from")  # fmt: skip
# ... and these a resumed run cannot change (its weights and optimizer state are for them).
RESUME_FIXED = (*MODEL_FIELDS, "objective", "optimizer")

# The course's warmup, used when the run is long enough for it (see _derived_defaults).
COURSE_WARMUP_ITERS = 2000
LOG_FORMATS = ("text", "json", "trainkit")
# Settings a config file may give as a list of paths (joined with commas, as on the command line).
PATH_LISTS = ("train_data_path", "val_data_path")


class ConfigError(UserError, ValueError):
    """A bad flag value or config file; the message names the flag/key."""


def _opt(group: str, help: str, *, choices: Sequence[str] | None = None, required: bool = False) -> dict[str, Any]:
    return {"group": group, "help": help, "choices": choices, "required": required}


def _model(name: str, help: str, *, choices: Sequence[str] | None = None, group: str = "model") -> Any:
    """A model flag: its default is ModelConfig's, so the two can't drift apart."""
    return field(default=getattr(_MODEL_DEFAULTS, name), metadata=_opt(group, help, choices=choices))


@dataclass
class TrainSettings:
    """Every setting of a training run (the flags, with the course's names and defaults)."""

    # -- data ------------------------------------------------------------------------------------
    train_data_path: str = field(
        default="",
        metadata=_opt(
            "data",
            "training tokens (.npy, or raw ids: .bin/.ids); several comma-separated, a glob or a directory of shards",
            required=True,
        ),
    )
    val_data_path: str | None = field(
        default=None,
        metadata=_opt(
            "data", "validation tokens (.npy or raw ids; or shards, as above); without it no evaluation runs"
        ),
    )
    data_dtype: str = field(
        default="uint16",
        metadata=_opt(
            "data", "element type of raw token files (.bin/.ids)", choices=("uint16", "uint32", "int32", "int64")
        ),
    )
    # -- model -----------------------------------------------------------------------------------
    vocab_size: int = _model("vocab_size", "tokenizer vocabulary size (every id must be below it)")
    context_length: int = _model("context_length", "tokens per training sequence")
    d_model: int = _model("d_model", "residual stream width")
    num_heads: int = _model("num_heads", "attention heads (must divide d_model)")
    d_ff: int = _model("d_ff", "feed-forward inner width")
    num_layers: int = _model("num_layers", "Transformer blocks")
    rope_theta: float = _model("rope_theta", "RoPE base")
    remove_rmsnorm: bool = _model("remove_rmsnorm", "ablation: no RMSNorm anywhere")
    use_post_norm: bool = _model("use_post_norm", "ablation: post-norm blocks")
    remove_rope: bool = _model("remove_rope", "ablation: no positional encoding (NoPE)")
    ffn_type: str = _model("ffn_type", "feed-forward type", choices=FFN_TYPES)
    attention: str = _model(
        "attention",
        "attention implementation: fast (blocked, recomputing) or plain (the handout's); same weights, so either can resume the other",
        choices=ATTENTION_TYPES,
    )
    embedding: str = _model(
        "embedding",
        "embedding backward: deterministic (gradient rows summed in a fixed order, bit-exact CPU runs) or plain (the handout's lookup)",
        choices=EMBEDDING_TYPES,
    )
    # -- model: the leaderboard recipe (cs336_basics.extensions.recipe; all off by default) -------------------
    qk_norm: bool = _model("qk_norm", "recipe: RMSNorm on each head's queries and keys")
    zero_init_proj: bool = _model("zero_init_proj", "recipe: attention output and FFN down projections start at zero")
    tie_embeddings: bool = _model("tie_embeddings", "recipe: the LM head shares the token-embedding matrix")
    logit_softcap: float = _model("logit_softcap", "recipe: C * tanh(logits / C) before loss and sampling (0: off)")
    value_residual: bool = _model("value_residual", "recipe: mix each layer's values with the first layer's (learned)")
    embed_norm: bool = _model("embed_norm", "recipe: RMSNorm after the token embedding")
    # -- optimization ----------------------------------------------------------------------------
    optimizer: str = field(
        default="adamw",
        metadata=_opt(
            "optimization",
            "adamw, or muon (orthogonalised updates for the blocks' matrices; AdamW for embeddings, head and gains)",
            choices=OPTIMIZERS,
        ),
    )
    muon_ns_dtype: str = field(
        default="auto",
        metadata=_opt(
            "optimization",
            "muon: dtype of the Newton-Schulz iteration (auto: bfloat16 where bf16 matmuls are fast, on CUDA and "
            "on CPUs with AMX; float32 elsewhere)",
            choices=("auto", "float32", "bfloat16"),
        ),
    )
    lr: float = field(default=6e-4, metadata=_opt("optimization", "maximum learning rate"))
    lr_hidden: float | None = field(
        default=None, metadata=_opt("optimization", "peak LR of the blocks' matrices (AdamW or Muon; default: --lr)")
    )
    lr_embed: float | None = field(
        default=None, metadata=_opt("optimization", "peak LR of the token embeddings (AdamW or Muon; default: --lr)")
    )
    lr_head: float | None = field(
        default=None, metadata=_opt("optimization", "peak LR of the LM head (AdamW or Muon; default: --lr)")
    )
    lr_scalar: float | None = field(
        default=None, metadata=_opt("optimization", "peak LR of the 1-D gains (AdamW or Muon; default: --lr)")
    )
    min_lr: float | None = field(
        default=None, metadata=_opt("optimization", "learning rate at the end of the cosine decay (default: lr/10)")
    )
    weight_decay: float = field(
        default=0.1,
        metadata=_opt("optimization", "AdamW decoupled weight decay (matrices and embeddings; not norm gains)"),
    )
    beta1: float = field(default=0.9, metadata=_opt("optimization", "AdamW beta1"))
    beta2: float = field(default=0.95, metadata=_opt("optimization", "AdamW beta2"))
    eps: float = field(default=1e-8, metadata=_opt("optimization", "AdamW epsilon"))
    batch_size: int = field(default=64, metadata=_opt("optimization", "sequences per micro-batch per process"))
    grad_accum_steps: int = field(default=1, metadata=_opt("optimization", "micro-batches per optimizer step"))
    max_iters: int = field(default=100000, metadata=_opt("optimization", "optimizer steps; the cosine decay ends here"))
    epochs: float | None = field(
        default=None,
        metadata=_opt(
            "optimization",
            "run length in epochs instead of --max_iters: an epoch is the train tokens / tokens per optimizer step "
            "(batch x context x accum x world); the console says how many steps it means",
        ),
    )
    warmup_iters: int | None = field(
        default=None,
        metadata=_opt(
            "optimization", f"linear warmup steps (default: 10%% of --max_iters, at most {COURSE_WARMUP_ITERS})"
        ),
    )
    grad_clip: float = field(
        default=1.0, metadata=_opt("optimization", "global gradient-norm clip (<= 0 disables clipping)")
    )
    max_bad_steps: int = field(
        default=3, metadata=_opt("optimization", "stop after this many consecutive non-finite steps")
    )
    # -- evaluation, logging, checkpoints ----------------------------------------------------------
    eval_interval: int = field(
        default=500, metadata=_opt("evaluation, logging, checkpoints", "evaluate every N steps (and at the end)")
    )
    eval_iters: int = field(
        default=100, metadata=_opt("evaluation, logging, checkpoints", "batches per split per evaluation")
    )
    skip_validation: bool = field(
        default=False,
        metadata=_opt("evaluation, logging, checkpoints", "never evaluate (no best.pt; early stopping is refused)"),
    )
    log_interval: int = field(
        default=100, metadata=_opt("evaluation, logging, checkpoints", "print/log a train line every N steps")
    )
    heartbeat_s: float = field(
        default=30.0,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "also print a train line when this many seconds passed without one (0: off)",
        ),
    )
    log_norms: bool = field(
        default=False, metadata=_opt("evaluation, logging, checkpoints", "log per-layer weight and activation RMS")
    )
    checkpoint_dir: str | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "run directory: checkpoints, metrics.jsonl, run_config.json (default: runs/<run_name>)",
        ),
    )
    checkpoint_interval: int = field(
        default=5000, metadata=_opt("evaluation, logging, checkpoints", "checkpoint every N steps (and at the end)")
    )
    keep_last: int | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints", "keep only the newest N numbered checkpoints (default: keep all)"
        ),
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints", "stop after N evaluations without a new best val loss (default: off)"
        ),
    )
    allow_checkpoint_failure: bool = field(
        default=False,
        metadata=_opt(
            "evaluation, logging, checkpoints", "keep training (with a warning) if a checkpoint cannot be written"
        ),
    )
    resume: bool = field(
        default=False,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "continue from the newest intact checkpoint in --checkpoint_dir (a fresh run if there is none), with "
            "its saved settings (flags given override them)",
        ),
    )
    resume_from: str | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "continue from exactly this checkpoint file, or a run directory's newest intact checkpoint, with its "
            "saved settings (flags given override them)",
        ),
    )
    use_wandb: bool = field(
        default=False,
        metadata=_opt("evaluation, logging, checkpoints", "log to Weights & Biases (uv sync --extra wandb)"),
    )
    wandb_project: str = field(
        default="transformer-lm", metadata=_opt("evaluation, logging, checkpoints", "wandb project")
    )
    wandb_run_name: str | None = field(
        default=None, metadata=_opt("evaluation, logging, checkpoints", "wandb run name")
    )
    tensorboard_dir: str | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "also write TensorBoard scalars here (uv sync --extra tensorboard); an empty value means off",
        ),
    )
    # -- objective and mixture of experts (cs336_basics.extensions.diffusion, cs336_basics.extensions.moe) -------------
    objective: str = field(
        default="ar",
        metadata=_opt(
            "objective and experts",
            "ar: next-token prediction; diffusion: masked diffusion (bidirectional attention, a [MASK] id "
            "= --vocab_size added to the model; evaluation reports the bound in nats/token)",
            choices=OBJECTIVES,
        ),
    )
    diffusion_eps: float = field(
        default=DEFAULT_EPS,
        metadata=_opt("objective and experts", "diffusion: noise levels are drawn from U(eps, 1)"),
    )
    num_experts: int = _model("num_experts", "--ffn_type moe: experts per layer", group="objective and experts")
    moe_top_k: int = _model("moe_top_k", "--ffn_type moe: experts per token", group="objective and experts")
    moe_shared_expert: bool = _model(
        "moe_shared_expert", "--ffn_type moe: add one always-on expert", group="objective and experts"
    )
    moe_capacity_factor: float | None = _model(
        "moe_capacity_factor",
        "--ffn_type moe: an expert takes at most factor * tokens * k / experts tokens, the rest are dropped "
        "and counted (unset: no limit)",
        group="objective and experts",
    )
    moe_load_balance_coef: float = field(
        default=0.01, metadata=_opt("objective and experts", "--ffn_type moe: weight of E * sum_i f_i P_i")
    )
    moe_aux_coef: float = field(
        default=0.0, metadata=_opt("objective and experts", "--ffn_type moe: weight of sum_i (f_i - 1/E)^2")
    )
    moe_z_coef: float = field(
        default=0.001,
        metadata=_opt("objective and experts", "--ffn_type moe: weight of the router z-loss mean(logsumexp^2)"),
    )
    # -- runtime ---------------------------------------------------------------------------------
    device: str = field(
        default="auto", metadata=_opt("runtime", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    )
    dtype: str = field(
        default="fp32",
        metadata=_opt("runtime", "autocast precision (fp16 uses a grad scaler)", choices=("fp32", "bf16", "fp16")),
    )
    compile: bool = field(default=False, metadata=_opt("runtime", "torch.compile the model"))
    tf32: bool = field(default=False, metadata=_opt("runtime", "allow TF32 matmuls on CUDA"))
    fsdp: bool = field(
        default=False,
        metadata=_opt(
            "runtime",
            "under torchrun: shard weights, gradients and optimizer state across ranks (torch FSDP2) instead of replicating them (DDP)",
        ),
    )
    activation_checkpointing: bool = field(
        default=False,
        metadata=_opt(
            "runtime",
            "recompute each Transformer block in backward instead of keeping its activations (less memory, ~1 more forward)",
        ),
    )
    deterministic: bool = field(
        default=False,
        metadata=_opt("runtime", "deterministic algorithms everywhere (slower; on CUDA also fixes cuBLAS's workspace)"),
    )
    # -- GPU-ready loop: the next step's batches gathered in a background thread ------------------
    prefetch: bool = field(
        default=True,
        metadata=_opt(
            "runtime",
            "gather the next step's batches in a background thread (pinned, non-blocking copy on CUDA); the same batches either way",
        ),
    )
    seed: int = field(
        default=42, metadata=_opt("runtime", "seeds init and the data order (rank r draws from seed + r * 1000003)")
    )
    # -- fine-tuning (cs336_basics.corpus): start from another run's weights -----------------------
    init_from: str | None = field(
        default=None,
        metadata=_opt(
            "fine-tuning",
            "start from this checkpoint's weights (.pt or run directory): fresh optimizer, step 0, its model shape",
        ),
    )
    allow_tokenizer_change: bool = field(
        default=False,
        metadata=_opt(
            "fine-tuning",
            "continue from a checkpoint (--init_from, --resume, --resume_from) whose training data came from "
            "another tokenizer than --train_data_path's (their sidecars' sha256 differ); without it such a run "
            "is refused",
        ),
    )
    config: str | None = field(
        default=None,
        metadata=_opt(
            "config",
            "TOML file with the same keys as the flags (flat or in [tables]), or a config written for the "
            "training crate, trainkit or the Accelerate trainer (YAML), recognised by its keys (see "
            "--config_dialect); flags given on the command line win",
        ),
    )
    config_dialect: str = field(
        default="auto",
        metadata=_opt(
            "config",
            "which system --config was written for: auto (recognised by its sections and keys), native (this "
            "program's keys), training_crate, trainkit or accelerate",
            choices=DIALECTS,
        ),
    )
    # -- trainer knobs: schedules, JSON console, checkpoint hooks, epoch cadence, ZeRO-1, run names, TB --
    lr_schedule: str = field(
        default="cosine",
        metadata=_opt(
            "optimization",
            "LR after the linear warmup: cosine (the course's), linear (to --min_lr at --max_iters), constant, "
            "or wsd (warmup-stable-decay: hold --lr, decay over the last --decay_frac)",
            choices=LR_SCHEDULES,
        ),
    )
    decay_frac: float = field(
        default=0.2, metadata=_opt("optimization", "wsd: fraction of --max_iters spent decaying to --min_lr")
    )
    decay_shape: str = field(
        default="linear",
        metadata=_opt("optimization", "wsd: shape of the decay (sqrt: 1 - sqrt(progress))", choices=DECAY_SHAPES),
    )
    log_format: str = field(
        default="text",
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "console records as text lines, or json: one metrics.jsonl-style object per line on stdout "
            "(setup messages go to stderr); trainkit: the same JSON lines with trainkit's keys (metrics.loss, "
            "metrics.lr, metrics.grad_l2_norm, metrics.lr/GROUP)",
            choices=LOG_FORMATS,
        ),
    )
    progress: bool = field(
        default=True,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "a live progress bar (steps, loss, tokens/s, ETA) redrawn under the lines, when stdout is a terminal "
            "and --log_format is text",
        ),
    )
    on_checkpoint: str | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "shell command run in the background after each checkpoint is written ({path}, {step}, {run_dir} "
            "are replaced, shell-quoted); one at a time, later ones queue",
        ),
    )
    on_checkpoint_timeout: float = field(
        default=300.0,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "at exit, wait this many seconds for --on_checkpoint commands still running or queued, then stop them",
        ),
    )
    eval_every_epochs: float | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "evaluate every F epochs (train tokens / tokens per step) instead of --eval_interval",
        ),
    )
    checkpoint_every_epochs: float | None = field(
        default=None,
        metadata=_opt("evaluation, logging, checkpoints", "checkpoint every F epochs instead of --checkpoint_interval"),
    )
    run_name: str | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "names the wandb/TensorBoard run and, without --checkpoint_dir, the run directory runs/NAME "
            "(default: a UTC timestamp; on resume, the checkpoint's run name)",
        ),
    )
    tensorboard_flush_every: int | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "flush the TensorBoard file every N steps (default: TensorBoard's own, every 120 s)",
        ),
    )
    zero1: bool = field(
        default=False,
        metadata=_opt(
            "runtime",
            "under torchrun: shard the optimizer state across ranks (ZeRO-1, torch's ZeroRedundancyOptimizer); "
            "weights and gradients stay replicated as in DDP",
        ),
    )
    # -- what other systems' config files need (cs336_basics.training.dialects; all off by default) ----------
    tokenizer_json: str | None = field(
        default=None,
        metadata=_opt(
            "data",
            "the data paths are UTF-8 text files: tokenize them with this byte-level BPE tokenizer.json, once, "
            "into RUN_DIR/data/ (reused while the texts and the tokenizer are unchanged)",
        ),
    )
    special_tokens_file: str | None = field(
        default=None,
        metadata=_opt(
            "data", "with --tokenizer_json: its special tokens, one per line (default: the file's added tokens)"
        ),
    )
    best_checkpoint_dir: str | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "also keep each new best checkpoint here (checkpoint_iter_N.pt and its sidecar), besides best.pt",
        ),
    )
    keep_best: int | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "with --best_checkpoint_dir: keep only the N best checkpoints there (default: keep all)",
        ),
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "with --early_stopping_patience: a val loss counts as an improvement only when it beats the best by "
            "more than this",
        ),
    )
    save_precision: str | None = field(
        default=None,
        metadata=_opt(
            "evaluation, logging, checkpoints",
            "also write the weights in this precision beside each checkpoint (checkpoint_iter_N.bf16.safetensors, "
            "best.bf16.safetensors); the checkpoints themselves stay fp32",
            choices=("fp32", "fp16", "bf16"),
        ),
    )
    wandb_entity: str | None = field(
        default=None, metadata=_opt("evaluation, logging, checkpoints", "wandb entity (team or user)")
    )

    # What reading --config had to say (a key of another system that changes nothing here...), said
    # once at start; not a setting (no flag, not saved).
    config_notes: typing.ClassVar[Sequence[str]] = ()

    # -- derived -----------------------------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> TrainSettings:
        """Settings built in Python, checked like the command line's (see :func:`settings_from_kwargs`)."""
        return settings_from_kwargs(kwargs)

    def model_config(self) -> ModelConfig:
        cfg = ModelConfig(
            **{f.name: getattr(self, f.name) for f in fields(ModelConfig) if f.name not in OBJECTIVE_MODEL_FIELDS}
        )
        return with_mask_token(cfg) if self.objective == "diffusion" else cfg

    @property
    def validation(self) -> bool:
        """Whether this run evaluates (needs a validation file and no --skip_validation)."""
        return self.val_data_path is not None and not self.skip_validation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, stored in checkpoints and run_config.json."""
        return dict(sorted(asdict(self).items()))


# ==============================================================================================
# the parser, built from the fields
# ==============================================================================================
def _field_type(f: Any) -> type:
    """``int | None`` -> int, ``bool`` -> bool, ..."""
    hint = typing.get_type_hints(TrainSettings)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


# Names people reach for that the course spells differently (checked before fuzzy matching).
_SYNONYMS = {"learning_rate": "lr", "max_lr": "lr", "wd": "weight_decay", "steps": "max_iters", "iters": "max_iters",
             "max_steps": "max_iters", "warmup_steps": "warmup_iters", "bs": "batch_size", "out_dir": "checkpoint_dir",
             "n_layer": "num_layers", "n_head": "num_heads", "n_embd": "d_model", "block_size": "context_length"}  # fmt: skip


_NO_VALUE = object()  # the caller does not know the value given with the unknown name
SWITCH = object()  # an unknown flag given without a value (like a boolean switch)


def _did_you_mean(flag: str, known: Sequence[str], value: Any = _NO_VALUE) -> str | None:
    """The known flag ``flag`` was probably meant to be, or None.

    A name people reach for that the course spells differently (``learning_rate``: ``--lr``), or a
    typo of a known name (within one edit or swap per six letters, at least one: ``max_itres``,
    ``lerning_rate``) of a setting whose type fits ``value`` (``SWITCH`` for a flag given without
    one). Nothing else: ``max_batches`` or ``eval_steps`` mean something other than ``--max_iters``
    and ``--eval_iters``, and an honest "unknown" beats a wrong guess.
    """
    name = flag.lstrip("-")
    if "=" in name:
        name, given = name.split("=", 1)
        value = given if value is _NO_VALUE else value
    if name in _SYNONYMS:
        return f"--{_SYNONYMS[name]}"
    budget = max(1, len(name) // 6)
    best: tuple[int, str] | None = None
    synonyms = [(f"--{k}", f"--{v}") for k, v in _SYNONYMS.items() if f"--{v}" in known]
    for spelled, target in [(k, k) for k in known] + synonyms:
        d = _typo_distance(name, spelled.lstrip("-"))
        if d <= budget and (best is None or d < best[0]) and _fits(target, value):
            best = (d, target)
    return best[1] if best else None


def _typo_distance(a: str, b: str) -> int:
    """Edits between two names: insert, delete, replace, or swap two neighbours (optimal string alignment)."""
    before, prev = [0] * (len(b) + 1), list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], before[j - 2] + 1)
        before, prev = prev, cur
    return prev[-1]


@functools.cache
def _setting_kinds() -> dict[str, tuple[type, Sequence[str] | None]]:
    return {f.name: (_field_type(f), f.metadata["choices"]) for f in fields(TrainSettings)}


def _fits(flag: str, value: Any) -> bool:
    """Whether ``value`` is of the kind the setting behind ``flag`` takes (unknown kinds fit)."""
    if value is _NO_VALUE or value is None:
        return True
    name = flag.lstrip("-")
    kinds = _setting_kinds()
    if name.startswith("no-") and name[3:] in kinds:
        kind, choices = bool, None
    elif name in kinds:
        kind, choices = kinds[name]
    else:
        return True  # a tool's own flag: its type is not known here
    if kind is bool:
        return value is SWITCH or isinstance(value, bool) or str(value).lower() in ("true", "false")
    if value is SWITCH or isinstance(value, bool):
        return False
    if isinstance(value, Path):
        value = str(value)
    if kind is str:
        return isinstance(value, str) and (not choices or value in choices)
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            return False
    return isinstance(value, int) if kind is int else isinstance(value, int | float)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error for unknown flags (plus "did you mean"), and numbers like
    ``-1e-3`` accepted as values (stock argparse takes them for flags)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.?\d+(?:[eE][-+]?\d+)?$|^-inf$|^-nan$")

    def error(self, message: str) -> typing.NoReturn:
        m = re.match(r"unrecognized arguments: (.*)", message)
        if m:
            hints = []
            args = m.group(1).split()
            for i, arg in enumerate(args):
                if arg.startswith("--"):
                    nxt = args[i + 1] if i + 1 < len(args) else None
                    value = SWITCH if nxt is None or nxt.startswith("--") else nxt
                    close = _did_you_mean(arg, list(self._option_string_actions), value)
                    hints.append(f"{arg} (did you mean {close}?)" if close else arg)
            if hints:
                message = f"unknown flag{'s' if len(hints) > 1 else ''}: {', '.join(hints)}"
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """All flags; booleans also take ``--no-X``."""
    p = _Parser(
        prog="python -m cs336_basics.training_together",
        description="Train a Transformer LM on memory-mapped token files (.npy, or raw ids in .bin/.ids).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(TrainSettings):
        meta = f.metadata
        g = p if meta["group"] == "config" else groups.setdefault(meta["group"], p.add_argument_group(meta["group"]))
        typ = _field_type(f)
        kw: dict[str, Any] = {"default": f.default, "help": meta["help"]}
        if typ is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = typ
            if meta["choices"]:
                kw["choices"] = list(meta["choices"])
        if meta["required"]:
            kw["required"] = True
            kw.pop("default")
        g.add_argument(f"--{f.name}", **kw)
    p.add_argument(
        "--override", action="append", default=[], metavar="PATH=VALUE",
        help="set one key of the --config TOML by its dotted path (optim.lr=3e-3, data.files[0]=...; repeatable); "
        "applied before the flags",
    )  # fmt: skip
    return p


def model_flags(cfg: ModelConfig) -> list[str]:
    """The training flags that rebuild ``cfg`` (the inverse of ``TrainSettings.model_config``): every
    field that differs from ModelConfig's default, booleans as ``--X`` / ``--no-X``."""
    flags: list[str] = []
    for f in fields(ModelConfig):
        value = getattr(cfg, f.name)
        if value == getattr(_MODEL_DEFAULTS, f.name):
            continue
        if isinstance(value, bool):
            flags.append(f"--{f.name}" if value else f"--no-{f.name}")
        else:
            flags += [f"--{f.name}", str(value)]
    return flags


# ==============================================================================================
# TOML config files
# ==============================================================================================
def flatten_toml(
    path: str, data: dict[str, Any], table: str = "", error: type[UserError] = ConfigError
) -> dict[str, tuple[Any, str]]:
    """``{key: (value, where)}`` from flat keys and keys grouped in (nested) tables.

    Tables only group keys (``[optim] lr = 1e-3`` is ``--lr 1e-3``); a key set twice is an ``error``
    naming both places. ``table`` names the enclosing table in messages (the sweep's ``[base]``).
    """
    out: dict[str, tuple[Any, str]] = {}

    def walk(d: dict[str, Any], table: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{table}.{k}" if table else k)
                continue
            key = k.replace("-", "_")
            where = f"[{table}] {k}" if table else k
            if key in out:
                raise error(f"{path}: key {key!r} is set twice ({out[key][1]} and {where})")
            out[key] = (v, where)

    walk(data, table)
    return out


def _coerce(path: str, where: str, action: argparse.Action, value: Any) -> Any:
    """Check/convert one TOML value the way argparse would treat the flag."""
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {where} must be true or false (like {flag}), got {value!r}")
        return value
    typ = action.type or str
    if isinstance(value, list) and action.dest in PATH_LISTS:  # several files: as comma-separated on the command line
        if not value or not all(isinstance(p, str) and p and "," not in p for p in value):
            raise ConfigError(f"{path}: {where} must be a list of file paths without commas, got {value!r}")
        value = ",".join(value)
    if isinstance(value, (bool, list, dict)) or value is None:
        raise ConfigError(f"{path}: {where} has an invalid value {value!r} for {flag}")
    if typ is float and isinstance(value, (int, float)):
        value = float(value)
    elif not isinstance(value, typ):
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {where} = {value!r} is not a valid {typ.__name__} for {flag}")
        try:
            value = typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: {where} = {value!r} is not a valid {typ.__name__} for {flag}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{path}: {where} = {value!r}: choose one of {', '.join(map(str, action.choices))}")
    return value


def load_config_file(
    path: str | None,
    parser: argparse.ArgumentParser,
    overrides: Sequence[str] = (),
    dialect: str = "auto",
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Read a config into ``{dest: value}``; unknown keys and bad values are ConfigErrors.

    Our TOML (keys = flag names); or a file written for another system (``dialect``, or recognised:
    :mod:`cs336_basics.training.dialects`), whose one-line notes are appended to ``notes``.
    ``overrides`` (``--override a.b=VALUE``) change the document first (see
    :mod:`cs336_basics.training.overrides`); without a file they apply to an empty one.
    """
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config", "override")}
    touched: dict[str, str] = {}
    try:
        data = read_config(path, ConfigError) if path is not None else {}
        kind = detect(path, data, actions, dialect) if path is not None else "native"
        if overrides:
            data, touched = apply_overrides(data, overrides, [*actions, *key_names(kind)], _did_you_mean)
        if kind == "native":
            found = flatten_toml(path or "--override", data)
        else:
            optional = {k for k, a in actions.items() if a.default is None and not a.required}
            found, said = translate(path, data, kind, actions, optional, _did_you_mean)
            if notes is not None:
                notes.extend(said)
    except ConfigError:
        raise
    except UserError as err:
        raise ConfigError(str(err)) from None
    values: dict[str, Any] = {}
    for key, (value, where) in found.items():
        action = actions.get(key)
        if action is None:
            close = _did_you_mean(key, [f"--{a}" for a in actions])
            hint = f"; did you mean {close[2:]!r}?" if close else " (not a training flag; see --help)"
            raise ConfigError(f"{path}: unknown key {where!r}{hint}")
        item = touched.get(key) or next((i for k, i in touched.items() if where.split(".")[-1] == k), None)
        source = f"--override {item!r}" if item else path
        values[key] = _coerce(source, where, action, value)
    return values


# ==============================================================================================
# parse + validate
# ==============================================================================================
def parse_settings(argv: Sequence[str] | None = None) -> TrainSettings:
    """Defaults < ``--config`` file < command line; derived defaults filled in; everything checked.

    argparse's own errors (unknown flag, missing value, ``--help``) raise SystemExit as usual.
    """
    return parse_settings_and_extras(argv)[0]


def parse_settings_and_extras(
    argv: Sequence[str] | None = None,
    add_extras: Callable[[argparse.ArgumentParser], None] | None = None,
    prog: str | None = None,
) -> tuple[TrainSettings, dict[str, Any]]:
    """:func:`parse_settings` for a tool that takes the training flags plus flags of its own
    (``add_extras`` adds them to the parser); returns the settings and the extra values."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--override", action="append", default=[])
    pre.add_argument("--config_dialect", default="auto", choices=DIALECTS)
    known, _ = pre.parse_known_args(argv)
    parser = build_parser()
    if prog:
        parser.prog = prog
    setting_names = {f.name for f in fields(TrainSettings)}
    if add_extras is not None:
        add_extras(parser)
    values: dict[str, Any] = {}
    notes: list[str] = []
    if known.config is not None or known.override:
        values = load_config_file(known.config, parser, known.override, known.config_dialect, notes)
        parser.set_defaults(**values)
        for action in parser._actions:
            if action.required and action.dest in values:
                action.required = False
    ns = vars(parser.parse_args(argv))
    ns.pop("override", None)
    settings = TrainSettings(**{k: v for k, v in ns.items() if k in setting_names})
    _settle(settings, set(values) | _given_on_command_line(argv, add_extras))
    settings.config_notes = notes  # said once at start (training_together.setup); not a setting
    return settings, {k: v for k, v in ns.items() if k not in setting_names}


def _given_on_command_line(argv: Sequence[str], add_extras: Callable | None) -> set[str]:
    """The settings named on the command line (abbreviations included): a parse with no defaults."""
    parser = build_parser()
    if add_extras is not None:
        add_extras(parser)
    for action in parser._actions:
        action.default, action.required = argparse.SUPPRESS, False
    given, _ = parser.parse_known_args(argv)
    return set(vars(given))


def _settle(s: TrainSettings, given: set[str]) -> None:
    """What both ways in (the command line, :func:`settings_from_kwargs`) do with the values read:
    on resume the checkpoint's saved settings as the base (:func:`adopt_saved_settings`), else the
    model shape of ``--init_from``'s checkpoint (a ``given`` shape setting must agree with either),
    the derived defaults, every check."""
    resumed_from = _resume_base(s, given)
    if s.init_from and resumed_from is None:  # a resume wins over --init_from
        from cs336_basics.corpus.finetune import init_shape

        source, shape = init_shape(s.init_from, MODEL_FIELDS)
        adopt_fixed(s, shape, given, source, "the model shape comes from the checkpoint")
    _derived_defaults(s)
    try:
        validate(s)
    except ConfigError as err:
        if resumed_from is None:
            raise
        raise ConfigError(f"{err} (settings not given come from {resumed_from})") from None
    check_given(s, given)


def _resume_base(s: TrainSettings, given: set[str]) -> str | None:
    """``--resume`` / ``--resume_from``: find the checkpoint (once: setup reuses it) and take its saved
    settings as the base; returns the flag and checkpoint it came from, None without one."""
    if not (s.resume or s.resume_from) or (s.resume and s.resume_from):  # both: refused by validate
        return None
    directory = s.checkpoint_dir
    if directory is None and s.resume:
        if not s.run_name:  # refused by check_knobs: --resume needs to know which run
            return None
        from cs336_basics.training.run_name import RUNS_DIR

        directory = str(RUNS_DIR / s.run_name)
    shape = {name: getattr(s, name) for name in MODEL_FIELDS if name in given}  # passes over other models' checkpoints
    found = peek_resume(s.resume_from, s.resume, directory, shape)
    if found is None:
        return None
    source = f"{'--resume_from' if s.resume_from else '--resume'} {found[0]}"
    adopt_saved_settings(s, found[1], given, source)
    return source


def adopt_saved_settings(s: TrainSettings, payload: dict[str, Any], given: set[str], source: str) -> None:
    """A resumed run's settings: the checkpoint's model shape, objective and optimizer (a ``given``
    one that contradicts them is refused in one line), and its saved value of every setting neither
    ``given`` nor in :data:`RESUME_FROM_FLAGS`. ``source`` names the checkpoint in messages."""
    saved = payload.get("train_config") if isinstance(payload.get("train_config"), dict) else {}
    shape = payload.get("model_config") if isinstance(payload.get("model_config"), dict) else {}
    fixed = {k: saved[k] for k in RESUME_FIXED if k in saved}
    made_by = data_shape(shape)  # the model's own record wins (as settings: a diffusion model's [MASK] is not data)
    fixed.update({k: made_by[k] for k in MODEL_FIELDS if k in made_by})
    adopt_fixed(s, fixed, given, source, "a resumed run keeps its checkpoint's model shape, objective and optimizer")
    actions = _setting_actions()
    for f in fields(TrainSettings):
        if f.name in given or f.name in fixed or f.name in RESUME_FROM_FLAGS or f.name not in saved:
            continue
        setattr(s, f.name, _setting_value(source, f"saved {f.name}", actions[f.name], saved[f.name]))
    if "max_iters" in given and "epochs" not in given:
        s.epochs = None  # a run length given in steps replaces the saved one in epochs


def adopt_fixed(s: Any, saved: dict[str, Any], given: set[str], source: str, keeps: str) -> None:
    """Set ``s``' settings named in ``saved`` to the checkpoint's values; ``given`` ones that
    contradict them are refused, all in one line naming both values (``--d_model 64 contradicts
    --init_from X (its d_model is 32); leave the flag out: <keeps>``)."""
    bad = []
    for name, want in saved.items():
        have = getattr(s, name)
        if name in given and not same_value(want, have):
            bad.append((name, have, want))
            continue
        setattr(s, name, float(want) if isinstance(have, float) and isinstance(want, int | float) else want)
    if bad:
        flags = ", ".join(f"--{name} {have}" for name, have, _ in bad)
        its = ", ".join(f"{name} is {want}" for name, _, want in bad)
        one = len(bad) == 1
        raise ConfigError(
            f"{flags} {'contradicts' if one else 'contradict'} {source} (its {its}); leave "
            f"{'the flag' if one else 'them'} out: {keeps}"
        )


def _derived_defaults(s: TrainSettings) -> None:
    if s.tensorboard_dir == "":  # off, like leaving it out (Path("") would be the working directory)
        s.tensorboard_dir = None
    if s.warmup_iters is None and s.epochs is None:  # with --epochs, once the run length is known (setup)
        s.warmup_iters = min(COURSE_WARMUP_ITERS, max(s.max_iters // 10, 0))
    if s.min_lr is None:
        s.min_lr = float(f"{s.lr / 10:.12g}")  # 6e-05, not 5.9999999999999995e-05


def _check_positive(s: TrainSettings, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        v = getattr(s, name)
        if v is not None and ((v < 0) if allow_zero else (v <= 0)):
            raise ConfigError(f"--{name} must be {'>= 0' if allow_zero else '> 0'}, got {v:g}")


def _check_hparams(s: TrainSettings, *names: str) -> None:
    """The optimizer's own rule for each (:func:`cs336_basics.optim.check_hparam`), as a ConfigError."""
    for name in names:
        if getattr(s, name) is not None:
            try:
                check_hparam(name, getattr(s, name))
            except ValueError as err:
                raise ConfigError(f"--{err}") from None


def validate(s: TrainSettings) -> ModelConfig:
    """Every cheap check on the settings, before any file is read. Returns the model config."""
    for name in ("grad_clip", "rope_theta", "heartbeat_s"):
        if not math.isfinite(getattr(s, name)):
            raise ConfigError(f"--{name} must be a finite number, got {getattr(s, name)}")
    _check_hparams(s, "lr", "min_lr", "weight_decay", "eps", "beta1", "beta2", "lr_hidden", "lr_embed", "lr_head",
                   "lr_scalar")  # fmt: skip
    _check_positive(s, "batch_size", "grad_accum_steps", "eval_interval", "eval_iters", "log_interval",
                    "checkpoint_interval", "max_bad_steps", "keep_last", "early_stopping_patience",
                    "keep_best")  # fmt: skip
    _check_positive(s, "max_iters", "warmup_iters", "seed", "heartbeat_s", allow_zero=True)
    if s.muon_ns_dtype != "auto" and s.optimizer != "muon":
        raise ConfigError(f"--muon_ns_dtype {s.muon_ns_dtype}: applies to --optimizer muon only")
    if any(getattr(s, f"lr_{k}") for k in ("hidden", "embed", "head", "scalar")) and s.lr == 0:
        raise ConfigError("per-group learning rates are scaled by the schedule of --lr: set --lr > 0")
    if s.min_lr > s.lr:
        raise ConfigError(f"--min_lr ({s.min_lr:g}) must not exceed --lr ({s.lr:g})")
    if s.epochs is not None and (not math.isfinite(s.epochs) or s.epochs <= 0):
        raise ConfigError(f"--epochs must be a finite number > 0, got {s.epochs}")
    if s.resume and s.resume_from:
        raise ConfigError("use either --resume (newest checkpoint in --checkpoint_dir) or --resume_from PATH, not both")
    if not (math.isfinite(s.early_stopping_threshold) and s.early_stopping_threshold >= 0):
        raise ConfigError(f"--early_stopping_threshold must be a finite number >= 0, got {s.early_stopping_threshold}")
    if s.early_stopping_threshold and not s.early_stopping_patience:
        raise ConfigError("--early_stopping_threshold applies to early stopping: add --early_stopping_patience N")
    if s.keep_best is not None and s.best_checkpoint_dir is None:
        raise ConfigError("--keep_best applies to --best_checkpoint_dir: add it, or leave --keep_best out")
    if s.special_tokens_file is not None and s.tokenizer_json is None:
        raise ConfigError("--special_tokens_file applies to --tokenizer_json (text data): add it, or leave it out")
    if s.config_dialect != "auto" and s.config is None:
        raise ConfigError(f"--config_dialect {s.config_dialect} says how to read --config FILE: add it")
    if s.early_stopping_patience and not s.validation:
        why = "--skip_validation" if s.skip_validation else "no --val_data_path"
        raise ConfigError(f"--early_stopping_patience needs validation losses, but this run has {why}")
    if s.fsdp and s.log_norms:
        raise ConfigError("--log_norms is not supported with --fsdp (weights are sharded across ranks)")
    check_knobs(s)
    if s.epochs is None:  # with --epochs the run length is known at setup (settle_run_length)
        check_run_length(s)
    _validate_objective_and_moe(s)
    if s.fsdp and s.tie_embeddings:
        raise ConfigError("--tie_embeddings is not supported with --fsdp (the shared matrix would be sharded twice)")
    try:
        return s.model_config().validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_run_length(s: TrainSettings) -> None:
    """The checks that need the run's length (``--max_iters``, or ``--epochs`` once the data is known)."""
    if s.max_iters > 0 and s.warmup_iters >= s.max_iters:
        raise ConfigError(
            f"--warmup_iters {s.warmup_iters} >= --max_iters {s.max_iters}: the learning rate would never reach "
            f"--lr; use a shorter warmup (e.g. --warmup_iters {max(s.max_iters // 10, 0)}) or leave it out "
            "(the default is 10% of the run)"
        )
    if s.lr_schedule == "wsd" and s.max_iters * (1.0 - s.decay_frac) < s.warmup_iters:
        raise ConfigError(
            f"--lr_schedule wsd: the decay (the last {s.decay_frac:g} of --max_iters {s.max_iters}) would start before "
            f"the warmup ends (--warmup_iters {s.warmup_iters}); use a smaller --decay_frac or a shorter warmup"
        )


def settle_run_length(s: TrainSettings) -> None:
    """At setup, once ``--epochs`` has set ``--max_iters``: the warmup default that follows it, and the
    checks that need it."""
    _derived_defaults(s)
    check_run_length(s)


def check_knobs(s: TrainSettings) -> None:
    """The trainer knobs' cheap checks (schedules, hooks, epoch cadence, ZeRO-1, run names, TensorBoard)."""
    for name in ("on_checkpoint_timeout", "eval_every_epochs", "checkpoint_every_epochs"):
        v = getattr(s, name)
        if v is not None and not math.isfinite(v):
            raise ConfigError(f"--{name} must be a finite number, got {v}")
    _check_positive(s, "eval_every_epochs", "checkpoint_every_epochs", "tensorboard_flush_every")
    _check_positive(s, "on_checkpoint_timeout", allow_zero=True)
    if s.lr_schedule != "wsd" and (s.decay_frac != 0.2 or s.decay_shape != "linear"):
        raise ConfigError(
            f"--decay_frac/--decay_shape shape the wsd schedule: add --lr_schedule wsd (now {s.lr_schedule})"
        )
    try:
        check_decay_frac(s.decay_frac)
    except ValueError as err:
        raise ConfigError(f"--{err}") from None
    if s.resume and s.checkpoint_dir is None and s.run_name is None:
        raise ConfigError("--resume needs to know which run: add --run_name NAME (runs/NAME) or --checkpoint_dir DIR")
    if s.zero1 and s.fsdp:
        raise ConfigError("--zero1 and --fsdp both shard the optimizer state: pick one (--fsdp also shards weights)")
    if s.tensorboard_flush_every is not None and s.tensorboard_dir is None:
        raise ConfigError("--tensorboard_flush_every needs --tensorboard_dir")
    if s.checkpoint_dir == "":
        raise ConfigError("--checkpoint_dir is empty: give a directory, or leave it out for runs/RUN_NAME")
    for name in ("init_from", "resume_from"):  # empty (an unset shell variable) would silently start from scratch
        if getattr(s, name) == "":
            raise ConfigError(f"--{name} is empty: give a checkpoint file or run directory, or leave it out")
    if s.on_checkpoint is not None and not s.on_checkpoint.strip():
        raise ConfigError("--on_checkpoint is empty: give a shell command, e.g. 'cp {path} /backup/'")
    if s.run_name is not None and (
        not s.run_name or s.run_name in (".", "..") or "/" in s.run_name or "\\" in s.run_name
    ):
        raise ConfigError(f"--run_name {s.run_name!r} must be a plain name (it names the directory runs/NAME)")


def settings_from_kwargs(kwargs: dict[str, Any]) -> TrainSettings:
    """:class:`TrainSettings` from keyword arguments, with the command line's checks (types, choices,
    ``init_from``'s model shape, derived defaults, :func:`validate`): what the Python API uses
    (``TrainSettings.from_kwargs``)."""
    actions = _setting_actions()
    values: dict[str, Any] = {}
    for key, value in kwargs.items():
        action = actions.get(key)
        if action is None:
            close = _did_you_mean(key, [f"--{a}" for a in actions], value)
            hint = f"; did you mean {close[2:]!r}?" if close else " (not a training setting)"
            raise ConfigError(f"TrainSettings: unknown setting {key!r}{hint}")
        values[key] = _setting_value("TrainSettings", key, action, value)
    missing = [f.name for f in fields(TrainSettings) if f.metadata["required"] and f.name not in values]
    if missing:
        raise ConfigError(f"TrainSettings: {', '.join(missing)} is required")
    s = TrainSettings(**values)
    _settle(s, set(values))
    return s


_UNSET_BY_DEFAULT = frozenset(f.name for f in fields(TrainSettings) if f.default is None)


def _setting_actions() -> dict[str, argparse.Action]:
    """Each setting's argparse action (its type and choices), by name."""
    return {a.dest: a for a in build_parser()._actions if a.option_strings and a.dest not in ("help", "override")}


def _setting_value(source: str, where: str, action: argparse.Action, value: Any) -> Any:
    """A value from Python (keyword arguments, a checkpoint's saved settings) checked like a TOML one;
    None for a setting whose default is None (unset)."""
    if isinstance(value, Path):
        value = str(value)
    if value is None and action.dest in _UNSET_BY_DEFAULT:
        return None
    return _coerce(source, where, action, value)


def check_given(s: TrainSettings, given: set[str]) -> None:
    """Checks that need to know which settings were given (flags, config keys or keyword arguments)."""
    for epochs, steps in (("eval_every_epochs", "eval_interval"), ("checkpoint_every_epochs", "checkpoint_interval")):
        if getattr(s, epochs) is not None and steps in given:
            raise ConfigError(f"--{epochs} and --{steps} both set the same interval: give one of them")
    if "epochs" in given and s.epochs is not None and "max_iters" in given:
        raise ConfigError("--epochs and --max_iters both set the run's length: give one of them")


def _validate_objective_and_moe(s: TrainSettings) -> None:
    """The masked-diffusion / MoE flags (the MoE model fields are checked by ModelConfig.validate)."""
    if not 0.0 < s.diffusion_eps < 1.0:
        raise ConfigError(f"--diffusion_eps must be in (0, 1), got {s.diffusion_eps}")
    _check_hparams(s, "moe_load_balance_coef", "moe_aux_coef", "moe_z_coef")


def schedule_notes(s: TrainSettings) -> list[str]:
    """Intervals longer than the run: legal, but worth one line at start so nobody waits for them."""
    notes = []
    if s.validation and s.eval_every_epochs is None and s.eval_interval > s.max_iters:
        notes.append(f"--eval_interval {s.eval_interval} > --max_iters {s.max_iters}: evaluation runs only at the end")
    if s.checkpoint_every_epochs is None and s.checkpoint_interval > s.max_iters:
        notes.append(
            f"--checkpoint_interval {s.checkpoint_interval} > --max_iters {s.max_iters}: a checkpoint is written only at the end"
        )
    if s.log_interval > s.max_iters:
        notes.append(
            f"--log_interval {s.log_interval} > --max_iters {s.max_iters}: train lines come only from the first iteration and the heartbeat"
        )
    return notes


def resume_report(saved: Any, s: TrainSettings) -> list[str]:
    """What a resumed run does differently from its checkpoint: one line per saved setting given
    anew (``lr: 0.003 (saved) -> 0.001 (flag)``), then one line for the settings that follow the
    flags rather than the checkpoint (:data:`RESUME_FROM_FLAGS`; the neutral ones are not shown)."""
    if not isinstance(saved, dict):
        return []
    now = s.to_dict()
    lines, runtime = [], []
    for k in sorted(now):
        if k not in saved or k in RESUME_NEUTRAL or same_value(saved[k], now[k]):
            continue
        if k in RESUME_FROM_FLAGS:
            runtime.append(f"{k} {saved[k]!r} -> {now[k]!r}")
        else:
            why = f"--epochs {s.epochs:g}" if k == "max_iters" and s.epochs is not None else "flag"
            lines.append(f"{k}: {_show(saved[k])} (saved) -> {_show(now[k])} ({why})")
    if runtime:
        lines.append("Following the flags, not the checkpoint: " + "; ".join(runtime))
    return lines


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
