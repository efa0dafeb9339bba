"""``--init_from CHECKPOINT``: start a new run (step 0, fresh optimizer) from another run's weights.

The usual recipe for supervised fine-tuning: pretrain, then continue from the pretrained weights
on conversation data with the loss on the answers only (see :mod:`cs336_basics.corpus.chat`).
The model's shape comes from the checkpoint's ``model_config``, so no shape flag needs repeating;
a shape flag given explicitly (command line or ``--config``) that contradicts it is refused. The
optimizer state, step, schedule position and data order are *not* taken: it is a new run. (To
continue the same run, use ``--resume``; with both, a checkpoint found by ``--resume`` wins.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cs336_basics.corpus.layout import CorpusError

_PAYLOADS: dict[Path, dict[str, Any]] = {}  # read once at parse time, used once at setup


def resolve_init_checkpoint(path: str | Path) -> Path:
    """A ``.pt`` file as given; a run directory: ``best.pt``, else its newest numbered checkpoint."""
    from cs336_basics.training.checkpoints import resolve_checkpoint

    return resolve_checkpoint(path, flag="--init_from")


def _read(path: Path) -> dict[str, Any]:
    from cs336_basics.training.checkpoints import read_checkpoint

    if path not in _PAYLOADS:
        _PAYLOADS[path] = read_checkpoint(path)
    return _PAYLOADS[path]


def init_shape(init_from: str, model_fields: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The ``--init_from`` checkpoint's model shape (its ``model_fields``), and the checkpoint as
    messages name it; the settings take it (a contradicting setting given is refused there)."""
    path = resolve_init_checkpoint(init_from)
    cfg = _read(path).get("model_config")
    if not isinstance(cfg, dict):
        raise CorpusError(f"--init_from {path}: checkpoint has no model_config; it was not written by this trainer")
    from cs336_basics.extensions.diffusion import data_shape

    made_by = data_shape(cfg)  # as settings: a diffusion model's [MASK] is not a data id
    return f"--init_from {path}", {name: made_by[name] for name in model_fields if name in made_by}


def init_checkpoint(init_from: str) -> tuple[Path, dict[str, Any]]:
    """The ``--init_from`` checkpoint's path and payload (read once: :func:`load_init_weights` reuses it)."""
    path = resolve_init_checkpoint(init_from)
    return path, _read(path)


def load_init_weights(model: Any, init_from: str, say: Callable[[str], None]) -> Path:
    """Copy the checkpoint's weights into ``model`` (before any FSDP sharding or optimizer)."""
    from cs336_basics.training.checkpoints import load_model_weights

    path = resolve_init_checkpoint(init_from)
    payload = _PAYLOADS.pop(path, None) or _read(path)
    _PAYLOADS.pop(path, None)
    load_model_weights(model, payload, f"--init_from {path}")
    say(f"Initialized weights from {path} (iteration {payload.get('iteration', '?')}); fresh optimizer, step 0")
    return path
