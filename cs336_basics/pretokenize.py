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
_WS_START = re.compile(rb"[^ \t\n\r\f\v][ \t\n\r\f\v]")


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
    ``split_tokens`` (e.g. ``b"<|endoftext|>"``), so no document and no special token is cut in
    two. With no split tokens (or when none occurs after a guess) the boundary moves to the next
    start of an ASCII whitespace run (never inside a UTF-8 sequence, never splitting a pre-token). Boundaries may
    coincide; duplicates are removed. Reads only small windows, never the whole file.
    """
    file.seek(0, os.SEEK_END)
    size = file.tell()
    if size == 0 or desired_num_chunks <= 1:
        return [0, size]
    step = size // desired_num_chunks
    guesses = [i * step for i in range(1, desired_num_chunks)]
    window = 1 << 16
    tokens = [t for t in (split_tokens or []) if t]
    bounds = [0]
    for guess in guesses:
        pos = max(guess, bounds[-1])
        found = None
        while pos < size and found is None:
            file.seek(pos)
            # Overlap reads by the longest token so a token straddling two windows is still seen.
            buf = file.read(window + max((len(t) for t in tokens), default=0))
            if not buf:
                break
            hits = [buf.find(t) for t in tokens]
            hits = [h for h in hits if h != -1]
            if not tokens:
                # Cut where a whitespace run starts after a non-space byte: the GPT-2 regex always
                # ends a pre-token there, so both halves pre-tokenize exactly as the whole would.
                m = _WS_START.search(buf)
                hits = [m.start() + 1] if m else []
            if hits:
                found = pos + min(hits)
            else:
                pos += window
        bounds.append(size if found is None else found)
    bounds.append(size)
    return sorted(set(bounds))
