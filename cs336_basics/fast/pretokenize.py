"""Pre-tokenization for the fast trainer and tokenizer: the textbook's rules (``cs336_basics.pretokenize``,
re-exported here), plus what speed needs.

What it adds:

* ``ascii_pretoken_re``: the same pattern for pure-ASCII text, for the faster stdlib ``re`` engine;
* the *safe cut* rule (``first_safe_cut``, ``last_safe_cut``, ``find_chunk_boundaries``): where text may be
  cut so both halves split and pre-tokenize exactly as the whole does. Training cuts files into
  chunks and blocks with it, ``encode`` cuts long texts, ``encode_iterable`` cuts its stream and
  ``tokenize_data`` cuts files;
* ``available_cpus``.

Every function here works on ``str`` and on UTF-8 ``bytes`` alike (pass specials of the same
type). Matching UTF-8 bytes is equivalent to matching the decoded text: UTF-8 is
self-synchronizing, so an encoded token can only match at a character boundary of valid text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import BinaryIO

import regex

from cs336_basics.pretokenize import GPT2_PAT, PRETOKEN_RE, S, special_pattern, split_on_specials

__all__ = [
    "GPT2_PAT", "PRETOKEN_RE", "ASCII_WS", "ASCII_PAT", "ascii_pretoken_re", "special_pattern", "split_on_specials",
    "first_safe_cut", "last_safe_cut", "find_chunk_boundaries", "available_cpus",
]  # fmt: skip

# GPT-2's whitespace among ASCII characters (``regex``'s \s, i.e. Unicode White_Space; *not*
# \x1c-\x1f, which the stdlib's str \s would include).
ASCII_WS = "\t\n\x0b\x0c\r "
_WS = "\\t\\n\\x0b\\x0c\\r "

# The GPT-2 pattern restricted to ASCII text, for the stdlib ``re`` engine (faster than ``regex``
# with \p{..} classes; see docs/benchmarks.md). On ASCII text it matches exactly what PRETOKEN_RE matches: there
# \p{L} is [A-Za-z], \p{N} is [0-9] and \s is ASCII_WS (checked in the tests over all 128 code
# points). Letters come first, the most common case: no other alternative can match where that
# one does, so the order does not change any match. Only apply it to text that ``isascii()``.
ASCII_PAT = rf" ?[A-Za-z]+|'(?:[sdmt]|ll|ve|re)| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
_ASCII_RE = {str: re.compile(ASCII_PAT), bytes: re.compile(ASCII_PAT.encode("ascii"))}


def ascii_pretoken_re(kind: type[str] | type[bytes] = str) -> re.Pattern:
    """ASCII_PAT compiled for ``str`` or for ``bytes`` text."""
    return _ASCII_RE[kind]


# ----------------------------------------------------------------------------------------------
# The safe cut rule
# ----------------------------------------------------------------------------------------------
# A cut at offset p (0 < p < len) is SAFE when both halves split on specials and pre-tokenize
# exactly as the whole does. It is safe if no occurrence of a special token strictly contains p
# (start < p < end) and either
#   (a) an occurrence of a special token starts at p (the whole text's special scan starts afresh
#       there too, and some special matches at p), or
#   (b) the character at p is ASCII whitespace and the character before it is not whitespace (in
#       the GPT-2 regex's sense): no pre-token runs from a non-space character into whitespace,
#       and the only lookahead, (?!\S), belongs to whitespace runs, which cannot end there.
# (Any non-space *byte* before is not enough: the last byte of U+00A0 is 0xA0, and U+00A0 is
# whitespace to the regex. The end of a special is not enough either: it may not be a match.)
# Candidates for (b): a non-ASCII-whitespace unit followed by ASCII whitespace; only a non-ASCII
# unit before needs a closer look (``_nonspace_before``).
_CANDIDATE = f"[^{_WS}][{_WS}]"
_CANDIDATE_RE = {str: re.compile(_CANDIDATE), bytes: re.compile(_CANDIDATE.encode("ascii"))}
_UNICODE_WS = regex.compile(r"\s")  # the GPT-2 pattern's notion of whitespace


def _nonspace_before(buf: str | bytes, p: int) -> bool:
    """Is the character ending just before offset ``p`` non-whitespace (GPT-2 sense)?"""
    last = buf[p - 1]
    if isinstance(buf, str):
        return last.isascii() or not _UNICODE_WS.match(last)
    if last < 0x80:
        return True  # the candidate pattern already excluded ASCII whitespace
    start = p - 1
    while start > max(0, p - 4) and 0x80 <= buf[start] < 0xC0:  # back to the lead byte
        start -= 1
    try:
        ch = buf[start:p].decode("utf-8")
    except UnicodeDecodeError:
        return False  # invalid bytes (reported elsewhere) or a window edge: not a cut
    return len(ch) == 1 and not _UNICODE_WS.match(ch)


def _inside_special(buf: S, p: int, specials: Sequence[S]) -> bool:
    """Does an occurrence of one of ``specials`` in ``buf`` strictly contain offset ``p``?"""
    return any(len(t) > 1 and buf.find(t, max(0, p - len(t) + 1), p + len(t) - 1) != -1 for t in specials)


def first_safe_cut(buf: S, lo: int, hi: int | None = None, specials: Sequence[S] = ()) -> int | None:
    """The smallest safe cut ``p`` with ``lo <= p < hi`` (default: ``len(buf)``), or None. The
    caller keeps ``hi`` at least the longest special's length before the end of what it knows."""
    hi = len(buf) if hi is None else hi
    specials = [t for t in specials if t]
    best = None
    for m in _CANDIDATE_RE[type(buf)].finditer(buf, max(lo - 1, 0), hi):
        p = m.start() + 1
        if p >= lo and _nonspace_before(buf, p) and not _inside_special(buf, p, specials):
            best = p  # (b): the first whitespace cut
            break
    for t in specials:  # (a): a special's start, before the best cut so far
        end = best if best is not None else hi
        i = buf.find(t, max(lo, 1), end + len(t) - 1)
        while i != -1 and _inside_special(buf, i, specials):
            i = buf.find(t, i + 1, end + len(t) - 1)
        if i != -1:
            best = i
    return best


