"""The training program: ``python -m cs336_basics.training_together [flags]``.

It composes the from-scratch pieces (TransformerLM, cross_entropy, AdamW, the cosine schedule,
get_batch, checkpoints) into a run that can be stopped, resumed, and run data-parallel. Read it in
this order: :func:`setup` builds everything once (where it runs, the data, the model, the optimizer,
the state to resume); :func:`train_loop` is the loop; :func:`main` maps outcomes to exit codes. The
pieces it calls live in their own modules:

* :mod:`cs336_basics.training.settings`: the flags (one typed ``TrainSettings``), TOML files, validation;
* :mod:`cs336_basics.training.runtime`: device, precision, DDP and signals, decided once, so the loop has no
  branches on them;
* :mod:`cs336_basics.training.step`: one optimizer step, evaluation, the non-finite-step guard;
* :mod:`cs336_basics.training.state`: what a resume needs (``state_dict`` is the checkpoint);
* :mod:`cs336_basics.training.metrics`: console lines, metrics.jsonl, wandb/TensorBoard, MFU.

:func:`train` at the end is the same run from Python (``train(settings, model=my_module)``).

Exit codes: 0 success (including a graceful signal stop), 1 training failure, 2 bad input,
130 aborted by a second Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cs336_basics.corpus.finetune import init_checkpoint, load_init_weights
from cs336_basics.corpus.shards import data_meta, data_notes, first_sidecar, open_token_data
from cs336_basics.corpus.tokens import TokenIdOutOfRange, get_batch
from cs336_basics.extensions.muon import Muon
from cs336_basics.extensions.schedules import make_schedule
from cs336_basics.fast.nn_utils import perplexity
from cs336_basics.fast.optim import AdamW, param_groups
from cs336_basics.lm.model import TransformerLM
from cs336_basics.training import api, runtime, text_data
from cs336_basics.training.cadence import apply_epoch_intervals, uses_epochs
from cs336_basics.training.checkpoints import CheckpointError, CheckpointManager
from cs336_basics.training.hooks import HookResult, NoHooks, make_hooks
from cs336_basics.training.metrics import (
    RULE,
    Logger,
    NormRecorder,
    NullLogger,
    ProgressBar,
    RunLogger,
    ThroughputMeter,
    check_extras,
    cpu_step_hint,
    peak_flops,
    wants_progress_bar,
)
from cs336_basics.training.prefetch import Prefetcher
from cs336_basics.training.run_name import adopt_checkpoint_name, settle_run_name
from cs336_basics.training.runtime import print0
from cs336_basics.training.settings import (
    TrainSettings,
    parse_settings,
    resume_report,
    schedule_notes,
    settle_run_length,
)
from cs336_basics.training.signals import StopRequest
from cs336_basics.training.state import TrainState, find_resume
from cs336_basics.training.step import (
    DeviceStepResult,
    NextToken,
    NonFiniteGuard,
    Objective,
    StepResult,
    build_objective,
    evaluate,
    train_step,
)
from cs336_basics.utils import runlock
from cs336_basics.utils.errors import UserError, os_reason, run_cli
from cs336_basics.utils.fsutil import atomic_write_text
from cs336_basics.utils.token_files import carry_tokenizer, describe_tokenizer, recorded_fingerprint


class TrainingFailure(Exception):
    """Training could not continue (non-finite steps, checkpoint write failure): exit status 1."""


class AlreadyFinished(Exception):
    """``--resume`` found a checkpoint at (or past) ``--max_iters``: nothing to do, exit status 0."""


def check_not_finished(resume: tuple[Path, dict[str, Any]] | None, s: TrainSettings) -> None:
    """A finished run resumed again would re-evaluate, rewrite its last checkpoint and log a second
    ``final`` record: stop before writing anything instead (unless --max_iters grew)."""
    if resume is not None and int(resume[1]["iteration"]) >= s.max_iters:
        raise AlreadyFinished(
            f"{resume[0]}: the run already finished at iteration {int(resume[1]['iteration'])} (--max_iters "
            f"{s.max_iters}); nothing to do (raise --max_iters to train further)"
        )


@dataclass
class Run:
    """Everything :func:`setup` decides once; the loop reads it (and ``save`` records the run's state)."""

    settings: TrainSettings
    rt: runtime.Runtime
    manager: CheckpointManager
    state: TrainState
    train_model: nn.Module  # what the step calls: the model, maybe compiled, maybe DDP-wrapped
    eval_model: nn.Module  # the same without the DDP wrapper (evaluation needs no gradient sync)
    train_data: np.ndarray
    val_data: np.ndarray | None
    tokens_per_step: int
    objective: Objective = field(default_factory=NextToken)  # what the loss is (--objective, MoE router losses)
    logger: Logger = field(default_factory=NullLogger)
    norms: NormRecorder | None = None
    resumed_from: Path | None = None
    last_saved: Path | None = None  # the newest checkpoint of this run known to be intact
    hooks: NoHooks = field(default_factory=NoHooks)  # --on_checkpoint (rank 0)
    epoch_tokens: int | None = None  # train tokens per epoch, when the console shows epochs
    lock: runlock.RunLock | None = None  # rank 0's hold on --checkpoint_dir (one run per directory)
    bar: ProgressBar | None = None  # the live progress line, on a terminal (while the loop runs)


# ==============================================================================================
# setup: decided once
# ==============================================================================================
def build_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """AdamW over (decay, no_decay) groups, or Muon over (hidden, embed, head, scalar) groups.

    Every group carries ``lr_scale`` (its peak LR over ``--lr``), so one schedule drives them all.
    """
    groups = param_groups(model, s.optimizer, weight_decay=s.weight_decay, lr=s.lr, lr_hidden=s.lr_hidden,
                          lr_embed=s.lr_embed, lr_head=s.lr_head, lr_scalar=s.lr_scalar)  # fmt: skip
    kind = Muon if s.optimizer == "muon" else AdamW
    kw: dict[str, Any] = dict(lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps, weight_decay=s.weight_decay)
    if s.optimizer == "muon":
        kw["ns_dtype"] = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[s.muon_ns_dtype]
    if s.zero1:  # the same optimizer, each rank keeping 1/world of its state
        from cs336_basics.training import zero1  # torch.distributed.optim imports FSDP and sympy: seconds

        return zero1.make_zero1(groups, kind, **kw)
    return kind(groups, **kw)


def load_data(s: TrainSettings) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any] | None]:
    """Memory-map the token files (every id checked against the vocab); say which tokenizer made them."""
    print0("Loading data with memory mapping...")
    train = open_token_data(s.train_data_path, s.vocab_size, s.data_dtype, s.context_length, "--train_data_path")
    val = (
        open_token_data(s.val_data_path, s.vocab_size, s.data_dtype, s.context_length, "--val_data_path")
        if s.validation
        else None
    )
    print0(f"Train data size: {len(train):,} tokens")
    print0(
        f"Validation data size: {len(val):,} tokens"
        if val is not None
        else "Validation: none (no evaluation, no best.pt)"
    )
    for note in data_notes(train, val):  # shards, loss masks: said once
        print0(note)
    meta = data_meta(train, s.train_data_path)
    if meta is not None and meta.get("vocab_size") != s.vocab_size:
        runtime.eprint0(
            f"warning: --vocab_size {s.vocab_size} differs from the tokenizer that made {s.train_data_path} "
            f"(vocab size {meta.get('vocab_size')}, {meta.get('tokenizer_dir')}); pass --vocab_size {meta.get('vocab_size')} "
            "to match it"
        )
    val_meta = data_meta(val, s.val_data_path)
    if meta and val_meta and meta.get("tokenizer_sha256") != val_meta.get("tokenizer_sha256"):
        runtime.eprint0(
            f"warning: {s.train_data_path} and {s.val_data_path} were made by different tokenizers "
            f"({meta.get('tokenizer_dir')} vs {val_meta.get('tokenizer_dir')}); validation losses will mean nothing"
        )
    return train, val, meta


