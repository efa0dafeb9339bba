"""The tokenizer CLIs fail loudly instead of silently: tokenize_data refuses a tokenizer without
special_tokens.json (unless --special_tokens), writes raw ids for raw suffixes (not .npy bytes),
refuses unknown suffixes and writes a sidecar; train_bpe checks its output before training,
saves to a fallback directory on a late failure, refuses an empty input and warns when the
vocabulary size cannot be reached."""

from __future__ import annotations

import errno
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

from cs336_basics.bpe import train_bpe_on_text
from cs336_basics.corpus.tokens import RAW_SUFFIXES, tokenizer_fingerprint, tokens_meta_path
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.tokenize_data import main as tokenize_main
from cs336_basics.tokenizer import Tokenizer as TextbookTokenizer
from cs336_basics.train_bpe import main as train_main
from cs336_basics.utils.errors import run_cli

EOT = "<|endoftext|>"
TEXT = "Hello world, the cat sat.<|endoftext|>Another doc: 42 cats!\n" * 20


@pytest.fixture(scope="module")
def trained():
    return train_bpe_on_text(TEXT, 300, [EOT])


@pytest.fixture()
def tok_dir(tmp_path: Path, trained) -> Path:
    d = tmp_path / "tok"
    Tokenizer(*trained, [EOT]).save(d)
    return d


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    p = tmp_path / "in.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _run(main, argv, capsys) -> tuple[int, str, str]:
    rc = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------- tokenize_data
