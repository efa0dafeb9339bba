"""Tokenize a large UTF-8 text file into token ids (``.npy``, or raw ids), using all cores.

    python -m cs336_basics.tokenize_data --tokenizer out/tok --input train.txt --output train.npy

The file is cut into many byte ranges (far more than workers, so progress is smooth and memory
stays bounded) at safe cuts (``pretokenize.find_chunk_boundaries``: places where cutting cannot
change the tokenization). Worker processes encode the ranges; the parent writes their ids in file
order. The result equals ``Tokenizer.encode`` of the whole file. Workers start warm: before forking, the
parent runs BPE on the vocabulary's whole-pre-token words and on the distinct pre-tokens of a small sample
of the input, and every worker inherits that cache.

Output format by suffix: ``.npy`` (``np.load(path, mmap_mode="r")`` opens it), or raw
little-endian ids without a header for ``.bin .ids .dat .u16 .u32`` (``data.RAW_SUFFIXES``; the
trainer reads them with ``--data_dtype``). ids are ``uint16`` when the vocabulary fits (<= 65536),
else ``uint32``; ``.u16`` insists on uint16, ``.u32`` is always uint32. The output is written under
a temporary name and renamed into place only when complete, so a crash or an error never leaves a
truncated file behind. A JSON sidecar next to it (``data.tokens_meta_path``) records which
tokenizer made it, so the trainer can warn about a ``--vocab_size`` that does not match.

Every other input goes through :mod:`cs336_basics.corpus` (documents, batched to workers): several
files and globs, ``.jsonl``/``.json`` records (``--text_field``), ``.gz`` of either, a Hugging Face
data set (``--hf_dataset``), shards (``--shard_tokens N``), and conversations with a loss mask
(``--chat``); see :func:`main_documents`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cs336_basics.corpus.encode import TokenFile, in_workers, make_output_dir, output_dtype, pack_ids, worker_tokenizer
from cs336_basics.fast.pretokenize import (
    PRETOKEN_RE,
    ascii_pretoken_re,
    available_cpus,
    find_chunk_boundaries,
    last_safe_cut,
    special_pattern,
    split_on_specials,
)
from cs336_basics.fast.tokenizer import Tokenizer, TokenizerError
from cs336_basics.utils.errors import os_reason, run_cli
from cs336_basics.utils.fsutil import atomic_write_text
from cs336_basics.utils.token_files import (
    read_tokens_meta,
    tokens_meta,
    tokens_meta_path,
)

ProgressFn = Callable[[int, int, int], None]  # (bytes done, total bytes, tokens so far)

_NPY = ".npy"
_ASCII_RE = ascii_pretoken_re(str)


# ---------------------------------------------------------------------- worker side
# (the workers, the id packing and the output file are cs336_basics.corpus.encode's, shared with the
# document path; what is this path's own is the byte ranges and the warm-up sample)
def _encode_range(tok: Tokenizer, path: str, start: int, end: int, dtype: np.dtype) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
    except OSError as err:
        raise TokenizerError(f"{path}: cannot read ({os_reason(err)})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{path}: invalid UTF-8 at byte offset {start + err.start} ({err.reason})") from None
    return pack_ids(tok, text, dtype)


def _work(args: tuple[str, int, int, str]) -> bytes:
    path, start, end, dtype = args
    return _encode_range(worker_tokenizer(), path, start, end, np.dtype(dtype))


# Before forking, the parent reads this many bytes spread over the input (``_WARM_PIECES``
# pieces) and runs BPE on their distinct pre-tokens, so workers inherit a warm cache: the frequent
# words of the corpus are then encoded once, not once per worker.
WARM_SAMPLE_BYTES = 1 << 20
_WARM_PIECES = 16


def _sample_pretokens(tasks: list, budget: int, specials: list[str]) -> list[str]:
    """Distinct pre-tokens of about ``budget`` bytes read from the starts of tasks spread over the
    file, most frequent first (a task starts at a safe cut; its piece ends at one)."""
    if budget <= 0 or not tasks:
        return []
    picks = tasks[:: max(1, len(tasks) // _WARM_PIECES)]
    each = max(1, budget // len(picks))
    split_tokens = [t.encode("utf-8") for t in specials]
    pattern = special_pattern(specials)
    counts: Counter = Counter()
    for path, start, end, _ in picks:
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(min(each, end - start))
        except OSError:
            return []  # the workers will report it
        cut = len(data) if len(data) == end - start else last_safe_cut(data, split_tokens)
        if not cut:
            continue
        text = data[:cut].decode("utf-8", errors="ignore")
        for piece, is_special in split_on_specials(text, pattern):
            if not is_special:
                counts.update((_ASCII_RE if piece.isascii() else PRETOKEN_RE).findall(piece))
    return [t for t, _ in counts.most_common()]


def _worker_died(task: tuple[str, int, int, str]) -> Exception:
    return TokenizerError(
        f"{task[0]}: a worker process died while encoding bytes {task[1]}..{task[2]} "
        "(out of memory? try fewer --workers)"
    )


# ---------------------------------------------------------------------- library entry point
def tokenize_file(
    tokenizer_dir: str | os.PathLike,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
    special_tokens: list[str] | None = None,
) -> int:
    """Encode ``input_path`` with the tokenizer saved in ``tokenizer_dir``; write ``output_path``
    (.npy, or raw ids for the raw suffixes; uint16/uint32) and its sidecar, each atomically.
    ``special_tokens`` replaces the directory's special_tokens.json (needed when it has none).
    Returns the number of tokens."""
    tok = Tokenizer.from_dir(tokenizer_dir, special_tokens)
    inp, out = Path(input_path), Path(output_path)
    if not inp.exists():
        raise TokenizerError(f"{inp}: input file not found")
    if not inp.is_file():
        raise TokenizerError(f"{inp}: input is not a regular file")
    if out.is_dir():
        raise TokenizerError(f"{out}: output path is a directory")
    if out.exists() and out.resolve() == inp.resolve():
        raise TokenizerError(f"{out}: output would overwrite the input")
    dtype = output_dtype(out, tok.vocab_size)
    if num_workers is not None and num_workers < 1:
        raise TokenizerError(f"--workers must be >= 1, got {num_workers}")
    workers = num_workers or available_cpus()
    make_output_dir(out)
    size = inp.stat().st_size
    target = min(4 << 20, max(256 << 10, size // (workers * 16) + 1))
    specials = [s.encode("utf-8") for s in tok.special_tokens]
    with open(inp, "rb") as f:
        bounds = find_chunk_boundaries(f, -(-size // target), specials)
    tasks = [(str(inp), a, b, dtype.str) for a, b in zip(bounds[:-1], bounds[1:])]
    workers = max(1, min(workers, len(tasks)))

    try:
        n_tokens = _write_ids(tok, str(tokenizer_dir), tasks, workers, out, dtype, size, progress)
    except OSError as err:  # disk full, permission denied, ... (the temp file is already removed)
        raise TokenizerError(f"{out}: cannot write output ({os_reason(err)})") from None
    _write_meta(tok, tokenizer_dir, inp, out, dtype, n_tokens)
    return n_tokens


def _write_meta(
    tok: Tokenizer, tokenizer_dir: str | os.PathLike, inp: Path, out: Path, dtype: np.dtype, n: int
) -> None:
    """The sidecar ``data.read_tokens_meta`` reads. If it cannot be written, a stale one (from an
    earlier run, maybe another tokenizer) must not stay next to the new file."""

    meta = tokens_meta(tok, tokenizer_dir, dtype, str(inp), num_tokens=n)
    path = tokens_meta_path(out)
    try:
        atomic_write_text(path, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    except OSError as err:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        raise TokenizerError(f"{path}: cannot write the token file's sidecar ({os_reason(err)})") from None


def _write_ids(
    tok: Tokenizer,
    tokenizer_dir: str,
    tasks: list,
    workers: int,
    out: Path,
    dtype: np.dtype,
    size: int,
    progress: ProgressFn | None,
) -> int:
    """The chunks in order, into a :class:`~cs336_basics.corpus.encode.TokenFile` (for .npy a header
    placeholder first, the real header over it at the end) renamed into place only on success."""
    n_tokens = 0
    done = 0
    out_file = TokenFile(out, dtype, npy=out.suffix.lower() == _NPY)
    try:

        def emit(task, data: bytes) -> None:
            nonlocal n_tokens, done
            out_file.f.write(data)
            n_tokens += len(data) // dtype.itemsize
            done += task[2] - task[1]
            if progress is not None:
                progress(done, size, n_tokens)

        if workers == 1:
            for task in tasks:
                emit(task, _encode_range(tok, task[0], task[1], task[2], dtype))
        else:
            warm = functools.partial(_sample_pretokens, tasks, WARM_SAMPLE_BYTES, tok.special_tokens)
            for task, data in in_workers(tok, tokenizer_dir, _work, tasks, workers, _worker_died, warm):
                emit(task, data)
        out_file.close(n_tokens)
        out_file.publish()
    except BaseException:
        out_file.discard()
        raise
    return n_tokens


# ---------------------------------------------------------------------- CLI
class _ProgressLine:
    """Throttled ``bytes done, MB/s, ETA`` line on stderr (rewritten in place on a terminal)."""

    def __init__(self, interval: float | None = None) -> None:
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        # Twice a second on a terminal; every 10 s into a log file (one line each).
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)

    def __call__(self, done: int, total: int, tokens: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.interval and done < total:
            return
        self.last = now
        dt = max(now - self.t0, 1e-9)
        rate = done / dt
        eta = (total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / total if total else 100.0
        line = (
            f"tokenized {done / 1e6:,.1f}/{total / 1e6:,.1f} MB ({pct:.0f}%)  {rate / 1e6:.1f} MB/s  "
            f"ETA {eta:.0f}s  {tokens:,} tokens"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.tokenize_data",
        description="Tokenize a UTF-8 text file into token ids (.npy or raw; all cores).",
    )
    p.add_argument("--tokenizer", required=True, help="directory written by Tokenizer.save / train_bpe")
    p.add_argument(
        "--input",
        nargs="+",
        default=None,
        metavar="PATH",
        help="input files or globs: UTF-8 text (documents separated by <|endoftext|>), .jsonl/.json records "
        "(see --text_field), or .gz of either; a single plain text file takes the parallel byte-range path",
    )
    p.add_argument(
        "--output",
        required=True,
        help="output file (written atomically): .npy, or raw little-endian ids .bin/.ids/.dat/.u16/.u32",
    )
    p.add_argument(
        "--special_tokens",
        nargs="*",
        default=None,
        metavar="TOKEN",
        help="special tokens, replacing the tokenizer's special_tokens.json (required if it has "
        "none; pass the flag with no value for none)",
    )
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_corpus_arguments(p)
    return p


# ---------------------------------------------------------------------- many inputs, shards, chats
def add_corpus_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of the document path (cs336_basics.corpus): JSON records, HF data sets, shards, chats."""
    g = p.add_argument_group("many sources, shards and conversations")
    g.add_argument(
        "--text_field",
        default="text",
        help="JSON/HF field(s) holding the document; several comma-separated are joined by a newline (default: text)",
    )
    g.add_argument("--hf_dataset", default=None, help="Hugging Face data set: hub name, save_to_disk dir, or data file")
    g.add_argument("--hf_subset", default=None, help="configuration (subset) of --hf_dataset")
    g.add_argument("--hf_split", default="train", help="split of --hf_dataset (default: train)")
    g.add_argument("--streaming", action="store_true", help="stream --hf_dataset instead of downloading it whole")
    g.add_argument(
        "--shard_tokens",
        type=int,
        default=None,
        metavar="N",
        help="write OUT_000000.npy, OUT_000001.npy, ... of at most N tokens each, cut between documents",
    )
    g.add_argument(
        "--chat",
        action="store_true",
        help="records are conversations: render with the chat template and write OUT.mask.npy beside the ids",
    )
    g.add_argument(
        "--chat_format",
        default="auto",
        choices=("auto", "messages", "conversations", "prompt_response", "instruction"),
        help="with --chat: the record format (default: auto, detected per record)",
    )
    g.add_argument("--strict", action="store_true", help="with --chat: the first malformed record is an error")


