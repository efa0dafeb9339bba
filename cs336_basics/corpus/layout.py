"""Names on disk: shards ``OUT_000000.npy``, masks ``OUT.mask.npy``, and finding token files.

Torch-free (``tokenize_data`` imports it and must start fast).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from cs336_basics.utils.errors import UserError
from cs336_basics.utils.token_files import RAW_SUFFIXES

MASK_SUFFIX = ".mask.npy"
TOKEN_SUFFIXES = (".npy", *RAW_SUFFIXES)
_SHARD_RE = re.compile(r"_(\d{6})$")


class CorpusError(UserError, ValueError):
    """Bad input data or a bad data flag; the message names the file and line/record."""


def mask_path(token_file: str | os.PathLike) -> Path:
    """``train.npy`` -> ``train.mask.npy`` (uint8, one entry per token id)."""
    p = Path(token_file)
    return p.with_name(p.name[: -len(p.suffix)] + MASK_SUFFIX if p.suffix else p.name + MASK_SUFFIX)


def shard_path(output: str | os.PathLike, index: int) -> Path:
    """``data/owt.npy``, 3 -> ``data/owt_000003.npy``."""
    p = Path(output)
    return p.with_name(f"{p.stem}_{index:06d}{p.suffix}")


def existing_shards(output: str | os.PathLike) -> list[Path]:
    """Numbered shards of ``output`` already on disk (``owt_000000.npy``, ...), in order."""
    p = Path(output)
    parent = p.parent if str(p.parent) else Path(".")
    found = [q for q in parent.glob(f"{glob.escape(p.stem)}_[0-9]*{p.suffix}") if _SHARD_RE.search(q.stem)]
    return sorted(found)


def _is_token_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in TOKEN_SUFFIXES and not p.name.endswith(MASK_SUFFIX)


def resolve_token_paths(spec: str, flag: str) -> list[Path]:
    """The token files named by a ``--train_data_path``-style value, in a fixed (sorted) order.

    ``spec`` is one file, a directory (its token files: ``*.npy`` and raw ids, not masks), a glob,
    or several of these separated by commas. A pattern that matches nothing is an error.
    """
    out: list[Path] = []
    for part in [s.strip() for s in spec.split(",") if s.strip()]:
        p = Path(part)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if _is_token_file(q))
            if not found:
                raise CorpusError(f"{flag} {part}: directory holds no token files (.npy, {', '.join(RAW_SUFFIXES)})")
            out += found
        elif glob.has_magic(part):
            found = sorted(Path(q) for q in glob.glob(part) if _is_token_file(Path(q)))
            if not found:
                raise CorpusError(f"{flag} {part}: no token file matches this pattern")
            out += found
        else:
            out.append(p)  # load_tokens says what is wrong with it, if anything
    if not out:
        raise CorpusError(f"{flag}: no token file given")
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]