def test_missing_special_tokens_file_is_refused(tok_dir, src, tmp_path, capsys, trained) -> None:
    (tok_dir / "special_tokens.json").unlink()
    out = tmp_path / "o.npy"
    rc, _, err = _run(tokenize_main, ["--tokenizer", tok_dir, "--input", src, "--output", out], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "special_tokens.json" in err
    assert not out.exists()
    # Given explicitly, the specials are used (one id per <|endoftext|>, as the reference encodes).
    argv = ["--tokenizer", tok_dir, "--input", src, "--output", out, "--special_tokens", EOT, "--workers", 1]
    rc, _, _ = _run(tokenize_main, argv, capsys)
    assert rc == 0
    assert np.load(out).tolist() == TextbookTokenizer(*trained, [EOT]).encode(TEXT)


@pytest.mark.parametrize("suffix", RAW_SUFFIXES)
def test_raw_suffixes_write_raw_little_endian_ids(tok_dir, src, tmp_path, capsys, trained, suffix) -> None:
    out = tmp_path / f"o{suffix}"
    rc, printed, _ = _run(tokenize_main, ["--tokenizer", tok_dir, "--input", src, "--output", out], capsys)
    assert rc == 0
    dtype = "uint32" if suffix == ".u32" else "uint16"
    expected = TextbookTokenizer(*trained, [EOT]).encode(TEXT)
    assert out.stat().st_size == len(expected) * np.dtype(dtype).itemsize  # no .npy header
    assert np.fromfile(out, dtype=np.dtype(dtype).newbyteorder("<")).tolist() == expected
    assert f"--data_dtype {dtype}" in printed


def test_unknown_suffix_is_refused(tok_dir, src, tmp_path, capsys) -> None:
    out = tmp_path / "o.txt"
    rc, _, err = _run(tokenize_main, ["--tokenizer", tok_dir, "--input", src, "--output", out], capsys)
    assert rc == 2 and "o.txt" in err and ".npy" in err and all(s in err for s in RAW_SUFFIXES)
    assert not out.exists()


def test_u16_refuses_a_large_vocab_and_bin_switches_to_uint32(tmp_path, src, capsys) -> None:
    vocab = {i: bytes([i]) for i in range(256)}
    for j in range(70000):
        vocab[256 + j] = b"\xff\xfe" + j.to_bytes(3, "big")  # unreachable filler tokens
    d = tmp_path / "big"
    Tokenizer(vocab, [], [EOT]).save(d)
    rc, _, err = _run(tokenize_main, ["--tokenizer", d, "--input", src, "--output", tmp_path / "o.u16"], capsys)
    assert rc == 2 and "o.u16" in err and "70,257" in err
    rc, printed, _ = _run(tokenize_main, ["--tokenizer", d, "--input", src, "--output", tmp_path / "o.bin"], capsys)
    assert rc == 0 and "--data_dtype uint32" in printed
    ids = np.fromfile(tmp_path / "o.bin", dtype="<u4").tolist()
    assert ids[: TEXT.index(EOT) + 1] == list(TEXT[: TEXT.index(EOT)].encode()) + [70256]


def test_sidecar_records_the_tokenizer(tok_dir, src, tmp_path, capsys, trained) -> None:
    out = tmp_path / "o.bin"
    rc, _, _ = _run(tokenize_main, ["--tokenizer", tok_dir, "--input", src, "--output", out], capsys)
    assert rc == 0
    meta = json.loads(tokens_meta_path(out).read_text(encoding="utf-8"))
    n = len(TextbookTokenizer(*trained, [EOT]).encode(TEXT))
    assert meta == {
        "vocab_size": len(trained[0]),
        "tokenizer_sha256": tokenizer_fingerprint(tok_dir),
        "tokenizer_dir": str(tok_dir),
        "special_tokens": [EOT],
        "dtype": "uint16",
        "num_tokens": n,
        "source": str(src),
    }


# ---------------------------------------------------------------------- train_bpe
def _train_argv(src: Path, out: Path, vocab_size: int = 300) -> list:
    return ["--input", src, "--vocab_size", vocab_size, "--special_tokens", EOT, "--output", out, "--quiet"]


def test_output_that_is_a_file_is_refused_before_training(src, tmp_path, capsys, monkeypatch) -> None:
    import cs336_basics.train_bpe as cli

    def no_training(*a, **k):
        raise AssertionError("trained although the output cannot be written")

    monkeypatch.setattr(cli, "train_bpe", no_training)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    for out in (blocker, blocker / "sub"):
        rc, _, err = _run(train_main, _train_argv(src, out), capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and str(blocker) in err


def test_unwritable_output_dir_is_refused_before_training(src, tmp_path, capsys, monkeypatch) -> None:
    # A read-only directory, simulated at the one call that probes it (chmod would not stop root).
    import cs336_basics.train_bpe as cli

    ro = tmp_path / "ro"
    ro.mkdir()
    real = cli.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if Path(dir) == ro:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(cli.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(cli, "train_bpe", lambda *a, **k: pytest.fail("trained before checking the output"))
    rc, _, err = _run(train_main, _train_argv(src, ro / "tok"), capsys)
    assert rc == 2 and str(ro) in err and "Permission denied" in err


def test_late_save_failure_saves_to_a_fallback_dir(src, tmp_path, capsys, monkeypatch, trained) -> None:
    import cs336_basics.interop.gpt2_files as files

    real = files.atomic_write_text
    out = tmp_path / "tok"

    def disk_full(path, text):
        if Path(path).parent == out:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, text)

    monkeypatch.setattr(files, "atomic_write_text", disk_full)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, _, err = _run(train_main, _train_argv(src, out), capsys)
    assert rc == 1 and "No space left" in err
    (fallback,) = work.glob("train_bpe-output-*")
    assert str(fallback) in err
    tok = Tokenizer.from_dir(fallback)
    assert (tok.vocab, tok.merges) == trained


def test_empty_input_is_refused(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    rc, _, err = _run(train_main, _train_argv(empty, tmp_path / "tok"), capsys)
    assert rc == 2 and "empty.txt" in err and "empty" in err
    assert not (tmp_path / "tok").exists()


def test_unreachable_vocab_size_warns_with_the_size_reached(tmp_path, capsys) -> None:
    small = tmp_path / "small.txt"
    small.write_text("ab ab", encoding="utf-8")  # two merges possible: "ab", " ab"
    rc, _, err = _run(train_main, _train_argv(small, tmp_path / "tok", 1000), capsys)
    assert rc == 0 and "warning" in err and "259" in err and "1,000" in err
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 8))) for _ in range(300)]
    big = tmp_path / "big.txt"
    big.write_text(" ".join(words * 3), encoding="utf-8")
    rc, _, err = _run(train_main, _train_argv(big, tmp_path / "tok2", 280), capsys)
    assert rc == 0 and "warning" not in err


def test_saved_message_lists_every_file_written(src, tmp_path, capsys) -> None:
    out = tmp_path / "tok"
    rc, stdout, _ = _run(train_main, _train_argv(src, out), capsys)
    assert rc == 0
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("Saved tokenizer to")]
    named = set(re.findall(r"[\w.]*\.(?:json|txt)|\.lock", line))
    assert named == {p.name for p in out.iterdir()}, line  # the directory itself is the reference


def test_bad_merge_in_tokenizer_json_names_the_file_and_line(tok_dir, src, tmp_path, capsys) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["merges"][2] = "zz qq"  # neither is a token
    (hf / "tokenizer.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    lines = [ln.strip() for ln in (hf / "tokenizer.json").read_text(encoding="utf-8").splitlines()]
    line = lines.index('"zz qq",') + 1
    rc, _, err = _run(tokenize_main, ["--tokenizer", hf, "--input", src, "--output", tmp_path / "o.npy"], capsys)
    assert (
        rc == 2
        and err == f"error: {hf / 'tokenizer.json'}:{line}: merge #3 'zz qq': token 'zz' is not in model.vocab\n"
    )