def continued_checkpoint(
    s: TrainSettings, resume: tuple[Path, dict[str, Any]] | None
) -> tuple[str, Path, dict[str, Any]] | None:
    """The checkpoint this run continues (a resume wins over --init_from): the flag naming it, its path
    and payload; None for a run from scratch."""
    if resume is not None:
        return ("--resume_from" if s.resume_from else "--resume"), resume[0], resume[1]
    if s.init_from:
        return "--init_from", *init_checkpoint(s.init_from)
    return None


def check_same_tokenizer(s: TrainSettings, source: tuple[str, Path, dict[str, Any]] | None) -> None:
    """Ids mean tokens of one tokenizer: data from another than the checkpoint's training data is
    refused in one line naming both (unless --allow_tokenizer_change). Where only one side records
    a fingerprint it cannot be checked, and the console says so once."""
    if source is None:
        return
    flag, path, payload = source
    trained, data = payload.get("tokenizer"), first_sidecar(s.train_data_path, "--train_data_path")
    was, now = recorded_fingerprint(trained), recorded_fingerprint(data)
    if was is None or now is None:
        if was is not None or now is not None:
            if was is None:
                why = f"{path} records no tokenizer fingerprint"
            elif data is None:
                why = f"{s.train_data_path} has no .meta.json sidecar"
            else:
                why = f"the sidecar of {s.train_data_path} records no tokenizer fingerprint"
            print0(f"Note: cannot check that {s.train_data_path} and {flag} {path} share a tokenizer: {why}")
        return
    if was == now:
        return
    assert isinstance(trained, dict) and isinstance(data, dict)
    what = (
        f"{flag} {path} was trained with tokenizer {describe_tokenizer(trained)}, but {s.train_data_path} was "
        f"tokenized with {describe_tokenizer(data)}"
    )
    if not s.allow_tokenizer_change:
        raise UserError(
            f"{what}: its ids mean other tokens to this model; tokenize the data with the checkpoint's tokenizer, "
            "or pass --allow_tokenizer_change to train on it anyway"
        )
    runtime.eprint0(f"warning: {what} (--allow_tokenizer_change)")


