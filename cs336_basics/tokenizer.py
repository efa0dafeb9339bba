"""Byte-level BPE tokenizer: encode / encode_iterable / decode, plus GPT-2-style files.

Encoding = split out special tokens (longest first) -> GPT-2 regex pre-tokenization -> apply the
merges inside each pre-token, lowest rank first (the same result tiktoken gives for the same ranks).

    >>> vocab = {i: bytes([i]) for i in range(256)}
    >>> vocab[256] = b"th"; vocab[257] = b"the"
    >>> tok = Tokenizer(vocab, [(b"t", b"h"), (b"th", b"e")], ["<|endoftext|>"])
    >>> tok.encode("the<|endoftext|>")
    [257, 258]
    >>> tok.decode([257, 258])
    'the<|endoftext|>'

Speed comes from three things: a cache ``pre-token -> ids`` (a dict whose ``__missing__`` runs BPE,
so a hit is one C-level dict lookup with no Python code per token: regex -> lookups -> flatten is a
single chain of C calls), pre-tokenizing pure-ASCII blocks with an equivalent pattern for the faster
stdlib ``re`` engine, and a BPE inner loop over small-int ids with a ``pair -> rank`` dict that
updates only the neighbours of each merge (never rescanning the merge list). The cache is bounded
(``cache_size`` entries, cleared when full); ``encode_iterable`` uses its own small cache so its
memory stays constant.

Files follow GPT-2's convention (``vocab.json``: byte-to-unicode string -> id; ``merges.txt``: an
optional ``#version`` line, then ``a b`` per line), so GPT-2's published files load with
``from_files`` and ours load in other tools (HF ``tokenizers``, tiktoken).
"""

from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path

import regex

from cs336_basics.errors import UserError
from cs336_basics.fsutil import atomic_write_text
from cs336_basics.pretokenize import PRETOKEN_RE, special_pattern

EOT = "<|endoftext|>"

# The GPT-2 pattern restricted to ASCII text, for the stdlib ``re`` engine (about 2x faster than
# ``regex`` here). On ASCII input it is exactly GPT2_PAT: \p{L} = [A-Za-z], \p{N} = [0-9], and \s is
# the six characters below (``regex``'s \s, i.e. Unicode White_Space; *not* \x1c-\x1f, which the
# stdlib's \s would include). Letters come first (the most common case; ~6% faster): no other
# alternative can match where that one does, so the order change does not change any match.
_ASCII_PRETOKEN_RE = re.compile(
    r""" ?[A-Za-z]+|'(?:[sdmt]|ll|ve|re)| ?[0-9]+| ?[^\t\n\x0b\x0c\r A-Za-z0-9]+"""
    r"""|[\t\n\x0b\x0c\r ]+(?![^\t\n\x0b\x0c\r ])|[\t\n\x0b\x0c\r ]+"""
)
# A safe place to cut text without changing its pre-tokenization: just before an ASCII whitespace
# character that follows a non-whitespace character (no GPT-2 pre-token contains such a pair, and
# neither half's matches depend on the other). The stdlib's \s is a superset of ``regex``'s, so
# ``[^\s]`` here only ever picks characters that GPT2_PAT treats as non-space (conservative).
_CUT_RE = re.compile(r"[^\s][\t\n\x0b\x0c\r ]")
_ASCII_WS = "\t\n\x0b\x0c\r "

_BLOCK_CHARS = 1 << 18  # encode() works through long texts in blocks this size (bounded temporaries)
_STREAM_CHARS = 1 << 13  # encode_iterable() buffers about this much text before emitting ids
_STREAM_CACHE = 1024  # entries per generation of encode_iterable's private cache
_NO_MERGE = 1 << 62  # rank of a pair that has no merge (larger than every real rank)


class TokenizerError(UserError, ValueError):
    """Bad tokenizer files or arguments; the message names the file/line or the offending value."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the rest (control bytes, space, ...) are shifted to
    code points 256+, so every token is a visible string in ``vocab.json`` and never contains a
    space (which is what separates the two halves of a ``merges.txt`` line).
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_str(token: bytes) -> str:
    """A token's bytes in GPT-2's printable file notation (e.g. ``b" the"`` -> ``"Ġthe"``)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


class _BPECache(dict):
    """``pre-token -> tuple of ids``; a miss runs BPE via ``__missing__`` (so hits cost one C lookup).

    Bounded: cleared when it exceeds ``limit`` entries (frequent pre-tokens come back at once).
    """

    __slots__ = ("bpe", "limit")

    def __init__(self, bpe, limit: int) -> None:
        super().__init__()
        self.bpe = bpe
        self.limit = limit

    def __missing__(self, key: str) -> tuple[int, ...]:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.bpe(key)
        return value