def last_safe_cut(buf: S, specials: Sequence[S] = (), window: int = 1 << 16) -> int | None:
    """A safe cut ``0 < p < len(buf)`` near the end that text appended to ``buf`` cannot
    invalidate (a special token arriving in pieces must be seen whole), or None if there is none.

    The last whitespace cut in the last ``window`` units; failing that, the last special start
    anywhere. Usually only the last few hundred units are searched, so this is cheap per block.
    """
    specials = [t for t in specials if t]
    # A special straddling the end of ``buf`` is invisible, so only judge cuts it cannot reach.
    limit = len(buf) - max((len(t) for t in specials), default=1) + 1
    hi = limit
    for w in [x for x in (1 << 8, 1 << 12) if x < window] + [window]:  # usually the end has one
        lo = max(1, len(buf) - w)
        if lo >= hi:
            continue
        cuts = [m.start() + 1 for m in _CANDIDATE_RE[type(buf)].finditer(buf, lo - 1, hi)]
        for p in reversed(cuts):
            if p < limit and _nonspace_before(buf, p) and not _inside_special(buf, p, specials):
                return p
        hi = lo + 1  # the next, wider search covers what is left (a match may straddle lo)
    best = None
    for t in specials:
        i = buf.rfind(t, 0, max(limit - 1 + len(t), 0))
        while i > 0 and _inside_special(buf, i, specials):
            i = buf.rfind(t, 0, i + len(t) - 1)
        if i > 0 and (best is None or i > best):
            best = i
    return best


def find_chunk_boundaries(
    file: BinaryIO, desired_num_chunks: int, split_tokens: Sequence[bytes] | None = None
) -> list[int]:
    """Byte offsets ``[0, ..., file_size]`` cutting ``file`` into about ``desired_num_chunks``
    pieces that can be split on specials, pre-tokenized and encoded independently.

    Each inner boundary is the first safe cut (see above: the start of a special token such as
    ``<|endoftext|>``, or a whitespace cut) at or after an even split of the file. Boundaries are
    strictly increasing (a chunk without any cut merges into its neighbour). Reads only small
    windows, never the whole file.
    """
    file.seek(0, os.SEEK_END)
    size = file.tell()
    if size == 0 or desired_num_chunks <= 1:
        return [0, size]
    tokens = [t for t in (split_tokens or []) if t]
    back = max((len(t) for t in tokens), default=0) + 4  # context to judge a cut (UTF-8: 4 bytes)
    window = 1 << 16
    bounds = [0]
    for k in range(1, desired_num_chunks):
        pos = max(size * k // desired_num_chunks, bounds[-1] + 1)
        found = None
        while found is None and pos < size:
            base = max(0, pos - back)
            file.seek(base)
            buf = file.read(pos - base + window + back)
            hi = min(len(buf), pos - base + window)
            if base + len(buf) < size:  # see every special that could start before hi whole
                hi = min(hi, len(buf) - back + 1)
            p = first_safe_cut(buf, pos - base, hi, tokens)
            if p is not None:
                found = base + p
            else:
                pos = base + hi
        if found is None or found >= size:
            break
        bounds.append(found)
    bounds.append(size)
    return bounds


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset / container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
