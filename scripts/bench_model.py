"""Benchmark our from-scratch TransformerLM against the same architecture built from PyTorch built-ins.

Cells: shape (``tinystories`` = the course's d_model 512 / 4 layers / 16 heads / d_ff 1344 / vocab 10k /
context 256, and ``small``) x precision (fp32, bf16 autocast) x mode (eager, torch.compile). Each cell
times full training steps (forward + backward + grad clip + AdamW) of our model with the default
("fast") attention, our model with the plain handout attention (``--attention`` picks which), and
the built-in model, all with identical weights, rotating through them repeatedly and taking medians (other processes share the CPU,
so single timings are noisy; torch runs 1 CPU thread by default because oversubscribed OpenMP
threads on a shared CPU made timings much worse and erratic -- ``--threads 0`` for torch's default).
Ours uses cs336_basics' cross_entropy / clip_grad_norm / AdamW when
they exist (``--optim torch`` swaps in the built-ins to isolate the model itself).

Memory: on CUDA, each model's peak allocated bytes as if it were alone on the GPU; on CPU, the bytes autograd saves for backward in one forward
(activation memory; eager only -- the hook does not see inside compiled graphs).

Also: generation tokens/s with and without the KV cache; on CUDA, bf16 + compile MFU
(``flops_per_token * 3 * tokens/s / peak``).

    uv run python scripts/bench_model.py                       # all CPU cells, a few minutes
    uv run python scripts/bench_model.py --shapes small --modes eager --precisions fp32
    uv run python scripts/bench_model.py --attention fast        # skip the plain-attention column
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cs336_basics.lm.generate import generate
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.training.metrics import peak_flops

SHAPES = {
    "tinystories": dict(vocab_size=10000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344),
    "small": dict(vocab_size=2000, context_length=128, d_model=128, num_layers=2, num_heads=4, d_ff=384),
    # cs336_basics/tools/experiments/leaderboard.toml's base shape (GPT-2 small's body at context 512, vocab 32k)
    "leaderboard": dict(vocab_size=32000, context_length=512, d_model=768, num_layers=12, num_heads=12, d_ff=2048),
}
# The course's TinyStories run: 327,680,000 tokens (the projected time is printed for that shape).
TINYSTORIES_TOKENS = 327_680_000


# ----------------------------------------------------------------------------------------------
# The reference: same architecture from torch built-ins (same state-dict names, so weights copy over)
# ----------------------------------------------------------------------------------------------
class RefRoPE(nn.Module):
    def __init__(self, theta: float, d_k: int, max_seq_len: int) -> None:
        super().__init__()
        inv = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64) / d_k)
        ang = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, H, T, d]
        T = x.shape[-2]
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class RefAttn(nn.Module):
    def __init__(self, d: int, h: int, rope: RefRoPE) -> None:
        super().__init__()
        self.h = h
        self.rope = rope
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.output_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        q, k, v = (p(x).view(B, T, self.h, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = self.rope(q), self.rope(k)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.output_proj(o.transpose(1, 2).reshape(B, T, d))


class RefFFN(nn.Module):
    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d, bias=False)
        self.w3 = nn.Linear(d, d_ff, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RefBlock(nn.Module):
    def __init__(self, c: ModelConfig, rope: RefRoPE) -> None:
        super().__init__()
        self.attn = RefAttn(c.d_model, c.num_heads, rope)
        self.ln1 = nn.RMSNorm(c.d_model, eps=1e-5)
        self.ffn = RefFFN(c.d_model, c.d_ff)
        self.ln2 = nn.RMSNorm(c.d_model, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class RefLM(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        rope = RefRoPE(c.rope_theta, c.d_model // c.num_heads, c.context_length)
        self.token_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(RefBlock(c, rope) for _ in range(c.num_layers))
        self.ln_final = nn.RMSNorm(c.d_model, eps=1e-5)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.token_embeddings(idx)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.ln_final(x))


# ----------------------------------------------------------------------------------------------
# Training pieces: ours when present, else the built-ins
# ----------------------------------------------------------------------------------------------
def our_training_pieces(which: str) -> tuple[Callable, Callable, Callable, str]:
    """(loss_fn, clip_fn, optimizer_ctor, description)."""
    torch_pieces = (
        F.cross_entropy,
        torch.nn.utils.clip_grad_norm_,
        lambda params: torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1),
    )
    if which == "torch":
        return (*torch_pieces, "torch built-ins")
    parts = []
    try:
        from cs336_basics.nn_utils import cross_entropy as loss_fn

        parts.append("cross_entropy")
    except ImportError:
        loss_fn = torch_pieces[0]
    try:
        from cs336_basics.fast.nn_utils import clip_grad_norm_on_device as clip_fn  # the trainer's: no host sync

        parts.append("clip_grad_norm")
    except ImportError:
        clip_fn = torch_pieces[1]
    try:
        from cs336_basics.fast.optim import AdamW

        def opt_ctor(params):
            return AdamW(params, lr=1e-4, weight_decay=0.1)

        parts.append("AdamW")
    except ImportError:
        opt_ctor = torch_pieces[2]
    desc = "cs336_basics " + ", ".join(parts) if parts else "torch built-ins (cs336 ones missing)"
    return loss_fn, clip_fn, opt_ctor, desc


def make_step(
    model: nn.Module, loss_fn: Callable, clip_fn: Callable, opt, autocast, compile_loss: bool = False
) -> Callable:
    """One training step. ``compile_loss``: forward and loss compiled together (as nanoGPT's model,
    whose forward returns the loss), so the compiler fuses the cross-entropy too; both models get it."""

    def forward_loss(x: Tensor, y: Tensor) -> Tensor:
        with autocast():
            logits = model(x)
        return loss_fn(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    fwd = torch.compile(forward_loss) if compile_loss else forward_loss

    def step(x: Tensor, y: Tensor) -> Tensor:
        loss = fwd(x, y)
        loss.backward()
        clip_fn(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def resident_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes a model keeps between steps: its weights (and buffers) and its optimizer's state tensors."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [v for st in opt.state.values() for v in st.values() if isinstance(v, Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def saved_activation_bytes(model: nn.Module, x: Tensor, autocast) -> int:
    """Bytes autograd keeps for backward in one forward (distinct storages only)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        except Exception:  # noqa: BLE001 - exotic tensors: skip
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast():
            out = model(x)
        out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def run_cell(args, shape: str, precision: str, mode: str, device: torch.device) -> dict:
    cfg = ModelConfig(**SHAPES[shape])
    torch.manual_seed(0)
    ours = TransformerLM(cfg).to(device)  # default attention ("fast")
    ref = RefLM(cfg).to(device)
    ref.load_state_dict(ours.state_dict())
    models = {"ours": ours}
    if "plain" in args.attention:
        plain = TransformerLM(dataclasses.replace(cfg, attention="plain")).to(device)
        plain.load_state_dict(ours.state_dict())
        models["plain"] = plain
    if "fast" not in args.attention:
        del models["ours"]
    B = args.batch_size or (args.gpu_batch_size if device.type == "cuda" else (4 if shape == "tinystories" else 16))
    T = cfg.context_length
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (B, T), generator=gen).to(device)
    y = torch.randint(0, cfg.vocab_size, (B, T), generator=gen).to(device)
    if precision == "bf16":

        def autocast():
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext

    mem = {}
    if device.type == "cpu" and mode == "eager":
        for name, m in models.items():
            mem[name] = saved_activation_bytes(m, x, autocast)
        mem["ref"] = saved_activation_bytes(ref, x, autocast)

    loss_fn, clip_fn, opt_ctor, _ = our_training_pieces(args.optim)
    steps, opts = {}, {}
    for name, m in models.items():
        opts[name] = opt_ctor(m.parameters())
        steps[name] = make_step(m, loss_fn, clip_fn, opts[name], autocast, compile_loss=mode == "compile")
    opts["ref"] = torch.optim.AdamW(ref.parameters(), lr=1e-4, weight_decay=0.1)
    steps["ref"] = make_step(
        ref, F.cross_entropy, torch.nn.utils.clip_grad_norm_, opts["ref"], autocast, compile_loss=mode == "compile"
    )
    owners = {**models, "ref": ref}
    times: dict[str, list[float]] = {name: [] for name in steps}
    compile_s = {}
    for name, step in steps.items():  # warmup (includes compilation)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step(x, y)
        sync(device)
        compile_s[name] = time.perf_counter() - t0
        if device.type == "cuda":
            # This model's own peak, as if it were alone on the GPU: the step's peak over what is
            # resident before it (all models' weights and optimizer states), plus its own resident share.
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step(x, y)
            sync(device)
            mem[name] = torch.cuda.max_memory_allocated() - before + resident_bytes(owners[name], opts[name])
    names = list(steps)
    for r in range(args.reps):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                steps[name](x, y)
            sync(device)
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    tok = {k: B * T / v for k, v in med.items()}
    res = dict(
        shape=shape,
        precision=precision,
        mode=mode,
        batch=B,
        seq=T,
        ours_tps=tok.get("ours"),
        plain_tps=tok.get("plain"),
        ref_tps=tok["ref"],
        ratio=tok["ours"] / tok["ref"] if "ours" in tok else None,
        plain_ratio=tok["plain"] / tok["ref"] if "plain" in tok else None,
        ours_mem=mem.get("ours"),
        plain_mem=mem.get("plain"),
        ref_mem=mem.get("ref"),
        warmup_s=compile_s,
        flops_per_token=ours.flops_per_token(T),
    )
    return res


