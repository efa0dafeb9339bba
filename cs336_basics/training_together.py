"""The training program: ``python -m cs336_basics.training_together [flags]``.

Composes the from-scratch pieces (TransformerLM, cross_entropy, AdamW, cosine schedule, get_batch,
checkpoints) into a run that can be stopped, resumed, and run data-parallel:

* everything about *where* it runs (device, dtype/autocast, grad scaler, DDP) is decided once in
  ``setup`` (see :mod:`cs336_basics.runtime`); the loop has no branches on it;
* the data batches come from a ``np.random.Generator`` whose state is checkpointed, eval batches from
  a separate generator re-created for each eval, and the LR is a pure function of the step, so a
  resumed run replays an uninterrupted one bit for bit on CPU;
* faults are handled in the loop: SIGTERM/SIGINT stop cleanly with a checkpoint, non-finite
  losses skip the update, a failed checkpoint write stops the run before it trains without a
  safety net.

Exit codes: 0 success (including a graceful signal stop), 1 training failure, 2 bad input,
130 aborted by a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import hashlib
import json
import math
import os
import platform
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cs336_basics import runtime
from cs336_basics.checkpoint import (
    CheckpointError,
    CheckpointManager,
    read_checkpoint,
    save_checkpoint,
    verify_checkpoint,
    write_sidecar,
)
from cs336_basics.data import get_batch, load_tokens
from cs336_basics.errors import UserError
from cs336_basics.fsutil import atomic_write_text
from cs336_basics.metrics import RULE, Logger, NullLogger, RunLogger, check_extras
from cs336_basics.model import FFN_TYPES, ModelConfig, TransformerLM
from cs336_basics.nn_utils import clip_grad_norm, cross_entropy, perplexity
from cs336_basics.optim import AdamW, lr_cosine_schedule
from cs336_basics.runtime import print0

# Offsets that give every rank its own data stream from one --seed (a large odd constant, so
# seed+rank streams never coincide for small seeds).
RANK_SEED_STRIDE = 1_000_003
# Eval batches: the same fixed windows at every eval (a less noisy curve), from their own streams.
_EVAL_STREAM = {"train": 1, "val": 2}

# Fields of ModelConfig that the flags set; a resumed checkpoint must agree on all of them.
MODEL_FIELDS = (
    "vocab_size",
    "context_length",
    "d_model",
    "num_layers",
    "num_heads",
    "d_ff",
    "rope_theta",
    "remove_rmsnorm",
    "use_post_norm",
    "remove_rope",
    "ffn_type",
)


class ConfigError(UserError, ValueError):
    """A bad flag value or config file; the message names the flag/key."""


class TrainingFailure(Exception):
    """Training could not continue (non-finite steps, checkpoint write failure): exit status 1."""


# ==============================================================================================
# flags and config files
# ==============================================================================================
def build_parser() -> argparse.ArgumentParser:
    """All flags with the defaults users know (see the design notes); booleans also take --no-X."""
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.training_together",
        description="Train a Transformer LM on memory-mapped token files (.npy or raw .bin).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    B = argparse.BooleanOptionalAction
    p.add_argument("--config", type=str, default=None, help="TOML file with the same keys as the flags (flat or in [tables]); flags given on the command line win")

    g = p.add_argument_group("data")
    g.add_argument("--train_data_path", type=str, required=True, help="training tokens (.npy or raw .bin)")
    g.add_argument("--val_data_path", type=str, required=True, help="validation tokens (.npy or raw .bin)")
    g.add_argument("--data_dtype", type=str, default="uint16", choices=["uint16", "uint32", "int32", "int64"], help="element type of raw .bin token files")

    g = p.add_argument_group("model")
    g.add_argument("--vocab_size", type=int, default=10000, help="tokenizer vocabulary size (every id must be below it)")
    g.add_argument("--context_length", type=int, default=256, help="tokens per training sequence")
    g.add_argument("--d_model", type=int, default=512, help="residual stream width")
    g.add_argument("--num_heads", type=int, default=8, help="attention heads (must divide d_model)")
    g.add_argument("--d_ff", type=int, default=2048, help="feed-forward inner width")
    g.add_argument("--num_layers", type=int, default=6, help="Transformer blocks")
    g.add_argument("--rope_theta", type=float, default=10000.0, help="RoPE base")
    g.add_argument("--remove_rmsnorm", action=B, default=False, help="ablation: no RMSNorm anywhere")
    g.add_argument("--use_post_norm", action=B, default=False, help="ablation: post-norm blocks")
    g.add_argument("--remove_rope", action=B, default=False, help="ablation: no positional encoding (NoPE)")
    g.add_argument("--ffn_type", type=str, default="swiglu", choices=list(FFN_TYPES), help="feed-forward type")

    g = p.add_argument_group("optimization")
    g.add_argument("--lr", type=float, default=6e-4, help="maximum learning rate")
    g.add_argument("--min_lr", type=float, default=6e-5, help="learning rate at the end of the cosine decay")
    g.add_argument("--weight_decay", type=float, default=0.1, help="AdamW decoupled weight decay (matrices and embeddings; not norm gains)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1")
    g.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2")
    g.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon")
    g.add_argument("--batch_size", type=int, default=64, help="sequences per micro-batch per process")
    g.add_argument("--grad_accum_steps", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--max_iters", type=int, default=100000, help="optimizer steps; the cosine decay ends here")
    g.add_argument("--warmup_iters", type=int, default=2000, help="linear warmup steps")
    g.add_argument("--grad_clip", type=float, default=1.0, help="global gradient-norm clip (<= 0 disables clipping)")
    g.add_argument("--max_bad_steps", type=int, default=3, help="stop after this many consecutive non-finite steps")

    g = p.add_argument_group("evaluation, logging, checkpoints")
    g.add_argument("--eval_interval", type=int, default=500, help="evaluate every N steps (and at the end)")
    g.add_argument("--eval_iters", type=int, default=100, help="batches per split per evaluation")
    g.add_argument("--log_interval", type=int, default=100, help="print/log a train line every N steps")
    g.add_argument("--log_norms", action=B, default=False, help="log per-layer weight and activation RMS")
    g.add_argument("--checkpoint_dir", type=str, default="checkpoints", help="run directory: checkpoints, metrics.jsonl, run_config.json")
    g.add_argument("--checkpoint_interval", type=int, default=5000, help="checkpoint every N steps (and at the end)")
    g.add_argument("--keep_last", type=int, default=None, help="keep only the newest N numbered checkpoints (None: keep all)")
    g.add_argument("--early_stopping_patience", type=int, default=None, help="stop after N evaluations without a new best val loss (None: off)")
    g.add_argument("--allow_checkpoint_failure", action=B, default=False, help="keep training (with a warning) if a checkpoint cannot be written")
    g.add_argument("--resume", action=B, default=False, help="continue from the newest intact checkpoint in --checkpoint_dir")
    g.add_argument("--resume_from", type=str, default=None, help="continue from this checkpoint file")
    g.add_argument("--use_wandb", action=B, default=False, help="log to Weights & Biases (uv sync --extra wandb)")
    g.add_argument("--wandb_project", type=str, default="transformer-lm", help="wandb project")
    g.add_argument("--wandb_run_name", type=str, default=None, help="wandb run name")
    g.add_argument("--tensorboard_dir", type=str, default=None, help="also write TensorBoard scalars here (uv sync --extra tensorboard)")

    g = p.add_argument_group("runtime")
    g.add_argument("--device", type=str, default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--dtype", type=str, default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast precision (fp16 uses a grad scaler)")
    g.add_argument("--compile", action=B, default=False, help="torch.compile the model")
    g.add_argument("--tf32", action=B, default=False, help="allow TF32 matmuls on CUDA")
    g.add_argument("--seed", type=int, default=42, help="seeds init and the data order (rank r draws from seed + r * 1000003)")
    return p


def _flatten_toml(path: str, data: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """``{key: (value, where)}`` from flat keys and keys grouped in (nested) tables."""
    out: dict[str, tuple[Any, str]] = {}

    def walk(d: dict[str, Any], table: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{table}.{k}" if table else k)
                continue
            key = k.replace("-", "_")
            where = f"[{table}] {k}" if table else k
            if key in out:
                raise ConfigError(f"{path}: key {key!r} is set twice ({out[key][1]} and {where})")
            out[key] = (v, where)

    walk(data, "")
    return out


def _coerce(path: str, where: str, action: argparse.Action, value: Any) -> Any:
    """Check/convert one TOML value the way argparse would treat the flag."""
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {where} must be true or false (like {flag}), got {value!r}")
        return value
    typ = action.type or str
    if isinstance(value, bool) or isinstance(value, (list, dict)) or value is None:
        raise ConfigError(f"{path}: {where} has an invalid value {value!r} for {flag}")
    if typ is float and isinstance(value, (int, float)):
        value = float(value)
    elif typ is int and isinstance(value, int):
        pass
    elif typ is str and isinstance(value, str):
        pass
    elif isinstance(value, str):
        try:
            value = typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: {where} = {value!r} is not a valid {typ.__name__} for {flag}") from None
    else:
        raise ConfigError(f"{path}: {where} = {value!r} is not a valid {typ.__name__} for {flag}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{path}: {where} = {value!r}: choose one of {', '.join(map(str, action.choices))}")
    return value


def load_config_file(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a TOML config into ``{dest: value}``; unknown keys and bad values are ConfigErrors."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path}: is a directory, expected a .toml file") from None
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text") from None
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    values: dict[str, Any] = {}
    for key, (value, where) in _flatten_toml(path, data).items():
        action = actions.get(key)
        if action is None:
            raise ConfigError(f"{path}: unknown key {where!r} (not a training flag; see --help)")
        values[key] = _coerce(path, where, action, value)
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Defaults < ``--config`` file < command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = build_parser()
    if known.config is not None:
        values = load_config_file(known.config, parser)
        parser.set_defaults(**values)
        for action in parser._actions:
            if action.required and action.dest in values:
                action.required = False
    return parser.parse_args(argv)


def _positive(args: argparse.Namespace, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        v = getattr(args, name)
        if v is None:
            continue
        if (v < 0) if allow_zero else (v <= 0):
            need = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"--{name} must be {need}, got {v}")


def validate_args(args: argparse.Namespace) -> ModelConfig:
    """Every cheap check on the flags, before any file is read. Returns the model config."""
    _positive(args, "batch_size", "grad_accum_steps", "eval_interval", "eval_iters", "log_interval",
              "checkpoint_interval", "max_bad_steps", "keep_last", "early_stopping_patience")
    _positive(args, "max_iters", "warmup_iters", "lr", "min_lr", "weight_decay", "eps", "seed", allow_zero=True)
    for name in ("lr", "min_lr", "weight_decay", "eps", "grad_clip", "beta1", "beta2", "rope_theta"):
        v = getattr(args, name)
        if not math.isfinite(v):
            raise ConfigError(f"--{name} must be a finite number, got {v}")
    for name in ("beta1", "beta2"):
        v = getattr(args, name)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"--{name} must be in [0, 1), got {v}")
    if args.min_lr > args.lr:
        raise ConfigError(f"--min_lr ({args.min_lr}) must not exceed --lr ({args.lr})")
    if args.resume and args.resume_from:
        raise ConfigError("use either --resume (newest checkpoint in --checkpoint_dir) or --resume_from PATH, not both")
    cfg = ModelConfig(**{f: getattr(args, f) for f in MODEL_FIELDS})
    try:
        cfg.validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


def train_config_dict(args: argparse.Namespace) -> dict[str, Any]:
    """All settings as plain JSON values (stored in checkpoints, sidecars and run_config.json)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())}


