"""Benchmark the tokenizer: training vs rustbpe and HF tokenizers, encoding vs tiktoken.

    uv run --group bench python scripts/bench_tokenizer.py --input data/gcide40.txt --vocab_size 10000
    uv run --group bench python scripts/bench_tokenizer.py --input data/gcide40.txt --vocab_size 32000 \
        --long_tail 0.3 --skip_encode

1. Trains BPE with the project (its two phases, ``count_pretokens`` and ``merge_pretokens``, timed
   separately), with ``rustbpe`` (nanochat's Rust trainer, when installed: the bench group) and with
   HF ``tokenizers`` (byte-level BPE with the same GPT-2 regex, same specials, same vocab size),
   each in a fresh subprocess so its peak RSS (the whole process tree, sampled with psutil) is
   clean. Reports wall time, peak RSS, the ratios and how many merges agree at the same rank.
   ``--long_tail F`` first rewrites the input with a fraction F of its words given a random
   suffix (seeded): a corpus with many rare pre-tokens, like web text, where the merge loop
   dominates.
2. Encodes the whole file with Tokenizer.encode (one process, cold cache), with tokenize_data (all
   cores) and with tiktoken (one thread) using an Encoding built from the project's merges;
   reports MB/s, ratios, and whether all three id sequences agree.
3. Prints a markdown table for docs/benchmarks.md.

Timings are wall-clock and depend on whatever else runs on the machine, so CPU-time figures are
printed beside them as a load-independent cross-check: MB / CPU-seconds for the single-threaded
encoders, and for tokenize_data MB / ((workers' + parent's CPU seconds) / workers), i.e. the wall
time it would take with the cores to itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cs336_basics.fast.pretokenize import GPT2_PAT, available_cpus  # noqa: E402
from cs336_basics.interop.gpt2_files import EOT  # noqa: E402

# ---------------------------------------------------------------------- child processes
_TRAIN_PROJECT_PHASES = r"""
import json, sys, time
from cs336_basics.fast.bpe import build_vocab, count_pretokens, merge_pretokens
from cs336_basics.fast.tokenizer import Tokenizer
inp, vocab_size, specials, out = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
counts = count_pretokens(inp, specials)
t1 = time.perf_counter()
distinct = len(counts)
merges = merge_pretokens(counts, vocab_size - 256 - len(specials), free_counts=True)
t2 = time.perf_counter()
vocab = build_vocab(specials, merges)
Tokenizer(vocab, merges, specials).save(out)
print(json.dumps({"seconds": t2 - t0, "count_s": t1 - t0, "merge_s": t2 - t1, "distinct": distinct,
                  "vocab": len(vocab), "merges": len(merges)}))
"""

# rustbpe has no special tokens: it gets the text between them, in pieces cut at safe cuts (so its
# pre-tokens are exactly ours) and the vocabulary size less the specials.
_TRAIN_RUSTBPE = r"""
import json, sys, time
import rustbpe
from cs336_basics.fast.pretokenize import find_chunk_boundaries, special_pattern, split_on_specials
inp, vocab_size, specials, out, pat = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
t0 = time.perf_counter()
def pieces():
    sp = special_pattern(specials)
    with open(inp, "rb") as f:
        size = f.seek(0, 2)
        bounds = find_chunk_boundaries(f, max(1, size >> 16), [s.encode() for s in specials])
        for a, b in zip(bounds, bounds[1:]):
            f.seek(a)
            for piece, is_special in split_on_specials(f.read(b - a).decode("utf-8"), sp):
                if not is_special:
                    yield piece
tok = rustbpe.Tokenizer()
tok.train_from_iterator(pieces(), vocab_size - len(specials), pattern=pat)
dt = time.perf_counter() - t0
ranks = sorted(tok.get_mergeable_ranks(), key=lambda kv: kv[1])
with open(out, "w") as f:
    json.dump([b.hex() for b, i in ranks if i >= 256], f)
