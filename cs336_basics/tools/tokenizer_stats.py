"""Tokenizer statistics: compression (bytes/token), throughput, projected time, longest tokens.

    uv run python -m cs336_basics.tools.tokenizer_stats --tokenizer tokenizers/tinystories-10k \\
        --tokenizer tokenizers/owt-32k --input data/TinyStoriesV2-GPT4-valid.txt --input data/owt_valid.txt

Documents are the pieces between ``<|endoftext|>`` markers in the first ``--max_mb`` of each input;
``--num_docs`` of them are sampled (seeded) and every tokenizer encodes the same sample, one document
at a time (the marker itself is not counted). Reported per (tokenizer, input): bytes/token (UTF-8
bytes of the documents / their token count), single-process encode throughput (timed on the first
``--throughput_mb`` MB of the input as one text, so the pre-token cache warms up as on a large corpus),
the time to encode ``--project_gb`` GB at that rate (the Pile is 825 GB), and each tokenizer's
longest vocabulary entries.
Throughput is wall-clock on this machine and depends on what else runs; compare tokenizers in one call.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cs336_basics.fast.tokenizer import EOT, Tokenizer, token_to_str
from cs336_basics.utils.errors import UserError, read_error_line, run_cli

__all__ = [
    "EOT",
    "TokenizerStats",
    "read_documents",
    "sample_documents",
    "load_documents",
    "leading_documents",
    "measure",
    "longest_tokens",
    "compare",
]


@dataclass
class TokenizerStats:
    """One tokenizer on one input sample."""

    tokenizer: str
    input: str
    vocab_size: int
    num_docs: int
    bytes: int
    tokens: int
    bytes_per_token: float
    seconds: float
    bytes_per_s: float
    throughput_bytes: int = 0
    project_gb: float | None = None
    projected_s: float | None = None


def read_documents(path: str | os.PathLike, max_bytes: int | None = 100_000_000) -> list[str]:
    """Every document in the first ``max_bytes`` of ``path``, in file order.

    Documents are split on ``<|endoftext|>``; empty/whitespace-only pieces are dropped; when the read
    stops early the last, partial document is dropped too.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            raw = f.read(max_bytes if max_bytes is not None else -1)
    except OSError as err:
        raise UserError(read_error_line(f"--input {p}", err, expected="a text file")) from None
    truncated = max_bytes is not None and size > max_bytes
    if truncated:
        cut = raw.rfind(EOT.encode())
        raw = raw[:cut] if cut > 0 else raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if truncated and err.start >= len(raw) - 4:  # a character split by the read limit
            text = raw[: err.start].decode("utf-8")
        else:
            raise UserError(f"--input {p}: not UTF-8 text (invalid byte at offset {err.start})") from None
    docs = [d for d in text.split(EOT) if d.strip()]
    if not docs:
        raise UserError(f"--input {p}: no documents (the file is empty or only {EOT} markers)")
    return docs


def sample_documents(docs: Sequence[str], num_docs: int, seed: int = 0) -> list[str]:
    """``num_docs`` of ``docs`` (all, if fewer) picked with ``seed``, kept in file order."""
    if isinstance(num_docs, bool) or not isinstance(num_docs, int) or num_docs <= 0:
        raise UserError(f"--num_docs must be a positive integer, got {num_docs!r}")
    if len(docs) <= num_docs:
        return list(docs)
    picked = sorted(random.Random(seed).sample(range(len(docs)), num_docs))
    return [docs[i] for i in picked]


def load_documents(
    path: str | os.PathLike, num_docs: int, seed: int = 0, max_bytes: int | None = 100_000_000
) -> list[str]:
    """``sample_documents(read_documents(path, max_bytes), num_docs, seed)``."""
    sample_documents([], num_docs)  # check num_docs before reading
    return sample_documents(read_documents(path, max_bytes), num_docs, seed)


def leading_documents(docs: Sequence[str], max_bytes: int) -> list[str]:
    """The first documents of ``docs`` holding about ``max_bytes`` UTF-8 bytes (at least one)."""
    out, n = [], 0
    for d in docs:
        if out and n >= max_bytes:
            break
        out.append(d)
        n += len(d.encode("utf-8"))
    return out


def measure(
    tok: Tokenizer,
    docs: Sequence[str],
    *,
    name: str = "",
    input_name: str = "",
    project_gb: float | None = None,
    throughput_docs: Sequence[str] | None = None,
) -> TokenizerStats:
    """Compression on ``docs`` (each encoded on its own); single-process throughput timed on
    ``throughput_docs`` joined into one text (``<|endoftext|>`` between them when the tokenizer has
    it; default: the per-document encodes of ``docs``, though a few documents mostly measure a cold
    pre-token cache, so the CLI times a few MB instead)."""
    t0 = time.perf_counter()
    n_tokens = sum(len(tok.encode(d)) for d in docs)
    seconds = time.perf_counter() - t0
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    t_bytes = n_bytes
    if throughput_docs is not None:
        # One long text, as a corpus is tokenized (per-document calls add overhead a real run doesn't pay).
        sep = EOT if EOT in tok.special_tokens else "\n"
        text = sep.join(throughput_docs)
        t0 = time.perf_counter()
        tok.encode(text)
        seconds = time.perf_counter() - t0
        t_bytes = len(text.encode("utf-8"))
    rate = t_bytes / seconds if seconds > 0 else float("inf")
    return TokenizerStats(
        tokenizer=name,
        input=input_name,
        vocab_size=tok.vocab_size,
        num_docs=len(docs),
        bytes=n_bytes,
        tokens=n_tokens,
        bytes_per_token=n_bytes / n_tokens if n_tokens else float("nan"),
        seconds=seconds,
        bytes_per_s=rate,
        throughput_bytes=t_bytes,
        project_gb=project_gb,
        projected_s=(project_gb * 1e9 / rate) if project_gb is not None and rate > 0 else None,
    )


