"""Documents -> token ids, in worker processes, written as one token file or as shards.

This is the path for every input that is not a single plain text file (``tokenize_data`` cuts that
one into byte ranges instead, but encodes them with this module's workers, :func:`in_workers` and
:func:`pack_ids`, into a :class:`TokenFile` too). The parent reads records
(:mod:`~cs336_basics.corpus.sources`), turns each into a document (plain text, or a rendered conversation with its mask,
:mod:`~cs336_basics.corpus.chat`), and sends batches of about a megabyte to workers, which return
packed ids; the parent writes them in input order. Each document is followed by ``<|endoftext|>``
(a conversation's template already ends with it), so the ids equal ``Tokenizer.encode`` of the
documents joined that way.

Outputs: ``OUT`` (with its sidecar ``OUT.meta.json``), or with ``shard_tokens=N`` the shards
``OUT_000000.npy, OUT_000001.npy, ...`` of at most N tokens each, cut between documents (a single
longer document gets a shard of its own, listed in ``EncodeResult.oversized``). Chat data also gets ``OUT.mask.npy`` (uint8, one entry per
id). Everything is written to temporary files that are renamed into place only once the whole input
has been read, so an error anywhere leaves no new file behind (and earlier outputs untouched).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from cs336_basics.corpus import chat
from cs336_basics.corpus.layout import CorpusError, existing_shards, mask_path, shard_path
from cs336_basics.corpus.sources import Record, record_text
from cs336_basics.fast.tokenizer import EOT, Tokenizer, TokenizerError
from cs336_basics.utils.errors import os_reason
from cs336_basics.utils.fsutil import AtomicFile, atomic_write_text, fsync_dir
from cs336_basics.utils.pool import in_order, start_method
from cs336_basics.utils.token_files import RAW_SUFFIXES, tokens_meta, tokens_meta_path

BATCH_CHARS = 1 << 20  # characters of text per worker task
Doc = str | list[chat.Segment]  # a plain document (EOT appended when encoded) or chat segments
Progress = Callable[[int, int], None]  # (documents done, tokens so far)


@dataclass
class EncodeResult:
    files: list[Path]  # token files written, in order
    tokens: int
    documents: int
    masked: bool
    malformed: chat.MalformedReport | None = None  # records skipped (or kept with a note), when any
    removed_stale: list[Path] = field(default_factory=list)
    oversized: list[tuple[Path, int]] = field(default_factory=list)  # shards over shard_tokens: (path, tokens)


# ---------------------------------------------------------------------- documents from records
def documents(
    records: Iterable[Record],
    text_fields: list[str],
    chat_format: str | None,
    strict: bool,
    report: chat.MalformedReport,
) -> Iterator[Doc]:
    """Plain documents (``chat_format`` None) or rendered conversations; malformed ones go to
    ``report`` (or, with ``strict``, raise)."""
    for rec in records:
        if chat_format is None:
            yield record_text(rec, text_fields)
            continue
        try:
            if not isinstance(rec.value, dict):
                raise chat.Malformed("not a JSON record (--chat reads .jsonl/.json files or a Hugging Face data set)")
            turns = chat.parse_conversation(rec.value, chat_format)
        except chat.Malformed as err:
            if strict:
                raise CorpusError(f"{rec.where}: malformed conversation: {err} (--strict)") from None
            report.add(rec.where, str(err))
            continue
        if any(t.tag for t in turns):
            report.note(chat.TOOL_NOTE)
        yield chat.render(turns)


def _batches(docs: Iterable[Doc]) -> Iterator[list[Doc]]:
    batch: list[Doc] = []
    size = 0
    for d in docs:
        batch.append(d)
        size += len(d) if isinstance(d, str) else sum(len(t) for t, _ in d)
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# ---------------------------------------------------------------------- workers (both paths)
_tok: Tokenizer | None = None


def _init_worker(tokenizer_dir: str, special_tokens: list[str]) -> None:
    """Forked workers inherit the parent's tokenizer; spawned ones load it. Ctrl-C is left to the
    parent (which stops the pool), so workers don't each print a traceback."""
    global _tok
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _tok is None:
        _tok = Tokenizer.from_dir(tokenizer_dir, special_tokens)


def worker_tokenizer() -> Tokenizer:
    """The tokenizer of this worker process (for the ``work`` of :func:`in_workers`)."""
    assert _tok is not None, "not in a worker of in_workers"
    return _tok


