"""``--epochs F``, ``--eval_every_epochs F``, ``--checkpoint_every_epochs F``: the run's length and
intervals in epochs instead of steps.

An epoch is the training tokens divided by the tokens one optimizer step consumes (batch x context
x accumulation x world size); batches are sampled at random positions, so "an epoch" means as many
tokens as the file holds, not one pass over each of them. The interval becomes
``max(1, round(F * steps_per_epoch))`` steps, fixed at setup (so the loop keeps its step intervals,
and a resumed run with the same flags lands on the same steps); the console shows the epoch.
``--epochs F`` sets ``--max_iters`` the same way, before the intervals (which may be longer than it).
"""

from __future__ import annotations

from typing import Any


def steps_per_epoch(train_tokens: int, tokens_per_step: int) -> float:
    return train_tokens / tokens_per_step


def epoch_interval(epochs: float, train_tokens: int, tokens_per_step: int) -> int:
    """Optimizer steps in ``epochs`` epochs, at least 1."""
    return max(1, round(epochs * steps_per_epoch(train_tokens, tokens_per_step)))


def apply_epoch_intervals(s: Any, train_tokens: int, tokens_per_step: int) -> list[str]:
    """Set ``s.max_iters``, ``s.eval_interval`` / ``s.checkpoint_interval`` from their epoch forms;
    one note per change."""
    notes = []
    per_epoch = steps_per_epoch(train_tokens, tokens_per_step)
    if s.epochs is not None:
        s.max_iters = epoch_interval(s.epochs, train_tokens, tokens_per_step)
        notes.append(
            f"--epochs {s.epochs:g}: {s.max_iters:,} optimizer steps (an epoch is {per_epoch:.1f} steps of "
            f"{tokens_per_step:,} tokens over {train_tokens:,} train tokens)"
        )
    for epochs_name, steps_name, what in (("eval_every_epochs", "eval_interval", "evaluating"),
                                          ("checkpoint_every_epochs", "checkpoint_interval", "checkpointing")):  # fmt: skip
        epochs = getattr(s, epochs_name)
        if epochs is None:
            continue
        steps = epoch_interval(epochs, train_tokens, tokens_per_step)
        setattr(s, steps_name, steps)
        notes.append(
            f"--{epochs_name} {epochs:g}: {what} every {steps} steps (an epoch is {per_epoch:.1f} steps of "
            f"{tokens_per_step:,} tokens over {train_tokens:,} train tokens)"
        )
        if steps > s.max_iters:
            notes.append(f"--{epochs_name} {epochs:g} is {steps} steps > --max_iters {s.max_iters}: only at the end")
    return notes


def uses_epochs(s: Any) -> bool:
    return s.epochs is not None or s.eval_every_epochs is not None or s.checkpoint_every_epochs is not None
