"""tokenize_data: the parallel file tokenizer equals Tokenizer.encode of the whole file, writes a
valid .npy atomically, and fails cleanly (file + byte offset) without leaving output behind."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cs336_basics import tokenize_data
from cs336_basics.bpe import train_bpe_on_text
from cs336_basics.fast.pretokenize import find_chunk_boundaries
from cs336_basics.fast.tokenizer import Tokenizer, TokenizerError
from cs336_basics.tokenize_data import main, tokenize_file
from cs336_basics.tokenizer import Tokenizer as TextbookTokenizer
from tests.test_tokenizer_encode import EOT, make_corpus

SPECIALS = [EOT, "<end of doc>"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    vocab, merges = train_bpe_on_text(make_corpus(), 400, [EOT])
    d = tmp_path_factory.mktemp("tok")
    Tokenizer(vocab, merges, SPECIALS).save(d)
    return d


def tricky_text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    pieces = list("ab cd  \t\n\n\r\n'sé日本🙂\u00a0\u00a0  \u3000\x1c!1") + SPECIALS + ["<end", " of", "<|"]
    return make_corpus(n // 8, seed) + "".join(rng.choice(pieces) for _ in range(n))


def test_chunk_offsets_never_change_tokenization(tok_dir):
    tok = Tokenizer.from_dir(tok_dir)
    specials = [s.encode() for s in tok.special_tokens]
    for seed in range(4):
        text = tricky_text(20000, seed)
        data = text.encode()
        bounds = find_chunk_boundaries(io.BytesIO(data), len(data) // 97, specials)
        assert bounds[0] == 0 and bounds[-1] == len(data) and bounds == sorted(set(bounds))
        assert len(bounds) > 50
        ids = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            ids += tok.encode(data[a:b].decode("utf-8"))  # each piece is valid UTF-8
        assert ids == tok.encode(text)


@pytest.mark.parametrize("workers", [1, 2])
def test_output_equals_encode(tok_dir, tmp_path, workers, monkeypatch):

    text = tricky_text(300_000, 1)
    src = tmp_path / "in.txt"
    src.write_bytes(text.encode())
    out = tmp_path / "out.npy"
    seen = []
    n = tokenize_file(tok_dir, src, out, num_workers=workers, progress=lambda d, t, k: seen.append((d, t, k)))
    arr = np.load(out, mmap_mode="r")
    assert arr.dtype == np.uint16 and arr.shape == (n,)
    assert arr.tolist() == Tokenizer.from_dir(tok_dir).encode(text)
    assert seen and seen[-1][0] == seen[-1][1] == src.stat().st_size and seen[-1][2] == n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy", "out.npy.meta.json"]  # no temp left


@pytest.mark.parametrize("sample_bytes", [0, 1 << 20])
def test_warm_cache_workers_give_identical_ids(tok_dir, tmp_path, sample_bytes, monkeypatch):
    """Workers forked from a parent that pre-encoded the vocabulary and a sample of the input
    (or nothing but the vocabulary) write exactly the reference encoder's ids."""
    monkeypatch.setattr(tokenize_data, "WARM_SAMPLE_BYTES", sample_bytes)
    text = tricky_text(60_000, 5)
    src = tmp_path / "in.txt"
    src.write_bytes(text.encode())
    out = tmp_path / "out.npy"
    tokenize_file(tok_dir, src, out, num_workers=2)
    tok = Tokenizer.from_dir(tok_dir)
    assert np.load(out).tolist() == TextbookTokenizer(tok.vocab, tok.merges, tok.special_tokens).encode(text)


def test_warm_cache_changes_no_result(tok_dir):
    tok = Tokenizer.from_dir(tok_dir)
    text = tricky_text(20_000, 6)
    words = ["the", " the", "<end", " of doc", EOT, "\n\n", "é日"]  # not all are pre-tokens: still fine
    n = tok.warm_cache(words)
    assert n >= len(words) and " the" in tok._cache
    assert tok.encode(text) == TextbookTokenizer(tok.vocab, tok.merges, tok.special_tokens).encode(text)


def test_empty_input(tok_dir, tmp_path):
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    assert tokenize_file(tok_dir, src, tmp_path / "e.npy") == 0
    assert np.load(tmp_path / "e.npy").shape == (0,)