class _StreamCache(dict):
    """encode_iterable's small two-generation cache: reads the main cache, never grows it, and keeps
    its own memory to at most ``2 * limit`` entries (recently used ones survive a rollover)."""

    __slots__ = ("main", "old", "bpe", "limit")

    def __init__(self, main: dict, bpe, limit: int) -> None:
        super().__init__()
        self.main, self.bpe, self.limit, self.old = main, bpe, limit, {}

    def __missing__(self, key: str) -> tuple[int, ...]:
        value = self.main.get(key) or self.old.get(key) or self.bpe(key)
        if len(self) >= self.limit:
            self.old = dict(self)
            self.clear()
        self[key] = value
        return value


class _PackedCache(dict):
    """``pre-token -> ids packed as machine integers`` (``array(typecode).tobytes()``), for
    ``encode_packed``: joining bytes skips building Python int lists (used by tokenize_data)."""

    __slots__ = ("main", "bpe", "limit", "typecode")

    def __init__(self, main: dict, bpe, limit: int, typecode: str) -> None:
        super().__init__()
        self.main, self.bpe, self.limit, self.typecode = main, bpe, limit, typecode

    def __missing__(self, key: str) -> bytes:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = array(self.typecode, self.main.get(key) or self.bpe(key)).tobytes()
        return value


