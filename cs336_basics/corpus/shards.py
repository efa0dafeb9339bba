"""Training batches from many token files ("shards"), and the loss mask of conversation data.

``--train_data_path`` / ``--val_data_path`` may name one token file (then nothing here runs: the
training program gets the memory-mapped array and ``data.get_batch`` exactly as before), or
several files (comma-separated), a glob, or a directory of shards; or one file with a mask beside it
(``OUT.mask.npy``, written by ``tokenize_data --chat``). Those become a :class:`TokenShards`.

Sampling, for a batch of B windows of T+1 tokens: each window first picks a shard with probability
proportional to its token count, ``p_i = n_i / sum(n)``, then a start uniformly among the shard's
``n_i - T`` valid starts, so a window never crosses from one shard into the next (the files'
order carries no meaning) and every shard contributes its share of the tokens. Both draws come
from the generator the caller passes (the run's data RNG, whose state every checkpoint saves), so
a resumed run draws exactly the batches an uninterrupted one would.

Shards must come from one tokenizer: their sidecars' ``tokenizer_sha256`` must agree (shards
without a sidecar are not checked). Masks are all-or-nothing across shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from cs336_basics.corpus.layout import CorpusError, mask_path, resolve_token_paths
from cs336_basics.corpus.tokens import NPY_READ_ERRORS, load_tokens
from cs336_basics.utils.devices import resolve_device
from cs336_basics.utils.token_files import read_tokens_meta

Batch = tuple[Int[Tensor, "batch seq"], ...]  # (x, y) or (x, y, mask of y)


@dataclass
class TokenShards:
    """Several memory-mapped token arrays (each with an optional uint8 mask) sampled as one set."""

    paths: list[Path]
    arrays: list[np.ndarray]
    masks: list[np.ndarray] | None
    meta: dict[str, Any] | None  # the first shard's sidecar (they agree on the tokenizer)
    skipped: list[Path] = field(default_factory=list)  # files too short for one window

    def __post_init__(self) -> None:
        self.sizes = np.array([len(a) for a in self.arrays], dtype=np.int64)
        self.weights = self.sizes / self.sizes.sum()

    def __len__(self) -> int:
        return int(self.sizes.sum())

    @property
    def masked(self) -> bool:
        return self.masks is not None

    def sample_windows(
        self, batch_size: int, context_length: int, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, start) of ``batch_size`` windows of ``context_length + 1`` tokens."""
        if np.any(self.sizes <= context_length):
            short = self.paths[int(np.argmax(self.sizes <= context_length))]
            raise CorpusError(f"{short}: too short for context_length={context_length}")
        num_starts = self.sizes - context_length  # valid starts of shard i: 0 .. n_i - T - 1
        if rng is None:
            shard = np.random.choice(len(self.sizes), size=batch_size, p=self.weights)
            start = (np.random.random_sample(batch_size) * num_starts[shard]).astype(np.int64)
        else:
            shard = rng.choice(len(self.sizes), size=batch_size, p=self.weights)
            start = rng.integers(0, num_starts[shard], dtype=np.int64)
        return shard, start

    def get_batch(
        self,
        batch_size: int,
        context_length: int,
        device: str | torch.device,
        rng: np.random.Generator | None = None,
    ) -> Batch:
        """Like ``data.get_batch``: ``x, y`` (int64), plus the mask of ``y`` when there are masks."""
        dev = resolve_device(str(device))
        shard, start = self.sample_windows(batch_size, context_length, rng)
        offsets = np.arange(context_length + 1, dtype=np.int64)[None, :]
        rows = 3 if self.masks is not None else 2
        buf = np.empty((rows, batch_size, context_length), dtype=np.int64)
        for i in np.unique(shard):
            sel = np.flatnonzero(shard == i)
            index = start[sel, None] + offsets
            window = np.asarray(self.arrays[i][index])
            buf[0, sel] = window[:, :-1]
            buf[1, sel] = window[:, 1:]
            if self.masks is not None:
                buf[2, sel] = np.asarray(self.masks[i][index])[:, 1:]  # the mask of each target
        out = torch.from_numpy(buf)
        if dev.type == "cuda":
            out = out.pin_memory().to(dev, non_blocking=True)
        elif dev.type != "cpu":
            out = out.to(dev)
        return tuple(out[k] for k in range(rows))


