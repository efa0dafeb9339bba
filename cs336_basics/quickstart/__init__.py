"""The whole pipeline in one command, offline, in a few minutes on a laptop CPU.

    uv run python -m cs336_basics.quickstart

1. data:      ``data/TinyStoriesV2-GPT4-{train,valid}.txt`` if present (a prefix of them), else a
              synthetic children's-story corpus generated on the spot (cs336_basics.quickstart.storygen);
2. tokenizer: byte-level BPE trained on it (bpe.train_bpe), saved with Tokenizer.save;
3. tokens:    train/valid text -> ``.npy`` id arrays (tokenize_data.tokenize_file);
4. training:  a small Transformer LM with the real training program (training_together.main);
5. samples:   a few stories from the trained model, plus where everything is and what to run next.

Everything lands in ``--out`` (default ``runs/quickstart/``). ``--quick`` is a seconds-long smoke
mode (tiny corpus and model) used by the tests. The synthetic corpus comes from :mod:`storygen`
beside this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cs336_basics.interop.gpt2_files import EOT
from cs336_basics.lm.model import ModelConfig
from cs336_basics.training.settings import model_flags
from cs336_basics.utils.errors import UserError, os_reason

MARKER = ".quickstart"  # marks a directory the quickstart made (so it may clean it on a re-run)
TINYSTORIES = ("data/TinyStoriesV2-GPT4-train.txt", "data/TinyStoriesV2-GPT4-valid.txt")
PROMPTS = ["Once upon a time", "One day, a little", "Lily and Tom went to the park."]


@dataclass
class Settings:
    """What one quickstart run trains; ``--quick`` swaps in the tiny preset."""

    num_train_stories: int = 6000  # synthetic corpus (~3.6 MB)
    num_valid_stories: int = 300
    max_train_mb: float = 6.0  # prefix of real TinyStories to use
    max_valid_mb: float = 0.5
    vocab_size: int | None = None  # default: 1024 synthetic, 2048 real text (the model's is the tokenizer's)
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(context_length=128, d_model=128, num_layers=4, num_heads=4, d_ff=384)
    )
    batch_size: int = 32
    max_iters: int = 300
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 30
    eval_interval: int = 100
    eval_iters: int = 20
    log_interval: int = 25
    sample_tokens: int = 200  # generation stops earlier at <|endoftext|>


QUICK = Settings(
    num_train_stories=300,
    num_valid_stories=40,
    max_train_mb=0.3,
    max_valid_mb=0.05,
    vocab_size=300,
    model=ModelConfig(context_length=64, d_model=64, num_layers=2, num_heads=2, d_ff=128),
    batch_size=8,
    max_iters=20,
    lr=5e-3,
    min_lr=5e-4,
    warmup_iters=2,
    eval_interval=10,
    eval_iters=4,
    log_interval=5,
    sample_tokens=30,
)


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _copy_prefix(src: Path, dst: Path, max_bytes: int) -> int:
    """Copy at most ``max_bytes`` of ``src``, cut just after the last complete ``<|endoftext|>``
    (so no story is cut in half and no UTF-8 character is split). Returns bytes written."""
    with open(src, "rb") as f:
        data = f.read(max_bytes)
        more = bool(f.read(1))
    if more:
        cut = data.rfind(EOT.encode())
        if cut > 0:
            data = data[: cut + len(EOT)] + b"\n"
        else:  # no separator at all in the prefix: cut at the last newline
            cut = data.rfind(b"\n")
            data = data[: cut + 1] if cut > 0 else data
    text = data.decode("utf-8", errors="ignore")  # drops a partial trailing char, if any
    dst.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def _prepare_out_dir(out: Path) -> None:
    """Create ``out``; clean a previous quickstart run there, but never a directory we did not make."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out {out}: directory exists and was not made by the quickstart; pick another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for sub in ("model", "tokenizer"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
        (out / MARKER).write_text("made by python -m cs336_basics.quickstart; safe to delete\n")
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({os_reason(err)})") from None


