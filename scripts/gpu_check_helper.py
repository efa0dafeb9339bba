#!/usr/bin/env python3
"""Helpers for scripts/gpu_check.sh: synthetic token data and one-line summaries of a run's metrics.

    python3 scripts/gpu_check_helper.py data OUT.npy --vocab 256 --tokens 200000 --seed 0
    python3 scripts/gpu_check_helper.py summary RUN_DIR [--skip_steps 10]
    python3 scripts/gpu_check_helper.py project RUN_DIR --tokens 327680000 [--skip_steps 10]
    python3 -m torch.distributed.run --standalone --nproc_per_node 1 scripts/gpu_check_helper.py collective --device cuda

Only numpy and the standard library (the check runs on a bare image with ``python3``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path


def make_data(out: Path, vocab: int, tokens: int, seed: int) -> None:
    """Learnable synthetic ids: runs of x[t+1] = (5 x[t] + 3) mod vocab from random starts.

    Random ids would keep the loss at ln(vocab) whatever the precision does; a bigram rule lets a
    tiny model's loss fall within a few dozen steps, so a broken dtype path shows as a flat curve.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.empty(tokens, dtype=np.int64)
    t = 0
    while t < tokens:
        n = min(int(rng.integers(16, 64)), tokens - t)
        x = int(rng.integers(0, vocab))
        for i in range(n):
            ids[t + i] = x
            x = (5 * x + 3) % vocab
        t += n
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, ids.astype(np.uint16 if vocab <= 65536 else np.int32))


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl" if run_dir.is_dir() else run_dir
    recs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            recs.append(rec)
    return recs


def _stats(run_dir: Path, skip_steps: int) -> dict:
    recs = _records(run_dir)
    train = [r for r in recs if r.get("type") == "train" and isinstance(r.get("loss"), (int, float))]
    if not train:
        raise SystemExit(f"{run_dir}: no train records in metrics.jsonl")
    final = [r for r in recs if r.get("type") in ("final", "eval") and isinstance(r.get("val_loss"), (int, float))]
    # Each train record's tokens/s covers the steps since the previous one; the first intervals
    # include compilation and CUDA warm-up, so they are left out when later ones exist.
    steady = [
        r["tokens_per_sec"]
        for r in train
        if r["step"] > skip_steps and isinstance(r.get("tokens_per_sec"), (int, float))
    ]
    if not steady:
        steady = [r["tokens_per_sec"] for r in train[-1:] if isinstance(r.get("tokens_per_sec"), (int, float))]
    mfu = [r["mfu"] for r in train if r["step"] > skip_steps and isinstance(r.get("mfu"), (int, float))]
    nonfinite = [r for r in recs if r.get("type") == "event" and r.get("event") == "nonfinite"]
    return {
        "nonfinite_steps": len(nonfinite),
        "first_step": train[0]["step"],
        "first_loss": train[0]["loss"],
        "last_step": train[-1]["step"],
        "last_loss": train[-1]["loss"],
        "val_loss": final[-1]["val_loss"] if final else None,
        "tok_s": statistics.median(steady) if steady else None,
        "n_intervals": len(steady),
        "mfu": statistics.median(mfu) if mfu else None,
    }


def summary(run_dir: Path, skip_steps: int, expect_drop: float = 0.5) -> str:
    s = _stats(run_dir, skip_steps)
    ok = math.isfinite(s["last_loss"])
    learned = expect_drop <= 0 or s["last_loss"] < s["first_loss"] - expect_drop
    parts = [
        f"train loss {s['first_loss']:.3f} (step {s['first_step']}) -> {s['last_loss']:.3f} (step {s['last_step']})"
        + ("" if learned else f" [did not fall by {expect_drop:g}]")
    ]
    if s["val_loss"] is not None:
        parts.append(f"val loss {s['val_loss']:.3f}")
    if s["tok_s"] is not None:
        parts.append(f"{s['tok_s']:,.0f} tok/s (median of {s['n_intervals']} logged intervals after step {skip_steps})")
    if s["mfu"] is not None:
        parts.append(f"MFU {100 * s['mfu']:.1f}%")
    if s["nonfinite_steps"]:
        parts.append(f"{s['nonfinite_steps']} NON-FINITE STEP(S) skipped")
    if not ok:
        parts.append("NON-FINITE LOSS")
    return ", ".join(parts)