def _load_mask(path: Path, n: int) -> np.ndarray:
    try:
        mask = np.load(path, mmap_mode="r", allow_pickle=False)
    except NPY_READ_ERRORS as err:
        raise CorpusError(
            f"{path}: not a readable .npy mask ({str(err).splitlines()[0] if str(err) else err})"
        ) from None
    if mask.ndim != 1 or mask.dtype != np.uint8 or len(mask) != n:
        raise CorpusError(f"{path}: expected a 1-D uint8 mask of {n:,} entries, got {mask.dtype} {mask.shape}")
    return mask


def open_token_data(
    spec: str, vocab_size: int | None, dtype: str | None, context_length: int, flag: str
) -> np.ndarray | TokenShards:
    """One token file without a mask: ``load_tokens`` exactly as before. Anything else: shards."""
    paths = resolve_token_paths(spec, flag)
    if len(paths) == 1 and not mask_path(paths[0]).exists():
        return load_tokens(spec if Path(spec) == paths[0] else paths[0], vocab_size, dtype, context_length)
    arrays, kept, skipped = [], [], []
    for p in paths:
        a = load_tokens(p, vocab_size, dtype)
        if len(a) <= context_length:  # e.g. the short last shard of a tokenize_data --shard_tokens run
            skipped.append(p)
            continue
        arrays.append(a)
        kept.append(p)
    if not kept:
        raise CorpusError(f"{flag} {spec}: every token file is too short for context_length={context_length}")
    metas = [read_tokens_meta(p) for p in kept]
    by_tok: dict[str, Path] = {}
    for p, m in zip(kept, metas):
        sha = (m or {}).get("tokenizer_sha256")
        if isinstance(sha, str):
            by_tok.setdefault(sha, p)
    if len(by_tok) > 1:
        (sa, a), (sb, b) = list(by_tok.items())[:2]
        raise CorpusError(
            f"{flag}: {a} and {b} were made by different tokenizers (sha256 {sa[:12]} vs {sb[:12]}); "
            "train on shards of one tokenizer"
        )
    has_mask = [mask_path(p).exists() for p in kept]
    if any(has_mask) and not all(has_mask):
        missing = kept[has_mask.index(False)]
        raise CorpusError(f"{flag}: some shards have a loss mask (*.mask.npy) and {missing} has none; use all or none")
    masks = [_load_mask(mask_path(p), len(a)) for p, a in zip(kept, arrays)] if all(has_mask) else None
    return TokenShards(kept, arrays, masks, next((m for m in metas if m), None), skipped)


def data_meta(data: np.ndarray | TokenShards | None, spec: str | None) -> dict[str, Any] | None:
    """The sidecar describing ``data``: the shards' (they agree) or the single file's."""
    if isinstance(data, TokenShards):
        return data.meta
    return read_tokens_meta(spec) if data is not None and spec else None


def first_sidecar(spec: str, flag: str) -> dict[str, Any] | None:
    """The sidecar of the first of ``spec``'s token files that has one, read before any file is
    loaded (whether shards agree on their tokenizer is checked when they are)."""
    return next((m for m in map(read_tokens_meta, resolve_token_paths(spec, flag)) if m is not None), None)


def data_notes(train: Any, val: Any) -> list[str]:
    """What the console says once about sharded or masked data."""
    notes = []
    for name, d in (("Train", train), ("Validation", val)):
        if isinstance(d, TokenShards):
            if len(d.paths) > 1:
                notes.append(f"{name} data: {len(d.paths)} shards, sampled in proportion to their token counts")
            for p in d.skipped:
                notes.append(f"Note: skipping {p}: no more tokens than --context_length")
    if isinstance(train, TokenShards) and train.masked:
        notes.append(
            "Loss: mean over masked targets only (the assistant answers; *.mask.npy beside the token files), "
            "for training" + (" and validation" if isinstance(val, TokenShards) and val.masked else "")
        )
    elif isinstance(val, TokenShards) and val.masked:
        notes.append("Loss: validation over masked targets only (*.mask.npy beside the validation tokens)")
    return notes