LOCK_HINT = "wait for it to end (then --resume continues it) or pass another --checkpoint_dir"


def setup(s: TrainSettings, model_factory: nn.Module | Callable[[], nn.Module] | None = None) -> Run:
    """Check what can be checked cheaply first (exit 2 before anything heavy), then build the run.

    ``model_factory``: a module (or a function building one) to train instead of the TransformerLM
    the settings describe (the Python API, :func:`train`).
    """
    rt = runtime.setup_runtime(s.device, s.dtype, s.tf32, s.deterministic)
    runtime.messages_to_stderr(s.log_format == "json")  # stdout carries only the JSON records
    if s.zero1:
        from cs336_basics.training import zero1

        zero1.check_launch(rt)
    name_given, dir_given = s.run_name is not None, s.checkpoint_dir is not None
    settle_run_name(s, rt)
    manager = CheckpointManager(s.checkpoint_dir, keep_last=s.keep_last, best_dir=s.best_checkpoint_dir,
                                keep_best=s.keep_best, weights_precision=s.save_precision)  # fmt: skip
    runtime.init_process_group(rt)  # first: every rank must learn whether rank 0 got the directory's lock
    lock = runtime.rank0_decides(rt, lambda: runlock.acquire(s.checkpoint_dir, what="--checkpoint_dir", hint=LOCK_HINT))
    try:
        return _setup_locked(s, model_factory, rt, manager, lock, name_given=name_given, dir_given=dir_given)
    except BaseException:
        if lock is not None:  # a refused run leaves no empty run folder behind (what was there stays)
            lock.discard()
        raise


