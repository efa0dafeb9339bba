"""Training a byte-level BPE tokenizer (handout section 2.5), written to be read (and slow).

1. Split the text on the special tokens (they are never merged) and pre-tokenize each piece with the
   GPT-2 regex; count each pre-token, as a tuple of single bytes.
2. Repeatedly count every adjacent pair inside every pre-token (weighted by the pre-token's count),
   take the most frequent pair, ties going to the lexicographically greatest ``(bytes, bytes)`` pair,
   and merge it everywhere.

The vocabulary is the special tokens, then the 256 single bytes, then one token per merge. The
handout's worked example (whitespace pre-tokenization, no specials)::

    >>> words = Counter(tuple(bytes([c]) for c in w.encode())
    ...                 for w in "low low low low low lower lower widest widest widest".split()
    ...                 + ["newest"] * 6)
    >>> learn_merges(words, 6)
    [(b's', b't'), (b'e', b'st'), (b'o', b'w'), (b'l', b'ow'), (b'w', b'est'), (b'n', b'e')]

(``es`` and ``st`` both occur 9 times in "widest" x3 + "newest" x6; ``(b"s", b"t")`` is the greater
pair.) ``cs336_basics.fast.bpe.train_bpe`` computes exactly this, fast (parallel pre-tokenization,
incremental pair counts); the tests hold the two equal on varied text.
"""

from __future__ import annotations

import os
from collections import Counter

from cs336_basics.pretokenize import PRETOKEN_RE, special_pattern, split_on_specials

Pair = tuple[bytes, bytes]


def count_pretokens(text: str, special_tokens: list[str] | None = None) -> Counter:
    """``{pre-token as a tuple of single bytes: count}``; special tokens are split out first."""
    words: Counter = Counter()
    for piece, is_special in split_on_specials(text, special_pattern(special_tokens)):
        if not is_special:
            for tok in PRETOKEN_RE.findall(piece):
                words[tuple(bytes([b]) for b in tok.encode("utf-8"))] += 1
    return words


def count_pairs(words: Counter) -> Counter:
    """How often each adjacent pair occurs, over all words, weighted by the words' counts."""
    pairs: Counter = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += n
    return pairs


def merge_word(word: tuple[bytes, ...], pair: Pair) -> tuple[bytes, ...]:
    """``word`` with every occurrence of ``pair`` merged, left to right, non-overlapping."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def learn_merges(words: Counter, num_merges: int) -> list[Pair]:
    """Up to ``num_merges`` merges: the most frequent pair each time, ties to the greatest pair."""
    merges: list[Pair] = []
    for _ in range(num_merges):
        pairs = count_pairs(words)
        if not pairs:
            break  # every word is a single token: nothing left to merge
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for word, n in words.items():
            merged[merge_word(word, best)] += n
        words = merged
    return merges


def train_bpe_on_text(
    text: str, vocab_size: int, special_tokens: list[str] | None = None
) -> tuple[dict[int, bytes], list[Pair]]:
    """``(vocab, merges)`` for ``text``: ids are the special tokens, the 256 bytes, then the merges."""
    if isinstance(text, os.PathLike) or (len(text) < 4096 and "\n" not in text and text and os.path.isfile(text)):
        # Trained on the path's characters, a path would give a tokenizer without a word of warning.
        raise ValueError(f"train_bpe_on_text takes the text, and {os.fspath(text)!r} is a file path: use train_bpe")
    specials = list(special_tokens or [])
    merges = learn_merges(count_pretokens(text, specials), vocab_size - 256 - len(specials))
    vocab = {i: s.encode("utf-8") for i, s in enumerate(specials)}
    for b in range(256):
        vocab[len(vocab)] = bytes([b])
    for a, b in merges:
        vocab[len(vocab)] = a + b
    return vocab, merges


def train_bpe(
    input_path: str | os.PathLike, vocab_size: int, special_tokens: list[str] | None = None
) -> tuple[dict[int, bytes], list[Pair]]:
    """Train on the UTF-8 text file ``input_path`` (the course's interface)."""
    with open(input_path, encoding="utf-8") as f:
        return train_bpe_on_text(f.read(), vocab_size, special_tokens)
