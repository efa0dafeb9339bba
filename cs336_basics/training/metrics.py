"""Where training numbers go: console lines, ``metrics.jsonl``, and optionally wandb / TensorBoard.

One ``Logger`` interface with a no-op implementation for ranks other than 0, so the training loop
calls ``logger.train(...)`` unconditionally. The console format and wandb keys are the users' muscle
memory (docs/training.md shows them) and are kept exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cs336_basics.training.runtime import console_write, show_status
from cs336_basics.utils.errors import UserError, os_reason
from cs336_basics.utils.fsutil import atomic_write_text

if TYPE_CHECKING:  # torch is imported where it is used, so reading metrics needs no torch
    import torch
    from torch import nn

RULE = "-" * 80


def _finite_or_none(v: Any) -> Any:
    """JSON has no NaN/Inf; write null instead so every line stays parseable."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    return v


def finite_number(x: Any) -> float | None:
    """``x`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, skipping blank, torn (a crash mid-line) and non-object lines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def format_train_line(record: dict[str, Any]) -> str:
    """``Iter    100 | Loss: 6.2341 | LR: 3.00e-05 | Time: 145.3ms | Tokens/sec: 113024 | MFU: 41.2%``."""
    mfu = record.get("mfu")
    line = (
        f"Iter {record['step']:6d} | Loss: {record['loss']:.4f} | LR: {record['lr']:.2e} | "
        f"Time: {record['iter_time_ms']:.1f}ms | Tokens/sec: {record['tokens_per_sec']:.0f} | "
        f"MFU: {'n/a' if mfu is None else f'{100 * mfu:.1f}%'}"
    )
    if record.get("eta_s") is not None:
        line += f" | ETA {hms(record['eta_s'])}"
    if record.get("epoch") is not None:  # only with --eval_every_epochs / --checkpoint_every_epochs
        line += f" | Epoch {record['epoch']:.2f}"
    return line


# --log_format trainkit: the metrics.jsonl keys under the names trainkit's console backend prints.
TRAINKIT_NAMES = {"grad_norm": "grad_l2_norm", "weight_rms": "weight_norm", "act_rms": "activation_norm",
                  "group_lrs": "lr"}  # fmt: skip


def trainkit_record(record: dict[str, Any]) -> dict[str, Any]:
    """A train/eval/final record with trainkit's console keys: ``type`` and ``step`` as they are,
    every other value as ``metrics.NAME`` (``metrics.loss``, ``metrics.lr``,
    ``metrics.grad_l2_norm``), a table's entries as ``metrics.NAME/KEY`` (``metrics.lr/hidden``,
    ``metrics.weight_norm/layers.0``, ``metrics.moe/...``)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("type", "step"):
            out[key] = value
            continue
        name = TRAINKIT_NAMES.get(key, key)
        if isinstance(value, dict):
            out.update({f"metrics.{name}/{k}": v for k, v in value.items()})
        else:
            out[f"metrics.{name}"] = value
    return out


def hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# Dense peak FLOP/s of the tensor cores per device family, by autocast dtype (fp32 assumes TF32 is
# off: CUDA-core FP32). MFU is only reported where the peak is known: never on a CPU.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2},
    "4090": {"bf16": 165.0, "fp16": 165.0, "fp32": 82.6},
}


# A generous guess at a CPU's sustained training FLOP/s (a laptop's cores in fp32 matmuls manage less),
# so the hint below fires only when a step is long for certain.
CPU_FLOPS_GUESS = 1e11
CPU_HINT_STEP_S = 10.0


def cpu_step_hint(device: torch.device, flops_per_step: float) -> str | None:
    """One line for a GPU-sized model started on a CPU (the course's default model takes minutes a
    step there, with no other sign of why): the estimated step time and the quickstart's sizes."""
    if device.type != "cpu":
        return None
    est = flops_per_step / CPU_FLOPS_GUESS
    if est < CPU_HINT_STEP_S:
        return None
    return (
        f"Note: on a CPU each step of this model needs about {flops_per_step:.1e} FLOPs (at least ~{est:.0f} s "
        "a step here); to try things out, use the quickstart's sizes (--d_model 128 --num_layers 4 --num_heads 4 "
        "--d_ff 384 --context_length 128 --batch_size 32) or python -m cs336_basics.quickstart"
    )


def peak_flops(device: torch.device, dtype_name: str) -> float | None:
    """The device's peak FLOP/s for ``dtype_name`` (bf16/fp16/fp32), or None when unknown."""
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[dtype_name] * 1e12
    return None


