"""Learning-rate finder: ``python -m cs336_basics.tools.lr_find`` with the training program's flags.

From a fresh model, train ``--num_steps`` steps while the learning rate grows exponentially from
``--start_lr`` to ``--end_lr`` (Smith's "LR range test"), recording the loss. The loss first
barely moves, then falls, then blows up. The suggestion is the LR where the *smoothed* loss falls
fastest per unit of log(LR): a good peak LR sits there or a little below (divide it by ~3 for a
long run with warmup). The sweep stops early once the smoothed loss exceeds ``--divergence`` times
its best value, or turns non-finite.

It shares the training program's model, optimizer (``--optimizer``, per-group LRs scale with the
sweep), data and step, and touches none of its files: nothing is written to ``--checkpoint_dir``
(the sweep's table, CSV and plot go where ``--csv``/``--plot`` say).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cs336_basics.corpus.tokens import get_batch, load_tokens
from cs336_basics.lm.model import TransformerLM
from cs336_basics.training import runtime
from cs336_basics.training.settings import ConfigError, TrainSettings, parse_settings_and_extras
from cs336_basics.training.step import StepResult, build_objective, train_step
from cs336_basics.training_together import build_optimizer
from cs336_basics.utils.errors import run_cli
from cs336_basics.utils.fsutil import atomic_write_text


@dataclass(frozen=True)
class SweepPoint:
    step: int
    lr: float
    loss: float
    smoothed: float  # bias-corrected exponential moving average of the loss


def lr_at(step: int, num_steps: int, start_lr: float, end_lr: float) -> float:
    """Exponential ramp: ``start_lr`` at step 0, ``end_lr`` at step ``num_steps - 1``."""
    return start_lr * (end_lr / start_lr) ** (step / max(num_steps - 1, 1))


def lr_sweep(
    step_fn: Callable[[float], float],
    *,
    num_steps: int,
    start_lr: float,
    end_lr: float,
    smoothing: float = 0.05,
    divergence: float = 4.0,
) -> tuple[list[SweepPoint], bool]:
    """Run ``step_fn(lr) -> loss`` on the exponential ramp; ``(points, diverged)``."""
    points: list[SweepPoint] = []
    avg, best = 0.0, math.inf
    for i in range(num_steps):
        lr = lr_at(i, num_steps, start_lr, end_lr)
        loss = step_fn(lr)
        if not math.isfinite(loss):
            return points, True
        avg = (1 - smoothing) * avg + smoothing * loss
        smoothed = avg / (1 - (1 - smoothing) ** (i + 1))
        points.append(SweepPoint(i, lr, loss, smoothed))
        best = min(best, smoothed)
        if smoothed > divergence * best:
            return points, True
    return points, False


def suggest_lr(points: Sequence[SweepPoint], skip_start: int = 3) -> float | None:
    """The LR of the steepest fall of the smoothed loss per unit of log(LR), before its minimum.

    Only points up to the smoothed minimum count (past it the loss is climbing towards divergence);
    the first ``skip_start`` are skipped (the moving average is still settling there).
    """
    if len(points) < skip_start + 3:
        return None
    lowest = min(range(len(points)), key=lambda i: points[i].smoothed)
    usable = points[skip_start : lowest + 1]
    if len(usable) < 3:
        return None
    slopes = [
        ((b.smoothed - a.smoothed) / (math.log(b.lr) - math.log(a.lr)), math.sqrt(a.lr * b.lr))
        for a, b in zip(usable, usable[1:], strict=False)
    ]
    slope, lr = min(slopes)
    return lr if slope < 0 else None


def run_sweep(s: TrainSettings, extras: dict) -> tuple[list[SweepPoint], bool]:
    """Build the training program's model/optimizer/data and sweep (single process)."""
    rt = runtime.setup_runtime(s.device, s.dtype, s.tf32, s.deterministic)
    if rt.info.is_distributed:
        raise ConfigError("lr_find runs in one process: start it with python -m, not torchrun")
    # Only the training stream: a sweep never evaluates (so the trainer's "no best.pt" note would mislead).
    train_data = load_tokens(s.train_data_path, s.vocab_size, s.data_dtype, s.context_length)
    print(f"Train data size: {len(train_data):,} tokens")
    runtime.seed_everything(s.seed)
    model = TransformerLM(s.model_config(), device=rt.device)
    model.activation_checkpointing = s.activation_checkpointing
    optimizer = build_optimizer(model, s)
    rng = np.random.Generator(np.random.PCG64(s.seed))
    objective = build_objective(s, model, rt.rank)  # the run's loss (--objective, MoE router losses)
    taken = [0]

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        batches = (get_batch(train_data, s.batch_size, s.context_length, rt.device, rng=rng)
                   for _ in range(s.grad_accum_steps))  # fmt: skip
        result: StepResult = train_step(model, optimizer, rt.scaler, batches, accum_steps=s.grad_accum_steps,
                                        grad_clip=s.grad_clip, autocast=rt.autocast, no_sync=runtime.no_sync(model),
                                        objective=objective, step=taken[0])  # fmt: skip
        taken[0] += 1
        return result.loss

    return lr_sweep(step, num_steps=extras["num_steps"], start_lr=extras["start_lr"], end_lr=extras["end_lr"],
                    smoothing=extras["smoothing"], divergence=extras["divergence"])  # fmt: skip


