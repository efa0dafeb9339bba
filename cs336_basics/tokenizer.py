"""Encoding and decoding with a trained BPE vocabulary (handout section 2.6), written to be read.

``encode`` splits out the special tokens (longest first), pre-tokenizes the rest with the GPT-2 regex,
and turns each pre-token into tokens by applying the merges in the order they were learned: start
from its bytes and merge the adjacent pair with the lowest merge rank (the leftmost on ties) until no
pair has one::

    >>> ranks = {(b"t", b"h"): 0, (b"th", b"e"): 1, (b"e", b"r"): 2}
    >>> merge_pretoken(b"there", ranks)
    [b'the', b'r', b'e']

``decode`` joins the tokens' bytes and decodes them as UTF-8 (invalid bytes become U+FFFD).
``encode_iterable`` encodes a stream (a file object yields lines) in pieces cut where the cut cannot
change the result, so it needs memory for a line or two, never the whole text.

The training program's tokenizer, ``cs336_basics.fast.tokenizer.Tokenizer``, gives the same ids
(the tests compare both with tiktoken) and adds a cache, parallel encoding and files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import regex

from cs336_basics.pretokenize import PRETOKEN_RE, special_pattern, split_on_specials

Pair = tuple[bytes, bytes]
_SPACE = regex.compile(r"\s")  # whitespace as the GPT-2 pattern sees it
_ASCII_SPACE = "\t\n\x0b\x0c\r "


def merge_pretoken(pretoken: bytes, ranks: dict[Pair, int]) -> list[bytes]:
    """The tokens of one pre-token: merge the lowest-rank adjacent pair until none has a rank."""
    parts = [bytes([b]) for b in pretoken]
    while len(parts) > 1:
        rank, i = min((ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:])))
        if rank == float("inf"):
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


class Tokenizer:
    """A byte-level BPE tokenizer from ``vocab`` (id -> bytes) and ``merges`` (in creation order).

    Special tokens missing from ``vocab`` are added with new ids.
    """

    def __init__(self, vocab: dict[int, bytes], merges: list[Pair], special_tokens: list[str] | None = None) -> None:
        self.vocab = dict(vocab)
        self.special_tokens = list(special_tokens or [])
        known = set(self.vocab.values())
        for tok in self.special_tokens:
            if tok.encode("utf-8") not in known:
                self.vocab[max(self.vocab, default=-1) + 1] = tok.encode("utf-8")
        self.ids = {b: i for i, b in sorted(self.vocab.items(), reverse=True)}  # the lowest id wins a duplicate
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.specials = special_pattern(self.special_tokens)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, is_special in split_on_specials(text, self.specials):
            if is_special:
                ids.append(self.ids[piece.encode("utf-8")])
                continue
            for pretoken in PRETOKEN_RE.findall(piece):
                ids.extend(self.ids[t] for t in merge_pretoken(pretoken.encode("utf-8"), self.ranks))
        return ids

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """The ids of the concatenated strings, lazily: the same as ``encode("".join(iterable))``."""
        buf = ""
        for chunk in iterable:
            buf += chunk
            cut = self._safe_cut(buf)
            if cut:
                yield from self.encode(buf[:cut])
                buf = buf[cut:]
        yield from self.encode(buf)

    def _safe_cut(self, buf: str) -> int:
        """The last offset ``p`` where ``buf`` can be cut so that both halves encode as the whole does,
        whatever text follows; 0 if there is none.

        That holds where ASCII whitespace follows a non-whitespace character (no pre-token runs from a
        non-space into a space, and the regex's one lookahead belongs to runs of whitespace) and no
        special token spans ``p``. Cuts near the end are left alone: a special token arriving in
        pieces must be seen whole.
        """
        longest = max((len(t) for t in self.special_tokens), default=1)
        for p in range(len(buf) - longest, 0, -1):
            if buf[p] in _ASCII_SPACE and not _SPACE.match(buf[p - 1]) and not self._inside_special(buf, p):
                return p
        return 0

    def _inside_special(self, buf: str, p: int) -> bool:
        return any(buf.find(t, max(0, p - len(t) + 1), p + len(t) - 1) != -1 for t in self.special_tokens)
