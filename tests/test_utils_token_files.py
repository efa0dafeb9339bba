"""Token-file sidecars and the tokenizer fingerprint (sha256 of the files, computed here by hand)."""

from __future__ import annotations

import hashlib
import json

from cs336_basics.utils.token_files import (
    TOKENIZER_FILES,
    read_tokens_meta,
    tokenizer_fingerprint,
    tokens_meta_path,
)


def test_sidecar_sits_beside_the_token_file(tmp_path):
    assert tokens_meta_path(tmp_path / "train.npy") == tmp_path / "train.npy.meta.json"
    assert tokens_meta_path("d/val.bin").name == "val.bin.meta.json"


def test_fingerprint_is_sha256_of_names_and_bytes_of_the_files_present(tmp_path):
    (tmp_path / "vocab.json").write_text('{"a": 0}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (tmp_path / name).is_file():
            h.update(name.encode() + b"\0" + (tmp_path / name).read_bytes())
    assert tokenizer_fingerprint(tmp_path) == h.hexdigest()
    before = tokenizer_fingerprint(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    assert tokenizer_fingerprint(tmp_path) != before


def test_meta_reads_back_and_a_damaged_one_is_advisory(tmp_path):
    tok = tmp_path / "train.npy"
    assert read_tokens_meta(tok) is None
    tokens_meta_path(tok).write_text(json.dumps({"vocab_size": 512, "num_tokens": 10}))
    assert read_tokens_meta(tok) == {"vocab_size": 512, "num_tokens": 10}
    tokens_meta_path(tok).write_text("{not json")
    assert read_tokens_meta(tok) is None
    tokens_meta_path(tok).write_text("[1, 2]")
    assert read_tokens_meta(tok) is None