def _setup_locked(
    s: TrainSettings,
    model_factory: nn.Module | Callable[[], nn.Module] | None,
    rt: runtime.Runtime,
    manager: CheckpointManager,
    lock: runlock.RunLock | None,
    *,
    name_given: bool,
    dir_given: bool,
) -> Run:
    """:func:`setup` once rank 0 holds the run directory's lock."""
    cfg = s.model_config()
    if rt.is_main:
        manager.check_writable()
        for stale in manager.remove_stale_temps():
            runtime.eprint0(f"note: removed {stale}, a partial checkpoint left by an interrupted write")
        for note in (*s.config_notes, *(schedule_notes(s) if s.epochs is None else ())):  # --epochs: later
            print0(f"Note: {note}")
    check_extras(s.use_wandb, s.tensorboard_dir)
    resume = find_resume(s.resume_from, s.resume, manager, cfg, say=print0)
    if resume is not None and dir_given:
        adopt_checkpoint_name(s, resume[1], name_given)
    if s.epochs is None:
        check_not_finished(resume, s)
    if resume is None and rt.is_main and manager.list():
        runtime.eprint0(
            f"warning: {manager.directory} already holds checkpoints (newest: {manager.list()[-1].name}); this new "
            "run overwrites same-numbered ones and --resume later picks the newest. Pass --resume to continue "
            "that run, or use a fresh --checkpoint_dir."
        )
    restarts = rt.info.restart_count
    if restarts:  # torchrun --max-restarts restarted the group after a worker died
        print0(
            f"torchrun restart {restarts} (TORCHELASTIC_RESTART_COUNT={restarts}): "
            + (f"continuing from {resume[0].name}" if resume else "no checkpoint to continue from; starting over")
            + ("" if s.resume or s.resume_from else " (pass --resume so a restart continues the run)")
        )
    if s.tokenizer_json:  # text files (the training crate's shards): tokenized once into the run directory
        for note in runtime.rank0_decides(rt, lambda: text_data.prepare(s, manager.directory)) or ():
            print0(f"Note: {note}")
        text_data.use_prepared(s, manager.directory)
    source = continued_checkpoint(s, resume)
    check_same_tokenizer(s, source)
    try:
        train_data, val_data, tokenizer = load_data(s)
    except TokenIdOutOfRange as err:  # the vocab_size is the checkpoint's: say so
        raise err if source is None else err.for_model(f"{source[0]} {source[1]}") from None
    if s.objective == "diffusion" and any(getattr(d, "masked", False) for d in (train_data, val_data)):
        raise UserError("loss masks (*.mask.npy, conversation data) apply to --objective ar, not diffusion")
    tokens_per_step = s.batch_size * s.context_length * s.grad_accum_steps * rt.world_size
    for note in apply_epoch_intervals(s, len(train_data), tokens_per_step):
        print0(f"Note: {note}")
    if s.epochs is not None:  # --max_iters is known now
        settle_run_length(s)
        for note in schedule_notes(s):
            print0(f"Note: {note}")
        check_not_finished(resume, s)

    runtime.agree_on_resume(int(resume[1]["iteration"]) if resume else None, manager.directory)
    runtime.seed_everything(s.seed)  # the same initial weights on every rank
    print0("Initializing model...")
    model = TransformerLM(cfg, device=rt.device) if model_factory is None else api.build_model(model_factory, s, rt)
    model.activation_checkpointing = s.activation_checkpointing
    if s.init_from and resume is None:  # fine-tuning: another run's weights, everything else fresh
        load_init_weights(model, s.init_from, say=print0)
    n_params = sum(p.numel() for p in model.parameters())
    print0(f"Total parameters: {n_params:,}")
    print0(f"Trainable parameters: {sum(p.numel() for p in model.parameters() if p.requires_grad):,}")
    norms = NormRecorder(model) if s.log_norms else None  # hooks on the bare model, before wrapping
    if s.fsdp:
        runtime.shard_model(model, rt)  # before the optimizer: it must hold the sharded parameters
    optimizer = build_optimizer(model, s)
    state = TrainState(
        model, optimizer, rt.scaler, seed=s.seed, rank=rt.rank, world_size=rt.world_size,
        model_config=cfg, train_config=s.to_dict(), tokenizer=tokenizer,
    )  # fmt: skip
    if resume is not None:
        path, payload = resume
        state.load_state_dict(payload, source=path)
        print0(f"Resuming from {path} (iteration {state.iteration})")
        saved_world = int(payload.get("world_size") or 1)
        if saved_world != rt.world_size:
            print0(
                f"Note: checkpoint was written with world size {saved_world}, now {rt.world_size}; "
                "the data order will differ from an uninterrupted run"
            )
        for line in resume_report(payload.get("train_config"), s):  # what was given anew, once
            print0(line)

    # Compile the inner model, then wrap it in DDP: the order PyTorch's "Where to apply torch.compile?"
    # page recommends (Dynamo handles the DDP wrapper poorly; its DDPOptimizer splits the graph at DDP's buckets).
    compiled = torch.compile(model) if s.compile else model
    run = Run(
        settings=s, rt=rt, manager=manager, state=state,
        train_model=compiled if s.fsdp else runtime.wrap_model(compiled, rt), eval_model=compiled,
        train_data=train_data, val_data=val_data,
        tokens_per_step=tokens_per_step, epoch_tokens=len(train_data) if uses_epochs(s) else None,
        objective=build_objective(s, model, rt.rank),
        norms=norms, resumed_from=resume[0] if resume else None, last_saved=resume[0] if resume else None,
        lock=lock,
    )  # fmt: skip
    if rt.is_main:
        run.logger = RunLogger(
            manager.directory,
            use_wandb=s.use_wandb, wandb_project=s.wandb_project, wandb_run_name=s.wandb_run_name, wandb_entity=s.wandb_entity,
            tensorboard_dir=s.tensorboard_dir, log_format=s.log_format, run_name=s.run_name,
            tensorboard_flush_every=s.tensorboard_flush_every,
            config={**s.to_dict(), "model_config": cfg.to_dict(), "world_size": rt.world_size},
            resume_step=state.iteration if resume else (0 if restarts else None),  # a restart is not a new run
        )  # fmt: skip
        run.hooks = make_hooks(s.on_checkpoint, manager.directory, timeout_s=s.on_checkpoint_timeout, is_main=True,
                               report=lambda result: report_hook(run, result))  # fmt: skip
        write_run_config(run, n_params)
        if (note := carry_tokenizer(tokenizer, s.train_data_path, manager.directory)) is not None:
            print0(note)  # the run directory carries the tokenizer that made its data
        if restarts:
            run.logger.event(state.iteration, "restart", f"TORCHELASTIC_RESTART_COUNT={restarts}", count=restarts)
        if resume:
            run.logger.event(state.iteration, "resume", str(resume[0]))
    return run