class Tokenizer:
    """Byte-level BPE tokenizer over a ``vocab`` (id -> bytes) and ``merges`` (in rank order).

    ``special_tokens`` are matched before pre-tokenization, longest first, and are never merged or
    split; those missing from ``vocab`` get new ids after the largest existing one. ``cache_size``
    bounds the pre-token cache (about 150 bytes per entry).
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: list[str] | None = None,
        cache_size: int = 1 << 19,
    ) -> None:
        self.vocab: dict[int, bytes] = {}
        for i, b in vocab.items():
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise TokenizerError(f"vocab id {i!r} is not a non-negative integer")
            if not isinstance(b, (bytes, bytearray)):
                raise TokenizerError(f"vocab entry {i} is {type(b).__name__}, expected bytes")
            self.vocab[i] = bytes(b)
        self.merges: list[tuple[bytes, bytes]] = [(bytes(a), bytes(b)) for a, b in merges]
        self.special_tokens: list[str] = []
        for s in special_tokens or []:
            if not isinstance(s, str) or not s:
                raise TokenizerError(f"special token {s!r} must be a non-empty string")
            if s not in self.special_tokens:
                self.special_tokens.append(s)

        # bytes -> id (the lowest id wins if a byte string is listed twice)
        self._bytes_to_id: dict[bytes, int] = {}
        for i in sorted(self.vocab):
            self._bytes_to_id.setdefault(self.vocab[i], i)
        next_id = max(self.vocab, default=-1) + 1
        self._special_ids: dict[str, int] = {}
        for s in self.special_tokens:
            sb = s.encode("utf-8")
            if sb not in self._bytes_to_id:
                self.vocab[next_id] = sb
                self._bytes_to_id[sb] = next_id
                next_id += 1
            self._special_ids[s] = self._bytes_to_id[sb]

        self._byte_ids: list[int | None] = [self._bytes_to_id.get(bytes([b])) for b in range(256)]
        # (left id, right id) -> rank (the first occurrence of a pair keeps its rank), and
        # rank -> merged id. Plain ints keep _bpe's min() and index() cheap.
        self._merge_map: dict[tuple[int, int], int] = {}
        self._merged_id: list[int] = []
        for rank, (a, b) in enumerate(self.merges):
            ids = (self._bytes_to_id.get(a), self._bytes_to_id.get(b), self._bytes_to_id.get(a + b))
            if None in ids:
                missing = [t for t, i in zip((a, b, a + b), ids) if i is None][0]
                raise TokenizerError(
                    f"merge #{rank + 1} {a!r} + {b!r}: token {missing!r} is not in the vocabulary"
                )
            self._merge_map.setdefault((ids[0], ids[1]), rank)
            self._merged_id.append(ids[2])

        self._special_re = special_pattern(self.special_tokens)
        self._max_special = max((len(s) for s in self.special_tokens), default=0)
        # Specials containing ASCII whitespace could straddle a whitespace cut; checked explicitly.
        self._ws_specials = [s for s in self.special_tokens if any(c in s for c in _ASCII_WS)]
        self._bpe_fn = self._make_bpe()
        self._cache_size = cache_size
        self._cache = _BPECache(self._bpe_fn, cache_size)
        self._cache_get = self._cache.__getitem__
        self._packed_caches: dict[str, _PackedCache] = {}

    # ------------------------------------------------------------------ construction from files
    @classmethod
    def from_files(
        cls,
        vocab_filepath: str | os.PathLike,
        merges_filepath: str | os.PathLike,
        special_tokens: list[str] | None = None,
    ) -> Tokenizer:
        """Load GPT-2-convention ``vocab.json`` + ``merges.txt`` (ours, or GPT-2's own)."""
        vocab = read_vocab_json(vocab_filepath)
        merges = read_merges_txt(merges_filepath, vocab, str(vocab_filepath))
        return cls(vocab, merges, special_tokens)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load what ``save`` wrote: vocab.json, merges.txt and (if present) special_tokens.json."""
        d = Path(directory)
        if not d.is_dir():
            raise TokenizerError(f"{d}: tokenizer directory not found")
        specials = None
        sp = d / "special_tokens.json"
        if sp.exists():
            data = _load_json(sp)
            if not isinstance(data, list) or not all(isinstance(s, str) and s for s in data):
                raise TokenizerError(f"{sp}: expected a JSON list of non-empty strings")
            specials = data
        return cls.from_files(d / "vocab.json", d / "merges.txt", specials)

    def save(self, directory: str | os.PathLike) -> None:
        """Write vocab.json, merges.txt and special_tokens.json (each atomically) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        vocab_json = {token_to_str(b): i for i, b in sorted(self.vocab.items())}
        if len(vocab_json) != len(self.vocab):
            raise TokenizerError("vocabulary has duplicate byte strings; cannot write vocab.json")
        # One entry per line (indent=0) keeps the file diffable and error messages line-precise.
        atomic_write_text(d / "vocab.json", json.dumps(vocab_json, ensure_ascii=False, indent=0) + "\n")
        lines = ["#version: 0.2"] + [f"{token_to_str(a)} {token_to_str(b)}" for a, b in self.merges]
        atomic_write_text(d / "merges.txt", "\n".join(lines) + "\n")
        atomic_write_text(
            d / "special_tokens.json", json.dumps(self.special_tokens, ensure_ascii=False) + "\n"
        )

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        """One more than the largest id (= len(vocab) for the usual contiguous vocabularies)."""
        return max(self.vocab, default=-1) + 1

    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>`` if it is a special token (or a vocabulary entry), else None."""
        if EOT in self._special_ids:
            return self._special_ids[EOT]
        return self._bytes_to_id.get(EOT.encode())

    def token_id(self, token: str | bytes) -> int | None:
        """Id of a special token or of a vocabulary entry given as str/bytes (None if absent)."""
        if isinstance(token, str):
            if token in self._special_ids:
                return self._special_ids[token]
            token = token.encode("utf-8")
        return self._bytes_to_id.get(token)

    # ------------------------------------------------------------------ BPE core
    def _bpe(self, pretoken: str) -> tuple[int, ...]:
        """Merge one pre-token like tiktoken: repeatedly merge the lowest-ranked adjacent pair
        (leftmost on ties)."""
        return self._bpe_fn(pretoken)

    def _make_bpe(self):
        """Build the BPE function as a closure over local lookups (no attribute access per call).

        Each step takes the minimum of the pair-rank list, merges that one pair, and updates only
        the two neighbouring ranks, so a word of n bytes costs O(n) small C-level list operations
        per merge and the merge list itself is never scanned.
        """
        byte_ids = self._byte_ids
        byte_get = byte_ids.__getitem__
        get = self._merge_map.get
        merged = self._merged_id
        none = _NO_MERGE
        complete = None not in byte_ids

        def bpe(pretoken: str) -> tuple[int, ...]:
            data = pretoken.encode("utf-8")
            ids = list(map(byte_get, data))
            if not complete and None in ids:
                bad = next(b for b in data if byte_ids[b] is None)
                raise TokenizerError(f"byte 0x{bad:02x} has no token in the vocabulary")
            n = len(ids) - 1  # number of adjacent pairs
            if n < 1:
                return tuple(ids)
            ranks = list(map(get, zip(ids, ids[1:]), repeat(none, n)))
            best = min(ranks)
            while best != none:
                i = ranks.index(best)
                new = merged[best]
                ids[i] = new
                del ids[i + 1], ranks[i]
                n -= 1
                if not n:
                    break
                if i:
                    ranks[i - 1] = get((ids[i - 1], new), none)
                if i < n:
                    ranks[i] = get((new, ids[i + 1]), none)
                best = min(ranks)
            return tuple(ids)

        return bpe

    @staticmethod
    def _blocks(text: str) -> Iterator[tuple[re.Pattern | regex.Pattern, str]]:
        """Cut special-free ``text`` into blocks of about _BLOCK_CHARS at safe cuts (bounded
        temporaries), each with the pre-tokenizer to use: the fast ASCII one where it applies."""
        n = len(text)
        start = 0
        while start < n:
            if n - start <= _BLOCK_CHARS:
                end = n
            else:
                m = _CUT_RE.search(text, start + _BLOCK_CHARS)
                end = m.start() + 1 if m else n
            block = text[start:end] if (start or end < n) else text
            yield (_ASCII_PRETOKEN_RE if block.isascii() else PRETOKEN_RE), block
            start = end

    def _pieces(self, text: str) -> Iterator[tuple[str, bool]]:
        """``(piece, is_special)`` in order; empty ordinary pieces are skipped."""
        if self._special_re is None:
            if text:
                yield text, False
            return
        pos = 0
        for m in self._special_re.finditer(text):
            if m.start() > pos:
                yield text[pos : m.start()], False
            yield m.group(), True
            pos = m.end()
        if pos < len(text):
            yield text[pos:], False

    def _encode_into(self, text: str, out: list[int], cache_get) -> None:
        extend = out.extend
        specials = self._special_ids
        for piece, is_special in self._pieces(text):
            if is_special:
                out.append(specials[piece])
                continue
            for pat, block in self._blocks(piece):
                # One C-level pass: regex -> cache lookups (BPE only on a miss) -> flatten.
                extend(chain.from_iterable(map(cache_get, pat.findall(block))))

    def encode_packed(self, text: str, typecode: str = "H") -> bytes:
        """``array(typecode, encode(text)).tobytes()``, computed without Python int lists.

        ``typecode`` is an ``array`` code ("H" = uint16, "I" = uint32, native byte order); every id
        must fit. This is what tokenize_data uses: about 10-20% faster than encode + conversion.
        """
        cache = self._packed_caches.get(typecode)
        if cache is None:
            if array(typecode).itemsize < 4 and self.vocab_size > 1 << (8 * array(typecode).itemsize):
                raise TokenizerError(f"vocabulary of {self.vocab_size} ids does not fit array type {typecode!r}")
            cache = self._packed_caches[typecode] = _PackedCache(
                self._cache, self._bpe_fn, self._cache_size, typecode
            )
        get = cache.__getitem__
        parts: list[bytes] = []
        for piece, is_special in self._pieces(text):
            if is_special:
                parts.append(array(typecode, [self._special_ids[piece]]).tobytes())
                continue
            for pat, block in self._blocks(piece):
                parts.append(b"".join(map(get, pat.findall(block))))
        return b"".join(parts)

    # ------------------------------------------------------------------ public API
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens become their single ids)."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode() expects str, got {type(text).__name__}")
        out: list[int] = []
        self._encode_into(text, out, self._cache_get)
        return out

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Lazily yield the ids of the concatenated strings (e.g. a text file's lines).

        Equal to ``encode("".join(iterable))`` at constant memory: text is buffered and only the
        part before the last *safe* cut is encoded (a cut no pre-token and no special token spans,
        at least the longest special's length before the buffer's end, so a special token arriving
        in pieces is still seen whole).
        """
        cache = _StreamCache(self._cache, self._bpe_fn, _STREAM_CACHE)
        cache_get = cache.__getitem__
        pending: list[str] = []
        size = 0
        threshold = _STREAM_CHARS
        for chunk in iterable:
            if not isinstance(chunk, str):
                raise TokenizerError(f"encode_iterable() expects str chunks, got {type(chunk).__name__}")
            if not chunk:
                continue
            pending.append(chunk)
            size += len(chunk)
            if size < threshold:
                continue
            buf = "".join(pending)
            cut = self._last_safe_cut(buf)
            if cut is None:
                pending, threshold = [buf], 2 * size  # no cut yet (e.g. one huge word): read more
                continue
            out: list[int] = []
            self._encode_into(buf[:cut], out, cache_get)
            yield from out
            rest = buf[cut:]
            pending, size, threshold = [rest], len(rest), _STREAM_CHARS
        if pending:
            out = []
            self._encode_into("".join(pending), out, cache_get)
            yield from out

    def _last_safe_cut(self, buf: str) -> int | None:
        """Largest p > 0 such that encode(buf[:p]) + encode(rest) == encode(buf + rest) for any rest."""
        hi = len(buf) - max(self._max_special, 1)  # text[p] must exist; specials may still grow
        if hi <= 0:
            return None
        window = 256
        while True:
            lo = max(0, hi - window)
            cuts = [m.start() + 1 for m in _CUT_RE.finditer(buf, lo, hi + 1)]
            for p in reversed(cuts):
                if self._cut_clear_of_specials(buf, p):
                    return p
            if lo == 0:
                break
            window *= 8
        if self._special_re is not None:
            # No whitespace cut (e.g. a run of special tokens): cut right after the last special
            # match that is certainly final (a longer special starting there would already fit).
            # buf starts at a safe point, so scanning it from 0 finds the true matches.
            last = None
            for m in self._special_re.finditer(buf):
                if m.start() + self._max_special <= len(buf):
                    last = m
            if last is not None:
                return last.end()
        return None

    def _cut_clear_of_specials(self, buf: str, p: int) -> bool:
        for s in self._ws_specials:
            if buf.find(s, max(0, p - len(s) + 1), p + len(s) - 1) != -1:
                return False
        return True

    def decode(self, ids: Iterable[int]) -> str:
        """Concatenate the tokens' bytes and decode UTF-8 (invalid sequences become U+FFFD)."""
        vocab = self.vocab
        try:
            data = b"".join([vocab[i] for i in ids])
        except (KeyError, TypeError) as err:
            bad = err.args[0] if isinstance(err, KeyError) else err
            raise TokenizerError(
                f"token id {bad!r} is not in the vocabulary (valid ids are 0..{self.vocab_size - 1})"
            ) from None
        return data.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={self.special_tokens!r})"
        )


