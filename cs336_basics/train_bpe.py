"""Train a byte-level BPE tokenizer and save it (vocab.json, merges.txt, special_tokens.json).

    python -m cs336_basics.train_bpe --input data/TinyStoriesV2-GPT4-train.txt \\
        --vocab_size 10000 --special_tokens '<|endoftext|>' --output tokenizers/tinystories-10k

Prints wall time, peak memory, the number of merges and the longest tokens; progress goes to stderr.
Load the result with ``Tokenizer.from_dir(OUTPUT)``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence

from cs336_basics.bpe import BPEError, train_bpe
from cs336_basics.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.train_bpe", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--input", required=True, help="UTF-8 text file to train on")
    p.add_argument("--vocab_size", type=int, required=True, help="total size incl. 256 bytes + specials")
    p.add_argument(
        "--special_tokens", nargs="*", default=["<|endoftext|>"], metavar="TOKEN",
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise BPEError(f"--workers must be at least 1, got {args.workers}")
    from cs336_basics.tokenizer import Tokenizer  # import here: only needed once training succeeds

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
    Tokenizer(vocab, merges, args.special_tokens).save(args.output)
    rss_self, rss_kids = _peak_rss_mb()
    print(f"Trained on {args.input} in {elapsed:.2f}s")
    print(f"Peak memory: {rss_self:.0f} MiB (main process), {rss_kids:.0f} MiB (largest worker)")
    print(f"Vocabulary: {len(vocab):,} tokens ({len(merges):,} merges, {len(args.special_tokens)} special)")
    longest = sorted(vocab.values(), key=len, reverse=True)[:10]
    print("Longest tokens: " + ", ".join(f"{t.decode('utf-8', 'replace')!r} ({len(t)})" for t in longest))
    print(f"Saved tokenizer to {args.output} (vocab.json, merges.txt, special_tokens.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