class NormRecorder:
    """Per-layer weight RMS and activation RMS (forward hooks, registered only with --log_norms).

    Set ``active`` before a forward pass to record that pass's activations (the last one wins).
    """

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


class ThroughputMeter:
    """When to print a train line, and the speed numbers on it.

    A line is due every ``log_interval`` steps, after the first step of the run (so a slow model
    shows signs of life at once), and whenever ``heartbeat_s`` seconds passed without one. Time spent
    evaluating and checkpointing is kept out of the speed (``with meter.paused(): ...``).
    """

    def __init__(
        self,
        *,
        start_step: int,
        max_steps: int,
        log_interval: int,
        heartbeat_s: float,
        tokens_per_step: int,
        flops_per_token: float,
        peak_flops: float | None,
    ) -> None:
        self.start_step, self.max_steps = start_step, max_steps
        self.log_interval, self.heartbeat_s = log_interval, heartbeat_s
        self.tokens_per_step, self.flops_per_token, self.peak_flops = tokens_per_step, flops_per_token, peak_flops
        self._t_start = self._t_last = time.perf_counter()
        self._paused_total = 0.0  # pause time since the run started (kept out of the ETA too)
        self._steps_since = 0

    def step_done(self) -> None:
        self._steps_since += 1

    def due(self, step: int) -> bool:
        heartbeat = self.heartbeat_s > 0 and time.perf_counter() - self._t_last >= self.heartbeat_s
        return step % self.log_interval == 0 or step == self.start_step + 1 or heartbeat

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            self._t_last += dt
            self._paused_total += dt

    def take(self, step: int) -> dict[str, Any]:
        """Speed since the previous line (then start a new interval)."""
        now = time.perf_counter()
        dt = max(now - self._t_last, 1e-9)
        n = max(self._steps_since, 1)
        tokens_per_sec = self._steps_since * self.tokens_per_step / dt
        self._t_last, self._steps_since = now, 0
        return {
            "tokens_per_sec": tokens_per_sec,
            "iter_time_ms": 1000.0 * dt / n,
            "mfu": tokens_per_sec * self.flops_per_token / self.peak_flops if self.peak_flops else None,
            "eta_s": self._per_step(now, step) * (self.max_steps - step),
        }

    def _per_step(self, now: float, step: int) -> float:
        """Seconds per step since the run started, evaluation and checkpoint pauses left out."""
        return (now - self._t_start - self._paused_total) / max(step - self.start_step, 1)

    def progress(self, step: int) -> dict[str, float]:
        """The progress bar's numbers: tokens/s over the whole run so far, and the ETA (no new interval)."""
        per_step = self._per_step(time.perf_counter(), step)
        return {
            "tokens_per_sec": self.tokens_per_step / max(per_step, 1e-9),
            "eta_s": per_step * (self.max_steps - step),
        }


class ProgressBar:
    """The live progress line on a terminal, redrawn in place under the printed lines:
    ``Train  120/1000 [###-----------------]  12% | loss 3.4567 | 12,345 tok/s | ETA 0:01:23``
    (the loss of the last logged step: reading it back every step would stall the GPU), and
    ``Eval val  37/100 [...]`` while evaluating. Drawn at most every ``min_interval_s`` seconds, and
    always on the first and the last step. Only for a terminal (see :func:`wants_progress_bar`)."""

    BAR = 20

    def __init__(self, total: int, start: int = 0, min_interval_s: float = 0.1) -> None:
        self.total, self.start, self.min_interval_s = total, start, min_interval_s
        self.loss: float | None = None  # set by each logged train line
        self._drawn_at: float | None = None
        self._train_text: str | None = None

    def train(self, step: int, meter: ThroughputMeter) -> None:
        """Called every step; between redraws it does nothing else."""
        if not self._due(force=step in (self.start + 1, self.total)):
            return
        numbers = meter.progress(step)
        loss = "n/a" if self.loss is None else f"{self.loss:.4f}"
        self._train_text = (
            f"Train {self._count(step, self.total)} | loss {loss} | {numbers['tokens_per_sec']:,.0f} tok/s | "
            f"ETA {hms(numbers['eta_s'])}"
        )
        self._draw(self._train_text)

    def eval(self, split: str, done: int, total: int) -> None:
        if self._due(force=done in (1, total)):
            self._draw(f"Eval {split} {self._count(done, total)}")

    def eval_done(self) -> None:
        """Back to the training line shown before the evaluation."""
        if self._train_text is not None:
            self._draw(self._train_text)

    def close(self) -> None:
        if self._drawn_at is not None:
            show_status(None)
            self._drawn_at = None

    def _count(self, done: int, total: int) -> str:
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
        filled = int(frac * self.BAR)
        width = len(str(total))
        return f"{done:{width}d}/{total} [{'#' * filled}{'-' * (self.BAR - filled)}] {100 * frac:3.0f}%"

    def _due(self, force: bool) -> bool:
        """Whether to redraw now: forced, or ``min_interval_s`` after the last drawing."""
        return force or self._drawn_at is None or time.monotonic() - self._drawn_at >= self.min_interval_s

    def _draw(self, text: str) -> None:
        self._drawn_at = time.monotonic()
        columns = shutil.get_terminal_size((80, 24)).columns
        show_status(text[: max(columns - 1, 10)])  # a wrapped line could not be redrawn in place