# ---------------------------------------------------------------------- file readers
def _load_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenizerError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{path}: not UTF-8 (byte offset {err.start})") from None
    except OSError as err:
        raise TokenizerError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None


def _line_of(raw: str, key: str) -> int | None:
    for enc in (json.dumps(key, ensure_ascii=False), json.dumps(key)):
        i = raw.find(enc)
        if i != -1:
            return raw.count("\n", 0, i) + 1
    return None


def read_vocab_json(path: str | os.PathLike) -> dict[int, bytes]:
    """``{"Ġthe": 262, ...}`` -> ``{262: b" the", ...}``; errors name the file and line."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object mapping token strings to ids")
    decoder = _unicode_to_bytes()
    vocab: dict[int, bytes] = {}
    raw = None

    def where(key: str) -> str:
        nonlocal raw
        if raw is None:
            raw = path.read_text(encoding="utf-8")
        line = _line_of(raw, key)
        return f"{path}:{line}" if line else str(path)

    for key, idx in data.items():
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise TokenizerError(f"{where(key)}: id of {key!r} is {idx!r}, expected an integer >= 0")
        try:
            token = bytes(decoder[c] for c in key)
        except KeyError as err:
            raise TokenizerError(
                f"{where(key)}: token {key!r} has character {err.args[0]!r}, which is not in "
                "GPT-2's byte-to-unicode alphabet"
            ) from None
        if idx in vocab:
            raise TokenizerError(f"{where(key)}: id {idx} is used twice")
        vocab[idx] = token
    return vocab


def read_merges_txt(
    path: str | os.PathLike, vocab: dict[int, bytes] | None = None, vocab_name: str = "vocab"
) -> list[tuple[bytes, bytes]]:
    """Read ``merges.txt`` (optional ``#version`` line, then ``a b`` per line; blank lines skipped).

    With ``vocab`` given, each merge's parts and result must be vocabulary entries.
    """
    path = Path(path)
    try:
        f = open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise TokenizerError(f"{path}: file not found") from None
    except OSError as err:
        raise TokenizerError(f"{path}: cannot read ({err.strerror})") from None
    decoder = _unicode_to_bytes()
    known = set(vocab.values()) if vocab is not None else None
    merges: list[tuple[bytes, bytes]] = []
    with f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise TokenizerError(
                        f"{path}:{lineno}: expected two tokens separated by one space, got {line!r}"
                    )
                try:
                    a, b = (bytes(decoder[c] for c in p) for p in parts)
                except KeyError as err:
                    raise TokenizerError(
                        f"{path}:{lineno}: character {err.args[0]!r} is not in GPT-2's "
                        "byte-to-unicode alphabet"
                    ) from None
                if known is not None:
                    for t, shown in ((a, parts[0]), (b, parts[1]), (a + b, parts[0] + parts[1])):
                        if t not in known:
                            raise TokenizerError(
                                f"{path}:{lineno}: token {shown!r} is not in {vocab_name}"
                            )
                merges.append((a, b))
        except UnicodeDecodeError as err:
            raise TokenizerError(f"{path}:{lineno + 1}: not UTF-8 ({err.reason})") from None
    return merges