def longest_tokens(tok: Tokenizer, k: int = 5) -> list[tuple[int, bytes]]:
    """The ``k`` longest vocabulary entries by byte length (special tokens excluded), longest first."""
    specials = {s.encode("utf-8") for s in tok.special_tokens}
    entries = [(i, b) for i, b in tok.vocab.items() if b not in specials]
    entries.sort(key=lambda e: (-len(e[1]), e[0]))
    return entries[:k]


def compare(
    tokenizers: dict[str, Tokenizer],
    inputs: dict[str, list[str]],
    project_gb: float | None = None,
    throughput: dict[str, list[str]] | None = None,
) -> list[TokenizerStats]:
    """Every tokenizer on every input's sample (the same documents for all tokenizers); throughput
    timed on ``throughput[input]`` when given."""
    return [
        measure(tok, docs, name=tn, input_name=inp, project_gb=project_gb, throughput_docs=(throughput or {}).get(inp))
        for inp, docs in inputs.items()
        for tn, tok in tokenizers.items()
    ]


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _short(name: str, n: int) -> str:
    return name if len(name) <= n else "..." + name[-(n - 3) :]


def format_table(stats: Sequence[TokenizerStats]) -> str:
    proj = next((s.project_gb for s in stats if s.project_gb is not None), None)
    head = (
        f"{'tokenizer':<26}{'input':<36}{'vocab':>7}{'docs':>6}{'MB':>8}{'tokens':>10}{'bytes/tok':>10}{'MB/s':>7}"
        + (f"  {f'time for {proj:g} GB':>16}" if proj is not None else "")
    )
    lines = [head, "-" * len(head)]
    for s in stats:
        lines.append(
            f"{_short(s.tokenizer, 25):<26}{_short(s.input, 35):<36}{s.vocab_size:>7}{s.num_docs:>6}"
            f"{s.bytes / 1e6:>8.2f}{s.tokens:>10,}{s.bytes_per_token:>10.3f}{s.bytes_per_s / 1e6:>7.2f}"
            + (f"  {_duration(s.projected_s):>16}" if proj is not None else "")
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.tools.tokenizer_stats",
        description="Compression (bytes/token), throughput and longest tokens of BPE tokenizers on sampled documents.",
    )
    p.add_argument(
        "--tokenizer",
        action="append",
        required=True,
        metavar="DIR",
        help="tokenizer directory (vocab.json, merges.txt, special_tokens.json); repeat to compare",
    )
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="FILE",
        help="UTF-8 text with documents separated by <|endoftext|>; repeat for several corpora",
    )
    p.add_argument(
        "--num_docs", type=int, default=10, help="documents sampled per input (default: 10, as in the handout)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--max_mb", type=float, default=100.0, help="read at most this many MB of each input")
    p.add_argument(
        "--throughput_mb",
        type=float,
        default=2.0,
        help="time encoding on the first this-many MB of each input (default: 2)",
    )
    p.add_argument(
        "--project_gb", type=float, default=825.0, help="project the time to tokenize this many GB (the Pile: 825)"
    )
    p.add_argument("--top", type=int, default=5, help="longest tokens to list per tokenizer")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_docs <= 0:
        raise UserError(f"--num_docs must be a positive integer, got {args.num_docs}")
    if not args.max_mb > 0:
        raise UserError(f"--max_mb must be positive, got {args.max_mb}")
    if not args.project_gb > 0:
        raise UserError(f"--project_gb must be positive, got {args.project_gb}")
    if not args.throughput_mb > 0:
        raise UserError(f"--throughput_mb must be positive, got {args.throughput_mb}")
    if args.top < 0:
        raise UserError(f"--top must be >= 0, got {args.top}")
    tokenizers: dict[str, Tokenizer] = {}
    for d in args.tokenizer:
        name = Path(d).name or str(d)
        if name in tokenizers:
            name = str(d)
        tokenizers[name] = Tokenizer.from_dir(d)
    inputs, timed = {}, {}
    for f in args.input:
        docs = read_documents(f, int(args.max_mb * 1e6))
        inputs[f] = sample_documents(docs, args.num_docs, args.seed)
        timed[f] = leading_documents(docs, int(args.throughput_mb * 1e6))
    stats = compare(tokenizers, inputs, args.project_gb, timed)
    longest = {n: longest_tokens(t, args.top) for n, t in tokenizers.items()}
    if args.json:
        out = {
            "stats": [asdict(s) for s in stats],
            "longest_tokens": {
                n: [{"id": i, "bytes": len(b), "token": b.decode("utf-8", "replace")} for i, b in v]
                for n, v in longest.items()
            },
        }
        print(json.dumps(out, indent=2))
        return 0
    print(format_table(stats))
    mb = sorted({round(s.throughput_bytes / 1e6, 2) for s in stats})
    print(
        f"(bytes/tok on {args.num_docs} sampled documents; MB/s: one process encoding the first "
        f"{'/'.join(map(str, mb))} MB of each input; tokenize_data runs several workers)"
    )
    if args.top:
        for n, toks in longest.items():
            print(f"\nLongest tokens of {n}:")
            for i, b in toks:
                print(f"  {i:>7}  {len(b):>3} bytes  {b.decode('utf-8', 'replace')!r}  ({token_to_str(b)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
