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

from cs336_basics.utils.errors import os_reason

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


# What tokenizer_fingerprint gives a directory with none of TOKENIZER_FILES (a Hugging Face one holding
# only tokenizer.json): it tells no two such tokenizers apart, so it counts as no fingerprint.
_NO_FILES_FINGERPRINT = hashlib.sha256().hexdigest()


def recorded_fingerprint(meta: Any) -> str | None:
    """The tokenizer fingerprint a sidecar (or a checkpoint's ``tokenizer`` entry, a copy of one)
    records, or None when it records none that identifies a tokenizer."""
    sha = meta.get("tokenizer_sha256") if isinstance(meta, dict) else None
    return sha if isinstance(sha, str) and sha and sha != _NO_FILES_FINGERPRINT else None


def describe_tokenizer(meta: dict[str, Any]) -> str:
    """``tok/ (sha256 49233ebfb0e6...)``: a sidecar's tokenizer, for messages."""
    where, sha = meta.get("tokenizer_dir"), str(meta.get("tokenizer_sha256"))
    return f"{where if isinstance(where, str) and where else '(directory not recorded)'} (sha256 {sha[:12]}...)"


def tokens_meta(tok: Any, tokenizer_dir: str | os.PathLike, dtype: Any, source: str, **extra: Any) -> dict[str, Any]:
    """The sidecar of a token file written with ``tok`` (a ``Tokenizer``) from ``tokenizer_dir``: the
    keys :func:`read_tokens_meta` documents, plus ``extra`` (e.g. ``num_tokens``)."""
    return {
        "vocab_size": tok.vocab_size,
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer_dir),
        "tokenizer_dir": str(tokenizer_dir),
        "special_tokens": list(tok.special_tokens),
        "dtype": dtype.name,
        "source": source,
        **extra,
    }


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


# Where a run directory keeps a copy of the tokenizer that made its training data.
RUN_TOKENIZER_DIR = "tokenizer"
# What is copied: the fingerprinted files, and Hugging Face's tokenizer.json + config when present.
_CARRIED_FILES = (*TOKENIZER_FILES, "tokenizer.json", "tokenizer_config.json")


def carry_tokenizer(
    meta: dict[str, Any] | None, data_path: str | os.PathLike, run_dir: str | os.PathLike
) -> str | None:
    """Copy the tokenizer named by a token file's sidecar (``meta``) into ``run_dir/tokenizer/``, so
    ``generate`` and ``export`` need only the run directory. Returns a one-line note, or None.

    Only a tokenizer that is found and still has the sidecar's fingerprint is copied (a changed one
    is not the tokenizer that made the data); an existing ``run_dir/tokenizer/`` is left alone (a
    resumed run copied it already). The copy is atomic: the files go into a temp directory inside
    ``run_dir`` that is then renamed into place, so the folder appears complete or not at all.
    """
    import shutil
    import tempfile

    from cs336_basics.utils.fsutil import current_umask, fsync_dir

    dest = Path(run_dir) / RUN_TOKENIZER_DIR
    want, src = (meta or {}).get("tokenizer_sha256"), (meta or {}).get("tokenizer_dir")
    if dest.exists() or not isinstance(want, str) or not isinstance(src, str) or not src:
        return None
    # tokenize_data records the directory as it was given: relative to where it ran, or to the data.
    found = next(
        (d for d in (Path(src), Path(data_path).parent / src) if d.is_dir() and tokenizer_fingerprint(d) == want), None
    )
    if found is None:
        return (
            f"note: the tokenizer that made {data_path} ({src}) is not there unchanged; the run directory "
            "does not carry a copy (pass --tokenizer to generate and export)"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{RUN_TOKENIZER_DIR}.", suffix=".tmp", dir=run_dir))
    try:
        for name in _CARRIED_FILES:
            if (found / name).is_file():
                shutil.copyfile(found / name, tmp / name)
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
        os.chmod(tmp, 0o777 & ~current_umask())  # not mkdtemp's private 0o700: others may read the run folder
        os.rename(tmp, dest)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        return None if dest.exists() else f"note: could not copy the tokenizer {found} into {dest}: {os_reason(err)}"
    fsync_dir(run_dir)
    return f"Tokenizer {found} copied to {dest} (generate and export find it there)"
