"""Helpers for the corpus tests: a tiny BPE tokenizer with the chat special tokens, made in-process."""

from __future__ import annotations

import random
from pathlib import Path

from cs336_basics.bpe import train_bpe
from cs336_basics.tokenizer import Tokenizer

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