# ==============================================================================================
# signals
# ==============================================================================================
class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints and exits 0.

    A second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once (exit 130). The handler only
    sets attributes: printing from a signal handler can deadlock on the stdout lock.
    """

    def __init__(self) -> None:
        self.signame: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signame is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signame is not None:
            raise KeyboardInterrupt
        if self.signame is None:
            self.signame = signal.Signals(signum).name

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. not in some test runners)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


# ==============================================================================================
# pieces of the run
# ==============================================================================================
class NormRecorder:
    """Per-layer weight RMS and activation RMS (forward hooks, registered only with --log_norms)."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: dict[str, nn.Module] = {"token_embeddings": model.token_embeddings}
        for i, layer in enumerate(model.layers):
            self.modules[f"layers.{i}"] = layer
        self.modules["ln_final"] = model.ln_final
        self.modules["lm_head"] = model.lm_head
        self.active = False
        self._acts: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self.active:
                out = output[0] if isinstance(output, tuple) else output
                self._acts[name] = out.detach().float().pow(2).mean().sqrt()

        return hook

    @torch.no_grad()
    def weight_rms(self) -> dict[str, float]:
        out = {}
        for name, m in self.modules.items():
            params = list(m.parameters())
            if params:
                sq = sum(p.detach().float().pow(2).sum() for p in params)
                out[name] = float((sq / sum(p.numel() for p in params)).sqrt())
        return out

    def act_rms(self) -> dict[str, float]:
        acts = {k: float(v) for k, v in self._acts.items()}
        self._acts.clear()
        return acts

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _rng_seed(seed: int, rank: int) -> int:
    return seed + rank * RANK_SEED_STRIDE


