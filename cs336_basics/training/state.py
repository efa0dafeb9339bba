"""What a training run must carry across a restart, and finding the checkpoint to restart from.

:class:`TrainState` holds everything a resumed run needs (model, optimizer, grad scaler, each rank's
data-sampler stream, the global RNGs, the step, best-so-far, tokens seen, time spent). Its
``state_dict()`` *is* the checkpoint payload and ``load_state_dict()`` reads it back, so saving
and restoring cannot drift apart: a field added to one is added to the other.

Data order: every rank draws its batches from its own ``np.random.Generator`` (seeded from
``--seed`` and the rank), whose state is saved; evaluation uses fresh generators, so evaluating
never moves the training stream. With the LR a pure function of the step, a resumed run replays
an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cs336_basics.extensions.diffusion import data_shape
from cs336_basics.lm.model import MODEL_FIELDS, OBJECTIVE_MODEL_FIELDS, ModelConfig
from cs336_basics.training.checkpoints import CheckpointError, CheckpointManager, load_model_weights, read_checkpoint
from cs336_basics.utils.dtensor import is_dtensor

# Offsets that give every rank its own data stream from one --seed (a large odd constant, so
# seed+rank streams never coincide for small seeds).
RANK_SEED_STRIDE = 1_000_003
# Eval batches: the same fixed windows at every eval (a less noisy curve), from their own streams.
_EVAL_STREAM = {"train": 1, "val": 2}


# ==============================================================================================
# the global RNGs, and whole tensors in and out of sharded (FSDP2) state
# ==============================================================================================
def capture_rng_state() -> dict[str, Any]:
    """Global RNG states as plain values/tensors (safe for ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": [int(v) for v in np_state[1]],
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def _as_tuple(value: Any) -> Any:
    """random.setstate wants nested tuples; a checkpoint may hand back lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; missing entries are left alone."""
    if state.get("python") is not None:
        random.setstate(_as_tuple(state["python"]))
    np_state = state.get("numpy")
    if np_state is not None:
        np.random.set_state(
            (
                np_state["algorithm"],
                np.asarray(np_state["keys"], dtype=np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


def full_tensors(obj: Any) -> Any:
    """A (nested) state dict with every DTensor replaced by the whole tensor, on the CPU.

    Collective under FSDP (an all-gather per sharded tensor): every rank must call it, in the same
    order; a no-op copy of the structure otherwise. Checkpoints therefore always hold whole tensors,
    so they load in one process, under DDP and under FSDP alike.
    """
    if is_dtensor(obj):
        return obj.full_tensor().cpu()
    if isinstance(obj, dict):
        return {k: full_tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [full_tensors(v) for v in obj]
    return obj


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict of whole tensors, with each per-parameter tensor that has its
    parameter's shape sharded like that (DTensor) parameter; unchanged without FSDP."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not any(is_dtensor(p) for p in params):
        return state
    saved_ids = [i for g in state["param_groups"] for i in g["params"]]
    by_id = dict(zip(saved_ids, params, strict=False))
    out = {**state, "state": {}}
    for pid, per_param in state["state"].items():
        p = by_id.get(pid)
        out["state"][pid] = {
            k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
            if p is not None and is_dtensor(p) and torch.is_tensor(v) and tuple(v.shape) == tuple(p.shape)
            else v
            for k, v in per_param.items()
        }
    return out


# ==============================================================================================
# the run's state
# ==============================================================================================
def make_data_rng(seed: int, rank: int) -> np.random.Generator:
    """The training-batch stream of one rank; its state is saved in every checkpoint."""
    return np.random.Generator(np.random.PCG64(seed + rank * RANK_SEED_STRIDE))


def make_eval_rng(seed: int, rank: int, split: str) -> np.random.Generator:
    """A fresh generator per eval and split, so evaluating never disturbs the training stream."""
    return np.random.Generator(np.random.PCG64([seed, _EVAL_STREAM[split], rank]))


@dataclass(frozen=True)
class Snapshot:
    """The few counters that move while the weights don't (a skipped step): enough to go back."""

    iteration: int
    tokens_seen: int
    data_state: dict[str, Any]


class TrainState:
    """Model, optimizer, scaler, data stream and counters of one run; ``state_dict`` is the checkpoint."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        seed: int,
        rank: int,
        world_size: int,
        model_config: ModelConfig,
        train_config: dict[str, Any],
        tokenizer: dict[str, Any] | None = None,
    ) -> None:
        self.model = model  # the bare model (never a compile/DDP wrapper: its keys are the spec's)
        self.optimizer = optimizer
        self.scaler = scaler
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.model_config = model_config
        self.train_config = train_config
        self.tokenizer = tokenizer  # which tokenizer made the training data (its sidecar), if known
        self.data_rng = make_data_rng(seed, rank)
        self.iteration = 0
        self.best_val_loss: float | None = None
        self.evals_since_best = 0
        self.tokens_seen = 0
        self._elapsed_before = 0.0  # time spent by earlier runs of this training (before a resume)
        self._t0 = time.perf_counter()

    # -- counters ------------------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        """Wall time of the whole training so far, across resumes."""
        return self._elapsed_before + (time.perf_counter() - self._t0)

    def record_eval(self, val_loss: float, min_delta: float = 0.0) -> bool:
        """Track the best validation loss; True when ``val_loss`` is a new best. Early stopping's
        count of evaluations without improvement restarts only when the new best beats the previous
        one by more than ``min_delta`` (``--early_stopping_threshold``; a smaller gain still makes a best)."""
        prev = self.best_val_loss
        improved = math.isfinite(val_loss) and (prev is None or val_loss < prev)
        if improved:
            self.best_val_loss = val_loss
        if improved and (prev is None or prev - val_loss > min_delta):
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1
        return improved

    def snapshot(self) -> Snapshot:
        return Snapshot(self.iteration, self.tokens_seen, self.data_rng.bit_generator.state)

    def rewind(self, snap: Snapshot) -> None:
        """Back to ``snap`` (valid only while the weights and optimizer have not changed since)."""
        self.iteration, self.tokens_seen = snap.iteration, snap.tokens_seen
        self.data_rng.bit_generator.state = snap.data_state

    # -- checkpoint payload ------------------------------------------------------------------------
    def state_dict(self, data_states: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint: ``data_states`` are every rank's sampler states, in rank order.

        Collective under FSDP (sharded tensors are gathered whole): call it on every rank.
        """
        return {
            "model": full_tensors(self.model.state_dict()),
            "optimizer": full_tensors(self.optimizer.state_dict()),
            "iteration": int(self.iteration),
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config,
            "rng": {**capture_rng_state(), "data": data_states},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "best_val_loss": self.best_val_loss,
            "evals_since_best": self.evals_since_best,
            "tokens_seen": int(self.tokens_seen),
            "elapsed_s": self.elapsed_s,
            "world_size": self.world_size,
            "tokenizer": self.tokenizer,
        }

    def load_state_dict(self, payload: dict[str, Any], source: str | Path = "checkpoint") -> None:
        """Restore from a payload written by :meth:`state_dict` (under any world size).

        Hyperparameters stay those of this run's flags: ``Optimizer.load_state_dict`` would bring
        back the saved ones, so each group's settings are put back after loading.
        """
        load_model_weights(self.model, payload, source)
        saved_opt = (payload.get("train_config") or {}).get("optimizer")
        this_opt = self.train_config.get("optimizer")
        if saved_opt and this_opt and saved_opt != this_opt:  # their states have different groups and moments
            raise CheckpointError(
                f"{source}: written with --optimizer {saved_opt}, this run has --optimizer {this_opt}; resume with "
                f"--optimizer {saved_opt} (optimizer state does not carry over from {saved_opt} to {this_opt})"
            )
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(shard_optimizer_state(self.optimizer, payload["optimizer"]))
        except (ValueError, KeyError, RuntimeError, TypeError) as err:
            raise CheckpointError(f"{source}: optimizer state does not fit: {str(err).splitlines()[0]}") from None
        for group, settings in zip(self.optimizer.param_groups, hyper, strict=True):
            group.update(settings)
        if payload.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(payload["scaler"])
        self.iteration = int(payload["iteration"])
        best = payload.get("best_val_loss")
        self.best_val_loss = float(best) if isinstance(best, (int, float)) else None
        self.evals_since_best = int(payload.get("evals_since_best") or 0)
        self.tokens_seen = int(payload.get("tokens_seen") or 0)
        self._elapsed_before = float(payload.get("elapsed_s") or 0.0)
        self._t0 = time.perf_counter()
        rng = payload.get("rng") or {}
        with contextlib.suppress(Exception):  # global RNGs are not used by training; best effort
            restore_rng_state(rng)
        data_states = rng.get("data") or []
        if self.rank < len(data_states) and data_states[self.rank] is not None:
            try:
                self.data_rng.bit_generator.state = data_states[self.rank]
            except (TypeError, ValueError, KeyError) as err:
                raise CheckpointError(f"{source}: data sampler state is unusable ({err})") from None
        else:
            # No saved stream for this rank (more ranks than when saved): a fresh one that still
            # depends on the step, so it does not replay this rank's first batches.
            self.data_rng = np.random.Generator(np.random.PCG64([self.seed, self.rank, self.iteration]))


# ==============================================================================================
# which checkpoint to resume from
# ==============================================================================================
def same_value(a: Any, b: Any) -> bool:
    """A saved setting and a given one agree: equal, or the same number (``1e4`` and ``10000``)."""
    numbers = isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool)
    return a == b or (numbers and float(a) == float(b))


def _config_diff(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    diffs = []
    defaults = ModelConfig().to_dict()  # a checkpoint older than a field loads it with its default
    for k in (*MODEL_FIELDS, *OBJECTIVE_MODEL_FIELDS):
        a, b = saved.get(k, defaults.get(k)), wanted.get(k)
        if not same_value(a, b):
            diffs.append(f"{k} {a!r} in checkpoint vs {b!r} from flags")
    unknown = sorted(set(saved) - set(wanted))
    if unknown:
        diffs.append(f"unknown fields in checkpoint: {', '.join(unknown)}")
    return diffs


def check_resumable(path: Path, payload: dict[str, Any], cfg: ModelConfig | dict[str, Any] | None = None) -> None:
    """The checkpoint must carry training state and (with ``cfg``, a config or the shape settings
    given) be for the same architecture."""
    saved_cfg = payload.get("model_config")
    if not isinstance(saved_cfg, dict):
        raise CheckpointError(f"{path}: checkpoint has no model_config; cannot check it matches the flags")
    if isinstance(cfg, ModelConfig):
        diffs = _config_diff(saved_cfg, cfg.to_dict())
    elif cfg is not None:  # shape settings given: compared with the settings that made the model
        made_by = data_shape(saved_cfg)
        diffs = _config_diff(made_by, {**made_by, **cfg})
    else:
        diffs = []
    if diffs:
        raise CheckpointError(f"{path}: model config does not match the flags: " + "; ".join(diffs))
    try:
        int(payload["iteration"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: iteration {payload.get('iteration')!r} is not an integer") from None
    if not isinstance(payload.get("optimizer"), dict):
        raise CheckpointError(f"{path}: checkpoint has no optimizer state; cannot resume training from it")


Found = tuple[Path, dict[str, Any], list[str]]  # the checkpoint, its payload, why newer ones were passed over
# Found when the settings are read (a resumed run takes its saved settings from it), used at setup:
# each checkpoint is read once. Keyed by what was asked, with the directory's listing at the time.
_FOUND: dict[tuple[str | None, bool, str], tuple[Found, list[Path]]] = {}


def _newest_intact(directory: Path, what: str, shape: dict[str, Any] | None) -> Found | None:
    manager = CheckpointManager(directory)
    found = manager.latest_intact(accept=lambda path, payload: check_resumable(path, payload, shape))
    if found is None and manager.skipped:
        raise CheckpointError(
            f"{what}: none of the {len(manager.skipped)} checkpoints in {directory} can be resumed; "
            f"newest: {manager.skipped[0]}"
        )
    return found


def search_resume(
    resume_from: str | None, resume: bool, directory: str | Path | None, shape: dict[str, Any] | None = None
) -> Found | None:
    """The checkpoint a resumed run continues, read and checked: ``--resume_from`` a file exactly
    (any problem is an error) or a run directory's newest intact checkpoint; ``--resume`` the newest
    intact checkpoint in ``directory`` (None when it holds none: a new run). In a directory, a
    checkpoint of another model than the ``shape`` settings given is passed over, with the reason."""
    if resume_from:
        path = Path(resume_from)
        if path.is_dir():
            found = _newest_intact(path, f"--resume_from {path}", shape)
            if found is None:
                raise CheckpointError(f"--resume_from {path}: directory has no checkpoint_iter_N.pt")
            return found
        payload = read_checkpoint(path)
        check_resumable(path, payload)
        return path, payload, []
    if not resume or directory is None:
        return None
    return _newest_intact(Path(directory), "--resume", shape)


def _key(resume_from: str | None, resume: bool, directory: str | Path | None) -> tuple[str | None, bool, str]:
    return resume_from, resume, str(Path(directory)) if directory is not None and not resume_from else ""


def _listing(resume_from: str | None, directory: str | Path | None) -> list[Path]:
    where = resume_from if resume_from else directory
    return CheckpointManager(where).list() if where is not None else []


def peek_resume(
    resume_from: str | None, resume: bool, directory: str | Path | None, shape: dict[str, Any]
) -> tuple[Path, dict[str, Any]] | None:
    """:func:`search_resume` when the settings are read; :func:`find_resume` at setup takes the same
    checkpoint without reading it again (unless the directory changed in between)."""
    found = search_resume(resume_from, resume, directory, shape)
    if found is None:
        return None
    _FOUND.clear()  # one at a time: a payload holds the weights
    _FOUND[_key(resume_from, resume, directory)] = (found, _listing(resume_from, directory))
    return found[0], found[1]


def find_resume(
    resume_from: str | None,
    resume: bool,
    manager: CheckpointManager,
    cfg: ModelConfig,
    say: Callable[[str], None],
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from, read and checked, or None for a fresh run.

    ``--resume_from PATH`` takes exactly that file, or that run directory's newest intact
    checkpoint (any problem is an error). ``--resume`` takes the newest numbered checkpoint in the
    run directory that verifies against its sidecar and loads safely, saying ``Skipping <path>:
    <reason>`` for each one passed over; with no checkpoint at all it starts fresh (so a job script
    can always pass it), with a notice. The checkpoint must be for the model ``cfg`` describes (the
    settings took its shape when they were read).
    """
    cached = _FOUND.pop(_key(resume_from, resume, manager.directory), None)
    if cached is not None and cached[1] == _listing(resume_from, manager.directory):
        found: Found | None = cached[0]
    else:
        found = search_resume(resume_from, resume, manager.directory, cfg.to_dict())
    if found is None:
        if resume and not resume_from:
            say(f"--resume: no checkpoint in {manager.directory} yet; starting a new run")
        return None
    path, payload, skipped = found
    for reason in skipped:
        say(f"Skipping {reason}")
    check_resumable(path, payload, cfg)
    return path, payload