def test_uint32_for_large_vocab(tmp_path):
    vocab = {i: bytes([i]) for i in range(256)}
    for j in range(70000):
        vocab[256 + j] = b"\xff\xfe" + j.to_bytes(3, "big")  # unreachable filler tokens
    d = tmp_path / "big"
    Tokenizer(vocab, [], [EOT]).save(d)
    src = tmp_path / "t.txt"
    src.write_text("hi<|endoftext|>", encoding="utf-8")
    n = tokenize_file(d, src, tmp_path / "o.npy", num_workers=1)
    arr = np.load(tmp_path / "o.npy", mmap_mode="r")
    assert arr.dtype == np.uint32 and n == 3 and arr.tolist() == [104, 105, 70256]


@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_utf8_names_offset_and_leaves_nothing(tok_dir, tmp_path, workers):
    good = ("hello world " * 50_000).encode()
    bad_at = len(good) - 1000
    src = tmp_path / "bad.txt"
    src.write_bytes(good[:bad_at] + b"\xff" + good[bad_at:])
    out = tmp_path / "out.npy"
    with pytest.raises(TokenizerError, match=rf"bad\.txt: invalid UTF-8 at byte offset {bad_at}\b"):
        tokenize_file(tok_dir, src, out, num_workers=workers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]  # no output, no temp file


def test_failure_keeps_previous_output(tok_dir, tmp_path):
    out = tmp_path / "out.npy"
    np.save(out, np.arange(5, dtype=np.uint16))
    src = tmp_path / "bad.txt"
    src.write_bytes(b"abc \xc3")  # truncated UTF-8 sequence at the very end
    with pytest.raises(TokenizerError, match="byte offset 4"):
        tokenize_file(tok_dir, src, out)
    assert np.load(out).tolist() == [0, 1, 2, 3, 4]


def test_missing_files(tok_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hi", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"nope\.txt: input file not found"):
        tokenize_file(tok_dir, tmp_path / "nope.txt", tmp_path / "o.npy")
    with pytest.raises(TokenizerError, match="tokenizer directory not found"):
        tokenize_file(tmp_path / "notok", src, tmp_path / "o.npy")
    assert tokenize_file(tok_dir, src, tmp_path / "no" / "such" / "o.npy") == 2  # a missing folder is made
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(TokenizerError, match="cannot create the output directory"):
        tokenize_file(tok_dir, src, tmp_path / "a_file" / "o.npy")
    with pytest.raises(TokenizerError, match="--workers"):
        tokenize_file(tok_dir, src, tmp_path / "o.npy", num_workers=0)
    with pytest.raises(TokenizerError, match="output path is a directory"):
        tokenize_file(tok_dir, src, tmp_path)
    with pytest.raises(TokenizerError, match="input is not a regular file"):
        tokenize_file(tok_dir, tmp_path, tmp_path / "o.npy")


def test_cli(tok_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("Hello world<|endoftext|>again\n", encoding="utf-8")
    out = tmp_path / "o.npy"
    assert main(["--tokenizer", str(tok_dir), "--input", str(src), "--output", str(out), "--workers", "1"]) == 0
    assert np.load(out).tolist() == Tokenizer.from_dir(tok_dir).encode(src.read_text(encoding="utf-8"))
    assert "tokens" in capsys.readouterr().out
    # Errors: one line on stderr, exit status 2, no traceback.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cs336_basics.tokenize_data",
            "--tokenizer",
            str(tok_dir),
            "--input",
            str(tmp_path / "missing.txt"),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "missing.txt" in r.stderr and "Traceback" not in r.stderr


def _die(task):  # stands in for a worker killed by the OOM killer
    os._exit(1)


def test_dead_worker_is_an_error_not_a_hang(tok_dir, tmp_path, monkeypatch):
    import cs336_basics.tokenize_data as td

    monkeypatch.setattr(td, "_work", _die)
    src = tmp_path / "in.txt"
    src.write_text("hello world " * 100_000, encoding="utf-8")
    with pytest.raises(TokenizerError, match="worker process died"):
        tokenize_file(tok_dir, src, tmp_path / "o.npy", num_workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
