"""Benchmark the tokenizer: training vs HF tokenizers, encoding vs tiktoken.

    uv run --group bench python scripts/bench_tokenizer.py --input data/gcide40.txt --vocab_size 10000

1. Trains BPE with the project (cs336_basics.bpe.train_bpe) and with HF ``tokenizers`` (byte-level
   BPE with the same GPT-2 regex, same specials, same vocab size), each in a fresh subprocess so
   its peak RSS (the whole process tree, sampled with psutil) is clean. Reports wall time, peak
   RSS and the ratio.
2. Encodes the whole file with Tokenizer.encode (one process, cold cache), with tokenize_data (all
   cores) and with tiktoken (one thread) using an Encoding built from the project's merges;
   reports MB/s, ratios, and whether all three id sequences agree.
3. Prints a markdown table for the README.

Timings are wall-clock and depend on whatever else runs on the machine, so CPU-time figures are
printed beside them as a load-independent cross-check: MB / CPU-seconds for the single-threaded
encoders, and for tokenize_data MB / ((workers' + parent's CPU seconds) / workers), i.e. the wall
time it would take with the cores to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cs336_basics.pretokenize import GPT2_PAT, available_cpus  # noqa: E402

# ---------------------------------------------------------------------- child processes
_TRAIN_PROJECT = r"""
import json, sys, time
from cs336_basics.bpe import train_bpe
from cs336_basics.tokenizer import Tokenizer
inp, vocab_size, specials, out = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
vocab, merges = train_bpe(inp, vocab_size, specials)
dt = time.perf_counter() - t0
Tokenizer(vocab, merges, specials).save(out)
print(json.dumps({"seconds": dt, "vocab": len(vocab), "merges": len(merges)}))
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
    p.add_argument("--special_tokens", nargs="*", default=["<|endoftext|>"])
    p.add_argument("--workers", type=int, default=None, help="tokenize_data workers (default: all cores)")
    p.add_argument("--tokenizer_dir", default=None, help="skip training; use this saved tokenizer for encoding")
    p.add_argument("--skip_hf", action="store_true", help="skip the HF training comparison")
    args = p.parse_args(argv)

    import numpy as np
    import tiktoken

    from cs336_basics.tokenize_data import tokenize_file
    from cs336_basics.tokenizer import Tokenizer

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
    tok_dir = Path(args.tokenizer_dir) if args.tokenizer_dir else work / "project_tok"
    if not args.tokenizer_dir:
        ours = run_measured(_TRAIN_PROJECT, [str(inp), str(args.vocab_size), specials_json, str(tok_dir)])
        print(f"train  project: {ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MiB", flush=True)
        rows.append(
            ("train BPE: project `train_bpe`", f"{ours['seconds']:.1f} s", f"{ours['peak_rss_mb']:,.0f} MiB", "")
        )
        if not args.skip_hf:
            hf_dir = work / "hf_tok"
            hf_dir.mkdir()
            hf = run_measured(_TRAIN_HF, [str(inp), str(args.vocab_size), specials_json, str(hf_dir), GPT2_PAT])
            print(f"train  HF tokenizers: {hf['seconds']:.1f} s, peak RSS {hf['peak_rss_mb']:.0f} MiB", flush=True)
            rows.append(
                (
                    "train BPE: HF `tokenizers` (Rust, all threads)",
                    f"{hf['seconds']:.1f} s",
                    f"{hf['peak_rss_mb']:,.0f} MiB",
                    "",
                )
            )
            ratio_t = ours["seconds"] / hf["seconds"]
            ratio_m = ours["peak_rss_mb"] / hf["peak_rss_mb"]
            rows.append(("project / HF", f"{ratio_t:.2f}x time", f"{ratio_m:.2f}x RSS", ""))
            try:  # how similar are the learned merges? (tie-breaking rules differ)
                ours_m = [line for line in (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]]
                hf_m = [
                    line
                    for line in (hf_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
                    if line and not line.startswith("#")
                ]
                same = sum(a == b for a, b in zip(ours_m, hf_m))
                print(
                    f"       merges identical at the same rank: {same}/{min(len(ours_m), len(hf_m))}; "
                    f"same set: {len(set(ours_m) & set(hf_m))}/{len(ours_m)}"
                )
            except OSError:
                pass

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

    print()
    print(
        f"Tokenizer benchmark: {inp.name}, {size_mb:.1f} MB, vocab {args.vocab_size}, {os.cpu_count()} CPUs "
        f"(ids identical to tiktoken: {'yes' if agree_enc and agree_td else 'NO'})"
    )
    print()
    print("| step | time / speed | peak RSS | vs tiktoken |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    ok = agree_enc and agree_td
    for f in work.rglob("*"):
        if f.is_file():
            f.unlink()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