def wants_progress_bar(enabled: bool, log_format: str, is_main: bool) -> bool:
    """The bar is drawn on rank 0, for text logs, when stdout is a terminal (never into a pipe or file)."""
    return enabled and log_format == "text" and is_main and sys.stdout.isatty()


class LossEMA:
    """Bias-corrected exponential moving average of the logged train losses (``train/loss_ema``).

    The average Adam keeps of its gradients (Kingma & Ba 2015), applied to the loss curve: each
    logged loss weighs ``1 - beta``, and dividing by ``1 - beta**n`` removes the pull towards the zero
    it starts from. Non-finite losses are left out. It restarts with each process (not checkpointed).
    """

    def __init__(self, beta: float = 0.9) -> None:
        self.beta, self._avg, self._n = beta, 0.0, 0

    def update(self, loss: Any) -> float | None:
        x = finite_number(loss)
        if x is not None:
            self._avg = self.beta * self._avg + (1.0 - self.beta) * x
            self._n += 1
        return self._avg / (1.0 - self.beta**self._n) if self._n else None


class Logger:
    """The no-op logger (ranks other than 0); :class:`RunLogger` fills these in."""

    def console(self, line: str = "") -> None:  # noqa: D102
        pass

    def train(self, record: dict[str, Any]) -> None:
        pass

    def eval(self, record: dict[str, Any]) -> None:
        pass

    def final(self, record: dict[str, Any]) -> None:
        pass

    def event(self, step: int, event: str, detail: str = "", **extra: Any) -> None:
        pass

    def close(self) -> None:
        pass


class NullLogger(Logger):
    """Explicit name for the no-op logger."""


