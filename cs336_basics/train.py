"""A plain training loop (handout section 5.3): the textbook's pieces, one process, top to bottom.

    python -m cs336_basics.train --train_data data/ts-train.npy --val_data data/ts-valid.npy \\
        --vocab_size 10000 --max_iters 5000 --checkpoint runs/plain/ckpt.pt

Token files are 1-D ``.npy`` arrays of ids (``tokenize_data`` writes them), memory-mapped. Each step
draws a batch of random windows, computes the cross-entropy of the next tokens, backpropagates, clips
the gradient's global norm and takes an AdamW step at the cosine schedule's learning rate. Every
``--eval_interval`` steps it prints the mean loss over ``--eval_iters`` validation batches and saves a
checkpoint; ``--resume`` continues from that checkpoint (after a resume the batches are drawn from a
new stream, so the run is not bit-for-bit the uninterrupted one). Norm gains get no weight decay.

``python -m cs336_basics.training_together`` is the engine's training program: with ``--attention plain
--embedding plain`` it builds this model and logs the same losses (``tests/test_train_plain_loop.py``),
and it adds mixed precision, compilation, several GPUs, exact resume, logging and much more.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from cs336_basics.checkpoint import load_checkpoint, save_checkpoint
from cs336_basics.data import get_batch
from cs336_basics.model import TransformerLM
from cs336_basics.nn_utils import clip_grad_norm, cross_entropy
from cs336_basics.optim import AdamW, lr_cosine_schedule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cs336_basics.train", description=__doc__.splitlines()[0])
    p.add_argument("--train_data", required=True, help="training token ids (.npy)")
    p.add_argument("--val_data", default=None, help="validation token ids (.npy); without it, no evaluation")
    for name, default in [("vocab_size", 10000), ("context_length", 256), ("d_model", 512), ("num_layers", 4),
                          ("num_heads", 16), ("d_ff", 1344), ("batch_size", 32), ("max_iters", 5000),
                          ("warmup_iters", 100), ("eval_interval", 500), ("eval_iters", 20), ("log_interval", 100),
                          ("seed", 42)]:  # fmt: skip
        p.add_argument(f"--{name}", type=int, default=default, help=f"(default: {default})")
    for name, default in [("rope_theta", 10000.0), ("lr", 1e-3), ("min_lr", None), ("weight_decay", 0.1),
                          ("beta1", 0.9), ("beta2", 0.95), ("eps", 1e-8), ("grad_clip", 1.0)]:  # fmt: skip
        p.add_argument(f"--{name}", type=float, default=default, help=f"(default: {default or 'lr / 10'})")
    p.add_argument("--checkpoint", default="runs/plain/ckpt.pt", help="where checkpoints go (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


@torch.no_grad()
def evaluate(model: TransformerLM, data: np.ndarray, args: argparse.Namespace) -> float:
    """Mean loss over ``eval_iters`` batches, the same ones at every evaluation (a fixed generator)."""
    model.eval()
    rng = np.random.default_rng(args.seed + 1)
    losses = [cross_entropy(model(x), y).item() for x, y in (
        get_batch(data, args.batch_size, args.context_length, args.device, rng) for _ in range(args.eval_iters))]  # fmt: skip
    model.train()
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    min_lr = args.lr / 10 if args.min_lr is None else args.min_lr
    torch.manual_seed(args.seed)
    train_data = np.load(args.train_data, mmap_mode="r")
    val_data = np.load(args.val_data, mmap_mode="r") if args.val_data else None
    model = TransformerLM(args.vocab_size, args.context_length, args.d_model, args.num_layers, args.num_heads,
                          args.d_ff, args.rope_theta, device=args.device)  # fmt: skip
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # fmt: skip
    optimizer = AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)
    start = 0
    if args.resume:
        start = load_checkpoint(args.checkpoint, model, optimizer)
        print(f"resumed from {args.checkpoint} at step {start}")
    rng = np.random.Generator(np.random.PCG64(args.seed if start == 0 else [args.seed, start]))
    print(f"{sum(p.numel() for p in params):,} parameters; training steps {start}..{args.max_iters} on {args.device}")

    t0 = time.time()
    for it in range(start, args.max_iters):
        lr = lr_cosine_schedule(it, args.lr, min_lr, args.warmup_iters, args.max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, args.batch_size, args.context_length, args.device, rng)
        loss = cross_entropy(model(x), y)
        loss.backward()
        clip_grad_norm(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        step = it + 1
        if step == 1 or step % args.log_interval == 0:
            print(f"step {step:6d} | loss {loss.item():.6f} | lr {lr:.3e} | {time.time() - t0:.1f}s", flush=True)
        if step % args.eval_interval == 0 or step == args.max_iters:
            if val_data is not None:
                print(f"step {step:6d} | val loss {evaluate(model, val_data, args):.4f}", flush=True)
            os.makedirs(os.path.dirname(args.checkpoint) or ".", exist_ok=True)
            save_checkpoint(model, optimizer, step, args.checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
