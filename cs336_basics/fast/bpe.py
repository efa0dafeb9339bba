"""Byte-level BPE training (GPT-2 style), fast enough for multi-GB corpora.

The algorithm is the textbook's, :mod:`cs336_basics.bpe` (read that first: same results, a few lines, slow);
this module computes it fast, in two phases that ``train_bpe`` composes:

1. **Count pre-tokens** (``count_pretokens``). The file is cut into chunks at safe cuts
   (``pretokenize.find_chunk_boundaries``); worker processes each stream their own byte range in
   ~1 MiB blocks, split out the special tokens, pre-tokenize with the GPT-2 regex (an equivalent
   stdlib ``re`` pattern for ASCII text, plus a split-on-space shortcut) and count pre-tokens as
   ``bytes -> count``. Memory grows with the number of *distinct* pre-tokens, not the file size.
2. **Merge incrementally** (``merge_pretokens``). The distinct pre-tokens are laid out in flat
   int32 arrays as linked lists of token ids (``_Corpus``), one slot per byte, with a count per
   word. A pair -> slots index means a merge only touches the occurrences of its pair; frequent
   pairs are merged with a few whole-array numpy operations (count changes summed with
   ``np.bincount``-style reductions, applied to the dicts through C-level ``map``s), rare ones
   slot by slot. A max-heap with lazy invalidation finds the next pair without rescanning all
   pair counts (the textbook's recounts every pair of every word for every merge); rare new
   pairs wait in a list below a floor count instead of filling the heap, and join it when the
   best count falls below the floor (exact, because a pair's count only goes down unless a
   merge creates it, and created pairs are pushed or listed afresh).

Worked example (the handout's, with whitespace pre-tokenization)::

    >>> words = {tuple(bytes([c]) for c in w.encode()): n
    ...          for w, n in {"low": 5, "lower": 2, "widest": 3, "newest": 6}.items()}
    >>> bpe_merges(words, 6)
    [(b's', b't'), (b'e', b'st'), (b'o', b'w'), (b'l', b'ow'), (b'w', b'est'), (b'n', b'e')]
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import multiprocessing
import operator
import os
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import repeat

import numpy as np

from cs336_basics.fast.pretokenize import (
    PRETOKEN_RE,
    ascii_pretoken_re,
    available_cpus,
    find_chunk_boundaries,
    first_safe_cut,
    last_safe_cut,
    special_pattern,
    split_on_specials,
)
from cs336_basics.utils.errors import UserError, os_reason

ASCII_PRETOKEN_RE = ascii_pretoken_re(bytes)

# Below this many bytes per worker, forking a pool costs more than it saves: a pool takes
# tens of milliseconds to start and one core counts megabytes of English per second, so two
# workers only pay off from a few MB (the course's 130 KB check always runs in-process).
PARALLEL_MIN_BYTES_PER_WORKER = 2 << 20
# Bytes each worker reads at a time; bounds the transient list of pre-tokens (a small multiple).
BLOCK_BYTES = 1 << 20

Progress = Callable[[str], None]


class BPEError(UserError, ValueError):
    """Bad input to BPE training; the message is one line naming the file / value."""


# ----------------------------------------------------------------------------------------------
# Phase 1: pre-token counting
# ----------------------------------------------------------------------------------------------
# Pieces are processed in sub-pieces of about this size, cut at safe points, so that the rare
# irregular or non-ASCII stretch only sends its own few KiB down a slower path.
_SUBPIECE_BYTES = 1 << 12
# A whitespace byte followed by a space: the one thing the split-on-space shortcut can't handle.
# (Six substring tests are much faster than one regex search for a character class.)
_WS_THEN_SPACE = (b"  ", b"\n ", b"\t ", b"\r ", b"\x0b ", b"\x0c ")


# Expand the distinct space-separated items (e.g. b"cat," b"end.\nThe") into pre-tokens once
# there are this many, or once this many bytes went through the shortcut (which bounds their
# total size even for long space-free lines): memory stays bounded on any input.
_MAX_SPACED = 1 << 20
_MAX_SPACED_BYTES = 64 << 20


class _PretokenCounter:
    """Pre-token counts of a stream of text blocks (each starting and ending at a safe cut).

    Shortcut for ordinary ASCII text: ``piece.split(b" ")`` (C speed) yields items I0, I1, ...
    with ``piece = I0 + " " + I1 + " " + ...``. When no whitespace byte is followed by a space,
    every item before a separator ends with a non-space byte, so each separator starts a safe
    cut (see ``pretokenize.WS_CUT_RE``) and the pre-tokens are exactly those of I0 plus those of
    ``b" " + Ik`` for each later item (see the safe cut rule in ``pretokenize``). So only *distinct* items need the regex: they are counted
    in ``spaced`` and expanded once, in ``result()``. Anything else goes through the regex (the
    ASCII ``re`` pattern, or the Unicode ``regex`` one for non-ASCII text)."""

    def __init__(self, specials: re.Pattern[bytes] | None) -> None:
        self.specials = specials
        self.counts: Counter = Counter()  # pre-token bytes -> count
        self.spaced: Counter = Counter()  # item -> count of the pre-token sequence of b" " + item
        self.spaced_bytes = 0  # bytes that went into ``spaced`` since it was last expanded

    def feed(self, buf: bytes) -> int | None:
        """Count ``buf``; return the offset of its first invalid UTF-8 byte (then counts nothing)."""
        if not buf.isascii():
            try:
                buf.decode("utf-8")
            except UnicodeDecodeError as err:
                return err.start
        counts, spaced = self.counts, self.spaced
        fast: list[bytes] = []
        slow: list[str] = []
        for piece, is_special in split_on_specials(buf, self.specials):
            if is_special:
                continue
            pos, n = 0, len(piece)
            while pos < n:
                end = None
                if n - pos > 2 * _SUBPIECE_BYTES:
                    end = first_safe_cut(piece, pos + _SUBPIECE_BYTES)
                if end is None:
                    end = n
                sub = piece[pos:end] if pos or end < n else piece
                pos = end
                if not sub.isascii():
                    slow.extend(PRETOKEN_RE.findall(sub.decode("utf-8")))
                elif not any(w in sub for w in _WS_THEN_SPACE):
                    items = sub.split(b" ")
                    fast.extend(ASCII_PRETOKEN_RE.findall(items[0]))
                    del items[0]
                    spaced.update(items)
                    self.spaced_bytes += len(sub)
                else:
                    fast.extend(ASCII_PRETOKEN_RE.findall(sub))
        counts.update(fast)
        for tok, k in Counter(slow).items():
            counts[tok.encode("utf-8")] += k
        if len(spaced) > _MAX_SPACED or self.spaced_bytes > _MAX_SPACED_BYTES:
            self._expand()
        return None

    def _expand(self) -> None:
        """Move the ``spaced`` items into ``counts`` as pre-tokens (bounds memory on huge inputs)."""
        counts = self.counts
        findall = ASCII_PRETOKEN_RE.findall
        for item, k in self.spaced.items():
            for tok in findall(b" " + item):
                counts[tok] += k
        self.spaced = Counter()
        self.spaced_bytes = 0

    def result(self) -> Counter:
        self._expand()
        return self.counts


def _count_range(
    args: tuple[str, int, int, list[str], int],
) -> tuple[Counter, int | None]:
    """Count pre-tokens in bytes ``[start, end)`` of ``path``, streaming ``block`` bytes at a time.

    Returns ``(counts, bad_offset)``: the absolute offset of the first invalid UTF-8 byte (counting
    stops there), or None. Runs in worker processes, so it takes one picklable tuple."""
    path, start, end, special_tokens, block = args
    split_tokens = [s.encode("utf-8") for s in special_tokens]
    counter = _PretokenCounter(special_pattern(split_tokens))
    with open(path, "rb") as f:
        f.seek(start)
        pos = start  # absolute offset of carry[0]
        carry = b""
        remaining = end - start
        while remaining > 0:
            data = f.read(min(block, remaining))
            if not data:  # file shrank under us: count what we have
                break
            remaining -= len(data)
            buf = carry + data if carry else data
            cut = len(buf)
            if remaining > 0:
                cut = last_safe_cut(buf, split_tokens) or 0
                if cut == 0:  # no safe place yet (e.g. no whitespace): read more
                    carry = buf
                    continue
            bad = counter.feed(buf[:cut] if cut < len(buf) else buf)
            if bad is not None:
                return counter.result(), pos + bad
            carry = buf[cut:]
            pos += cut
        if carry:
            bad = counter.feed(carry)
            if bad is not None:
                return counter.result(), pos + bad
    return counter.result(), None


def count_pretokens(
    input_path: str | os.PathLike,
    special_tokens: list[str] | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> Counter:
    """``{pre-token bytes: count}`` over the file; special tokens are split out and not counted.

    ``num_workers=None`` picks the number of processes from the file size (serial below
    ``PARALLEL_MIN_BYTES_PER_WORKER`` per worker); an explicit number > 1 always uses a pool.
    Raises BPEError for an unreadable file or invalid UTF-8 (naming the byte offset)."""
    special_tokens = list(special_tokens or [])
    path = os.fspath(input_path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if num_workers is None:
                num_workers = min(available_cpus(), size // PARALLEL_MIN_BYTES_PER_WORKER)
            num_workers = max(1, int(num_workers))
            if num_workers == 1:
                bounds = [0, size]
            else:
                # A few chunks per worker balances load; more would only add Counter merging.
                bounds = find_chunk_boundaries(f, 4 * num_workers, [s.encode("utf-8") for s in special_tokens])
    except OSError as err:
        raise BPEError(f"cannot read training data {path}: {os_reason(err)}") from None
    tasks = [(path, a, b, special_tokens, BLOCK_BYTES) for a, b in zip(bounds, bounds[1:]) if b > a]
    total: Counter = Counter()
    errors: list[int] = []
    done = 0
    try:
        if num_workers == 1 or len(tasks) <= 1:
            results: Iterable[tuple[Counter, int | None]] = map(_count_range, tasks)
            pool = None
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            pool = ctx.Pool(min(num_workers, len(tasks)))
            results = pool.imap_unordered(_count_range, tasks)
        try:
            for counts, bad in results:
                if bad is not None:
                    errors.append(bad)
                if total:
                    total.update(counts)
                else:
                    total = counts
                done += 1
                if progress is not None and len(tasks) > 1:
                    progress(f"pre-tokenized {done}/{len(tasks)} chunks, {len(total):,} distinct")
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    except OSError as err:
        raise BPEError(f"cannot read training data {path}: {os_reason(err)}") from None
    if errors:
        raise BPEError(f"{path}: invalid UTF-8 at byte offset {min(errors)}")
    return total


# ----------------------------------------------------------------------------------------------
# Phase 2: merges
# ----------------------------------------------------------------------------------------------
def _rev_key(b: bytes) -> str:
    """A string whose natural order is the *reverse* of ``b``'s bytes order, so a min-heap pops the
    lexicographically greatest pair first on count ties. Byte ``x`` maps to ``chr(0x1FF - x)`` and
    a terminator ``chr(0x200)`` sorts above every byte, so a prefix sorts *after* its extensions;
    the terminator also makes ``key(a) + key(b)`` order like the tuple ``(a, b)``."""
    return "".join([chr(0x1FF - x) for x in b]) + "\u0200"


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the merge loop allocates millions of small lists and
    tuples (never in cycles), and collections that rescan them are pure overhead."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# The merge loop keeps every distinct pre-token in flat integer arrays, one slot per initial symbol
# (words separated by a _SEP slot), as doubly linked lists: merging the pair at slot p into p
# unlinks the slot after it. Slots never move, so a pair occurrence is named by its left slot.
_SEP = 0x10FFFF  # separator slots; never a token id (``train_bpe`` keeps ids below it)
_HOLE = 0x10FFFF + 1  # a slot unlinked by a merge
_SHIFT = 21  # a pair (a, b) of ids is the integer a << 21 | b (ids < 2**21)
_LOW = (1 << _SHIFT) - 1
# The heap only holds pairs at or above a floor count; the rest wait in a list until the best pair in
# the heap falls below the floor, which then drops by this factor (and the heap is rebuilt without
# dead pairs). Most new pairs are rare and die before they could win: on long-tail corpora the
# heap would otherwise fill with them.
_FLOOR_DROP = 4


def _group(keys: np.ndarray, slots: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """The distinct ``keys`` and, for each, its ``slots`` (slices of one sorted array)."""
    if not len(keys):
        return [], []
    order = np.argsort(keys, kind="stable")
    keys, slots = keys[order], slots[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    ends = starts[1:].tolist() + [len(keys)]
    return keys[starts].tolist(), list(map(slots.__getitem__, map(slice, starts.tolist(), ends)))


class _Corpus:
    """The distinct pre-tokens as linked lists of token ids in flat int32 arrays.

    ``tok[s]``: the token at slot ``s`` (``_SEP`` between words, ``_HOLE`` once unlinked);
    ``nxt``/``prv``: the next / previous live slot of the same word (or a separator);
    ``freq[s]``: the count of the word slot ``s`` belongs to (what each pair occurrence weighs).
    Each is a stdlib ``array`` (cheap element access for the per-slot path) and a numpy view of
    the same memory (``*_np``: the whole-batch path)."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, freqs: np.ndarray) -> None:
        """``ids``: the words' initial token ids, concatenated; ``lengths``, ``freqs``: per word.
        (Built one array at a time, each temporary freed before the next: peak memory matters.)"""
        size = len(ids) + len(lengths) + 1
        self.n_symbols = int(ids.max()) + 1 if len(ids) else 1
        is_tok = np.ones(size, dtype=bool)
        is_tok[0] = False
        is_tok[np.cumsum(lengths + 1)] = False  # each word's trailing separator
        tok = np.full(size, _SEP, dtype=np.int32)
        tok[is_tok] = ids
        del is_tok
        self.tok, self.tok_np = _shared(tok)
        del tok
        # A pair occurrence weighs its word's count (int32 unless a count needs more).
        ftype = np.int32 if not len(freqs) or int(freqs.max()) < 1 << 31 else np.int64
        freq = np.empty(size, dtype=ftype)
        freq[0] = 0
        freq[1:] = np.repeat(freqs.astype(ftype), lengths + 1)
        self.freq, self.freq_np = _shared(freq)
        del freq
        self.nxt, self.nxt_np = _shared(np.arange(1, size + 1, dtype=np.int32))
        self.prv, self.prv_np = _shared(np.arange(-1, size - 1, dtype=np.int32))

    def index(self) -> tuple[dict[int, np.ndarray], dict[int, int]]:
        """``pair -> slots where it starts`` and ``pair -> count`` over the whole corpus."""
        tok, size, m = self.tok_np, len(self.tok_np), self.n_symbols
        if m * m * size >= 1 << 62:  # huge symbol sets (bpe_merges): the general grouping
            left = np.flatnonzero((tok[:-1] != _SEP) & (tok[1:] != _SEP)).astype(np.int32)
            pairs, slots = _group((tok[left].astype(np.int64) << _SHIFT) | tok[left + 1], left)
        else:
            # Sort (pair, slot) packed into one int64, in place: a third of argsort's memory.
            packed = np.flatnonzero((tok[:-1] != _SEP) & (tok[1:] != _SEP))
            if not len(packed):
                return {}, {}
            key = tok[packed].astype(np.int64)  # in place from here on: fewer temporaries
            key *= m
            key += tok[1:][packed]
            key *= size
            packed += key
            del key
            packed.sort()
            small = packed // size
            starts = np.flatnonzero(np.concatenate(([True], small[1:] != small[:-1])))
            small = small[starts]
            packed %= size
            slot_arr = packed.astype(np.int32)
            del packed
            pairs = (((small // m) << _SHIFT) | (small % m)).tolist()
            ends = starts[1:].tolist() + [len(slot_arr)]
            slots = list(map(slot_arr.__getitem__, map(slice, starts.tolist(), ends)))
        if not pairs:
            return {}, {}
        counts = np.add.reduceat(
            self.freq_np[np.concatenate(slots)].astype(np.int64), np.cumsum([0] + list(map(len, slots[:-1])))
        )
        return dict(zip(pairs, slots)), dict(zip(pairs, counts.tolist()))

    def merge_few(self, slots: list[int], a: int, b: int, c: int) -> tuple[dict[int, int], dict[int, list[int]]]:
        """Merge ``(a, b)`` into ``c`` at the candidate ``slots`` (ascending; stale ones are
        skipped: only slots where the pair still starts count), one slot at a time, left to right.

        Returns ``(pair -> count change, new pair -> slots where it starts)``."""
        tok, nxt, prv, freq = self.tok, self.nxt, self.prv, self.freq
        delta: defaultdict[int, int] = defaultdict(int)
        grown: defaultdict[int, list[int]] = defaultdict(list)
        a_, b_, c_ = a << _SHIFT, b << _SHIFT, c << _SHIFT
        for p in slots:
            if tok[p] != a:
                continue
            q = nxt[p]
            if tok[q] != b:
                continue  # stale (or the second half of "aaa": already merged)
            f = freq[p]
            left = prv[p]
            right = nxt[q]
            x = tok[left]
            if x != _SEP:
                x <<= _SHIFT
                delta[x | a] -= f
                delta[x | c] += f
                grown[x | c].append(left)
            y = tok[right]
            if y != _SEP:
                delta[b_ | y] -= f
                delta[c_ | y] += f
                grown[c_ | y].append(p)
            tok[p] = c
            tok[q] = _HOLE
            nxt[p] = right
            prv[right] = p
        delta[a_ | b] = 0  # the caller deletes the merged pair
        return delta, grown

    def merge_many(self, slots: np.ndarray, a: int, b: int, c: int) -> tuple[list[int], list[int], list, list]:
        """``merge_few`` with whole-array numpy operations (for pairs with many occurrences).

        Each affected pair occurrence is counted once, including those between two adjacent merges
        (``abab`` -> ``cc``: ``ba`` is removed once and ``cc`` created once). Returns the changed
        pairs, their count changes, and the new pairs with the slots where they start."""
        tok, nxt, prv = self.tok_np, self.nxt_np, self.prv_np
        p = np.asarray(slots)
        q = nxt[p]
        ok = (tok[p] == a) & (tok[q] == b)
        p, q = p[ok], q[ok]
        if a == b and len(p) > 1:  # runs "aaa...": merge the 1st, 3rd, ... pair of each run
            cont = np.concatenate(([False], q[:-1] == p[1:]))
            idx = np.arange(len(p))
            run_start = np.maximum.accumulate(np.where(cont, 0, idx))
            keep = (idx - run_start) % 2 == 0
            p, q = p[keep], q[keep]
        left, right = prv[p], nxt[q]
        tl, tr = tok[left], tok[right]
        # The pair left of a merge is the previous merge's right pair when the two are adjacent.
        has_left = tl != _SEP
        if len(p) > 1:
            has_left[1:] &= right[:-1] != p[1:]
        has_right = tr != _SEP
        tok[p] = c
        tok[q] = _HOLE
        nxt[p] = right
        prv[right] = p
        tr_new = tok[right]  # c where the next merge starts right after
        w = self.freq_np[p].astype(np.int64)
        wl, wr = w[has_left], w[has_right]
        ll, lr = tl[has_left].astype(np.int64), tr[has_right].astype(np.int64)
        new_left = (ll << _SHIFT) | c
        new_right = (np.int64(c) << _SHIFT) | tr_new[has_right]
        keys = np.concatenate(((ll << _SHIFT) | a, (np.int64(b) << _SHIFT) | lr, new_left, new_right))
        if not len(keys):  # every candidate was stale, or the words are just "ab"
            return [], [], [], []
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        delta = np.add.reduceat(np.concatenate((-wl, -wr, wl, wr))[order], starts)
        grown, grown_slots = _group(
            np.concatenate((new_left, new_right)), np.concatenate((left[has_left], p[has_right]))
        )
        return keys[starts].tolist(), delta.tolist(), grown, grown_slots


def _shared(values: np.ndarray) -> tuple[array, np.ndarray]:
    """A stdlib array holding a copy of ``values`` (int32 or int64) and a numpy view of its memory."""
    arr = array("i" if values.dtype == np.int32 else "q")
    arr.frombytes(memoryview(values).cast("B"))
    return arr, np.frombuffer(arr, dtype=values.dtype)


# Pairs with fewer candidate slots than this are merged one slot at a time (``merge_few``), the
# rest with numpy (``merge_many``): numpy's fixed cost per call, about a microsecond and some 60
# calls per merge, only pays off on larger batches.
MANY_MIN_SLOTS = 128


def _merge_loop(
    corpus: _Corpus,
    id_bytes: list[bytes],
    num_merges: int,
    progress: Progress | None = None,
) -> list[tuple[bytes, bytes]]:
    """Run up to ``num_merges`` BPE merges over the words of ``corpus``; return the merges in order.

    Token ids index ``id_bytes``, which grows as merges create tokens. A merge whose result equals an existing token's bytes
    reuses that id, so tokens are identified by their bytes, exactly as a trainer that keeps words
    as tuples of bytes would behave.

    Data layout (see ``_Corpus``): the words live in flat int32 arrays as linked lists, and
    ``where[pair]`` holds the slots where the pair starts, ascending (stale entries are harmless:
    each is re-checked before anything changes), so a merge touches only its own occurrences;
    frequent pairs in a few whole-array numpy operations. Pairs are ints ``a << 21 | b``. The next
    pair comes from a max-heap with lazy invalidation and a floor (see below), compacted now and then.
    """
    bytes_id = {b: i for i, b in enumerate(id_bytes)}
    keys = [_rev_key(b) for b in id_bytes]
    where, pair_counts = corpus.index()
    # Heap entries (-count, tie key, pair). Counts of pairs without the new token only ever go
    # down, so their stale entries are fixed lazily when popped; pairs whose count went up (those
    # with the new token) are pushed afresh after each merge.
    # Pairs below ``floor`` wait in ``pending`` instead (see _FLOOR_DROP): their counts only go
    # down, so none of them can beat a heap entry at or above the floor.
    floor = max(pair_counts.values(), default=0) // _FLOOR_DROP
    heap = [(-n, keys[q >> _SHIFT] + keys[q & _LOW], q) for q, n in pair_counts.items() if n >= floor]
    pending = [q for q, n in pair_counts.items() if n < floor]
    heapq.heapify(heap)
    heappush, heappop = heapq.heappush, heapq.heappop
    merges: list[tuple[bytes, bytes]] = []
    report_every = max(1, num_merges // 20)
    while len(merges) < num_merges:
        if not heap or -heap[0][0] < floor:
            if not pending and not heap:
                break  # every word is a single token
            floor //= _FLOOR_DROP
            heap, pending = _refill(heap, pending, floor, pair_counts, where, keys)
            continue
        negc, key, ab = heappop(heap)
        cur = pair_counts.get(ab, 0)
        if cur != -negc or cur <= 0:
            if cur > 0:
                heappush(heap, (-cur, key, ab))
            elif ab in pair_counts:  # dead: no word has it any more
                del pair_counts[ab]
                where.pop(ab, None)
            continue
        a, b = ab >> _SHIFT, ab & _LOW
        new_bytes = id_bytes[a] + id_bytes[b]
        merges.append((id_bytes[a], id_bytes[b]))
        c = bytes_id.get(new_bytes)
        if c is None:
            c = len(id_bytes)
            id_bytes.append(new_bytes)
            keys.append(_rev_key(new_bytes))
            bytes_id[new_bytes] = c
        slots = where.pop(ab)
        if len(slots) < MANY_MIN_SLOTS:
            d, g = corpus.merge_few(slots.tolist() if isinstance(slots, np.ndarray) else slots, a, b, c)
            changed, deltas, grown, grown_slots = list(d), list(d.values()), list(g), list(g.values())
        else:
            changed, deltas, grown, grown_slots = corpus.merge_many(slots, a, b, c)
        # C-level maps apply the count changes (no Python code per pair) ...
        counts_now = list(map(operator.add, map(pair_counts.get, changed, repeat(0)), deltas))
        pair_counts.update(zip(changed, counts_now))
        del pair_counts[ab]
        # ... and only the pairs that went up need a heap entry.
        for q, dq, n in zip(changed, deltas, counts_now):
            if dq > 0:
                if n >= floor:
                    heappush(heap, (-n, keys[q >> _SHIFT] + keys[q & _LOW], q))
                else:
                    pending.append(q)
        if any(map(where.__contains__, grown)):  # only when a merge re-creates an existing token's bytes
            for q, s in zip(grown, grown_slots):
                where[q] = np.unique(np.concatenate((where[q], s))) if q in where else s
        else:
            where.update(zip(grown, grown_slots))
        if progress is not None and len(merges) % report_every == 0:
            progress(f"merges {len(merges):,}/{num_merges:,}")
    return merges


def _refill(
    heap: list, pending: list[int], floor: int, pair_counts: dict[int, int], where: dict, keys: list[str]
) -> tuple[list, list[int]]:
    """The heap without dead entries plus the pending pairs now at or above ``floor``; the pending
    ones still below it; dead pairs (count 0) leave the counts and the index."""
    heap = [e for e in heap if pair_counts.get(e[2], 0) > 0]
    still: list[int] = []
    for q in pending:
        n = pair_counts.get(q, 0)
        if n >= floor and n > 0:
            heap.append((-n, keys[q >> _SHIFT] + keys[q & _LOW], q))
        elif n > 0:
            still.append(q)
        elif q in pair_counts:
            del pair_counts[q]
            where.pop(q, None)
    heapq.heapify(heap)
    return heap, still


def merge_pretokens(
    counts: dict[bytes, int],
    num_merges: int,
    progress: Progress | None = None,
    *,
    free_counts: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Phase 2: the first ``num_merges`` merges over pre-token counts (initial symbols: bytes).

    Fewer when the pre-tokens run out of pairs (every pre-token became a single token).
    ``free_counts`` clears ``counts`` once converted: it is the largest object of a training run,
    and the merge loop no longer needs it."""
    # A byte's id is its value: the joined keys are the id array (single-byte words are harmless:
    # they have no pairs).
    n = len(counts)
    corpus = _Corpus(
        np.frombuffer(b"".join(counts), dtype=np.uint8),
        np.fromiter(map(len, counts), dtype=np.int64, count=n),
        np.fromiter(counts.values(), dtype=np.int64, count=n),
    )
    if free_counts:
        counts.clear()
    id_bytes = [bytes([i]) for i in range(256)]
    with _gc_paused():
        return _merge_loop(corpus, id_bytes, num_merges, progress)


def bpe_merges(word_counts: Mapping[tuple[bytes, ...], int], num_merges: int) -> list[tuple[bytes, bytes]]:
    """The first ``num_merges`` BPE merges for words given as tuples of any initial symbols.

    Lets the merge rule be driven directly (e.g. with whitespace pre-tokenization, as in the
    handout's worked example); ``merge_pretokens`` uses the same loop."""
    id_bytes: list[bytes] = []
    sym_id: dict[bytes, int] = {}
    words: list[str] = []
    freqs: list[int] = []
    for word, n in word_counts.items():
        ids = []
        for sym in word:
            i = sym_id.get(sym)
            if i is None:
                i = sym_id[sym] = len(id_bytes)
                id_bytes.append(sym)
            ids.append(chr(i))
        if len(ids) > 1 and n > 0:
            words.append("".join(ids))
            freqs.append(n)
    # UTF-32 of the id strings is the id array (one C call).
    ids_all = np.frombuffer("".join(words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    corpus = _Corpus(ids_all, np.fromiter(map(len, words), dtype=np.int64), np.asarray(freqs, dtype=np.int64))
    with _gc_paused():
        return _merge_loop(corpus, id_bytes, num_merges)


def _check_specials(special_tokens: object) -> list[str]:
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str) or not all(isinstance(s, str) for s in special_tokens):
        raise BPEError(f"special_tokens must be a list of strings, got {special_tokens!r}")
    specials = list(special_tokens)
    if any(s == "" for s in specials):
        raise BPEError("special tokens must not be empty strings")
    dup = sorted({s for s in specials if specials.count(s) > 1})
    if dup:
        raise BPEError(f"duplicate special token(s): {', '.join(map(repr, dup))}")
    return specials


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: list[str] | None = None,
    num_workers: int | None = None,
    *,
    progress: Progress | None = None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Returns ``(vocab, merges)``: ids ``0..S-1`` are ``special_tokens`` (in the given order), then
    the 256 single bytes, then one token per merge in creation order; ``len(vocab) == vocab_size``
    unless the corpus runs out of pairs first. ``num_workers`` = processes for pre-token counting
    (None: by file size). ``progress`` receives one-line status messages (the CLI prints them).
    """
    specials = _check_specials(special_tokens)
    try:
        if isinstance(vocab_size, bool):
            raise TypeError
        vocab_size = operator.index(vocab_size)  # ints, numpy ints; not floats or strings
    except TypeError:
        raise BPEError(f"vocab_size must be an integer, got {vocab_size!r}") from None
    base = 256 + len(specials)
    if vocab_size < base:
        raise BPEError(
            f"vocab_size {vocab_size} is smaller than the {base} initial tokens "
            f"(256 bytes + {len(specials)} special tokens)"
        )
    if vocab_size > _SEP:  # ids below the merge loop's separator value (and 2**21: pairs pack into an int)
        raise BPEError(f"vocab_size {vocab_size} is too large (at most {_SEP})")
    if num_workers is not None:
        try:
            if isinstance(num_workers, bool) or operator.index(num_workers) < 1:
                raise TypeError
        except TypeError:
            raise BPEError(f"num_workers must be a positive integer, got {num_workers!r}") from None
    counts = count_pretokens(input_path, specials, num_workers, progress)
    if progress is not None:
        progress(f"{len(counts):,} distinct pre-tokens; merging")
    merges = merge_pretokens(counts, vocab_size - base, progress, free_counts=True)
    return build_vocab(specials, merges), merges


def build_vocab(special_tokens: list[str], merges: list[tuple[bytes, bytes]]) -> dict[int, bytes]:
    """The layout ``train_bpe`` promises: specials (in order), the 256 bytes, then one token per
    merge in creation order."""
    vocab: dict[int, bytes] = {i: s.encode("utf-8") for i, s in enumerate(special_tokens)}
    for i in range(256):
        vocab[len(vocab)] = bytes([i])
    for a, b in merges:
        vocab[len(vocab)] = a + b
    return vocab