def rewind_jsonl(path: str | os.PathLike, max_step: int) -> int:
    """Drop records with ``step > max_step`` (work lost since the checkpoint we resume from).

    Keeps the log consistent with the training state so a resumed run's file reads like an
    uninterrupted one. Returns the number of records dropped. Unparseable lines (a torn last line
    after a crash) are dropped too.
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        step = rec.get("step") if isinstance(rec, dict) else None
        if isinstance(step, int) and step > max_step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(k + "\n" for k in kept))
    return dropped


class RunLogger(Logger):
    """Rank-0 logger: console (stdout), ``<run_dir>/metrics.jsonl``, optional wandb and TensorBoard."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        use_wandb: bool = False,
        wandb_project: str = "transformer-lm",
        wandb_run_name: str | None = None,
        wandb_entity: str | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        resume_step: int | None = None,
        log_format: str = "text",
        run_name: str | None = None,
        tensorboard_flush_every: int | None = None,
    ) -> None:
        # --log_format json: the console gets each record as one JSON line instead of the text lines
        # (trainkit: with trainkit's keys, see trainkit_record).
        self._json_console = log_format in ("json", "trainkit")
        self._trainkit = log_format == "trainkit"
        self._tb_flush_every, self._tb_flushed_at = tensorboard_flush_every, 0
        self._loss_ema = LossEMA()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        if resume_step is not None:
            rewind_jsonl(self.jsonl_path, resume_step)
        elif self.jsonl_path.exists():
            # A fresh run in a directory with an old log: start a new log, keep the old one aside.
            self.jsonl_path.replace(self.run_dir / "metrics.prev.jsonl")
        self._f = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._wandb = None
        self._tb = None
        if use_wandb:
            try:
                import wandb  # type: ignore[import-not-found]
            except ImportError:
                raise UserError(
                    "--use_wandb needs the wandb package: install it with `uv sync --extra wandb`"
                ) from None
            self._wandb = wandb.init(
                project=wandb_project, entity=wandb_entity, name=wandb_run_name or run_name, config=config or {}
            )
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "--tensorboard_dir needs the tensorboard package: install it with `uv sync --extra tensorboard`"
                ) from None
            # One subdirectory per run, as TensorBoard expects (its run selector lists them).
            self._tb = SummaryWriter(log_dir=str(Path(tensorboard_dir) / run_name if run_name else tensorboard_dir))

    # -- sinks -------------------------------------------------------------------------------------
    def console(self, line: str = "") -> None:
        if not self._json_console:
            console_write(line)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_finite_or_none(record), sort_keys=False)
        try:
            self._f.write(line + "\n")
            self._f.flush()
        except OSError as err:  # e.g. disk full: name the file (a write on an open file has no name)
            raise OSError(err.errno, f"could not write {self.jsonl_path}: {os_reason(err)}") from err
        if self._trainkit and record.get("type") != "event":
            line = json.dumps(_finite_or_none(trainkit_record(record)))
        if self._json_console:
            console_write(line, sys.stdout)

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        values = {k: v for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if self._wandb is not None:
            self._wandb.log(values, step=step)
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, global_step=step)

    # -- records -----------------------------------------------------------------------------------
    def train(self, record: dict[str, Any]) -> None:
        self.console(format_train_line(record))
        self._write({"type": "train", **record})
        scalars = {
            "train/loss": record["loss"],
            "train/learning_rate": record["lr"],
            "train/tokens_per_sec": record["tokens_per_sec"],
            "train/iter_time_ms": record["iter_time_ms"],
        }
        if record.get("grad_norm") is not None:
            scalars["train/grad_norm"] = record["grad_norm"]
        if record.get("mfu") is not None:
            scalars["train/mfu"] = record["mfu"]
        for name, lr in (record.get("group_lrs") or {}).items():
            scalars[f"lr/{name}"] = lr
        for kind in ("weight_rms", "act_rms"):
            for name, v in (record.get(kind) or {}).items():
                scalars[f"norms/{kind}/{name}"] = v
        smoothed = self._loss_ema.update(record["loss"])
        if smoothed is not None:
            scalars["train/loss_ema"] = smoothed
        for name, v in (record.get("moe") or {}).items():  # MoE router losses (--ffn_type moe)
            scalars[f"moe/{name}"] = v
        self._scalars(record["step"], scalars)
        if (
            self._tb is not None
            and self._tb_flush_every
            and record["step"] - self._tb_flushed_at >= self._tb_flush_every
        ):
            self._tb.flush()
            self._tb_flushed_at = record["step"]

    def eval(self, record: dict[str, Any]) -> None:
        self.console(RULE)
        self.console(f"Evaluating at iteration {record['step']}...")
        self.console(f"Train loss: {record['train_loss']:.4f} | Val loss: {record['val_loss']:.4f}")
        self.console(RULE)
        self._write({"type": "eval", **record})
        self._scalars(
            record["step"],
            {
                "eval/train_loss": record["train_loss"],
                "eval/val_loss": record["val_loss"],
                "eval/val_perplexity": record["val_perplexity"],
                "eval/val_accuracy": record["val_accuracy"],
            },
        )

    def final(self, record: dict[str, Any]) -> None:
        self.console(RULE)
        self.console(f"Final evaluation: Train loss: {record['train_loss']:.4f} | Val loss: {record['val_loss']:.4f}")
        self.console(f"Val perplexity: {record['val_perplexity']:.2f} | Val accuracy: {record['val_accuracy']:.4f}")
        self.console(RULE)
        self._write({"type": "final", **record})
        self._scalars(record["step"], {"final/train_loss": record["train_loss"], "final/val_loss": record["val_loss"]})

    def event(self, step: int, event: str, detail: str = "", **extra: Any) -> None:
        self._write({"type": "event", "step": step, "event": event, "detail": detail, **extra})

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as err:  # noqa: BLE001 - never lose a finished run to a wandb hiccup
                print(f"warning: wandb.finish() failed: {err}", file=sys.stderr)
            self._wandb = None


def check_extras(use_wandb: bool, tensorboard_dir: str | os.PathLike | None) -> None:
    """Fail early (before data loading) if a requested integration isn't installed."""
    import importlib.util

    if use_wandb and importlib.util.find_spec("wandb") is None:
        raise UserError("--use_wandb needs the wandb package: install it with `uv sync --extra wandb`")
    if tensorboard_dir is not None and importlib.util.find_spec("tensorboard") is None:
        raise UserError(
            "--tensorboard_dir needs the tensorboard package: install it with `uv sync --extra tensorboard`"
        )