def in_workers(
    tok: Tokenizer,
    tokenizer_dir: str,
    work: Callable[[Any], Any],
    tasks: Iterable[Any],
    workers: int,
    died: Callable[[Any], Exception],
    warm: Callable[[], list[str]] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """``(task, work(task))`` in task order, computed in ``workers`` processes (:func:`in_order`),
    where ``work`` reads the tokenizer from :func:`worker_tokenizer`. Forked workers inherit ``tok``
    (with its cache warmed first on the pre-tokens ``warm()`` returns); spawned ones load it from
    ``tokenizer_dir``. A worker that dies raises ``died(task)``."""
    global _tok
    fork = start_method() == "fork"
    if fork and warm is not None:  # forked workers share the parent's warm cache (copy-on-write)
        tok.warm_cache(warm())
    _tok = tok if fork else None
    try:
        for task, future in in_order(work, tasks, workers, _init_worker, (tokenizer_dir, tok.special_tokens)):
            try:
                result = future.result()
            except BrokenProcessPool:
                raise died(task) from None
            yield task, result
    finally:
        _tok = None


def pack_ids(tok: Tokenizer, text: str, dtype: np.dtype) -> bytes:
    """``tok.encode(text)`` as little-endian ``dtype`` (uint16 or uint32) bytes, ready to write."""
    typecode = "H" if dtype.itemsize == 2 else "I"
    if np.dtype(typecode).itemsize != dtype.itemsize or sys.byteorder != "little":
        return np.array(tok.encode(text), dtype=dtype).tobytes()  # unusual platform: slow path
    return tok.encode_packed(text, typecode)


def encode_batch(tok: Tokenizer, batch: list[Doc], dtype: np.dtype) -> tuple[bytes, list[int], bytes | None]:
    """Packed ids of the documents, each one's length in ids, and (chat) the packed mask."""
    ids: list[bytes] = []
    lengths: list[int] = []
    masks: list[bytes] | None = None if batch and isinstance(batch[0], str) else []
    for doc in batch:
        if isinstance(doc, str):
            packed = pack_ids(tok, doc + EOT, dtype)
            ids.append(packed)
            lengths.append(len(packed) // dtype.itemsize)
            continue
        n = 0
        for text, bit in doc:
            packed = pack_ids(tok, text, dtype)
            k = len(packed) // dtype.itemsize
            ids.append(packed)
            masks.append(bytes([bit]) * k)  # type: ignore[union-attr]
            n += k
        lengths.append(n)
    return b"".join(ids), lengths, None if masks is None else b"".join(masks)


def _work(args: tuple[list[Doc], str]) -> tuple[bytes, list[int], bytes | None]:
    return encode_batch(worker_tokenizer(), args[0], np.dtype(args[1]))


def _encoded(tok: Tokenizer, tokenizer_dir: str, batches: Iterable[list[Doc]], dtype: np.dtype, workers: int):
    """Encoded batches in input order: in-process for one worker, else a process pool with a
    bounded window of batches in flight (memory stays bounded on any input size)."""
    if workers <= 1:
        for b in batches:
            yield encode_batch(tok, b, dtype)
        return
    tasks = ((b, dtype.str) for b in batches)
    for _task, result in in_workers(tok, tokenizer_dir, _work, tasks, workers, _worker_died):
        yield result


def _worker_died(_task: Any) -> Exception:
    return CorpusError("a worker process died while encoding (out of memory? try fewer --workers)")


# ---------------------------------------------------------------------- writing (both paths)
class TokenFile:
    """A token file written atomically (:class:`~cs336_basics.utils.fsutil.AtomicFile`): for ``.npy``
    a placeholder header first, the ids, then at :meth:`close` the real header over the placeholder
    (the same length); a raw file is just the ids. :meth:`publish` puts it in place."""

    def __init__(self, final: Path, dtype: np.dtype, npy: bool) -> None:
        self.final, self.dtype = final, dtype
        self.atomic = AtomicFile(final, "wb", buffering=1 << 20)
        self.f: IO[bytes] = self.atomic.file
        self.placeholder = npy_header(dtype, 0) if npy else b""
        try:
            self.f.write(self.placeholder)
        except BaseException:
            self.atomic.discard()
            raise

    def close(self, n: int) -> None:
        """The header for ``n`` ids written; the data flushed to disk (not yet in place)."""
        if self.placeholder:
            header = npy_header(self.dtype, n)
            if len(header) != len(self.placeholder):  # cannot happen for < 10**40 tokens; stay safe
                raise TokenizerError(f"{self.final}: internal error: .npy header size changed")
            self.f.seek(0)
            self.f.write(header)
        self.atomic.close()

    def publish(self) -> None:
        self.atomic.commit()

    def discard(self) -> None:
        self.atomic.discard()


@dataclass
class _Part:
    path: Path
    ids: TokenFile
    mask: TokenFile | None
    tokens: int = 0
    documents: int = 0


class TokenWriter:
    """Ids (and masks) into one file or into shards of at most ``shard_tokens`` ids."""

    def __init__(self, output: Path, dtype: np.dtype, shard_tokens: int | None, masked: bool) -> None:
        self.output, self.dtype, self.shard_tokens, self.masked = output, dtype, shard_tokens, masked
        self.npy = output.suffix.lower() == ".npy"
        self.parts: list[_Part] = []

    def _open(self) -> _Part:
        if not self.parts:  # a missing output folder is made, as train_bpe and the plain-text path make theirs
            make_output_dir(self.output)
        path = shard_path(self.output, len(self.parts)) if self.shard_tokens else self.output
        ids = TokenFile(path, self.dtype, self.npy)
        try:
            mask = TokenFile(mask_path(path), np.dtype(np.uint8), npy=True) if self.masked else None
        except BaseException:
            ids.discard()
            raise
        part = _Part(path, ids, mask)
        self.parts.append(part)
        return part

    def write(self, ids: bytes, lengths: list[int], mask: bytes | None) -> None:
        """One encoded batch; documents are kept whole within a shard."""
        size = self.dtype.itemsize
        part = self.parts[-1] if self.parts else self._open()
        if not self.shard_tokens:
            part.ids.f.write(ids)
            if part.mask is not None and mask is not None:
                part.mask.f.write(mask)
            part.tokens += sum(lengths)
            part.documents += len(lengths)
            return
        view = memoryview(ids)
        pos = 0
        for n in lengths:
            if part.tokens and part.tokens + n > self.shard_tokens:
                part.ids.close(part.tokens)
                if part.mask is not None:
                    part.mask.close(part.tokens)
                part = self._open()
            part.ids.f.write(view[pos * size : (pos + n) * size])
            if part.mask is not None and mask is not None:
                part.mask.f.write(mask[pos : pos + n])
            part.tokens += n
            part.documents += 1
            pos += n

    def oversized(self) -> list[tuple[Path, int]]:
        """Shards longer than ``shard_tokens``: each holds one document that long (documents are never cut)."""
        if not self.shard_tokens:
            return []
        return [(p.path, p.tokens) for p in self.parts if p.tokens > self.shard_tokens]

    def finish(self, meta: dict[str, Any]) -> tuple[list[Path], list[Path]]:
        """Close, rename everything into place, write the sidecars; remove shards of an earlier,
        longer run of the same ``--output`` (they would otherwise be trained on). Returns
        (files written, stale files removed)."""
        last = self.parts[-1]
        last.ids.close(last.tokens)
        if last.mask is not None:
            last.mask.close(last.tokens)
        for i, part in enumerate(self.parts):
            part.ids.publish()
            if part.mask is not None:
                part.mask.publish()
            info = {**meta, "num_tokens": part.tokens, "documents": part.documents}
            info["mask"] = mask_path(part.path).name if part.mask is not None else None
            if self.shard_tokens:
                info.update(shard=i, num_shards=len(self.parts))
            atomic_write_text(tokens_meta_path(part.path), json.dumps(info, indent=1, ensure_ascii=False) + "\n")
        stale: list[Path] = []
        if self.shard_tokens:
            written = {p.path for p in self.parts}
            for old in existing_shards(self.output):
                if old not in written:
                    for f in (old, tokens_meta_path(old), mask_path(old)):
                        if f.exists():
                            f.unlink()
                            stale.append(f)
        else:
            stale_mask = mask_path(self.output)
            if not self.masked and stale_mask.exists():  # an old mask would be applied to new ids
                stale_mask.unlink()
                stale.append(stale_mask)
        fsync_dir(self.output.parent if str(self.output.parent) else Path("."))
        return [p.path for p in self.parts], stale

    def discard(self) -> None:
        for part in self.parts:
            part.ids.discard()
            if part.mask is not None:
                part.mask.discard()


def check_output(output: Path, inputs: list[Path]) -> None:
    if output.is_dir():
        raise CorpusError(f"--output {output}: is a directory")
    resolved = {p.resolve() for p in inputs}
    if output.exists() and output.resolve() in resolved:
        raise CorpusError(f"--output {output}: would overwrite an input")


def encode_corpus(
    tokenizer_dir: str | os.PathLike,
    records: Iterable[Record],
    output: str | os.PathLike,
    *,
    source: str,
    text_fields: list[str] | None = None,
    chat_format: str | None = None,
    strict: bool = False,
    shard_tokens: int | None = None,
    workers: int = 1,
    special_tokens: list[str] | None = None,
    progress: Progress | None = None,
) -> EncodeResult:
    """Tokenize ``records`` into ``output`` (or its shards); see the module docstring.

    ``chat_format`` None: plain documents of ``text_fields``; ``"auto"`` or one of
    :data:`chat.FORMATS`: conversations, with a mask. ``source`` is recorded in the sidecars.
    """

    out = Path(output)
    tok = Tokenizer.from_dir(tokenizer_dir, special_tokens)
    if chat_format is not None:
        chat.check_chat_tokenizer(tok.special_tokens, f"--tokenizer {tokenizer_dir}")
    elif EOT not in tok.special_tokens:
        raise CorpusError(
            f"--tokenizer {tokenizer_dir}: has no {EOT} special token, which separates documents "
            f"(pass --special_tokens '{EOT}' or train the tokenizer with it)"
        )
    if shard_tokens is not None and shard_tokens < 1:
        raise CorpusError(f"--shard_tokens must be >= 1, got {shard_tokens}")
    dtype = output_dtype(out, tok.vocab_size)
    report = chat.MalformedReport()
    docs = documents(records, text_fields or ["text"], chat_format, strict, report)
    writer = TokenWriter(out, dtype, shard_tokens, masked=chat_format is not None)
    n_docs = n_tokens = 0
    try:
        for ids, lengths, mask in _encoded(tok, str(tokenizer_dir), _batches(docs), dtype, workers):
            writer.write(ids, lengths, mask)
            n_docs += len(lengths)
            n_tokens += sum(lengths)
            if progress is not None:
                progress(n_docs, n_tokens)
        if n_docs == 0:
            why = f" ({report.summary()})" if report.count else ""
            raise CorpusError(f"{source}: no documents found; nothing written{why}")
        meta = tokens_meta(tok, tokenizer_dir, dtype, source, chat=chat_format is not None)
        files, stale = writer.finish(meta)
    except OSError as err:
        writer.discard()
        raise CorpusError(f"--output {out}: cannot write output ({os_reason(err)})") from None
    except BaseException:
        writer.discard()
        raise
    noted = report if report.count or report.notes else None
    return EncodeResult(files, n_tokens, n_docs, chat_format is not None, noted, stale, writer.oversized())


# ---------------------------------------------------------------------- token files out (tokenize_data uses these too)
def output_dtype(output_path: str | os.PathLike, vocab_size: int) -> np.dtype:
    """Little-endian dtype for the ids of a ``vocab_size`` tokenizer in ``output_path``; raises
    TokenizerError for a suffix the trainer cannot read or a vocabulary ``.u16`` cannot hold."""
    out = Path(output_path)
    suffix = out.suffix.lower()
    if suffix not in (".npy", *RAW_SUFFIXES):
        raise TokenizerError(
            f"{out}: unknown output extension {out.suffix!r} (use .npy, or raw little-endian ids: "
            f"{', '.join(RAW_SUFFIXES)})"
        )
    fits16 = vocab_size <= 1 << 16
    if suffix == ".u16" and not fits16:
        raise TokenizerError(
            f"{out}: a vocabulary of {vocab_size:,} ids does not fit .u16 (uint16 holds 65,536); use .u32 or .npy"
        )
    return np.dtype("<u2") if fits16 and suffix != ".u32" else np.dtype("<u4")


def npy_header(dtype: np.dtype, n: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
    )
    return buf.getvalue()


def make_output_dir(out: Path) -> None:
    """Make the folder of ``out`` when missing, as train_bpe and the trainer make theirs."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TokenizerError(f"{out}: cannot create the output directory {out.parent} ({os_reason(err)})") from None
