"""cs336_basics.tools.tokenizer_stats on tokenizers trained by the test (train_bpe on small text)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from cs336_basics.fast.bpe import train_bpe
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.tools import tokenizer_stats as ts

from ._train_utils import REPO, subprocess_env

EOT = "<|endoftext|>"
WORDS = (
    "the cat dog sat ran on a mat little girl boy park happy sun tree big red ball played "
    "with her his friend every day once upon time there was named Lily Tom café naïve"
).split()


def _corpus(seed: int, n_docs: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        sents = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
            for _ in range(rng.randint(1, 4))
        ]
        docs.append(f"Story {i}: " + " ".join(sents) + "\n")
    return docs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokstats")
    docs = _corpus(0, 400)
    text = d / "stories.txt"
    text.write_text(EOT.join(docs), encoding="utf-8")
    toks = {}
    for size in (300, 600):
        vocab, merges = train_bpe(text, size, [EOT], num_workers=1)
        Tokenizer(vocab, merges, [EOT]).save(d / f"tok{size}")
        toks[size] = Tokenizer.from_dir(d / f"tok{size}")
    return {"dir": d, "text": text, "docs": docs, "toks": toks}


def test_documents_are_split_sampled_and_seeded(setup):
    docs = ts.load_documents(setup["text"], 10, seed=3)
    assert len(docs) == 10 and all(EOT not in d for d in docs)
    assert set(docs) <= set(setup["docs"])
    assert docs == ts.load_documents(setup["text"], 10, seed=3)
    assert docs != ts.load_documents(setup["text"], 10, seed=4)
    assert ts.load_documents(setup["text"], 10_000) == setup["docs"]  # fewer than asked: all of them
    # A read limit keeps only whole documents.
    limited = ts.load_documents(setup["text"], 10_000, max_bytes=2000)
    assert 0 < len(limited) < len(setup["docs"]) and limited == setup["docs"][: len(limited)]


def test_bytes_per_token_against_independent_count(setup):
    docs = ts.load_documents(setup["text"], 25, seed=1)
    for size, tok in setup["toks"].items():
        s = ts.measure(tok, docs, name=f"tok{size}", project_gb=825)
        ids = [tok.encode(d) for d in docs]
        assert all(tok.decode(i) == d for i, d in zip(ids, docs))  # the ids really are the documents
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        n_tokens = sum(len(i) for i in ids)
        assert (s.bytes, s.tokens) == (n_bytes, n_tokens)
        assert s.bytes_per_token == pytest.approx(n_bytes / n_tokens)
        assert s.num_docs == 25 and s.vocab_size == size
        assert s.projected_s == pytest.approx(825e9 / s.bytes_per_s)
    # throughput timed on other documents: compression numbers unchanged, bytes timed are theirs
    lead = ts.leading_documents(setup["docs"], 3000)
    assert lead == setup["docs"][: len(lead)] and sum(len(d.encode()) for d in lead[:-1]) < 3000
    t = ts.measure(setup["toks"][300], docs, throughput_docs=lead)
    assert t.bytes == n_bytes or t.bytes == sum(len(d.encode()) for d in docs)
    assert t.throughput_bytes == len(EOT.join(lead).encode())
    # more merges compress this text better
    a, b = (ts.measure(setup["toks"][v], docs) for v in (300, 600))
    assert b.bytes_per_token > a.bytes_per_token > 1.0


def test_longest_tokens(setup):
    tok = setup["toks"][600]
    longest = ts.longest_tokens(tok, 4)
    lengths = sorted((len(b) for b in tok.vocab.values() if b != EOT.encode()), reverse=True)
    assert [len(b) for _, b in longest] == lengths[:4]
    assert all(tok.vocab[i] == b for i, b in longest) and EOT.encode() not in [b for _, b in longest]


def test_compare_same_sample_for_every_tokenizer(setup, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(EOT.join(_corpus(9, 50)).replace("the", "THE"), encoding="utf-8")
    inputs = {"stories": ts.load_documents(setup["text"], 8), "other": ts.load_documents(other, 8)}
    stats = ts.compare({"a": setup["toks"][300], "b": setup["toks"][600]}, inputs)
    assert [(s.input, s.tokenizer) for s in stats] == [
        ("stories", "a"),
        ("stories", "b"),
        ("other", "a"),
        ("other", "b"),
    ]
    assert stats[0].bytes == stats[1].bytes and stats[2].bytes == stats[3].bytes


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cs336_basics.tools.tokenizer_stats", *map(str, args)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_and_bad_input(setup, tmp_path):
    d = setup["dir"]
    r = _cli("--tokenizer", d / "tok300", "--tokenizer", d / "tok600", "--input", setup["text"], "--num_docs", "5")
    assert r.returncode == 0, r.stderr
    assert "tok300" in r.stdout and "tok600" in r.stdout and "Longest tokens of tok600" in r.stdout
    assert "time for 825 GB" in r.stdout

    bad = _cli("--tokenizer", d / "tok300", "--input", tmp_path / "missing.txt")
    assert bad.returncode == 2 and "missing.txt" in bad.stderr and bad.stderr.strip().count("\n") == 0
    bad = _cli("--tokenizer", tmp_path / "no_tok", "--input", setup["text"])
    assert bad.returncode == 2 and "no_tok" in bad.stderr and "Traceback" not in bad.stderr
    bad = _cli("--tokenizer", d / "tok300", "--input", setup["text"], "--num_docs", "0")
    assert bad.returncode == 2 and "--num_docs" in bad.stderr
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    bad = _cli("--tokenizer", d / "tok300", "--input", latin)
    assert bad.returncode == 2 and "offset 3" in bad.stderr
