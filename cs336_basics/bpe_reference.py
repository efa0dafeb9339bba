"""Reference byte-level BPE: the handout's algorithm, written to be read (and slow).

``bpe.train_bpe`` and ``Tokenizer.encode`` compute exactly what this module computes, only fast;
the tests hold them equal on varied text. Training:

1. split the text on special tokens (they are never merged) and pre-tokenize each piece with the
   GPT-2 regex; count each pre-token, as a tuple of single bytes;
2. repeatedly count every adjacent pair inside every pre-token (weighted by the pre-token's
   count), take the most frequent pair, ties going to the lexicographically greatest
   ``(bytes, bytes)`` pair, and merge it everywhere.

The handout's worked example (whitespace pre-tokenization, no specials)::

    >>> words = Counter(tuple(bytes([c]) for c in w.encode())
    ...                 for w in "low low low low low lower lower widest widest widest".split()
    ...                 + ["newest"] * 6)
    >>> reference_merges(words, 6)
    [(b's', b't'), (b'e', b'st'), (b'o', b'w'), (b'l', b'ow'), (b'w', b'est'), (b'n', b'e')]

(``es`` and ``st`` both occur 9 times in "widest" x3 + "newest" x6; ``(b"s", b"t")`` is the
greater pair.) Encoding one pre-token: start from its bytes and repeatedly merge the adjacent
pair with the lowest merge rank (the leftmost one on ties) until no pair has a rank::

    >>> ranks = {(b"t", b"h"): 0, (b"th", b"e"): 1, (b"e", b"r"): 2}
    >>> encode_pretoken(b"there", ranks)
    [b'the', b'r', b'e']
"""

from __future__ import annotations

import os
from collections import Counter

from cs336_basics.pretokenize import PRETOKEN_RE, special_pattern, split_on_specials
from cs336_basics.utils.errors import UserError

Pair = tuple[bytes, bytes]


def pretoken_counts(text: str, special_tokens: list[str] | None = None) -> Counter:
    """``{pre-token as a tuple of single bytes: count}``; special tokens are split out first."""
    words: Counter = Counter()
    for piece, is_special in split_on_specials(text, special_pattern(special_tokens)):
        if not is_special:
            for tok in PRETOKEN_RE.findall(piece):
                words[tuple(bytes([b]) for b in tok.encode("utf-8"))] += 1
    return words


def pair_counts(words: Counter) -> Counter:
    """How often each adjacent pair occurs, over all words, weighted by word counts."""
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


def reference_merges(words: Counter, num_merges: int) -> list[Pair]:
    """Up to ``num_merges`` merges: the most frequent pair each time, ties to the greatest pair."""
    merges: list[Pair] = []
    for _ in range(num_merges):
        pairs = pair_counts(words)
        if not pairs:
            break  # every word is a single token: nothing left to merge
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for word, n in words.items():
            merged[merge_word(word, best)] += n
        words = merged
    return merges


def reference_train_bpe(
    text: str, vocab_size: int, special_tokens: list[str] | None = None
) -> tuple[dict[int, bytes], list[Pair]]:
    """``(vocab, merges)`` as ``bpe.train_bpe`` returns them for a file holding ``text``: ids are
    the special tokens, then the 256 bytes, then one token per merge.

    ``text`` is the corpus itself (``bpe.train_bpe`` takes a path): a path given here by mistake would
    train on the path's characters, so a path object, or a one-line string naming an existing file,
    is refused."""
    if isinstance(text, os.PathLike) or (
        isinstance(text, str) and len(text) < 4096 and "\n" not in text and text and os.path.isfile(text)
    ):
        raise UserError(
            f"reference_train_bpe takes the corpus text, and {os.fspath(text)!r} is a file path; pass its "
            "contents (Path(p).read_text()), or call bpe.train_bpe, which takes a path"
        )
    specials = list(special_tokens or [])
    merges = reference_merges(pretoken_counts(text, specials), vocab_size - 256 - len(specials))
    vocab = {i: s.encode("utf-8") for i, s in enumerate(specials)}
    for b in range(256):
        vocab[len(vocab)] = bytes([b])
    for a, b in merges:
        vocab[len(vocab)] = a + b
    return vocab, merges


def encode_pretoken(pretoken: bytes, ranks: dict[Pair, int]) -> list[bytes]:
    """The tokens of one pre-token: merge the lowest-rank adjacent pair until none has a rank.

    ``ranks`` maps each merge to its position in the merge list (lower = learned earlier)."""
    parts = [bytes([b]) for b in pretoken]
    while len(parts) > 1:
        rank, i = min((ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:])))
        if rank == float("inf"):
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def reference_encode(
    text: str, vocab: dict[int, bytes], merges: list[Pair], special_tokens: list[str] | None = None
) -> list[int]:
    """Token ids of ``text``: specials (longest first) become their ids, every other piece is
    pre-tokenized and each pre-token encoded with ``encode_pretoken``."""
    ranks = {pair: r for r, pair in enumerate(merges)}
    ids = {b: i for i, b in sorted(vocab.items(), reverse=True)}  # the lowest id wins a duplicate
    out: list[int] = []
    for piece, is_special in split_on_specials(text, special_pattern(special_tokens)):
        if is_special:
            out.append(ids[piece.encode("utf-8")])
            continue
        for tok in PRETOKEN_RE.findall(piece):
            out.extend(ids[t] for t in encode_pretoken(tok.encode("utf-8"), ranks))
    return out
