"""An independent reference BPE trainer for the tests: recount every pair at every step (slow,
obviously correct). It splits special tokens with its own regex, not the project's pretokenizer
helpers, so it checks them too; only the GPT-2 pattern string itself is shared."""

from __future__ import annotations

from collections import Counter

import regex

from cs336_basics.pretokenize import GPT2_PAT


def naive_merges(words: Counter, num_merges: int) -> list[tuple[bytes, bytes]]:
    """Merge the most frequent pair ``num_merges`` times; ties -> lexicographically greatest pair."""
    merges = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def naive_train(text: str, vocab_size: int, specials: list[str]):
    """``(vocab, merges)`` with the spec's layout: specials, then the 256 bytes, then merges."""
    pat = regex.compile(GPT2_PAT)
    if specials:
        chunks = regex.split("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)), text)
    else:
        chunks = [text]
    words: Counter = Counter()
    for c in chunks:
        for w in pat.findall(c):
            words[tuple(bytes([b]) for b in w.encode())] += 1
    merges = naive_merges(words, vocab_size - 256 - len(specials))
    vocab = {i: s.encode() for i, s in enumerate(specials)}
    vocab.update({len(specials) + i: bytes([i]) for i in range(256)})
    for a, b in merges:
        vocab[len(vocab)] = a + b
    return vocab, merges