def write_run_config(run: Run, n_params: int) -> None:
    """``run_config.json``: every setting and where the run ran, for reproducing it later."""
    s, state = run.settings, run.state
    info = {
        "train_config": s.to_dict(),
        "model_config": state.model_config.to_dict(),
        "seed": s.seed,
        "world_size": run.rt.world_size,
        "device": str(run.rt.device),
        "dtype": s.dtype,
        "tokens_per_step": run.tokens_per_step,
        "num_parameters": n_params,
        "start_iteration": state.iteration,
        "resumed_from": str(run.resumed_from) if run.resumed_from else None,
        "tokenizer": state.tokenizer,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_data_tokens": len(run.train_data),
        "val_data_tokens": len(run.val_data) if run.val_data is not None else None,
    }
    atomic_write_text(run.manager.directory / "run_config.json", json.dumps(info, indent=2, default=str) + "\n")


# ==============================================================================================
# checkpoints and evaluation (collective: every rank calls them at the same step)
# ==============================================================================================
def save(run: Run, *, is_best: bool = False, best_only: bool = False) -> Path | None:
    """Gather every rank's data stream; rank 0 writes; all ranks agree on a failure."""
    state, s = run.state, run.settings
    payload = state.state_dict(runtime.all_gather_object(state.data_rng.bit_generator.state))
    path: Path | None = None
    error: str | None = None
    if run.rt.is_main:
        sidecar = {"model_config": state.model_config.to_dict(), "train_config": state.train_config}
        try:
            if best_only:
                path = run.manager.save_best(payload, state.iteration, sidecar)
            else:
                path = run.manager.save(payload, state.iteration, sidecar, is_best=is_best)
        except (CheckpointError, OSError) as err:
            error = str(err)
    failed = torch.tensor([float(error is not None)], device=run.rt.device)
    if runtime.all_reduce_sum(failed).item() == 0:
        if path is not None:
            run.last_saved = run.last_saved if best_only else path
            print0(f"Saved checkpoint to {path}")
            run.hooks.submit(path, state.iteration)  # --on_checkpoint, now that the file is durable
        return path
    if run.rt.is_main:
        prev = run.last_saved
        safe = f"the previous checkpoint {prev} is intact" if prev else "no earlier checkpoint of this run exists"
        error = f"{error}; {safe}"
        run.logger.event(state.iteration, "checkpoint_failure", error)
    if s.allow_checkpoint_failure:
        runtime.eprint0(f"warning: {error}; continuing without this checkpoint (--allow_checkpoint_failure)")
        return None
    raise TrainingFailure(
        f"{error} (pass --allow_checkpoint_failure to keep training without checkpoints)"
        if run.rt.is_main else "rank 0 could not write a checkpoint"
    )  # fmt: skip


def eval_record(run: Run) -> dict[str, Any]:
    """Train and validation loss on fixed batches, as one metrics record."""
    s, state = run.settings, run.state
    kw = dict(batches=s.eval_iters, batch_size=s.batch_size, context_length=s.context_length,
              device=run.rt.device, autocast=run.rt.autocast, objective=run.objective)  # fmt: skip
    bar = run.bar

    def shown(split: str) -> Callable[[int], None] | None:  # each batch on the progress bar
        return None if bar is None else lambda n: bar.eval(split, n, s.eval_iters)

    train_loss, _ = evaluate(run.eval_model, run.train_data, state, split="train", on_batch=shown("train"), **kw)
    val_loss, val_acc = evaluate(run.eval_model, run.val_data, state, split="val", on_batch=shown("val"), **kw)
    if bar is not None:
        bar.eval_done()
    return {
        "step": state.iteration, "tokens": state.tokens_seen, "time_s": round(state.elapsed_s, 3),
        "train_loss": train_loss, "val_loss": val_loss, "val_perplexity": perplexity(val_loss), "val_accuracy": val_acc,
    }  # fmt: skip