def _plot(points: Sequence[SweepPoint], suggestion: float | None, out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([p.lr for p in points], [p.loss for p in points], alpha=0.3, label="loss")
    ax.plot([p.lr for p in points], [p.smoothed for p in points], label="smoothed")
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def _add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LR finder")
    g.add_argument("--start_lr", type=float, default=1e-6, help="first learning rate of the sweep")
    g.add_argument("--end_lr", type=float, default=1.0, help="last learning rate of the sweep")
    g.add_argument("--num_steps", type=int, default=100, help="steps of the sweep (one LR each)")
    g.add_argument("--smoothing", type=float, default=0.05, help="weight of the newest loss in the moving average")
    g.add_argument(
        "--divergence", type=float, default=4.0, help="stop once the smoothed loss exceeds this many times its best"
    )
    g.add_argument("--csv", type=str, default=None, help="also write step,lr,loss,smoothed to this CSV file")
    g.add_argument("--plot", type=str, default="lr_find.png", help="plot file (written when matplotlib is installed)")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        s, extras = parse_settings_and_extras(argv, _add_flags, prog="python -m cs336_basics.tools.lr_find")
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    if not 0 < extras["start_lr"] < extras["end_lr"]:
        raise ConfigError(f"need 0 < --start_lr < --end_lr, got {extras['start_lr']:g} and {extras['end_lr']:g}")
    if extras["num_steps"] < 10:
        raise ConfigError(f"--num_steps must be >= 10 for a useful sweep, got {extras['num_steps']}")
    if not 0 < extras["smoothing"] <= 1 or extras["divergence"] <= 1:
        raise ConfigError("--smoothing must be in (0, 1] and --divergence > 1")
    points, diverged = run_sweep(s, extras)
    suggestion = suggest_lr(points)
    print(f"{'step':>5} {'lr':>10} {'loss':>9} {'smoothed':>9}")
    every = max(len(points) // 25, 1)
    for p in points:
        if p.step % every == 0 or p is points[-1]:
            print(f"{p.step:5d} {p.lr:10.3e} {p.loss:9.4f} {p.smoothed:9.4f}")
    end = (
        f"diverged at lr {lr_at(len(points), extras['num_steps'], extras['start_lr'], extras['end_lr']):.3e}"
        if diverged
        else "did not diverge"
    )
    print(f"Swept {len(points)} steps ({end}).")
    if suggestion is None:
        print(
            "No suggestion: the smoothed loss never fell; try a wider range (--start_lr/--end_lr) or more --num_steps."
        )
    else:
        print(f"Suggested --lr {suggestion:.2e} (steepest descent of the smoothed loss); "
              f"for a long run with warmup, about {suggestion / 3:.1e} is a safe start.")  # fmt: skip
    if extras["csv"]:
        rows = "".join(f"{p.step},{p.lr!r},{p.loss!r},{p.smoothed!r}\n" for p in points)
        atomic_write_text(extras["csv"], "step,lr,loss,smoothed\n" + rows)
        print(f"Wrote {extras['csv']}")
    if extras["plot"]:
        if _plot(points, suggestion, Path(extras["plot"])):
            print(f"Wrote {extras['plot']}")
        else:
            print("(no plot: matplotlib is not installed; `uv sync --extra plot`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