def bench_generation(args, device: torch.device) -> list[dict]:
    cfg = ModelConfig(**SHAPES["tinystories"])
    torch.manual_seed(0)
    model = TransformerLM(cfg).to(device)
    prompt = list(range(1, 17))
    out = []
    for use_cache in (True, False):
        generate(model, prompt, 4, temperature=0, use_cache=use_cache)  # warmup
        sync(device)
        t0 = time.perf_counter()
        ids = generate(model, prompt, args.gen_tokens, temperature=0, use_cache=use_cache)
        sync(device)
        dt = time.perf_counter() - t0
        out.append(dict(use_cache=use_cache, tokens=len(ids), tps=len(ids) / dt))
    return out


def bench_activation_checkpointing(args, device: torch.device) -> dict:
    """Our model at the tinystories shape, fp32 eager, with and without activation checkpointing:
    train-step tokens/s (alternating, median) and the activation memory held between forward and
    backward (CPU: bytes autograd saves; CUDA: peak allocated)."""
    cfg = ModelConfig(**SHAPES["tinystories"])
    torch.manual_seed(0)
    model = TransformerLM(cfg).to(device)
    B = args.batch_size or (args.gpu_batch_size if device.type == "cuda" else 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (B, cfg.context_length), generator=gen).to(device)
    y = torch.randint(0, cfg.vocab_size, (B, cfg.context_length), generator=gen).to(device)
    loss_fn, clip_fn, opt_ctor, _ = our_training_pieces(args.optim)
    step = make_step(model, loss_fn, clip_fn, opt_ctor(model.parameters()), contextlib.nullcontext)
    out: dict = {"batch": B, "seq": cfg.context_length}
    times: dict[bool, list[float]] = {False: [], True: []}
    for on in (False, True):
        model.activation_checkpointing = on
        for _ in range(args.warmup):
            step(x, y)
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats()
            step(x, y)
            sync(device)
            out[f"mem_{on}"] = torch.cuda.max_memory_allocated()
        else:
            model.train()
            out[f"mem_{on}"] = saved_activation_bytes(model, x, contextlib.nullcontext)
    for r in range(args.reps):
        for on in (False, True) if r % 2 == 0 else (True, False):
            model.activation_checkpointing = on
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            sync(device)
            times[on].append(args.steps * B * cfg.context_length / (time.perf_counter() - t0))
    model.activation_checkpointing = False
    out["tps_False"], out["tps_True"] = statistics.median(times[False]), statistics.median(times[True])
    return out


def mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def tps(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def ratio(v: float | None, flag: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" + (" (<0.9)" if flag and v < 0.9 else "")


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """``--peak_tflops``, else the training program's table (training.metrics.PEAK_TFLOPS) for bf16."""
    if override:
        return override
    peak = peak_flops(device, "bf16")
    return peak / 1e12 if peak else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["small", "tinystories"], choices=sorted(SHAPES))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    p.add_argument("--steps", type=int, default=2, help="timed steps per repetition")
    p.add_argument("--reps", type=int, default=5, help="alternating ours/built-in repetitions")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=None, help="default: 4 (tinystories) / 16 (small) on CPU")
    p.add_argument("--gpu_batch_size", type=int, default=64)
    p.add_argument(
        "--optim",
        choices=["ours", "torch"],
        default="ours",
        help="training pieces for our model: cs336_basics ones (default) or torch built-ins",
    )
    p.add_argument("--gen_tokens", type=int, default=100, help="tokens to generate (0 = skip)")
    p.add_argument(
        "--activation_checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time our model with activation checkpointing on and off",
    )
    p.add_argument("--device", default=None, help="default: cuda if available else cpu")
    p.add_argument("--peak_tflops", type=float, default=None, help="GPU bf16 peak for MFU")
    p.add_argument(
        "--attention",
        nargs="+",
        default=["fast", "plain"],
        choices=["fast", "plain"],
        help="which of our attention paths to time (fast = the default one)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable timings on a shared CPU; 0 = torch default)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pieces = our_training_pieces(args.optim)[3]
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"steps={args.steps}x{args.reps} reps (median); ours trains with: {pieces}"
    )
    results = []
    for shape in args.shapes:
        for precision in args.precisions:
            for mode in args.modes:
                r = run_cell(args, shape, precision, mode, device)
                results.append(r)
                warm = ", ".join(f"{k} {v:.1f}s" for k, v in r["warmup_s"].items())
                print(
                    f"  done {shape}/{precision}/{mode}: ours {tps(r['ours_tps'])} tok/s, plain "
                    f"{tps(r['plain_tps'])}, built-in {tps(r['ref_tps'])}; ratio fast {ratio(r['ratio'])}, "
                    f"plain {ratio(r['plain_ratio'])} (warmup {warm})",
                    flush=True,
                )
    mem_label = "peak MB" if device.type == "cuda" else "saved-act MB"
    print()
    print(
        f"| shape | batch x seq | precision | mode | ours tok/s | built-in tok/s | ratio | plain tok/s | plain ratio "
        f"| ours {mem_label} | plain {mem_label} | built-in {mem_label} |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['shape']} | {r['batch']}x{r['seq']} | {r['precision']} | {r['mode']} | {tps(r['ours_tps'])} | "
            f"{tps(r['ref_tps'])} | {ratio(r['ratio'], flag=True)} | {tps(r['plain_tps'])} | {ratio(r['plain_ratio'])} | "
            f"{mb(r['ours_mem'])} | {mb(r['plain_mem'])} | {mb(r['ref_mem'])} |"
        )
    print("(ours = default 'fast' attention; plain = the handout's attention; ratio = tok/s over built-in's)")
    if device.type == "cuda":
        peak = peak_tflops(device, args.peak_tflops)
        for r in results:
            if r["precision"] == "bf16" and r["mode"] == "compile" and peak:
                for who in ("ours", "plain", "ref"):
                    if r.get(f"{who}_tps") is None:
                        continue
                    mfu = r["flops_per_token"] * 3 * r[f"{who}_tps"] / (peak * 1e12)
                    print(f"MFU {r['shape']} bf16+compile {who}: {100 * mfu:.1f}% (peak {peak:g} TFLOP/s)")
        for r in results:
            if r["shape"] == "tinystories" and r["precision"] == "bf16" and r["mode"] == "compile":
                for who in ("ours", "plain", "ref"):
                    if r.get(f"{who}_tps"):
                        mins = TINYSTORIES_TOKENS / r[f"{who}_tps"] / 60
                        print(f"projected: {TINYSTORIES_TOKENS:,} tokens at {who}'s rate in {mins:.1f} min")
    if args.activation_checkpointing:
        ac = bench_activation_checkpointing(args, device)
        label = "peak MB" if device.type == "cuda" else "saved-act MB"
        print()
        print(
            f"| activation checkpointing (tinystories shape, fp32 eager, {ac['batch']}x{ac['seq']}) | tok/s | {label} |"
        )
        print("|---|---:|---:|")
        for on in (False, True):
            print(f"| {'on' if on else 'off'} | {tps(ac[f'tps_{on}'])} | {mb(ac[f'mem_{on}'])} |")
        print(
            f"speed with/without: {ac['tps_True'] / ac['tps_False']:.2f}x; memory: {ac['mem_True'] / ac['mem_False']:.2f}x"
        )
    if args.gen_tokens > 0:
        print()
        print("| generation (tinystories shape, greedy, batch 1) | new tokens | tokens/s |")
        print("|---|---:|---:|")
        for g in bench_generation(args, device):
            print(
                f"| {'KV cache' if g['use_cache'] else 'no cache (recompute prefix)'} | {g['tokens']} | {g['tps']:,.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