# ==============================================================================================
# the loop
# ==============================================================================================
def train_loop(run: Run, stop: StopRequest) -> int:
    s, state, rt = run.settings, run.state, run.rt
    print0(f"Starting training from iteration {state.iteration}...")
    print0(f"Device: {rt.device}")
    print0(f"Max iterations: {s.max_iters}")
    print0(
        f"World size: {rt.world_size} | Precision: {s.dtype} | Tokens per optimizer step: {run.tokens_per_step:,} "
        f"(batch {s.batch_size} x context {s.context_length} x accum {s.grad_accum_steps} x world {rt.world_size})"
        + (" | FSDP2: weights, gradients and optimizer state sharded" if s.fsdp else "")
    )
    print0(RULE)
    flops = getattr(state.model, "flops_per_token", None)  # a custom model (Python API) may not say: no MFU
    meter = ThroughputMeter(
        start_step=state.iteration, max_steps=s.max_iters, log_interval=s.log_interval, heartbeat_s=s.heartbeat_s,
        tokens_per_step=run.tokens_per_step, flops_per_token=3 * flops(s.context_length) / rt.world_size if flops else 0.0,
        peak_flops=peak_flops(rt.device, s.dtype) if flops else None,
    )  # fmt: skip
    hint = cpu_step_hint(rt.device, meter.flops_per_token * run.tokens_per_step)  # this rank's share
    if hint:
        print0(hint)
    guard = NonFiniteGuard(s.max_bad_steps)
    lr_at = make_schedule(s.lr_schedule, max_lr=s.lr, min_lr=s.min_lr, warmup_iters=s.warmup_iters,
                          max_iters=s.max_iters, decay_frac=s.decay_frac, decay_shape=s.decay_shape)  # fmt: skip
    no_sync = runtime.no_sync(run.train_model)
    stop.install()  # from here on, SIGTERM / Ctrl-C finish the step and save (before: nothing to save)
    run.train_model.train()
    # The next step's batches are gathered while this one runs (the same batches: see training.prefetch).
    prefetch = Prefetcher(run.train_data, s.batch_size, s.context_length, rt.device, s.grad_accum_steps) if s.prefetch else None  # fmt: skip
    if wants_progress_bar(s.progress, s.log_format, rt.is_main):
        run.bar = ProgressBar(s.max_iters, start=state.iteration)
    try:
        return _loop(run, stop, meter, guard, lr_at, no_sync, prefetch)
    finally:
        if run.bar is not None:
            run.bar.close()
            run.bar = None
        if prefetch is not None:
            prefetch.close()


def _loop(run: Run, stop: StopRequest, meter: ThroughputMeter, guard: NonFiniteGuard, lr_at: Callable[[int], float],
          no_sync: Any, prefetch: Prefetcher | None) -> int:  # fmt: skip
    s, state, rt = run.settings, run.state, run.rt
    early_stop = False
    stopped_by: str | None = None
    while state.iteration < s.max_iters:
        # The learning rate is a pure function of the step (so a resumed run gets the same one).
        lr = lr_at(state.iteration)  # --lr_schedule (default: the course's lr_cosine_schedule)
        for group in state.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        # One optimizer step over fresh micro-batches from this rank's own stream.
        before = state.snapshot()
        if run.norms is not None:
            run.norms.active = meter.due(state.iteration + 1)  # record activations on steps that get logged
        batches = (get_batch(run.train_data, s.batch_size, s.context_length, rt.device, rng=state.data_rng)
                   for _ in range(s.grad_accum_steps)) if prefetch is None else prefetch.batches(state.data_rng)  # fmt: skip
        result = train_step(run.train_model, state.optimizer, rt.scaler, batches, accum_steps=s.grad_accum_steps,
                            grad_clip=s.grad_clip, autocast=rt.autocast, no_sync=no_sync,
                            objective=run.objective, step=state.iteration, guard=guard)  # fmt: skip
        state.iteration += 1
        state.tokens_seen += run.tokens_per_step
        meter.step_done()
        run.hooks.poll()  # report a finished --on_checkpoint command, start the next
        # A non-finite step was skipped; too many in a row end the run, saving the last good state.
        # The step's numbers stay on the device until a log, eval or checkpoint step reads them back.
        log_due = meter.due(state.iteration)
        if isinstance(result, DeviceStepResult):
            guard.record(result, before)
            if log_due or readback_due(s, state.iteration):
                result = settle(run, guard)
        else:
            report_skips(run, result, guard.observe(result, before), guard)
        if guard.gave_up:
            give_up(run, guard)
        # Log; then stop at the same step on every rank if any rank got SIGTERM / Ctrl-C.
        if log_due:
            log_train(run, meter, lr, result)
        if run.bar is not None:
            run.bar.train(state.iteration, meter)
        stopped_by = stop.agree(rt.device)
        if stopped_by or state.iteration == s.max_iters:
            break
        # Evaluate and checkpoint on their intervals (their time is kept out of the speed numbers).
        with meter.paused():
            improved = False
            if s.validation and state.iteration % s.eval_interval == 0:
                rec = eval_record(run)
                run.logger.eval(rec)
                improved = state.record_eval(rec["val_loss"], s.early_stopping_threshold)
            if state.iteration % s.checkpoint_interval == 0:
                save(run, is_best=improved)
            elif improved:
                save(run, best_only=True)
        if s.early_stopping_patience and state.evals_since_best >= s.early_stopping_patience:
            early_stop = True
            print0(
                f"Early stopping: val loss has not improved for {state.evals_since_best} evaluations (best {state.best_val_loss:.4f})"
            )
            run.logger.event(state.iteration, "early_stop", f"best_val_loss={state.best_val_loss}")
            break

    # One way out: a signal saves where we are; otherwise a final evaluation, then the last save.
    settle(run, guard)
    if guard.gave_up:
        give_up(run, guard)
    if stopped_by is not None:
        print0(f"Received {stopped_by}: finishing iteration {state.iteration} and saving a checkpoint")
        run.logger.event(state.iteration, "signal", stopped_by)
        save(run)
    else:
        improved = False
        if s.validation:
            rec = eval_record(run)
            run.logger.final(rec)
            improved = state.record_eval(rec["val_loss"], s.early_stopping_threshold)
        save(run, is_best=improved)
        if early_stop:
            print0(f"Stopped early at iteration {state.iteration}")
    check_ranks_agree(run)
    return 0