def _read_metrics(path: Path) -> list[dict]:
    recs = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return recs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.quickstart",
        description="Train a tiny story model end to end (data -> BPE -> tokens -> training -> samples), offline.",
    )
    p.add_argument("--out", default="runs/quickstart", help="run directory for every artifact (default: %(default)s)")
    p.add_argument(
        "--train",
        default=None,
        help="training text (default: data/TinyStoriesV2-GPT4-train.txt if present, else synthetic stories)",
    )
    p.add_argument("--valid", default=None, help="validation text (default: alongside --train, or synthetic)")
    p.add_argument(
        "--synthetic", action="store_true", help="use the synthetic story corpus even if TinyStories is present"
    )
    p.add_argument("--max_iters", type=int, default=None, help="optimizer steps (default: 300; --quick: 20)")
    p.add_argument(
        "--vocab_size", type=int, default=None, help="BPE vocabulary size (default: 1024 synthetic, 2048 real text)"
    )
    p.add_argument("--max_train_mb", type=float, default=None, help="use at most this many MB of --train (default: 6)")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run: tiny corpus, tiny model, 20 steps")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, ... (default: %(default)s)")
    p.add_argument("--num_samples", type=int, default=3, help="stories to print at the end (default: %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    st = Settings(**vars(QUICK)) if args.quick else Settings()
    if args.max_iters is not None:
        if args.max_iters < 1:
            raise UserError(f"--max_iters must be >= 1, got {args.max_iters}")
        st.max_iters = args.max_iters
        st.warmup_iters = min(st.warmup_iters, max(1, st.max_iters // 10))
        st.eval_interval = min(st.eval_interval, st.max_iters)
    if args.max_train_mb is not None:
        if args.max_train_mb <= 0:
            raise UserError(f"--max_train_mb must be > 0, got {args.max_train_mb}")
        st.max_train_mb = args.max_train_mb
    if args.num_samples < 0:
        raise UserError(f"--num_samples must be >= 0, got {args.num_samples}")

    # Resolve the data source before touching the disk, so bad paths fail fast.
    train_src = Path(args.train) if args.train else None
    valid_src = Path(args.valid) if args.valid else None
    if valid_src and not train_src:
        raise UserError("--valid needs --train too")
    if train_src is None and not args.synthetic and Path(TINYSTORIES[0]).is_file() and Path(TINYSTORIES[1]).is_file():
        train_src, valid_src = Path(TINYSTORIES[0]), Path(TINYSTORIES[1])
    for flag, src in (("--train", train_src), ("--valid", valid_src)):
        if src is not None and (not src.is_file() or src.stat().st_size == 0):
            raise UserError(f"{flag} {src}: {'empty file' if src.is_file() else 'no such file'}")
    synthetic = train_src is None
    if args.vocab_size is not None:
        if args.vocab_size < 258:
            raise UserError(f"--vocab_size must be >= 258 (256 bytes + <|endoftext|> + 1 merge), got {args.vocab_size}")
        st.vocab_size = args.vocab_size
    if st.vocab_size is None:
        st.vocab_size = 1024 if synthetic else 2048

    out = Path(args.out)
    _prepare_out_dir(out)
    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    tok_dir, model_dir = out / "tokenizer", out / "model"
    train_txt, valid_txt = data_dir / "train.txt", data_dir / "valid.txt"
    train_npy, valid_npy = out / "train.npy", out / "valid.npy"
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    _say("=" * 80)
    _say("cs336_basics quickstart: data -> BPE tokenizer -> token ids -> Transformer LM -> samples")
    _say(f"Everything is written to {out}/" + ("   (--quick smoke mode)" if args.quick else ""))
    _say("=" * 80)

    # 1. Data ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if synthetic:
        from cs336_basics.quickstart.storygen import write_corpus

        why = (
            "--synthetic"
            if args.synthetic
            else f"no {TINYSTORIES[0]} found; `bash scripts/download_data.sh` gets the real one"
        )
        _say(f"[1/5] Data: generating {st.num_train_stories:,} synthetic children's stories ({why})")
        n_tr = write_corpus(train_txt, st.num_train_stories, seed=args.seed)
        n_va = write_corpus(valid_txt, st.num_valid_stories, seed=args.seed + 1_000_003)
    else:
        _say(
            f"[1/5] Data: using (at most) the first {st.max_train_mb:g} MB of {train_src}"
            + (
                f" and {st.max_valid_mb:g} MB of {valid_src}"
                if valid_src
                else "; its last 5% of stories held out for validation"
            )
        )
        n_tr = _copy_prefix(train_src, train_txt, int(st.max_train_mb * 1e6))
        if valid_src is not None:
            n_va = _copy_prefix(valid_src, valid_txt, int(st.max_valid_mb * 1e6))
        else:  # hold out the tail of the training prefix
            text = train_txt.read_text(encoding="utf-8")
            docs = text.split(EOT)
            k = max(1, len(docs) // 20)
            if len(docs) < 4:
                raise UserError(f"--train {train_src}: too little text to split off a validation set; pass --valid")
            train_txt.write_text(EOT.join(docs[:-k]) + EOT + "\n", encoding="utf-8")
            valid_txt.write_text(EOT.join(docs[-k:]).lstrip("\n"), encoding="utf-8")
            n_tr, n_va = train_txt.stat().st_size, valid_txt.stat().st_size
    timings["data"] = time.perf_counter() - t0
    _say(f"      {train_txt} ({_mb(n_tr)}), {valid_txt} ({_mb(n_va)})")

    # 2. Tokenizer -----------------------------------------------------------------------------
    from cs336_basics.fast.bpe import train_bpe
    from cs336_basics.fast.tokenizer import Tokenizer

    t0 = time.perf_counter()
    _say(f"[2/5] Tokenizer: training byte-level BPE, vocab {st.vocab_size:,}, special token {EOT} ...")
    vocab, merges = train_bpe(str(train_txt), st.vocab_size, [EOT])
    tokenizer = Tokenizer(vocab, merges, [EOT])
    tokenizer.save(tok_dir)
    timings["tokenizer"] = time.perf_counter() - t0
    longest = sorted((v for v in vocab.values() if v != EOT.encode()), key=len)[-5:]
    _say(
        f"      {len(merges):,} merges in {timings['tokenizer']:.1f}s -> {tok_dir}/ "
        f"(longest tokens: {', '.join(repr(b.decode('utf-8', 'replace')) for b in reversed(longest))})"
    )

    # 3. Token ids -----------------------------------------------------------------------------
    from cs336_basics.tokenize_data import tokenize_file

    t0 = time.perf_counter()
    _say("[3/5] Tokenizing the text into uint16 id arrays ...")
    n_train_tok = tokenize_file(tok_dir, train_txt, train_npy)
    n_valid_tok = tokenize_file(tok_dir, valid_txt, valid_npy)
    timings["tokenize"] = time.perf_counter() - t0
    _say(
        f"      {train_npy} ({n_train_tok:,} tokens, {n_tr / max(n_train_tok, 1):.2f} bytes/token), "
        f"{valid_npy} ({n_valid_tok:,} tokens) in {timings['tokenize']:.1f}s"
    )
    if n_valid_tok <= st.model.context_length or n_train_tok <= st.model.context_length:
        raise UserError(f"too little text: need more than {st.model.context_length} tokens in train and valid")

    # 4. Training ------------------------------------------------------------------------------
    from cs336_basics import training_together

    flags = [
        "--train_data_path",
        str(train_npy),
        "--val_data_path",
        str(valid_npy),
        *model_flags(dataclasses.replace(st.model, vocab_size=tokenizer.vocab_size)),
        "--batch_size",
        str(st.batch_size),
        "--max_iters",
        str(st.max_iters),
        "--lr",
        str(st.lr),
        "--min_lr",
        str(st.min_lr),
        "--warmup_iters",
        str(st.warmup_iters),
        "--weight_decay",
        "0.1",
        "--grad_clip",
        "1.0",
        "--eval_interval",
        str(st.eval_interval),
        "--eval_iters",
        str(st.eval_iters),
        "--log_interval",
        str(st.log_interval),
        "--checkpoint_interval",
        str(st.max_iters),
        "--checkpoint_dir",
        str(model_dir),
        "--device",
        args.device,
        "--seed",
        str(args.seed),
    ]
    tokens = st.max_iters * st.batch_size * st.model.context_length
    _say(
        f"[4/5] Training a {st.model.num_layers}-layer Transformer (d_model {st.model.d_model}, {st.model.num_heads} heads, "
        f"context {st.model.context_length}) for {st.max_iters} steps x {st.batch_size * st.model.context_length:,} tokens "
        f"= {tokens / 1e6:.1f}M tokens:"
    )
    _say("      python -m cs336_basics.training_together " + shlex.join(flags))
    t0 = time.perf_counter()
    rc = training_together.main(flags)
    timings["train"] = time.perf_counter() - t0
    if rc not in (0, None):
        raise UserError(f"training stopped with exit status {rc}; see the messages above")

    metrics = _read_metrics(model_dir / "metrics.jsonl")
    train_recs = [r for r in metrics if r.get("type") == "train" and isinstance(r.get("loss"), (int, float))]
    final = next((r for r in reversed(metrics) if r.get("type") in ("final", "eval")), None)
    first_loss = train_recs[0]["loss"] if train_recs else None
    val_loss = final.get("val_loss") if final else None

    # 5. Samples -------------------------------------------------------------------------------
    from cs336_basics.generate import load_model, sample
    from cs336_basics.utils.devices import resolve_device

    _say("[5/5] Samples (temperature 0.8, top-p 0.9):")
    model, _, ckpt_path = load_model(model_dir, resolve_device(args.device, what="--device"))
    for i in range(args.num_samples):
        prompt = PROMPTS[i % len(PROMPTS)]
        text = sample(model, tokenizer, prompt, st.sample_tokens, 0.8, 0.9, seed=args.seed + i)[0]
        _say("-" * 80)
        _say((prompt + text).rstrip())
    _say("-" * 80)

    total = time.perf_counter() - t_start
    _say("")
    _say(
        f"Done in {total / 60:.1f} min (data {timings['data']:.0f}s, tokenizer {timings['tokenizer']:.0f}s, "
        f"tokenizing {timings['tokenize']:.0f}s, training {timings['train']:.0f}s)."
    )
    if isinstance(val_loss, (int, float)):
        start = (
            f"; training loss at step {train_recs[0]['step']} was {first_loss:.2f}" if first_loss is not None else ""
        )
        _say(
            f"Validation loss: {val_loss:.2f} nats/token (perplexity {math.exp(min(val_loss, 50)):.1f}){start}; "
            f"a uniform guess over {tokenizer.vocab_size:,} tokens scores {math.log(tokenizer.vocab_size):.2f}."
        )
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    _say("")
    _say(f"Artifacts in {out}/:")
    _say(f"  {q(data_dir)}/train.txt, valid.txt   the text it trained on" + (" (synthetic)" if synthetic else ""))
    _say(f"  {q(tok_dir)}/                 the BPE tokenizer (vocab.json, merges.txt, special_tokens.json)")
    _say(f"  {q(train_npy)}, {q(valid_npy)}   token ids (numpy .npy)")
    _say(
        f"  {q(model_dir)}/                     checkpoints ({ckpt_path.name}, checkpoint_iter_{st.max_iters}.pt), "
        "metrics.jsonl, run_config.json"
    )
    _say("")
    _say("Next:")
    _say(
        f"  uv run python -m cs336_basics.generate --checkpoint {q(model_dir)} --tokenizer {q(tok_dir)} "
        '--prompt "Once upon a time" --num_samples 3'
    )
    _say(
        f"  uv run --extra plot python -m cs336_basics.tools.plot_metrics {q(model_dir)} --out {q(out / 'curves.png')}"
        "    # loss vs steps and vs time"
    )
    _say("  bash scripts/download_data.sh   # then train on the real TinyStories: see docs/training.md")
    sys.stdout.flush()
    return 0