def make_data_rng(seed: int, rank: int) -> np.random.Generator:
    """The training-batch stream of one rank; its state is saved in every checkpoint."""
    return np.random.Generator(np.random.PCG64(_rng_seed(seed, rank)))


def make_eval_rng(seed: int, rank: int, split: str) -> np.random.Generator:
    """A fresh generator per eval and split, so evaluating never disturbs the training stream."""
    return np.random.Generator(np.random.PCG64([seed, _EVAL_STREAM[split], rank]))


@torch.no_grad()
def evaluate(
    model: nn.Module, data: np.ndarray, rt: runtime.Runtime, args: argparse.Namespace, split: str
) -> tuple[float, float]:
    """Mean loss and next-token accuracy over ``--eval_iters`` batches (averaged over ranks)."""
    rng = make_eval_rng(args.seed, rt.rank, split)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=rt.device)  # loss sum, correct, count
    try:
        for _ in range(args.eval_iters):
            x, y = get_batch(data, args.batch_size, args.context_length, rt.device, rng=rng)
            with rt.autocast():
                logits = model(x)
            totals[0] += cross_entropy(logits, y).double()
            totals[1] += (logits.argmax(dim=-1) == y).sum().double()
            totals[2] += y.numel()
    finally:
        model.train(was_training)
    runtime.all_reduce_sum(totals)
    n_batches = args.eval_iters * rt.world_size
    loss, correct, count = totals.tolist()
    return loss / n_batches, correct / max(count, 1.0)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings; not the 1-D norm gains (decaying a gain toward 0 only hurts)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _config_diff(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    diffs = []
    for k in MODEL_FIELDS:
        a, b = saved.get(k), wanted.get(k)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            same = float(a) == float(b)
        else:
            same = a == b
        if not same:
            diffs.append(f"{k} {a!r} in checkpoint vs {b!r} from flags")
    extra = sorted(set(saved) - set(MODEL_FIELDS))
    if extra:
        diffs.append(f"unknown fields in checkpoint: {', '.join(extra)}")
    return diffs


@dataclass
class Resume:
    path: Path
    payload: dict[str, Any]


def _check_fits(path: Path, payload: dict[str, Any], cfg: ModelConfig) -> None:
    """The checkpoint must be for the same architecture as the flags and carry training state."""
    saved_cfg = payload.get("model_config")
    if not isinstance(saved_cfg, dict):
        raise CheckpointError(f"{path}: checkpoint has no model_config; cannot check it matches the flags")
    diffs = _config_diff(saved_cfg, cfg.to_dict())
    if diffs:
        raise CheckpointError(f"{path}: model config does not match the flags: " + "; ".join(diffs))
    try:
        int(payload["iteration"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: iteration {payload['iteration']!r} is not an integer") from None
    if not isinstance(payload.get("optimizer"), dict):
        raise CheckpointError(f"{path}: checkpoint has no optimizer state; cannot resume training from it")


def resolve_resume(args: argparse.Namespace, manager: CheckpointManager, cfg: ModelConfig) -> Resume | None:
    """Find and read the checkpoint to continue from (or None for a fresh run); check it fits.

    ``--resume`` walks the numbered checkpoints newest first and takes the first one that verifies
    against its sidecar, loads safely and fits the flags, printing ``Skipping <path>: <reason>``
    for each one passed over. ``--resume_from`` takes exactly the file given (any problem is an error).
    """
    if args.resume_from:
        path = Path(args.resume_from)
        payload = read_checkpoint(path)
        _check_fits(path, payload, cfg)
        return Resume(path, payload)
    if not args.resume:
        return None
    candidates = manager.list()
    reasons: list[str] = []
    for path in reversed(candidates):
        try:
            verify_checkpoint(path)
            payload = read_checkpoint(path, verify=False)
            _check_fits(path, payload, cfg)
        except CheckpointError as err:
            reason = str(err)
            print0(f"Skipping {reason}" if reason.startswith(str(path)) else f"Skipping {path}: {reason}")
            reasons.append(reason)
            continue
        return Resume(path, payload)
    if not candidates:
        raise CheckpointError(
            f"--resume: no checkpoint in {manager.directory} to resume from (drop --resume to start a new run)"
        )
    raise CheckpointError(
        f"--resume: none of the {len(candidates)} checkpoints in {manager.directory} can be resumed; newest: {reasons[0]}"
    )


def _changed_settings(saved: Any, now: dict[str, Any]) -> list[str]:
    """Training settings that differ from the checkpoint's (allowed on resume; reported)."""
    if not isinstance(saved, dict):
        return []
    ignore = {"resume", "resume_from", "config", "checkpoint_dir", "train_data_path", "val_data_path",
              "use_wandb", "wandb_project", "wandb_run_name", "tensorboard_dir", *MODEL_FIELDS}
    return [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(now) if k not in ignore and k in saved and saved[k] != now[k]]


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter's bytes: ranks of a correct DDP run end with the same digest."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ==============================================================================================
# the trainer
# ==============================================================================================
class Trainer:
    """State of one run; ``run()`` is the loop. Split out of ``main`` so the pieces stay readable."""

    def __init__(self, args: argparse.Namespace, cfg: ModelConfig, stop: StopRequest) -> None:
        self.args = args
        self.cfg = cfg
        self.stop = stop
        self.train_config = train_config_dict(args)

        # -- cheap checks first (exit 2 before anything heavy) ------------------------------------
        self.rt = runtime.setup_runtime(args.device, args.dtype, args.tf32)
        self.run_dir = Path(args.checkpoint_dir)
        self.manager = CheckpointManager(self.run_dir, keep_last=args.keep_last)
        if self.rt.is_main:
            self.manager.check_writable()
            for stale in self.manager.remove_stale_temps():
                runtime.eprint0(f"note: removed {stale}, a partial checkpoint left by an interrupted write")
        check_extras(args.use_wandb, args.tensorboard_dir)
        self.resume = resolve_resume(args, self.manager, cfg)
        if self.resume is None and self.rt.is_main:
            existing = self.manager.list()
            if existing:
                runtime.eprint0(
                    f"warning: {self.run_dir} already holds checkpoints (newest: {existing[-1].name}); this new run "
                    "overwrites same-numbered ones and --resume later picks the newest. Pass --resume to continue "
                    "that run, or use a fresh --checkpoint_dir."
                )

        # -- data: memory-mapped, every id checked against the vocab ------------------------------
        print0("Loading data with memory mapping...")
        self.train_data = load_tokens(args.train_data_path, args.vocab_size, args.data_dtype, args.context_length)
        self.val_data = load_tokens(args.val_data_path, args.vocab_size, args.data_dtype, args.context_length)
        print0(f"Train data size: {len(self.train_data):,} tokens")
        print0(f"Validation data size: {len(self.val_data):,} tokens")

        self.logger: Logger = NullLogger()

    # -- setup of the heavy parts -----------------------------------------------------------------
    def build(self) -> None:
        args, rt = self.args, self.rt
        runtime.init_process_group(rt)
        runtime.seed_everything(args.seed)  # same init on every rank (DDP also broadcasts rank 0's)

        print0("Initializing model...")
        self.model = TransformerLM(self.cfg, device=rt.device)
        n_params = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        print0(f"Total parameters: {n_params:,}")
        print0(f"Trainable parameters: {n_train:,}")
        self.optimizer = AdamW(
            _param_groups(self.model, args.weight_decay),
            lr=args.lr,
            betas=(args.beta1, args.beta2),
            eps=args.eps,
            weight_decay=args.weight_decay,
        )
        self.scaler = rt.scaler
        self.data_rng = make_data_rng(args.seed, rt.rank)
        self.start_iter = 0
        self.best_val: float | None = None
        self.tokens_offset = 0
        self.elapsed_offset = 0.0
        self.evals_since_best = 0
        if self.resume is not None:
            self._load_resume_state()

        self.norms = NormRecorder(self.model) if args.log_norms else None
        # Wrappers: compile, then DDP (torch's DistributedDataParallel is a wrapper that averages
        # gradients across processes, not a layer; the model itself is all our own code).
        model: nn.Module = self.model
        if args.compile:
            model = torch.compile(model)
        self.eval_model = model
        if rt.info.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # The only buffers are RoPE tables, identical on every rank: no need to sync them each
            # forward (torch >= 2.15 spells this forward_sync_buffers; older releases broadcast_buffers).
            no_sync_kw = (
                "forward_sync_buffers"
                if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
                else "broadcast_buffers"
            )
            model = DDP(
                model,
                device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                **{no_sync_kw: False},
            )
        self.train_model = model
        self.tokens_per_step = args.batch_size * args.context_length * args.grad_accum_steps * rt.world_size

        if rt.is_main:
            self.logger = RunLogger(
                self.run_dir,
                use_wandb=args.use_wandb,
                wandb_project=args.wandb_project,
                wandb_run_name=args.wandb_run_name,
                tensorboard_dir=args.tensorboard_dir,
                config={**self.train_config, "model_config": self.cfg.to_dict(), "world_size": rt.world_size},
                resume_step=self.start_iter if self.resume is not None else None,
            )
            self._write_run_config(n_params)
            if self.resume is not None:
                self.logger.event(self.start_iter, "resume", str(self.resume.path))

    def _load_resume_state(self) -> None:
        assert self.resume is not None
        path, payload = self.resume.path, self.resume.payload
        try:
            self.model.load_state_dict(payload["model"])
        except (RuntimeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path}: cannot load model weights: {str(err).splitlines()[0]}") from None
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, RuntimeError, TypeError) as err:
            raise CheckpointError(f"{path}: optimizer state does not fit: {str(err).splitlines()[0]}") from None
        # load_state_dict also restores the saved hyperparameters; the flags win (lr is set per step).
        for group, fresh in zip(self.optimizer.param_groups, _param_groups(self.model, self.args.weight_decay)):
            group["weight_decay"] = fresh["weight_decay"]
            group["betas"] = (self.args.beta1, self.args.beta2)
            group["eps"] = self.args.eps
        scaler_state = payload.get("scaler")
        if scaler_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler_state)
        self.start_iter = int(payload["iteration"])
        bv = payload.get("best_val_loss")
        self.best_val = float(bv) if isinstance(bv, (int, float)) else None
        self.evals_since_best = int(payload.get("evals_since_best", 0) or 0)
        self.tokens_offset = int(payload.get("tokens_seen", 0) or 0)
        self.elapsed_offset = float(payload.get("elapsed_s", 0.0) or 0.0)
        rng = payload.get("rng") or {}
        with contextlib.suppress(Exception):  # global RNGs are not used by training; best effort
            runtime.restore_rng_state(rng)
        data_states = rng.get("data") or []
        saved_world = int(payload.get("world_size", len(data_states) or 1))
        if self.rt.rank < len(data_states) and data_states[self.rt.rank] is not None:
            try:
                self.data_rng.bit_generator.state = data_states[self.rt.rank]
            except (TypeError, ValueError, KeyError) as err:
                raise CheckpointError(f"{path}: data sampler state is unusable ({err})") from None
        else:
            # No saved stream for this rank: derive a fresh one that still depends on the step.
            self.data_rng = np.random.Generator(np.random.PCG64([self.args.seed, self.rt.rank, self.start_iter]))
        print0(f"Resuming from {path} (iteration {self.start_iter})")
        if saved_world != self.rt.world_size:
            print0(
                f"Note: checkpoint was written with world size {saved_world}, now {self.rt.world_size}; "
                "the data order will differ from an uninterrupted run"
            )
        changed = _changed_settings(payload.get("train_config"), self.train_config)
        if changed:
            print0("Settings changed since the checkpoint: " + "; ".join(changed))

    def _write_run_config(self, n_params: int) -> None:
        info = {
            "train_config": self.train_config,
            "model_config": self.cfg.to_dict(),
            "seed": self.args.seed,
            "world_size": self.rt.world_size,
            "device": str(self.rt.device),
            "dtype": self.args.dtype,
            "tokens_per_step": self.tokens_per_step,
            "num_parameters": n_params,
            "start_iteration": self.start_iter,
            "resumed_from": str(self.resume.path) if self.resume else None,
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "argv": sys.argv,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "train_data_tokens": len(self.train_data),
            "val_data_tokens": len(self.val_data),
        }
        atomic_write_text(self.run_dir / "run_config.json", json.dumps(info, indent=2, default=str) + "\n")

    # -- checkpoints --------------------------------------------------------------------------------
    def _payload(self, iteration: int, data_states: list[Any]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": int(iteration),
            "model_config": self.cfg.to_dict(),
            "train_config": self.train_config,
            "rng": {**runtime.capture_rng_state(), "data": data_states},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "best_val_loss": self.best_val,
            "evals_since_best": self.evals_since_best,
            "tokens_seen": self.tokens_offset + (iteration - self.start_iter) * self.tokens_per_step,
            "elapsed_s": self._elapsed(),
            "world_size": self.rt.world_size,
        }

    def save(self, iteration: int, *, is_best: bool = False, best_only: bool = False, data_state: Any = None) -> Path | None:
        """Collective: gather every rank's data-stream state, rank 0 writes; all ranks agree on failure."""
        state = data_state if data_state is not None else self.data_rng.bit_generator.state
        data_states = runtime.all_gather_object(state)
        path: Path | None = None
        error: str | None = None
        if self.rt.is_main:
            sidecar = {"model_config": self.cfg.to_dict(), "train_config": self.train_config}
            try:
                payload = self._payload(iteration, data_states)
                if best_only:
                    path = self.manager.best_path
                    extra = {k: v for k, v in payload.items() if k not in ("model", "optimizer", "iteration", "model_config")}
                    save_checkpoint(self.model, self.optimizer, iteration, path, **extra)
                    write_sidecar(path, {"iteration": int(iteration), **sidecar})
                else:
                    path = self.manager.save(payload, iteration, sidecar_extra=sidecar, is_best=is_best)
            except (CheckpointError, OSError) as err:
                error = str(err)
        failed = torch.tensor([1.0 if error else 0.0], dtype=torch.float64, device=self.rt.device)
        runtime.all_reduce_sum(failed)
        if error is None and failed.item() == 0:
            if path is not None:
                if not best_only:
                    self.last_saved = path
                print0(f"Saved checkpoint to {path}")
            return path
        if self.rt.is_main:
            prev = self.last_saved
            safe = f"the previous checkpoint {prev} is intact" if prev else "no earlier checkpoint of this run exists"
            msg = f"{error}; {safe}"
            if self.args.allow_checkpoint_failure:
                print(f"warning: {msg}; continuing without this checkpoint (--allow_checkpoint_failure)", file=sys.stderr, flush=True)
                self.logger.event(iteration, "checkpoint_failure", msg)
                return None
            self.logger.event(iteration, "checkpoint_failure", msg)
            raise TrainingFailure(msg + " (pass --allow_checkpoint_failure to keep training without checkpoints)")
        if self.args.allow_checkpoint_failure:
            return None
        raise TrainingFailure("rank 0 could not write a checkpoint")

    # -- the loop -------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.elapsed_offset + (time.perf_counter() - self.t0)

    def _lr(self, it: int) -> float:
        return lr_cosine_schedule(it, self.args.lr, self.args.min_lr, self.args.warmup_iters, self.args.max_iters)

    def _eval_record(self, step: int) -> dict[str, Any]:
        train_loss, _ = evaluate(self.eval_model, self.train_data, self.rt, self.args, "train")
        val_loss, val_acc = evaluate(self.eval_model, self.val_data, self.rt, self.args, "val")
        return {
            "step": step,
            "tokens": self.tokens_offset + (step - self.start_iter) * self.tokens_per_step,
            "time_s": round(self._elapsed(), 3),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_perplexity": perplexity(val_loss),
            "val_accuracy": val_acc,
        }

    def _progress_line(self, step: int) -> str:
        """Where the run stands and when it will end (wall clock of this process, evals included)."""
        done = step - self.start_iter
        spent = time.perf_counter() - self.t0
        left = (self.args.max_iters - step) * spent / max(done, 1)
        pct = 100.0 * step / max(self.args.max_iters, 1)
        return (
            f"Progress: iteration {step}/{self.args.max_iters} ({pct:.1f}%) | "
            f"elapsed {_hms(self._elapsed())} | ETA {_hms(left)}"
        )

    def _is_improvement(self, val_loss: float) -> bool:
        return math.isfinite(val_loss) and (self.best_val is None or val_loss < self.best_val)

    def run(self) -> int:
        args, rt = self.args, self.rt
        self.t0 = time.perf_counter()
        self.last_saved: Path | None = self.resume.path if self.resume else None
        accum = args.grad_accum_steps
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = args.grad_clip if args.grad_clip > 0 else math.inf
        ddp = rt.info.is_distributed

        print0(f"Starting training from iteration {self.start_iter}...")
        print0(f"Device: {rt.device}")
        print0(f"Max iterations: {args.max_iters}")
        print0(
            f"World size: {rt.world_size} | Precision: {args.dtype} | Tokens per optimizer step: "
            f"{self.tokens_per_step:,} (batch {args.batch_size} x context {args.context_length} x "
            f"accum {accum} x world {rt.world_size})"
        )
        print0(RULE)

        # Graceful stop from here on (before this, Ctrl-C simply aborts: there is nothing to save yet).
        self.stop.install()
        step = self.start_iter
        bad_streak = 0
        last_good: tuple[int, Any] | None = None  # (iteration, data-stream state) before a bad streak
        stopped_by: str | None = None
        early_stopped = False
        scaler_skips = 0  # fp16 overflow skips: expected now and then, counted, never a failure
        t_log = time.perf_counter()
        steps_since_log = 0
        self.train_model.train()

        while step < args.max_iters:
            it = step  # 0-based index of the iteration being run; the LR is a pure function of it
            lr = self._lr(it)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            rng_before = self.data_rng.bit_generator.state
            record_norms = self.norms is not None and (step + 1) % args.log_interval == 0
            loss_sum = torch.zeros((), dtype=torch.float32, device=rt.device)
            for micro in range(accum):
                x, y = get_batch(self.train_data, args.batch_size, args.context_length, rt.device, rng=self.data_rng)
                last = micro == accum - 1
                if self.norms is not None:
                    self.norms.active = record_norms and last
                # Under DDP, only the last micro-step all-reduces gradients.
                sync = contextlib.nullcontext() if (last or not ddp) else self.train_model.no_sync()
                with sync:
                    with rt.autocast():
                        logits = self.train_model(x)
                    loss = cross_entropy(logits, y)
                    self.scaler.scale(loss / accum).backward()
                loss_sum += loss.detach().float()
            self.scaler.unscale_(self.optimizer)
            grad_norm = clip_grad_norm(params, clip)

            # One small all-reduce per step: mean loss + "a rank got a stop signal".
            stats = torch.tensor(
                [loss_sum.item() / accum, 1.0 if self.stop.signame == "SIGTERM" else 0.0,
                 1.0 if self.stop.signame == "SIGINT" else 0.0],
                dtype=torch.float64, device=rt.device,
            )
            if ddp:
                runtime.all_reduce_sum(stats)
            loss_val = stats[0].item() / rt.world_size
            n_term, n_int = stats[1].item(), stats[2].item()

            loss_ok = math.isfinite(loss_val)
            norm_ok = math.isfinite(grad_norm)
            scaler_skip = False
            if loss_ok and (norm_ok or self.scaler.is_enabled()):
                scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
                self.scaler.step(self.optimizer)  # skips the update itself if fp16 grads overflowed
                self.scaler.update()
                if scale_before is not None and self.scaler.get_scale() < scale_before:
                    scaler_skip = True
                bad_streak = 0
                last_good = None
            else:
                self.scaler.update()  # keeps the scaler's bookkeeping consistent after unscale_
                if bad_streak == 0:
                    last_good = (step, rng_before)
                bad_streak += 1
            self.optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_since_log += 1

            if scaler_skip:
                scaler_skips += 1
                scale = self.scaler.get_scale()
                print0(f"Gradient overflow at iteration {step} (fp16 loss scaling): update skipped, loss scale now {scale:g}")
                self.logger.event(step, "scaler_skip", f"fp16 gradients overflowed; loss scale now {scale:g}", count=scaler_skips)
            if bad_streak:
                what = "loss" if not loss_ok else "gradient norm"
                print0(f"Non-finite {what} at iteration {step} ({bad_streak}/{args.max_bad_steps} in a row): update skipped")
                self.logger.event(step, "nonfinite", f"loss={loss_val} grad_norm={grad_norm}", count=bad_streak)
                if bad_streak >= args.max_bad_steps:
                    assert last_good is not None
                    good_iter, good_state = last_good
                    path = self.save(good_iter, data_state=good_state)
                    where = f"saved the last good state (iteration {good_iter}) to {path}" if path else "no checkpoint could be written"
                    raise TrainingFailure(
                        f"{bad_streak} consecutive non-finite steps (iterations {good_iter + 1}-{step}); {where}; "
                        f"the learning rate may be too high: try a lower --lr (now {args.lr:g}) and resume with --resume_from"
                    )

            if step % args.log_interval == 0:
                dt = time.perf_counter() - t_log
                rec: dict[str, Any] = {
                    "step": step,
                    "tokens": self.tokens_offset + (step - self.start_iter) * self.tokens_per_step,
                    "time_s": round(self._elapsed(), 3),
                    "loss": loss_val,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens_per_sec": steps_since_log * self.tokens_per_step / max(dt, 1e-9),
                    "iter_time_ms": 1000.0 * dt / max(steps_since_log, 1),
                }
                if self.norms is not None:
                    rec["weight_rms"] = self.norms.weight_rms()
                    rec["act_rms"] = self.norms.act_rms()
                self.logger.train(rec)
                t_log, steps_since_log = time.perf_counter(), 0

            if n_term or n_int:
                name = "SIGTERM" if n_term else "SIGINT"
                if self.stop.signame is None:
                    self.stop.signame = name  # another rank got it
                stopped_by = self.stop.signame
                break
            if step >= args.max_iters:
                break

            t_side = time.perf_counter()  # eval/checkpoint time is kept out of the iteration timing
            improved_here = False
            if step % args.eval_interval == 0:
                rec = self._eval_record(step)
                self.logger.eval(rec)
                self.logger.console(self._progress_line(step))
                if self._is_improvement(rec["val_loss"]):
                    self.best_val = rec["val_loss"]
                    self.evals_since_best = 0
                    improved_here = True
                else:
                    self.evals_since_best += 1
            if step % args.checkpoint_interval == 0:
                # (During a bad streak this still saves a consistent state: skipped steps left the
                # weights and optimizer untouched, and the data stream has moved on.)
                self.save(step, is_best=improved_here)
                improved_here = False
            if improved_here:
                self.save(step, best_only=True)
            t_log += time.perf_counter() - t_side
            if args.early_stopping_patience and self.evals_since_best >= args.early_stopping_patience:
                print0(
                    f"Early stopping: val loss has not improved for {self.evals_since_best} evaluations "
                    f"(best {self.best_val:.4f})"
                )
                self.logger.event(step, "early_stop", f"best_val_loss={self.best_val}")
                early_stopped = True
                break

        if stopped_by is not None:
            print0(f"Received {stopped_by}: finishing iteration {step} and saving a checkpoint")
            self.logger.event(step, "signal", stopped_by)
            self.save(step)
            self._check_ranks_agree(step)
            return 0

        rec = self._eval_record(step)
        self.logger.final(rec)
        improved = self._is_improvement(rec["val_loss"])
        if improved:
            self.best_val = rec["val_loss"]
        self.save(step, is_best=improved)
        if early_stopped:
            print0(f"Stopped early at iteration {step}")
        self._check_ranks_agree(step)
        return 0

    def _check_ranks_agree(self, step: int) -> None:
        """DDP sanity check at the end: every rank must hold the same weights."""
        if not self.rt.info.is_distributed:
            return
        digests = runtime.all_gather_object(_weights_digest(self.model))
        if len(set(digests)) == 1:
            print0(f"DDP check: weights identical on all {len(digests)} ranks (sha256 {digests[0][:16]})")
            self.logger.event(step, "ddp_check", f"identical sha256 {digests[0]}")
        else:
            msg = "DDP check FAILED: ranks ended with different weights: " + ", ".join(d[:12] for d in digests)
            print0(f"warning: {msg}")
            self.logger.event(step, "ddp_check", msg)

    def close(self) -> None:
        if self.norms is not None:
            self.norms.remove()
        self.logger.close()


def _run(argv: Sequence[str] | None, stop: StopRequest) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage / the error / --help
        return int(exc.code) if isinstance(exc.code, int) else 2
    cfg = validate_args(args)
    trainer = Trainer(args, cfg, stop)
    try:
        trainer.build()
        return trainer.run()
    except OSError as err:
        # The environment failed under us (disk full, file system gone): stop cleanly and say what
        # is still safe, rather than a traceback. Checkpoint-write failures arrive as TrainingFailure.
        last = getattr(trainer, "last_saved", None)
        safe = f"; the last checkpoint {last} is intact" if last else "; no checkpoint was written yet"
        raise TrainingFailure(f"{err.strerror or err}{safe}") from err
    finally:
        trainer.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run training; returns the exit status (0 ok, 1 training failure, 2 bad input, 130 abort)."""
    stop = StopRequest()
    info = runtime.dist_info_from_env() if "RANK" in os.environ else runtime.DistInfo()
    prefix = f"[rank {info.rank}] " if info.rank else ""
    try:
        return _run(argv, stop)
    except UserError as err:
        print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
        return 2
    except TrainingFailure as err:
        print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        stop.uninstall()
        runtime.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