def readback_due(s: TrainSettings, iteration: int) -> bool:
    """Steps whose numbers are read back to the host besides logged ones: eval, checkpoint, last."""
    return (
        iteration % s.checkpoint_interval == 0
        or (s.validation and iteration % s.eval_interval == 0)
        or iteration == s.max_iters
    )


def settle(run: Run, guard: NonFiniteGuard) -> StepResult | None:
    """The one read-back: the steps since the last one, their non-finite reports, and the step counts
    of the skipped updates taken off again. Returns the newest step's result (None if none)."""
    settled = guard.settle()
    if hasattr(run.state.optimizer, "settle_skips"):
        run.state.optimizer.settle_skips()
    for step, result, problem, streak in settled:
        if problem is not None:
            print0(problem)
            run.logger.event(step, "nonfinite", f"loss={result.loss} grad_norm={result.grad_norm}", count=streak)
    return settled[-1][1] if settled else None


def report_skips(run: Run, result: StepResult, problem: str | None, guard: NonFiniteGuard) -> None:
    step = run.state.iteration
    if result.scaler_skipped:
        scale = run.rt.scaler.get_scale()
        print0(f"Gradient overflow at iteration {step} (fp16 loss scaling): update skipped, loss scale now {scale:g}")
        run.logger.event(
            step, "scaler_skip", f"fp16 gradients overflowed; loss scale now {scale:g}", count=guard.scaler_skips
        )
    if problem is not None:
        print0(problem)
        run.logger.event(step, "nonfinite", f"loss={result.loss} grad_norm={result.grad_norm}", count=guard.streak)


def give_up(run: Run, guard: NonFiniteGuard) -> None:
    """Too many non-finite steps in a row: save the last good state and stop (exit 1)."""
    assert guard.last_good is not None
    bad_until = run.state.iteration
    run.state.rewind(guard.last_good)
    path = save(run)
    good = guard.last_good.iteration
    where = f"saved the last good state (iteration {good}) to {path}" if path else "no checkpoint could be written"
    raise TrainingFailure(
        f"{guard.streak} consecutive non-finite steps (iterations {good + 1}-{bad_until}); {where}; the learning "
        f"rate may be too high: try a lower --lr (now {run.settings.lr:g}) and resume with --resume_from"
    )


def log_train(run: Run, meter: ThroughputMeter, lr: float, result: StepResult) -> None:
    state = run.state
    rec: dict[str, Any] = {
        "step": state.iteration, "tokens": state.tokens_seen, "time_s": round(state.elapsed_s, 3),
        "loss": result.loss, "lr": lr, "grad_norm": result.grad_norm, **meter.take(state.iteration),
        "group_lrs": {g["name"]: g["lr"] for g in state.optimizer.param_groups}, **run.objective.log_record(),
    }  # fmt: skip
    if run.epoch_tokens:
        rec["epoch"] = state.tokens_seen / run.epoch_tokens
    if run.norms is not None:
        rec["weight_rms"] = run.norms.weight_rms()
        rec["act_rms"] = run.norms.act_rms()
    if run.bar is not None:
        run.bar.loss = result.loss
    run.logger.train(rec)


