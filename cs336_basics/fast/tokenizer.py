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

The algorithm is the textbook's, :class:`cs336_basics.tokenizer.Tokenizer` (a few readable lines); this
is the same, fast. Files follow GPT-2's convention (see ``gpt2_files``), so GPT-2's published files load with
``from_files`` and ours load in other tools (HF ``tokenizers``, tiktoken).
"""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from pathlib import Path

import regex

from cs336_basics.fast.pretokenize import (
    PRETOKEN_RE,
    ascii_pretoken_re,
    first_safe_cut,
    last_safe_cut,
    special_pattern,
    split_on_specials,
)
from cs336_basics.interop.gpt2_files import (  # noqa: F401  (bytes_to_unicode, token_to_str: re-exported)
    EOT,
    SPECIAL_TOKENS_FILE,
    TokenizerError,
    bytes_to_unicode,
    read_merges_txt,
    read_special_tokens,
    read_vocab_json,
    token_to_str,
    write_tokenizer_files,
)

_BLOCK_CHARS = 1 << 18  # encode() works through long texts in blocks this size (bounded temporaries)
_STREAM_CHARS = 1 << 13  # encode_iterable() buffers about this much text before emitting ids
_STREAM_CACHE = 1024  # entries per generation of encode_iterable's private cache
_NO_MERGE = 1 << 62  # rank of a pair that has no merge (larger than every real rank)
_ASCII_PRETOKEN_RE = ascii_pretoken_re(str)


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


def _surrogate_error(err: UnicodeEncodeError) -> TokenizerError:
    """A lone surrogate (U+D800..U+DFFF) is not a character and has no UTF-8 bytes, so it has no tokens
    (it comes from text decoded with errors="surrogateescape" or a JSON "\\ud800" escape)."""
    ch = err.object[err.start] if isinstance(err.object, str) and err.start < len(err.object) else "?"
    return TokenizerError(
        f"cannot encode text with a lone surrogate U+{ord(ch):04X} (in {err.object[:40]!r}): it is not valid "
        "Unicode and has no UTF-8 bytes; clean the text first (e.g. decode files with errors='replace')"
    )


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
                raise TokenizerError(f"merge #{rank + 1} {a!r} + {b!r}: token {missing!r} is not in the vocabulary")
            self._merge_map.setdefault((ids[0], ids[1]), rank)
            self._merged_id.append(ids[2])

        self._special_re = special_pattern(self.special_tokens)
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
        merges_filepath: str | os.PathLike | None = None,
        special_tokens: list[str] | None = None,
    ) -> Tokenizer:
        """Load GPT-2-convention ``vocab.json`` + ``merges.txt`` (ours, or GPT-2's own; see
        ``gpt2_files``); with no ``merges_filepath``, a Hugging Face byte-level BPE
        ``tokenizer.json`` (see ``hf_tokenizer_json``; ``special_tokens`` then replace its added tokens)."""
        if merges_filepath is None:
            from cs336_basics.interop.hf_tokenizer_json import read_tokenizer_json

            vocab, merges, specials = read_tokenizer_json(vocab_filepath)
            return cls(vocab, merges, specials if special_tokens is None else special_tokens)
        vocab = read_vocab_json(vocab_filepath)
        merges = read_merges_txt(merges_filepath, vocab, str(vocab_filepath))
        return cls(vocab, merges, special_tokens)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, special_tokens: list[str] | None = None) -> Tokenizer:
        """Load what ``save`` wrote: vocab.json, merges.txt and special_tokens.json.

        ``save`` always writes special_tokens.json, so a missing one is an error (loading without
        it would silently encode ``<|endoftext|>`` as ordinary text) unless ``special_tokens`` is
        given, which then replaces the file's list. A directory with a Hugging Face
        ``tokenizer.json`` but no vocab.json (e.g. one saved by HF ``tokenizers``) is read from that file."""
        d = Path(directory)
        if not d.is_dir():
            raise TokenizerError(f"{d}: tokenizer directory not found")
        if not (d / "vocab.json").exists() and (d / "tokenizer.json").is_file():
            return cls.from_files(d / "tokenizer.json", None, special_tokens)
        if special_tokens is None:
            sp = d / SPECIAL_TOKENS_FILE
            if not sp.exists():
                raise TokenizerError(
                    f"{sp}: file not found (every saved tokenizer has one; name the special tokens "
                    "explicitly, e.g. --special_tokens '<|endoftext|>', to load this directory)"
                )
            special_tokens = read_special_tokens(sp)
        return cls.from_files(d / "vocab.json", d / "merges.txt", special_tokens)

    def save(self, directory: str | os.PathLike) -> list[Path]:
        """Write vocab.json, merges.txt and special_tokens.json, and Hugging Face's tokenizer.json +
        tokenizer_config.json (so ``transformers.AutoTokenizer`` loads the directory), each atomically;
        returns the paths written."""
        from cs336_basics.interop.hf_tokenizer_json import TOKENIZER_CONFIG, TOKENIZER_JSON, write_hf_tokenizer_files

        written = write_tokenizer_files(directory, self.vocab, self.merges, self.special_tokens)
        write_hf_tokenizer_files(directory, self)
        return [*written, Path(directory) / TOKENIZER_JSON, Path(directory) / TOKENIZER_CONFIG]

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
            end = None
            if n - start > _BLOCK_CHARS:
                end = first_safe_cut(text, start + _BLOCK_CHARS)
            if end is None:
                end = n
            block = text[start:end] if (start or end < n) else text
            yield (_ASCII_PRETOKEN_RE if block.isascii() else PRETOKEN_RE), block
            start = end

    def _encode_into(self, text: str, out: list[int], cache_get) -> None:
        extend = out.extend
        specials = self._special_ids
        try:
            for piece, is_special in split_on_specials(text, self._special_re):
                if is_special:
                    out.append(specials[piece])
                    continue
                for pat, block in self._blocks(piece):
                    # One C-level pass: regex -> cache lookups (BPE only on a miss) -> flatten.
                    extend(chain.from_iterable(map(cache_get, pat.findall(block))))
        except UnicodeEncodeError as err:
            raise _surrogate_error(err) from None

    def encode_packed(self, text: str, typecode: str = "H") -> bytes:
        """``array(typecode, encode(text)).tobytes()``, computed without Python int lists.

        ``typecode`` is an ``array`` code ("H" = uint16, "I" = uint32, native byte order); every id
        must fit. This is what tokenize_data uses: it skips building and converting int lists.
        """
        cache = self._packed_caches.get(typecode)
        if cache is None:
            if array(typecode).itemsize < 4 and self.vocab_size > 1 << (8 * array(typecode).itemsize):
                raise TokenizerError(f"vocabulary of {self.vocab_size} ids does not fit array type {typecode!r}")
            cache = self._packed_caches[typecode] = _PackedCache(self._cache, self._bpe_fn, self._cache_size, typecode)
        get = cache.__getitem__
        parts: list[bytes] = []
        try:
            for piece, is_special in split_on_specials(text, self._special_re):
                if is_special:
                    parts.append(array(typecode, [self._special_ids[piece]]).tobytes())
                    continue
                for pat, block in self._blocks(piece):
                    parts.append(b"".join(map(get, pat.findall(block))))
        except UnicodeEncodeError as err:
            raise _surrogate_error(err) from None
        return b"".join(parts)

    def warm_cache(self, pretokens: Iterable[str] = ()) -> int:
        """Fill the pre-token cache before encoding: every vocabulary token that is a whole
        pre-token (e.g. ``" the"``; what frequent words look like) plus the given ``pretokens``
        (e.g. the distinct ones of a sample of the input). Lets worker processes forked afterwards
        start warm instead of each running BPE on the same words. Returns the cache size; a full
        cache stops the warm-up early (it never evicts). Does not change any result."""
        cache, limit = self._cache, self._cache_size
        specials = set(self.special_tokens)
        vocab_words = []
        for b in self.vocab.values():
            try:
                t = b.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if t not in specials and PRETOKEN_RE.fullmatch(t):
                vocab_words.append(t)
        for t in chain(vocab_words, pretokens):
            if len(cache) >= limit - 1:
                break
            cache[t]  # noqa: B018  (a miss runs BPE and stores the result)
        return len(cache)

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
        part before a *safe* cut near its end is encoded (``pretokenize.last_safe_cut``: no
        pre-token and no special token spans it, and a special token arriving in pieces is still
        seen whole).
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
            cut = last_safe_cut(buf, self.special_tokens)
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