print(json.dumps({"seconds": dt, "vocab": tok.vocab_size + len(specials)}))
"""

_TRAIN_HF = r"""
import json, sys, time
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
inp, vocab_size, specials, out = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
pat = sys.argv[5]
t0 = time.perf_counter()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(pat), behavior="isolated"),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
])
trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train([inp], trainer)
dt = time.perf_counter() - t0
tok.model.save(out)
print(json.dumps({"seconds": dt, "vocab": tok.get_vocab_size()}))
"""


def run_measured(code: str, args: list[str]) -> dict:
    """Run ``python -c code args`` and sample the RSS of its whole process tree (psutil)."""
    import psutil

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = 0
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss
            for c in proc.children(recursive=True):
                try:
                    rss += c.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    res = json.loads(out.decode().strip().splitlines()[-1])
    res["peak_rss_mb"] = peak / 2**20
    res["wall_with_startup"] = wall
    return res


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="UTF-8 text file")
    p.add_argument("--vocab_size", type=int, default=10000)
    p.add_argument("--special_tokens", nargs="*", default=[EOT])
    p.add_argument("--workers", type=int, default=None, help="tokenize_data workers (default: all cores)")
    p.add_argument("--tokenizer_dir", default=None, help="skip training; use this saved tokenizer for encoding")
    p.add_argument("--skip_hf", action="store_true", help="skip the HF training comparison")
    p.add_argument("--skip_rustbpe", action="store_true", help="skip the rustbpe training comparison")
    p.add_argument("--skip_encode", action="store_true", help="training only")
    p.add_argument(
        "--long_tail", type=float, default=0.0, metavar="F", help="first give a fraction F of the words a random suffix"
    )
    args = p.parse_args(argv)

    import numpy as np
    import tiktoken

    from cs336_basics.fast.tokenizer import Tokenizer
    from cs336_basics.tokenize_data import tokenize_file

    inp = Path(args.input)
    size_mb = inp.stat().st_size / 1e6
    work = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    specials_json = json.dumps(args.special_tokens)
    rows: list[tuple[str, str, str, str]] = []
    print(
        f"input: {inp} ({size_mb:.1f} MB), vocab_size {args.vocab_size}, specials {args.special_tokens}, "
        f"cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    # ---------------- training
    if args.long_tail:
        inp = make_long_tail(inp, work / f"long_tail_{args.long_tail}.txt", args.long_tail)
        size_mb = inp.stat().st_size / 1e6
        print(f"long-tail corpus: {inp} ({size_mb:.1f} MB, {args.long_tail:.0%} of words with a random suffix)")
    tok_dir = Path(args.tokenizer_dir) if args.tokenizer_dir else work / "project_tok"
    if not args.tokenizer_dir:
        ours = run_measured(_TRAIN_PROJECT_PHASES, [str(inp), str(args.vocab_size), specials_json, str(tok_dir)])
        print(
            f"train  project: {ours['seconds']:.1f} s (count {ours['count_s']:.1f} s + merge {ours['merge_s']:.1f} s, "
            f"{ours['distinct']:,} distinct pre-tokens, {ours['merges']:,} merges), "
            f"peak RSS {ours['peak_rss_mb']:.0f} MiB",
            flush=True,
        )
        rows.append(
            (
                "train BPE: project `train_bpe` (count + merge)",
                f"{ours['seconds']:.1f} s ({ours['count_s']:.1f} + {ours['merge_s']:.1f})",
                f"{ours['peak_rss_mb']:,.0f} MiB",
                "",
            )
        )
        ours_tokens = [
            "".join(line.split(" "))
            for line in (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")
        ]
        peers = []
        if not args.skip_rustbpe and importlib.util.find_spec("rustbpe") is not None:
            rb_out = work / "rustbpe_tokens.json"
            rb = run_measured(_TRAIN_RUSTBPE, [str(inp), str(args.vocab_size), specials_json, str(rb_out), GPT2_PAT])
            peers.append(("rustbpe", "rustbpe (Rust, all threads)", rb))
            try:
                from cs336_basics.interop.gpt2_files import token_to_str

                rb_tokens = [token_to_str(bytes.fromhex(h)) for h in json.loads(rb_out.read_text())]
                same = sum(a == b for a, b in zip(ours_tokens, rb_tokens))
                print(
                    f"       rustbpe tokens identical at the same rank: {same}/{min(len(ours_tokens), len(rb_tokens))}"
                )
            except (OSError, ValueError):
                pass
        elif not args.skip_rustbpe:
            print("train  rustbpe: not installed (uv sync --group bench); skipped")
        if not args.skip_hf:
            hf_dir = work / "hf_tok"
            hf_dir.mkdir()
            hf = run_measured(_TRAIN_HF, [str(inp), str(args.vocab_size), specials_json, str(hf_dir), GPT2_PAT])
            peers.append(("HF", "HF `tokenizers` (Rust, all threads)", hf))
            try:  # how similar are the learned merges? (tie-breaking rules differ)
                hf_m = [
                    line
                    for line in (hf_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
                    if line and not line.startswith("#")
                ]
                hf_tokens = ["".join(m.split(" ")) for m in hf_m]
                same = sum(a == b for a, b in zip(ours_tokens, hf_tokens))
                print(
                    f"       HF tokens identical at the same rank: {same}/{min(len(ours_tokens), len(hf_tokens))}; "
                    f"same set: {len(set(ours_tokens) & set(hf_tokens))}/{len(ours_tokens)}"
                )
            except OSError:
                pass
        for short, label, res in peers:
            print(f"train  {label}: {res['seconds']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MiB", flush=True)
            rows.append((f"train BPE: {label}", f"{res['seconds']:.1f} s", f"{res['peak_rss_mb']:,.0f} MiB", ""))
            rows.append(
                (
                    f"project / {short}",
                    f"{ours['seconds'] / res['seconds']:.2f}x time",
                    f"{ours['peak_rss_mb'] / res['peak_rss_mb']:.2f}x RSS",
                    "",
                )
            )
    if args.skip_encode:
        print_table(inp, size_mb, args, rows, None)
        return 0

    # ---------------- encoding
    text = inp.read_bytes().decode("utf-8")
    tok = Tokenizer.from_dir(tok_dir)
    specials = set(tok.special_tokens)
    ranks = {b: i for i, b in tok.vocab.items() if b.decode("utf-8", "replace") not in specials}
    enc = tiktoken.Encoding(
        name="bench",
        pat_str=GPT2_PAT,
        mergeable_ranks=ranks,
        special_tokens={s: tok.token_id(s) for s in tok.special_tokens},
    )

    t0, c0 = time.perf_counter(), time.process_time()
    ids_tt = enc.encode(text, allowed_special="all")
    tt_wall, tt_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"encode tiktoken (1 thread): {size_mb / tt_wall:.2f} MB/s wall, {size_mb / tt_cpu:.2f} MB/s CPU", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    ids_ours = tok.encode(text)
    en_wall, en_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"encode Tokenizer.encode (1 process, cold cache): {size_mb / en_wall:.2f} MB/s wall, "
        f"{size_mb / en_cpu:.2f} MB/s CPU",
        flush=True,
    )

    import resource

    out = work / "ids.npy"
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, c0 = time.perf_counter(), time.process_time()
    n = tokenize_file(tok_dir, inp, out, num_workers=args.workers)
    td_wall, td_parent = time.perf_counter() - t0, time.process_time() - c0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    td_workers = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    ids_td = np.load(out, mmap_mode="r")
    workers = args.workers or available_cpus()
    # What the wall time would be with the cores to ourselves: total CPU spread over the workers.
    td_est = max((td_workers + td_parent) / workers, td_parent)
    print(
        f"encode tokenize_data ({workers} workers): {size_mb / td_wall:.2f} MB/s wall; CPU {td_workers:.1f} s "
        f"workers + {td_parent:.1f} s parent -> {size_mb / td_est:.2f} MB/s if the {workers} cores were idle",
        flush=True,
    )

    agree_enc = ids_ours == ids_tt
    agree_td = n == len(ids_tt) and bool(np.array_equal(np.asarray(ids_td), np.asarray(ids_tt, dtype=ids_td.dtype)))
    print(
        f"ids agree: Tokenizer.encode == tiktoken: {agree_enc}; tokenize_data == tiktoken: {agree_td}; "
        f"{len(ids_tt):,} tokens ({len(text.encode()) / max(len(ids_tt), 1):.2f} bytes/token)"
    )

    tt_mbs, tt_cpu_mbs = size_mb / tt_wall, size_mb / tt_cpu
    rows.append(
        ("encode: tiktoken, 1 thread (same merges)", f"{tt_mbs:.1f} MB/s wall ({tt_cpu_mbs:.1f} MB/s CPU)", "", "1.00x")
    )
    rows.append(
        (
            "encode: `Tokenizer.encode`, 1 process, cold cache",
            f"{size_mb / en_wall:.1f} MB/s wall ({size_mb / en_cpu:.1f} MB/s CPU)",
            "",
            f"{size_mb / en_wall / tt_mbs:.2f}x wall ({size_mb / en_cpu / tt_cpu_mbs:.2f}x CPU)",
        )
    )
    rows.append(
        (
            f"encode: `tokenize_data`, {workers} workers",
            f"{size_mb / td_wall:.1f} MB/s wall ({size_mb / td_est:.1f} MB/s CPU-based)",
            "",
            f"{size_mb / td_wall / tt_mbs:.2f}x wall ({size_mb / td_est / tt_cpu_mbs:.2f}x CPU-based)",
        )
    )

    print_table(inp, size_mb, args, rows, agree_enc and agree_td)
    ok = agree_enc and agree_td
    for f in work.rglob("*"):
        if f.is_file():
            f.unlink()
    return 0 if ok else 1


def print_table(inp: Path, size_mb: float, args, rows: list, agree: bool | None) -> None:
    print()
    same = "" if agree is None else f" (ids identical to tiktoken: {'yes' if agree else 'NO'})"
    print(
        f"Tokenizer benchmark: {inp.name}, {size_mb:.1f} MB, vocab {args.vocab_size}, {os.cpu_count()} CPUs, "
        f"load avg {os.getloadavg()[0]:.1f}{same}"
    )
    print()
    print("| step | time / speed | peak RSS | vs tiktoken |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def make_long_tail(src: Path, dst: Path, fraction: float, seed: int = 0) -> Path:
    """``src`` with a ``fraction`` of its letter runs given a random 2-6 letter suffix (seeded):
    many more distinct, rare pre-tokens, as in web text."""
    import random
    import re

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def suffix(m: re.Match) -> str:
        if rng.random() >= fraction:
            return m.group()
        return m.group() + "".join(rng.choices(letters, k=rng.randint(2, 6)))

    text = src.read_text(encoding="utf-8")
    dst.write_text(re.sub(r"[A-Za-z]+", suffix, text), encoding="utf-8")
    return dst


if __name__ == "__main__":
    raise SystemExit(main())
