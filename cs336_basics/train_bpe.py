"""Train a byte-level BPE tokenizer and save it (vocab.json, merges.txt, special_tokens.json, and
Hugging Face's tokenizer.json + tokenizer_config.json).

    python -m cs336_basics.train_bpe --input data/TinyStoriesV2-GPT4-train.txt \\
        --vocab_size 10000 --special_tokens '<|endoftext|>' --output tokenizers/tinystories-10k

Prints wall time, peak memory, the number of merges and the longest tokens; progress goes to stderr.
Load the result with ``Tokenizer.from_dir(OUTPUT)``.

Nothing is lost silently: the output is checked to be creatable before training starts (exit 2);
if saving still fails afterwards (e.g. disk full), the tokenizer is saved to a fallback directory
(``./train_bpe-output-<timestamp>``, else a fresh temp directory), which is named, with exit 1. An
empty input file is refused (exit 2); a vocabulary size the corpus cannot reach (it runs out of
pairs to merge) prints a warning with the size reached.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cs336_basics.fast.bpe import BPEError, train_bpe
from cs336_basics.interop.gpt2_files import EOT
from cs336_basics.utils import runlock
from cs336_basics.utils.errors import os_reason, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cs336_basics.train_bpe", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="PATH",
        help="UTF-8 text file(s) to train on; also globs, .jsonl/.json records (--text_field) and .gz of either",
    )
    p.add_argument(
        "--text_field",
        default="text",
        help="JSON field(s) holding the document; several comma-separated are joined by a newline (default: text)",
    )
    p.add_argument("--vocab_size", type=int, required=True, help="total size incl. 256 bytes + specials")
    p.add_argument(
        "--special_tokens",
        nargs="*",
        default=[EOT],
        metavar="TOKEN",
        help="special tokens (default: <|endoftext|>; pass the flag with no value for none)",
    )
    p.add_argument("--output", required=True, help="directory to write the tokenizer files into")
    p.add_argument("--workers", type=int, default=None, help="pre-tokenization processes (default: by file size)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _peak_rss_mb() -> tuple[float, float]:
    """(self, largest child) peak resident memory in MiB; ru_maxrss is KiB on Linux, bytes on macOS."""
    scale = 1 if sys.platform == "darwin" else 1024
    self_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / 2**20
    return self_, kids


def check_output_dir(output: str | os.PathLike) -> None:
    """Raise BPEError unless ``output`` is (or can be created as) a directory we can write into.

    Probes by creating and removing a file, in the directory or its nearest existing ancestor:
    permission bits alone mislead (root ignores them; read-only mounts don't show in them)."""
    out = Path(output)
    probe_dir = out
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        what = "is a file" if probe_dir == out else f"cannot be created: {probe_dir} is a file"
        raise BPEError(f"--output {out} {what}; expected a directory for the tokenizer files")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".train_bpe-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise BPEError(f"--output {out}: cannot write into {probe_dir} ({os_reason(err)})") from None


def _save_with_fallback(tok, output: str) -> tuple[str, OSError | None, list[Path]]:
    """Save into ``output``; if that fails, into a fallback directory. Returns (where, error, files written)."""
    try:
        return output, None, tok.save(output)
    except OSError as err:
        first = err
    fallback = Path(f"train_bpe-output-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    for make in (lambda: fallback, lambda: Path(tempfile.mkdtemp(prefix="train_bpe-output-"))):
        with contextlib.suppress(OSError):
            d = make()
            return str(d), first, tok.save(d)
    raise BPEError(
        f"--output {output}: cannot save the tokenizer ({os_reason(first)}), and no fallback "
        "directory (current directory, temp directory) was writable either"
    )


def _joined_input(args: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    """The one plain text file to train on: ``--input`` itself when it is one, else a temporary
    file holding every input's documents separated by a special token (pre-tokens never cross a
    special token, so the counts are those of the documents one by one)."""
    import glob

    from cs336_basics.corpus.sources import Sources, expand_inputs, input_kind, is_gzip, parse_fields

    one = args.input[0]
    if len(args.input) == 1 and not (glob.has_magic(one) or is_gzip(one) or input_kind(one) == "json"):
        return one  # the fast path: the parallel byte-range counter reads the file directly
    if not args.special_tokens:
        raise BPEError("--input with several files or JSON records needs a special token to separate documents")
    sep = EOT if EOT in args.special_tokens else args.special_tokens[0]
    fields = parse_fields(args.text_field)
    src = Sources(expand_inputs(args.input))
    tmp = stack.enter_context(tempfile.NamedTemporaryFile("w", encoding="utf-8", prefix="train_bpe-", suffix=".txt"))
    from cs336_basics.corpus.sources import write_documents_text

    n = write_documents_text(src.records(), fields, sep, tmp)
    tmp.flush()
    if not args.quiet:
        print(f"[joined {n:,} documents from {len(src.paths)} file(s) into {tmp.name}]", file=sys.stderr, flush=True)
    return tmp.name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        args.input_label = " ".join(args.input)
        args.input = _joined_input(args, stack)
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise BPEError(f"--workers must be at least 1, got {args.workers}")
    with contextlib.suppress(OSError):  # a missing/unreadable input is train_bpe's to report
        if os.path.isfile(args.input) and os.path.getsize(args.input) == 0:
            raise BPEError(f"--input {args.input_label} is empty: nothing to train on")
    check_output_dir(args.output)
    # One training per --output: a second would overwrite these files (freed when main returns or we die).
    lock = runlock.acquire(args.output, what="--output", hint="wait for it to end or pass another --output")
    from cs336_basics.fast.tokenizer import Tokenizer  # import here: only needed once training succeeds

    start = time.perf_counter()
    last = [start]

    def progress(msg: str) -> None:
        now = time.perf_counter()
        if not args.quiet and now - last[0] >= 1.0:  # at most one line a second
            last[0] = now
            print(f"[{now - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    vocab, merges = train_bpe(
        args.input, args.vocab_size, args.special_tokens, num_workers=args.workers, progress=progress
    )
    elapsed = time.perf_counter() - start
    saved_to, save_error, written = _save_with_fallback(Tokenizer(vocab, merges, args.special_tokens), args.output)
    rss_self, rss_kids = _peak_rss_mb()
    print(f"Trained on {args.input_label} in {elapsed:.2f}s")
    workers = f", {rss_kids:.0f} MiB (largest worker)" if rss_kids > 0 else " (no worker processes)"
    print(f"Peak memory: {rss_self:.0f} MiB (main process){workers}")
    print(f"Vocabulary: {len(vocab):,} tokens ({len(merges):,} merges, {len(args.special_tokens)} special)")
    longest = sorted(vocab.values(), key=len, reverse=True)[:10]
    print("Longest tokens: " + ", ".join(f"{t.decode('utf-8', 'replace')!r} ({len(t)})" for t in longest))
    if len(vocab) < args.vocab_size:
        print(
            f"warning: vocabulary reached only {len(vocab):,} of the requested --vocab_size "
            f"{args.vocab_size:,}: {args.input_label} has no more pairs to merge (use more text or a "
            "smaller --vocab_size)",
            file=sys.stderr,
        )
    if save_error is not None:
        print(
            f"error: cannot save to {args.output} ({os_reason(save_error)}); saved the tokenizer to {saved_to} instead",
            file=sys.stderr,
        )
        return 1
    names = ", ".join(p.name for p in written)
    lock_file = Path(args.output) / runlock.LOCK_NAME
    if lock.held and lock_file.exists():
        names += f"; and {lock_file.name}, the lock that keeps two runs of train_bpe off one --output"
    print(f"Saved tokenizer to {args.output} ({names})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
