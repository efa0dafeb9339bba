"""Token files for the training program: load and check them (memory-mapped), and sample batches.

:func:`get_batch` is the fast twin of the textbook's ``cs336_basics.data.get_batch``: the same windows
from the same generator (``tests/test_data_ref.py``), gathered with one fancy index, copied to a
GPU from pinned memory without blocking, and dispatched to a ``corpus.shards`` data set (several
token files, or a loss mask) when it is one.
"""

from __future__ import annotations

import os
import tokenize
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Int
from torch import Tensor

from cs336_basics.utils.devices import resolve_device
from cs336_basics.utils.errors import UserError, os_reason
from cs336_basics.utils.token_files import RAW_SUFFIXES, read_tokens_meta, tokenizer_fingerprint, tokens_meta_path

__all__ = [
    "DataError",
    "RAW_SUFFIXES",
    "TokenIdOutOfRange",
    "get_batch",
    "load_tokens",
    "read_tokens_meta",
    "tokenizer_fingerprint",
    "tokens_meta_path",
]

# Elements checked per chunk when validating ids (16M uint16 = 32 MB resident at a time).
_CHECK_CHUNK = 1 << 24

# What np.load raises on a damaged .npy file: numpy parses the header with ast/tokenize, so a broken
# one can raise their errors too.
NPY_READ_ERRORS = (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError)


class DataError(UserError, ValueError):
    """A token file or batch request that cannot be used; the message names file/value."""


def get_batch(
    dataset: npt.NDArray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    rng: np.random.Generator | None = None,
) -> tuple[Int[Tensor, "batch context"], Int[Tensor, "batch context"]]:
    """Sample ``batch_size`` random windows: ``x = data[s:s+T]``, ``y = data[s+1:s+T+1]`` (int64).

    Starts are uniform over every valid start ``0 .. len - T - 1``. Works on any 1-D integer array,
    including ``np.memmap`` uint16/uint32 token files: one fancy-index gathers all ``B x (T+1)``
    tokens (only those pages are read), then x/y are cast to int64. On CUDA the host tensors are
    pinned and copied with ``non_blocking=True`` so the copy overlaps the previous step's compute.
    ``rng`` defaults to NumPy's global generator (seeded by ``np.random.seed``).
    """
    if hasattr(dataset, "get_batch"):  # several token files, or a loss mask: cs336_basics.corpus.shards
        return dataset.get_batch(batch_size, context_length, device, rng)
    dev = resolve_device(str(device))
    if getattr(dataset, "ndim", 1) != 1:
        raise DataError(f"get_batch: dataset must be 1-D, got shape {getattr(dataset, 'shape', None)}")
    if batch_size <= 0 or context_length <= 0:
        raise DataError(f"get_batch: batch_size ({batch_size}) and context_length ({context_length}) must be positive")
    n = len(dataset)
    if n <= context_length:
        raise DataError(f"get_batch: dataset has {n} tokens, need more than context_length={context_length}")
    num_starts = n - context_length  # valid starts: 0 .. n - T - 1
    if rng is None:
        starts = np.random.randint(0, num_starts, size=batch_size, dtype=np.int64)
    else:
        starts = rng.integers(0, num_starts, size=batch_size, dtype=np.int64)
    index = starts[:, None] + np.arange(context_length + 1, dtype=np.int64)[None, :]
    window = np.asarray(dataset[index])  # [B, T+1] in the file's dtype
    # x and y live in one [2, B, T] int64 buffer: one pinned allocation and one host->device copy.
    both = np.empty((2, batch_size, context_length), dtype=np.int64)
    both[0] = window[:, :-1]
    both[1] = window[:, 1:]
    buf = torch.from_numpy(both)
    if dev.type == "cuda":
        buf = buf.pin_memory().to(dev, non_blocking=True)
    elif dev.type != "cpu":
        buf = buf.to(dev)
    x, y = buf[0], buf[1]
    return x, y