def uses_document_path(args: argparse.Namespace) -> bool:
    """Everything but one plain text file goes through cs336_basics.corpus (that one keeps the
    byte-range encoder above)."""
    import glob as globlib

    from cs336_basics.corpus.sources import input_kind, is_gzip

    if args.hf_dataset or args.chat or args.shard_tokens is not None or len(args.input) != 1:
        return True
    one = args.input[0]
    return globlib.has_magic(one) or is_gzip(one) or input_kind(one) == "json"


class _DocProgress:
    """Throttled ``MB read, documents, tokens, rate, ETA`` line on stderr (like _ProgressLine)."""

    def __init__(self, bytes_done: Callable[[], int] | None, total_bytes: int | None, total_docs: int | None) -> None:
        self.bytes_done, self.total_bytes, self.total_docs = bytes_done, total_bytes, total_docs
        self.t0 = time.perf_counter()
        self.last = self.t0  # the first line after one interval (short runs print only the final one)
        self.tty = sys.stderr.isatty()
        self.interval = 0.5 if self.tty else 10.0

    def __call__(self, docs: int, tokens: int, final: bool = False) -> None:
        now = time.perf_counter()
        if now - self.last < self.interval and not final:
            return
        self.last = now
        dt = max(now - self.t0, 1e-9)
        parts = []
        eta = None
        if self.bytes_done is not None and self.total_bytes:
            done = self.bytes_done()
            rate = done / dt
            parts.append(
                f"read {done / 1e6:,.1f}/{self.total_bytes / 1e6:,.1f} MB ({100 * done / self.total_bytes:.0f}%)"
            )
            parts.append(f"{rate / 1e6:.1f} MB/s")
            eta = (self.total_bytes - done) / rate if rate > 0 else None
        elif self.total_docs:
            eta = (self.total_docs - docs) / (docs / dt) if docs else None
        parts.append(f"{docs:,}{f'/{self.total_docs:,}' if self.total_docs else ''} docs")
        parts.append(f"{tokens:,} tokens ({tokens / dt:,.0f}/s)")
        if eta is not None:
            parts.append(f"ETA {max(eta, 0):.0f}s")
        line = "  ".join(parts)
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def main_documents(args: argparse.Namespace) -> int:
    """tokenize_data for many inputs, JSON records, gzip, HF data sets, shards and chats."""
    from cs336_basics.corpus.encode import check_output, encode_corpus
    from cs336_basics.corpus.sources import Sources, expand_inputs, hf_records, parse_fields

    fields = parse_fields(args.text_field)
    if args.hf_dataset:
        records, count = hf_records(args.hf_dataset, args.hf_subset, args.hf_split, args.streaming)
        paths: list[Path] = []
        bytes_done, total, source = None, None, f"hf:{args.hf_dataset}[{args.hf_split}]"
        big = count is None or count > 20_000
    else:
        paths = expand_inputs(args.input)
        src = Sources(paths)
        records, count = src.records(), None
        bytes_done, total, source = (lambda: src.bytes_done), src.total_bytes, ", ".join(map(str, paths))
        big = src.total_bytes > 8 << 20  # below this a worker pool costs more than it saves
    if args.workers is not None and args.workers < 1:
        raise TokenizerError(f"--workers must be >= 1, got {args.workers}")
    check_output(Path(args.output), paths)
    workers = args.workers or (available_cpus() if big else 1)
    prog = None if args.quiet else _DocProgress(bytes_done, total, count)
    t0 = time.perf_counter()
    res = encode_corpus(
        args.tokenizer, records, args.output, source=source, text_fields=fields,
        chat_format=args.chat_format if args.chat else None, strict=args.strict, shard_tokens=args.shard_tokens,
        workers=workers, special_tokens=args.special_tokens, progress=prog,
    )  # fmt: skip
    if prog is not None:
        prog(res.documents, res.tokens, final=True)
        prog.finish()
    dt = time.perf_counter() - t0
    where = (
        str(res.files[0]) if len(res.files) == 1 else f"{len(res.files)} shards {res.files[0]} .. {res.files[-1].name}"
    )
    print(f"wrote {res.tokens:,} tokens of {res.documents:,} documents to {where} in {dt:.1f}s")
    if res.masked:
        print("loss mask (1 = assistant answer) written beside the ids as *.mask.npy")
    for f in res.removed_stale:
        print(f"removed {f} (left by an earlier run of this --output)", file=sys.stderr)
    for f, n in res.oversized:
        print(
            f"note: {f} has {n:,} tokens, more than --shard_tokens {args.shard_tokens:,}: it holds one document "
            "that long (documents are never cut)",
            file=sys.stderr,
        )
    if res.malformed is not None:
        for line in res.malformed.lines():
            print(line, file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.input is None) == (args.hf_dataset is None):
        raise TokenizerError("give either --input (files or globs) or --hf_dataset, not both or neither")
    if uses_document_path(args):
        return main_documents(args)
    args.input = args.input[0]
    with contextlib.suppress(OSError):  # a missing/unreadable input is tokenize_file's to report
        if os.path.isfile(args.input) and os.path.getsize(args.input) == 0:
            raise TokenizerError(f"--input {args.input} is empty: nothing to tokenize")
    prog = None if args.quiet else _ProgressLine()
    t0 = time.perf_counter()
    n = tokenize_file(args.tokenizer, args.input, args.output, args.workers, prog, special_tokens=args.special_tokens)
    if prog is not None:
        prog.finish()
    dt = time.perf_counter() - t0
    size = os.path.getsize(args.input)
    print(
        f"wrote {n:,} tokens to {args.output} ({size / 1e6:,.1f} MB in {dt:.1f}s, {size / 1e6 / max(dt, 1e-9):.1f} MB/s)"
    )

    dtype = (read_tokens_meta(args.output) or {}).get("dtype", "?")
    if Path(args.output).suffix.lower() == _NPY:
        print(f"ids are {dtype} (.npy: the trainer reads the dtype from the header)")
    else:
        print(f"ids are raw little-endian {dtype}: train with --data_dtype {dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
