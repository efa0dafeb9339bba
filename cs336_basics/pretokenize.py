"""Pre-tokenization shared by BPE training and encoding.

GPT-2 splits text into "pre-tokens" with a regex before any merging, so merges never cross word
boundaries. Special tokens (e.g. ``<|endoftext|>``) are split out *before* that regex runs, so no
pre-token (and hence no merge) ever spans one.

    >>> [m.group() for m in PRETOKEN_RE.finditer("Hello, world!  it's 2024")]
    ['Hello', ',', ' world', '!', ' ', ' it', "'s", ' 2024']
    >>> split_on_specials("a<|endoftext|>b", ["<|endoftext|>"])
    [('a', False), ('<|endoftext|>', True), ('b', False)]
"""

from __future__ import annotations

import os
import re
from typing import BinaryIO

import regex

# The GPT-2 pre-tokenizer pattern (the same one tiktoken's "gpt2" encoding uses).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PAT)

# The same pattern for pure-ASCII *bytes*, for the stdlib ``re`` engine (about 2x faster than
# ``regex`` with \p{..} classes). On ASCII text it matches exactly what PRETOKEN_RE matches: there
# \p{L} is [A-Za-z], \p{N} is [0-9] and \s is [ \t\n\v\f\r] for both engines (checked in the
# tests over all 128 code points). Only ever apply it to data for which ``bytes.isascii()`` holds.
ASCII_PRETOKEN_RE = re.compile(
    rb"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""
)

# A safe place to cut text so both halves pre-tokenize exactly as the whole does: just after a
# printable ASCII non-space byte that is followed by ASCII whitespace. No GPT-2 pre-token runs from
# a non-space character into whitespace, and the only lookahead, (?!\S), belongs to whitespace
# runs, which cannot end there. (Any non-space *byte* is not enough: the last byte of U+00A0 is
# 0xA0, and U+00A0 is whitespace to the regex.)
WS_CUT_RE = re.compile(rb"[!-~][\t\n\v\f\r ]")


def _spans_special(buf: bytes, pos: int, tokens: list[bytes]) -> bool:
    """True if an occurrence of one of ``tokens`` in ``buf`` starts before ``pos``, ends after it."""
    for t in tokens:
        if len(t) > 1:
            hit = buf.find(t, max(0, pos - len(t) + 1), pos + len(t) - 1)
            if hit != -1 and hit < pos:
                return True
    return False


def last_safe_cut(
    buf: bytes, split_tokens: list[bytes] | None = None, window: int = 1 << 16
) -> int | None:
    """The last offset ``0 < i < len(buf)`` where ``buf`` may be cut: both halves split on
    ``split_tokens`` and pre-tokenize exactly as the whole would. None if there is none near the end.

    Candidates are starts of split tokens and whitespace cuts (see ``WS_CUT_RE``), never inside an
    occurrence of a split token. Only the last ``window`` bytes are searched (then, for buffers
    without whitespace, the last split token anywhere), so this is cheap to call per block.
    """
    tokens = [t for t in (split_tokens or []) if t]
    # A token straddling the end of ``buf`` is invisible, so only judge cuts it cannot reach.
    limit = len(buf) - max((len(t) for t in tokens), default=1) + 1
    hi = len(buf)
    for w in [x for x in (1 << 8, 1 << 12) if x < window] + [window]:  # usually the end has one
        lo = max(0, len(buf) - w)
        if lo >= hi:
            continue
        cuts = [m.start() + 1 for m in WS_CUT_RE.finditer(buf, lo, hi)]
        for cut in reversed(cuts):
            if cut < limit and not _spans_special(buf, cut, tokens):
                return cut
        hi = lo + 1  # the next, wider search covers what is left (a match may straddle lo)
    best = None
    for t in tokens:
        hit = buf.rfind(t, 0, max(limit - 1 + len(t), 0))
        while hit > 0 and _spans_special(buf, hit, tokens):
            hit = buf.rfind(t, 0, hit + len(t) - 1)
        if hit > 0 and (best is None or hit > best):
            best = hit
    return best


def special_pattern(special_tokens: list[str] | None) -> regex.Pattern | None:
    """A regex matching any special token, longest first (so overlapping specials resolve to the
    longest, e.g. ``<|endoftext|><|endoftext|>`` beats ``<|endoftext|>``); None when there are none."""
    if not special_tokens:
        return None
    ordered = sorted(set(special_tokens), key=len, reverse=True)
    return regex.compile("|".join(regex.escape(s) for s in ordered))


def split_on_specials(text: str, special_tokens: list[str] | None) -> list[tuple[str, bool]]:
    """Split ``text`` into ``(piece, is_special)`` parts; empty non-special pieces are dropped."""
    pat = special_pattern(special_tokens)
    if pat is None:
        return [(text, False)] if text else []
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in pat.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def find_chunk_boundaries(
    file: BinaryIO, desired_num_chunks: int, split_tokens: list[bytes] | None = None
) -> list[int]:
    """Byte offsets ``[0, ..., file_size]`` cutting ``file`` into about ``desired_num_chunks`` pieces.

    Each inner boundary is moved forward to the start of the next occurrence of one of
    ``split_tokens`` (e.g. ``b"<|endoftext|>"``), so documents stay whole. With no split tokens,
    or when none occurs soon after a guess (1 MiB, or 1/8 of a chunk if less), it moves to the
    next safe whitespace cut instead (see ``WS_CUT_RE``). Either way no special token and no
    pre-token is cut in two, so chunks can be split on specials and pre-tokenized independently.
    Boundaries may coincide; duplicates are removed. Reads only small windows, never the file.
    """
    file.seek(0, os.SEEK_END)
    size = file.tell()
    if size == 0 or desired_num_chunks <= 1:
        return [0, size]
    step = size // desired_num_chunks
    guesses = [i * step for i in range(1, desired_num_chunks)]
    window = 1 << 16
    prefer_tokens_for = min(1 << 20, step // 8)  # then give up on tokens: keep chunks balanced
    tokens = [t for t in (split_tokens or []) if t]
    back = max((len(t) for t in tokens), default=1)
    bounds = [0]
    for guess in guesses:
        start = pos = max(guess, bounds[-1])
        found = None
        while pos < size and found is None:
            # Read a little before ``pos`` too, to see whether a special token spans a candidate.
            lead = min(pos, back)
            file.seek(pos - lead)
            buf = file.read(window + lead + back)
            if len(buf) <= lead:
                break
            hits = []
            for t in tokens:
                h = buf.find(t, lead)
                while h != -1 and _spans_special(buf, h, tokens):
                    h = buf.find(t, h + 1)
                if h != -1 and h < lead + window:  # later ones are judged with more context
                    hits.append(h)
            if hits:
                found = pos - lead + min(hits)
            elif not tokens or pos - start >= prefer_tokens_for:
                for m in WS_CUT_RE.finditer(buf, max(lead - 1, 0)):
                    cut = m.start() + 1
                    if cut >= lead + window:
                        break
                    if cut >= lead and not _spans_special(buf, cut, tokens):
                        found = pos - lead + cut
                        break
            pos += window
        bounds.append(size if found is None else found)
    bounds.append(size)
    return sorted(set(bounds))
