"""Helpers for the corpus tests: a tiny BPE tokenizer with the chat special tokens, made in-process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cs336_basics import tokenize_data
from cs336_basics.fast.bpe import train_bpe
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.utils.errors import run_cli

EOT = "<|endoftext|>"
CHAT_SPECIALS = [EOT, "<|system|>", "<|user|>", "<|assistant|>"]
WORDS = "the cat dog ran sat on a mat happy sad big small tree house red blue one two three".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 12))) + "." for _ in range(n)]


def make_tokenizer(d: Path, specials: list[str] | None = None, vocab_size: int = 320) -> Path:
    """Train a small BPE on generated sentences; save it to ``d``."""
    specials = CHAT_SPECIALS if specials is None else specials
    d.mkdir(parents=True, exist_ok=True)
    corpus = d.parent / f"{d.name}-corpus.txt"
    corpus.write_text(EOT.join(sentences(400)), encoding="utf-8")
    vocab, merges = train_bpe(corpus, vocab_size, specials)
    Tokenizer(vocab, merges, specials).save(d)
    return d


# Fixtures and a runner the corpus tests share (imported by them).
@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture(scope="module")
def tok(tok_dir) -> Tokenizer:
    return Tokenizer.from_dir(tok_dir)


def tokenize(*argv: str) -> int:
    return run_cli(tokenize_data.main, ["--quiet", *argv])
