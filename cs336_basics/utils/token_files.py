"""Token files: which suffixes hold raw ids, and which tokenizer made a file (its JSON sidecar).

Kept free of torch so the tokenizer CLIs (``tokenize_data``) start fast; :mod:`cs336_basics.data`
re-exports everything here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# Suffixes of raw token files: bare little-endian ids of --data_dtype, no header.
RAW_SUFFIXES = (".bin", ".ids", ".dat", ".u16", ".u32")
# Files that make up a saved tokenizer; their bytes are its identity.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens.json")


def tokens_meta_path(path: str | os.PathLike) -> Path:
    """``data/train.npy`` -> ``data/train.npy.meta.json`` (written by ``tokenize_data``)."""
    p = Path(path)
    return p.with_name(p.name + ".meta.json")


def tokenizer_fingerprint(directory: str | os.PathLike) -> str:
    """sha256 over the tokenizer's files (name + bytes of each that exists): its identity."""
    d = Path(directory)
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = d / name
        if f.is_file():
            h.update(name.encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()


def read_tokens_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of a token file as a dict, or None when there is none (or it is unreadable).

    Keys written by ``tokenize_data``: ``vocab_size`` (int), ``tokenizer_sha256`` (str, see
    :func:`tokenizer_fingerprint`), ``tokenizer_dir`` (str), ``special_tokens`` (list[str]),
    ``dtype`` (str), ``num_tokens`` (int), ``source`` (str). A sidecar is advisory: a missing or
    damaged one never stops training.
    """
    meta = tokens_meta_path(path)
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