class TokenIdOutOfRange(DataError):
    """A token id outside ``0 .. vocab_size - 1``; :meth:`for_model` says whose vocabulary it is."""

    def __init__(self, path: Path, pos: int, value: int, vocab_size: int, is_bin: bool, model: str = "") -> None:
        self.details = (path, pos, value, vocab_size, is_bin)
        whose = f", the vocabulary of {model}" if model else ""
        hint = " (wrong --data_dtype?)" if is_bin else ""
        super().__init__(
            f"{path}: token id {value} at position {pos:,} is out of range for vocab_size={vocab_size}{whose}{hint}"
        )

    def for_model(self, model: str) -> TokenIdOutOfRange:
        """The same error naming the model (e.g. ``--init_from runs/a/best.pt``) whose vocab_size it is."""
        return TokenIdOutOfRange(*self.details, model=model)


def load_tokens(
    path: str | os.PathLike,
    vocab_size: int | None = None,
    dtype: str | None = None,
    context_length: int | None = None,
) -> np.ndarray:
    """Memory-map a token file and check it is usable before training starts.

    ``.npy``: ``np.load(mmap_mode="r")`` (dtype from the header; ``dtype`` is ignored); must be a
    1-D integer array. Raw files (``RAW_SUFFIXES``: ``.bin``, ``.ids``, ...): ids of ``dtype`` (default
    ``uint16``), refused when they start with a .npy header. With
    ``vocab_size`` every id is checked (chunk by chunk, so a 10 GB file never sits in RAM) and the
    first bad one is reported with its position. With ``context_length`` the file must hold more
    than that many tokens. Every problem raises ``DataError`` naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a token file (.npy, or raw ids: {', '.join(RAW_SUFFIXES)})")
    suffix = p.suffix.lower()
    try:
        size = p.stat().st_size
    except OSError as err:
        raise DataError(f"{p}: cannot read: {os_reason(err)}") from None
    if size == 0 and suffix in (".npy", *RAW_SUFFIXES):
        raise DataError(f"{p}: file is empty")
    if suffix == ".npy":
        is_bin = False
        try:
            data = np.load(p, mmap_mode="r", allow_pickle=False)
        except NPY_READ_ERRORS as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{p}: not a readable .npy token array ({msg})") from None
        if data.ndim != 1:
            raise DataError(f"{p}: expected a 1-D array of token ids, got shape {data.shape}")
        if not np.issubdtype(data.dtype, np.integer):
            raise DataError(f"{p}: expected integer token ids, got dtype {data.dtype}")
    elif suffix in RAW_SUFFIXES:
        is_bin = True
        dt_name = dtype or "uint16"
        try:
            dt = np.dtype(dt_name)
        except TypeError:
            raise DataError(f"{p}: unknown dtype {dt_name!r} (use uint16 or uint32)") from None
        if not np.issubdtype(dt, np.integer):
            raise DataError(f"{p}: dtype {dt_name!r} is not an integer type (use uint16 or uint32)")
        if size == 0:
            raise DataError(f"{p}: file is empty")
        with open(p, "rb") as f:
            if f.read(6) == b"\x93NUMPY":  # a .npy saved under a raw name: its header would be read as ids
                raise DataError(
                    f"{p}: is a NumPy .npy file (it starts with a .npy header), not raw ids; rename it to {p.with_suffix('.npy').name}"
                )
        if size % dt.itemsize:
            raise DataError(
                f"{p}: size {size:,} bytes is not a multiple of {dt.itemsize} ({dt.name}); wrong --data_dtype?"
            )
        try:
            data = np.memmap(p, dtype=dt, mode="r")
        except (ValueError, OSError) as err:
            raise DataError(f"{p}: cannot memory-map: {err}") from None
    else:
        raise DataError(
            f"{p}: unknown token file extension {p.suffix!r} (expected .npy, or raw ids in {', '.join(RAW_SUFFIXES)})"
        )
    n = len(data)
    if n == 0:
        raise DataError(f"{p}: file holds no tokens")
    if context_length is not None and n <= context_length:
        raise DataError(f"{p}: too short: {n:,} tokens, need more than context_length={context_length}")
    if vocab_size is not None:
        signed = np.issubdtype(data.dtype, np.signedinteger)
        for start in range(0, n, _CHECK_CHUNK):
            chunk = np.asarray(data[start : start + _CHECK_CHUNK])
            # max/min are allocation-free single passes; locate the culprit only on failure.
            if chunk.max() >= vocab_size or (signed and chunk.min() < 0):
                bad = (chunk >= vocab_size) | (chunk < 0)
                i = int(np.argmax(bad))
                raise TokenIdOutOfRange(p, start + i, int(chunk[i]), vocab_size, is_bin)
    return data