def report_hook(run: Run, result: HookResult) -> None:
    """One console line and one ``checkpoint_hook`` event per finished --on_checkpoint command."""
    if result.ok:
        print0(f"Checkpoint hook: {result.summary()}")
    else:
        last = result.output_tail.splitlines()[-1] if result.output_tail else ""
        runtime.eprint0(f"warning: {result.summary()}" + (f": {last}" if last else "") + "; training goes on")
    run.logger.event(result.step, "checkpoint_hook", result.summary(), exit_code=result.exit_code, path=result.path,
                     seconds=round(result.seconds, 3), output_tail=result.output_tail)  # fmt: skip


def check_ranks_agree(run: Run) -> None:
    """DDP sanity check at the end: every rank must hold the same weights (FSDP ranks hold shards)."""
    if not run.rt.info.is_distributed or run.settings.fsdp:
        return
    digests = runtime.all_gather_object(runtime.weights_digest(run.state.model))
    if len(set(digests)) == 1:
        print0(f"DDP check: weights identical on all {len(digests)} ranks (sha256 {digests[0][:16]})")
        run.logger.event(run.state.iteration, "ddp_check", f"identical sha256 {digests[0]}")
    else:
        msg = "DDP check FAILED: ranks ended with different weights: " + ", ".join(d[:12] for d in digests)
        print0(f"warning: {msg}")
        run.logger.event(run.state.iteration, "ddp_check", msg)


# ==============================================================================================
# entry point
# ==============================================================================================
def _run(argv: Sequence[str] | None, stop: StopRequest) -> int:
    try:
        settings = parse_settings(argv)
    except SystemExit as exc:  # argparse already printed usage / the error / --help
        return int(exc.code) if isinstance(exc.code, int) else 2
    run_training(settings, stop)
    return 0


def run_training(settings: TrainSettings, stop: StopRequest, model_factory: Any = None) -> Run:
    """Set up and run the loop; whatever happens, close what the run opened. Returns the finished run."""
    run: Run | None = None
    try:
        run = setup(settings, model_factory)
        train_loop(run, stop)
        return run
    except OSError as err:
        # The environment failed under us (disk full, file system gone): stop cleanly and say what
        # is still safe, rather than a traceback. Checkpoint-write failures arrive as TrainingFailure.
        last = run.last_saved if run else None
        safe = f"; the last checkpoint {last} is intact" if last else "; no checkpoint was written yet"
        raise TrainingFailure(f"{os_reason(err)}{safe}") from err
    finally:
        if run is not None:
            # --on_checkpoint commands still running get their timeout, except after a second Ctrl-C.
            run.hooks.close(wait=not isinstance(sys.exc_info()[1], KeyboardInterrupt))
            if run.norms is not None:
                run.norms.remove()
            run.logger.close()
            if run.lock is not None:
                run.lock.release()


def main(argv: Sequence[str] | None = None) -> int:
    """Run training; returns the exit status (0 ok, 1 training failure, 2 bad input, 130 abort)."""
    stop = StopRequest()
    info = runtime.dist_info_from_env() if "RANK" in os.environ else runtime.DistInfo()
    prefix = f"[rank {info.rank}] " if info.rank else ""
    try:
        return _run(argv, stop)
    except UserError as err:
        if not isinstance(err, runtime.RefusedOnRankZero):  # rank 0 already said it, once
            print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
        return 2
    except TrainingFailure as err:
        print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
        return 1
    except AlreadyFinished as done:
        print0(str(done))
        return 0
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        stop.uninstall()
        runtime.destroy_process_group()


def train(settings: TrainSettings, model: nn.Module | Callable[[], nn.Module] | None = None) -> Run:
    """The training program from Python (a notebook, a custom model): the same setup and loop as the CLI.

    ``settings``: a :class:`TrainSettings` (``TrainSettings.from_kwargs(train_data_path=..., ...)``
    checks it like the command line). ``model``: any ``nn.Module`` mapping token ids ``(batch, seq)``
    to logits ``(batch, seq, vocab_size)``, or a function building one (called after seeding, so
    every rank builds the same weights); default: the TransformerLM the settings describe.
    Checkpoints, resume, evaluation, logging and DDP (under torchrun) work as on the command line;
    errors are raised (``UserError`` for bad input, :class:`TrainingFailure`), not exit codes.
    Returns the finished :class:`Run` (``run.state.model``, ``run.last_saved``, ``run.manager.directory``).
    """
    stop = StopRequest()
    try:
        # A copy: setup fills in the run name, the run directory and epoch intervals, and the caller's
        # settings should still describe what they asked for (to start another run from them).
        return run_training(dataclasses.replace(settings), stop, model)
    finally:
        stop.uninstall()
        runtime.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