def project(run_dir: Path, tokens: int, skip_steps: int) -> str:
    s = _stats(run_dir, skip_steps)
    if not s["tok_s"]:
        raise SystemExit(f"{run_dir}: no tokens/s recorded")
    secs = tokens / s["tok_s"]
    mfu = f", MFU {100 * s['mfu']:.1f}%" if s["mfu"] is not None else ""
    return (
        f"{s['tok_s']:,.0f} tok/s (median of {s['n_intervals']} logged intervals after step {skip_steps}{mfu}) "
        f"-> {tokens:,} tokens in {secs / 60:.1f} min ({secs / 3600:.2f} h); "
        f"train loss {s['last_loss']:.3f} at step {s['last_step']}"
    )


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(run_dir) if r.get("type") == "train" and "loss" in r}


def compare(run_a: Path, run_b: Path, skip_steps: int, label_a: str, label_b: str, rtol: float = 0.0) -> str:
    """Tokens/s of two runs of the same shape side by side (e.g. the loop with and without prefetch),
    and whether they trained the same: every logged loss equal (``rtol=0``), or within ``rtol`` of each
    other (on CUDA, where compiled scatter-adds use atomics and the last bits vary from run to run)."""
    a, b = _stats(run_a, skip_steps), _stats(run_b, skip_steps)
    if not a["tok_s"] or not b["tok_s"]:
        raise SystemExit(f"{run_a} / {run_b}: no tokens/s recorded")
    la, lb = _losses(run_a), _losses(run_b)
    steps = sorted(set(la) & set(lb))
    worst = max((abs(la[t] - lb[t]) / max(abs(lb[t]), 1e-12) for t in steps), default=math.inf)
    if worst == 0.0:
        same = f"the same loss at all {len(steps)} logged steps"
    elif worst <= rtol:
        same = f"losses within {worst:.1e} (relative) of each other at all {len(steps)} logged steps (rtol {rtol:g})"
    else:
        same = f"LOSSES DIFFER by up to {worst:.1e} relative (last {a['last_loss']!r} vs {b['last_loss']!r})"
    return (
        f"{label_a} {a['tok_s']:,.0f} tok/s, {label_b} {b['tok_s']:,.0f} tok/s "
        f"({a['tok_s'] / b['tok_s']:.3f}x; medians after step {skip_steps}); {same}"
    )


def collective(device: str) -> str:
    """Join a process group (nccl on CUDA, gloo on CPU) under torchrun and all-reduce a tensor.

    The trainer treats a world of one as a single process and never creates a group, so on a
    one-GPU machine this is what shows that the NCCL library itself works in this image.
    """
    import os

    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dev = (
        torch.device(device, int(os.environ.get("LOCAL_RANK", 0))) if device.startswith("cuda") else torch.device("cpu")
    )
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        x = torch.full((1024,), float(rank + 1), device=dev)
        dist.all_reduce(x)
        expect = world * (world + 1) / 2
        ok = bool(torch.all(x == expect))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if not ok:
        raise SystemExit(f"all_reduce gave {x[0].item()}, expected {expect}")
    return f"{backend} all_reduce over {world} process(es) on {dev}: ok"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check_helper.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("out", type=Path)
    d.add_argument("--vocab", type=int, required=True)
    d.add_argument("--tokens", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    for name in ("summary", "project"):
        s = sub.add_parser(name)
        s.add_argument("run_dir", type=Path)
        s.add_argument("--skip_steps", type=int, default=10)
        if name == "summary":
            s.add_argument(
                "--expect_drop", type=float, default=0.5, help="flag a run whose loss fell less (0: no check)"
            )
        if name == "project":
            s.add_argument("--tokens", type=int, required=True)
    c = sub.add_parser("collective")
    c.add_argument("--device", default="cuda")
    cmp = sub.add_parser("compare")
    cmp.add_argument("run_a", type=Path)
    cmp.add_argument("run_b", type=Path)
    cmp.add_argument("--skip_steps", type=int, default=10)
    cmp.add_argument("--labels", nargs=2, default=["A", "B"])
    cmp.add_argument("--rtol", type=float, default=0.0, help="relative loss difference allowed (default: none)")
    a = p.parse_args(argv)
    try:
        if a.cmd == "data":
            make_data(a.out, a.vocab, a.tokens, a.seed)
            print(f"wrote {a.tokens:,} synthetic ids (vocab {a.vocab}) to {a.out}")
        elif a.cmd == "collective":
            print(collective(a.device))
        elif a.cmd == "summary":
            print(summary(a.run_dir, a.skip_steps, a.expect_drop))
        elif a.cmd == "compare":
            line = compare(a.run_a, a.run_b, a.skip_steps, *a.labels, rtol=a.rtol)
            print(line)
            if "DIFFER" in line:
                return 1
        else:
            print(project(a.run_dir, a.tokens, a.skip_steps))
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
