"""``--tokenizer_json``: a run on text files, tokenized once into its run directory.

The training crate's config names text shards and a byte-level BPE ``tokenizer.json`` (with an
optional special-tokens file, one token per line) instead of token files. Such a run tokenizes the
texts itself, once, into ``RUN_DIR/data/``:

* ``tokenizer/``: the tokenizer saved in this project's form (vocab.json, merges.txt,
  special_tokens.json, tokenizer.json), so the token files' sidecars carry its fingerprint and the
  run directory gets its ``tokenizer/`` copy as for any data;
* ``train_0.npy``, ``train_1.npy``, ... and ``val_0.npy``, ...: one token file per text file,
  each with its ``.meta.json`` sidecar (written by :func:`cs336_basics.tokenize_data.tokenize_file`);
* ``sources.json``: what they were made from (each text's size, mtime and sha256; the tokenizer
  file's sha256; the special tokens), written last.

A resumed run (or a rerun in the same directory) reuses the token files when ``sources.json`` still
describes the same texts and tokenizer; anything changed is tokenized again. The settings then name
the token files (``train_data_path``, ``val_data_path``) and no longer the texts, so the
checkpoints' saved settings describe the data the model was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cs336_basics.utils.errors import UserError, read_error_line
from cs336_basics.utils.fsutil import atomic_write_text

DATA_DIR = "data"
SOURCES = "sources.json"
SPLITS = (("train", "train_data_path"), ("val", "val_data_path"))


def read_special_tokens_file(path: str | os.PathLike) -> list[str]:
    """Special tokens, one per line (blank lines skipped; line ends are not part of a token)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(read_error_line(f"--special_tokens_file {path}", err, expected="a text file")) from None
    except UnicodeDecodeError:
        raise UserError(f"--special_tokens_file {path}: not UTF-8 text") from None
    return [line.rstrip("\r\n") for line in text.splitlines() if line.strip()]


def load_tokenizer(tokenizer_json: str, special_tokens_file: str | None) -> Any:
    """The :class:`~cs336_basics.fast.tokenizer.Tokenizer` of a ``tokenizer.json`` (its added tokens,
    or the file's special tokens instead)."""
    from cs336_basics.fast.tokenizer import Tokenizer

    if not Path(tokenizer_json).is_file():
        raise UserError(f"--tokenizer_json {tokenizer_json}: no such file")
    specials = read_special_tokens_file(special_tokens_file) if special_tokens_file else None
    return Tokenizer.from_files(tokenizer_json, None, specials)


def tokenizer_vocab_size(tokenizer_json: str, special_tokens_file: str | None) -> int:
    return load_tokenizer(tokenizer_json, special_tokens_file).vocab_size


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _texts(spec: str | None) -> list[str]:
    return [p.strip() for p in spec.split(",") if p.strip()] if spec else []


def token_paths(s: Any, run_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """The token files the texts of ``s`` become: ``{"train": [...], "val": [...]}``."""
    d = Path(run_dir) / DATA_DIR
    return {split: [d / f"{split}_{i}.npy" for i in range(len(_texts(getattr(s, key))))] for split, key in SPLITS}


def _describe(path: Path, old: dict[str, Any] | None) -> dict[str, Any]:
    """size, mtime and sha256 of a text (the sha256 taken from ``old`` when size and mtime agree)."""
    try:
        st = path.stat()
    except OSError as err:
        raise UserError(read_error_line(str(path), err, expected="a text file")) from None
    same = old is not None and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns
    sha = old["sha256"] if same and isinstance(old.get("sha256"), str) else _sha256(path)
    return {"text": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def prepare(s: Any, run_dir: str | os.PathLike) -> list[str]:
    """Tokenize the texts of ``s`` into ``run_dir/data/`` unless the token files there were made from
    the same texts and tokenizer; returns what the console should say (rank 0 only)."""
    from cs336_basics.tokenize_data import tokenize_file

    d = Path(run_dir) / DATA_DIR
    outputs = token_paths(s, run_dir)
    try:
        old = json.loads((d / SOURCES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    old = old if isinstance(old, dict) else {}
    specials = read_special_tokens_file(s.special_tokens_file) if s.special_tokens_file else None
    tok_json = Path(s.tokenizer_json)
    if not tok_json.is_file():
        raise UserError(f"--tokenizer_json {tok_json}: no such file")
    sources: dict[str, Any] = {"tokenizer_json": str(tok_json), "tokenizer_sha256": _sha256(tok_json),
                               "special_tokens": specials}  # fmt: skip
    for split, key in SPLITS:
        before = {e.get("text"): e for e in old.get(split) or [] if isinstance(e, dict)}
        sources[split] = [_describe(Path(t), before.get(t)) for t in _texts(getattr(s, key))]

    def fingerprint(doc: dict[str, Any]) -> Any:
        return [doc.get("tokenizer_sha256"), doc.get("special_tokens"),
                *([e.get("sha256") for e in doc.get(split) or []] for split, _ in SPLITS)]  # fmt: skip

    files = [p for split in outputs.values() for p in split]
    if old and fingerprint(old) == fingerprint(sources) and all(p.is_file() for p in files):
        return [f"reusing the token files in {d} (the texts and the tokenizer are unchanged)"]
    tok = load_tokenizer(str(tok_json), s.special_tokens_file)
    tok_dir = d / "tokenizer"
    try:
        (d / SOURCES).unlink(missing_ok=True)  # until every file below is written, nothing is reusable
        tok.save(tok_dir)
    except OSError as err:
        raise UserError(f"cannot write {tok_dir}: {err.strerror or err}") from None
    counts = []
    for split, _ in SPLITS:
        for entry, out in zip(sources[split], outputs[split]):
            counts.append(tokenize_file(tok_dir, entry["text"], out))
    atomic_write_text(d / SOURCES, json.dumps(sources, indent=1, ensure_ascii=False) + "\n")
    return [f"tokenized {len(files)} text file(s) with {tok_json} into {d} ({sum(counts):,} tokens)"]


def use_prepared(s: Any, run_dir: str | os.PathLike) -> None:
    """Point ``s`` at the token files :func:`prepare` wrote (on every rank): from here on the run
    trains on token files like any other."""
    outputs = token_paths(s, run_dir)
    for split, key in SPLITS:
        if outputs[split]:
            setattr(s, key, ",".join(str(p) for p in outputs[split]))
    s.tokenizer_json = s.special_tokens_file = None
