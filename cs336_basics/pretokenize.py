"""Pre-tokenization (handout section 2.4): special tokens out first, then the GPT-2 regex.

GPT-2 splits text into "pre-tokens" with a regex before any merging, so merges never cross word
boundaries. Special tokens (e.g. ``<|endoftext|>``) are split out *before* the regex runs, so no
pre-token, and hence no merge, ever spans one::

    >>> PRETOKEN_RE.findall("Hello, world!  it's 2024")
    ['Hello', ',', ' world', '!', ' ', ' it', "'s", ' 2024']
    >>> list(split_on_specials("a<|endoftext|>b", special_pattern(["<|endoftext|>"])))
    [('a', False), ('<|endoftext|>', True), ('b', False)]

The BPE trainer and the tokenizer both use these; so do their fast twins (``cs336_basics.fast``).
The functions work on ``str`` and on UTF-8 ``bytes`` alike (give specials of the same type).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TypeVar

import regex

# The GPT-2 pre-tokenizer pattern (the one tiktoken's "gpt2" encoding uses).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PAT)

S = TypeVar("S", str, bytes)


def special_pattern(special_tokens: Sequence[S] | None) -> re.Pattern[S] | None:
    """A pattern matching any special token, longest first, so that overlapping specials resolve to
    the longest (``<|endoftext|><|endoftext|>`` beats ``<|endoftext|>``); None when there are none."""
    tokens = sorted({t for t in special_tokens or () if t}, key=len, reverse=True)
    if not tokens:
        return None
    sep = b"|" if isinstance(tokens[0], bytes) else "|"
    return re.compile(sep.join(re.escape(t) for t in tokens))


def split_on_specials(text: S, pattern: re.Pattern[S] | None) -> Iterator[tuple[S, bool]]:
    """``(piece, is_special)`` in order, splitting ``text`` on ``pattern`` (from ``special_pattern``);
    empty ordinary pieces are skipped."""
    pos = 0
    for m in pattern.finditer(text) if pattern is not None else ():
        if m.start() > pos:
            yield text[pos : m.start()], False
        yield m.group(), True
        pos = m.end()
    if pos < len(text):
        yield text[pos:], False
