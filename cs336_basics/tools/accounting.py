"""Resource accounting for this project's Transformer LM: parameters, FLOPs, AdamW training memory.

    uv run python -m cs336_basics.tools.accounting --preset gpt2-xl
    uv run python -m cs336_basics.tools.accounting --d_model 512 --num_layers 4 --num_heads 16 --d_ff 1344 \\
        --vocab_size 10000 --context_length 256 --batch_size 32
    uv run python -m cs336_basics.tools.accounting --preset gpt2-xl --gpus 64 --tokens 50e9 --batch_size 2 --gpu H100

The architecture is the one ``cs336_basics.model.TransformerLM`` builds: token embedding, pre-norm
blocks of causal multi-head attention (q/k/v/output projections, no biases, RoPE has no weights) and
a SwiGLU FFN (three ``d_model x d_ff`` matrices; two for the ``silu`` ablation), RMSNorm gains,
a final RMSNorm and an untied ``lm_head``. ``--ffn_type moe`` (``cs336_basics.extensions.moe``) replaces each
FFN by ``num_experts`` SwiGLU experts of width ``d_ff`` plus a ``d_model x num_experts`` router
(and one shared expert with ``--moe_shared_expert``); a token runs only ``moe_top_k`` of them, so
*total* parameters count every expert and *active* parameters (and the FLOPs, and the training
program's MFU) count the ``top_k`` a token uses. The presets use GPT-2's shapes with this architecture; as
in the course's handout, their ``d_ff`` is ``4 * d_model`` (gpt2-xl: 6400).

Counting conventions (the tests check them against ``sum(p.numel())`` of the real model and against
``torch.utils.flop_counter.FlopCounterMode``):

* FLOPs are matmul FLOPs only: ``2 * m * n * k`` for an ``[m, k] @ [k, n]`` product. Norms, RoPE,
  softmax, SiLU and the embedding lookup are left out (they are a small fraction and not matmuls).
* Attention's score (``Q K^T``) and value (``P V``) matmuls are counted dense, as if nothing were
  masked: ``2 * T * T * d_model`` each per layer. This is the usual MFU convention (PaLM, nanoGPT)
  and what FlopCounterMode sees when the whole ``T x T`` product is computed. (For ``T >= 128`` the
  model's causal kernel skips most fully-masked blocks, so it executes fewer.)
* A training step costs about 3x the forward FLOPs (the backward pass is about twice the forward).

The ``--gpus N --tokens T`` estimate (:func:`cluster_estimate`) scales these to data-parallel
training: compute per GPU at a stated MFU, the gradient traffic per optimizer step (the ring
all-reduce of DDP, Patarasuk & Yuan 2009; the all-gathers and reduce-scatter of FSDP / ZeRO-3,
Rajbhandari et al. 2020) against a stated interconnect bandwidth, and the memory each GPU holds.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict

from cs336_basics.lm.model import ModelConfig
from cs336_basics.training.metrics import PEAK_TFLOPS
from cs336_basics.utils.errors import UserError, run_cli

__all__ = [
    "PRESETS",
    "Shape",
    "param_counts",
    "forward_flops",
    "flop_shares",
    "activation_elements",
    "training_memory",
    "max_batch_size",
    "training_days",
    "fsdp_memory",
    "cluster_estimate",
]


# The dimensions accounting reads are the model's own config: one declaration, one set of checks.
Shape = ModelConfig


# GPT-2's shapes with this project's architecture; d_ff = 4 * d_model as in the course's handout.
PRESETS: dict[str, Shape] = {
    "gpt2-small": Shape(50257, 1024, 768, 12, 12, 3072),
    "gpt2-medium": Shape(50257, 1024, 1024, 24, 16, 4096),
    "gpt2-large": Shape(50257, 1024, 1280, 36, 20, 5120),
    "gpt2-xl": Shape(50257, 1024, 1600, 48, 25, 6400),
    # The course's TinyStories model (assignment section 7).
    "tinystories": Shape(10000, 256, 512, 4, 16, 1344),
}


def _ffn_mats(s: Shape) -> int:
    return 2 if s.ffn_type == "silu" else 3


def _ffn_params(s: Shape) -> tuple[int, int]:
    """One layer's FFN parameters: ``(total, active per token)``; they differ only for MoE."""
    mat = _ffn_mats(s) * s.d_model * s.d_ff  # one dense FFN / one expert
    if s.ffn_type != "moe":
        return mat, mat
    always = s.d_model * s.num_experts + (mat if s.moe_shared_expert else 0)  # router (+ shared expert)
    return s.num_experts * mat + always, s.moe_top_k * mat + always


# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------
def param_counts(s: Shape) -> dict[str, int]:
    """Parameters per component: ``embedding``, ``attention``, ``ffn``, ``norms`` (all layers +
    final), ``lm_head``, plus ``per_layer_attention``, ``per_layer_ffn``, ``per_layer_norms``,
    ``total`` and ``active`` (what one token uses: ``total`` but for MoE's unchosen experts). No
    biases anywhere; RoPE has no parameters."""
    d, L = s.d_model, s.num_layers
    attn = 4 * d * d  # q, k, v, output projections
    ffn, ffn_active = _ffn_params(s)
    norms = 0 if s.remove_rmsnorm else 2 * d  # ln1, ln2 gains
    final_norm = 0 if s.remove_rmsnorm else d
    out = {
        "embedding": s.vocab_size * d,
        "attention": L * attn,
        "ffn": L * ffn,
        "norms": L * norms + final_norm,
        "lm_head": d * s.vocab_size,
    }
    out["total"] = sum(out.values())
    out["active"] = out["total"] - L * (ffn - ffn_active)
    out.update(per_layer_attention=attn, per_layer_ffn=ffn, per_layer_norms=norms)
    return out


# ------------------------------------------------------------------------------------------------
# FLOPs
# ------------------------------------------------------------------------------------------------
FLOP_COMPONENTS = ("attention_proj", "attention_scores", "ffn", "lm_head")


def forward_flops(s: Shape, seq_len: int | None = None, batch_size: int = 1) -> dict[str, int]:
    """Matmul FLOPs of one forward pass over ``batch_size`` sequences of ``seq_len`` tokens.

    Components (summed over layers): ``attention_proj`` (q/k/v/output: ``8 T d^2`` per layer),
    ``attention_scores`` (``Q K^T`` and ``P V``, dense: ``4 T^2 d`` per layer), ``ffn``
    (``2 * mats * T * d * d_ff`` per layer; MoE: ``2 T`` times its active parameters, the router and
    the ``top_k`` chosen experts), ``lm_head`` (``2 T d V``), and ``total``.
    """
    T = s.context_length if seq_len is None else seq_len
    d, L, B = s.d_model, s.num_layers, batch_size
    out = {
        "attention_proj": L * B * 2 * T * d * (4 * d),
        "attention_scores": L * B * 2 * (2 * T * T * d),
        "ffn": L * B * 2 * T * _ffn_params(s)[1],
        "lm_head": B * 2 * T * d * s.vocab_size,
    }
    out["total"] = sum(out.values())
    return out


def flop_shares(s: Shape, contexts: Sequence[int]) -> list[dict[str, float]]:
    """For each context length: total forward FLOPs per sequence and each component's share of it."""
    rows = []
    for T in contexts:
        f = forward_flops(s, T)
        row: dict[str, float] = {"context_length": T, "total": f["total"]}
        for k in FLOP_COMPONENTS:
            row[k] = f[k] / f["total"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------
def activation_elements(
    s: Shape, batch_size: int, seq_len: int | None = None, *, keep_scores: bool = True
) -> dict[str, int]:
    """Activation elements kept for the backward pass (the course handout's list), by component.

    Per layer and token: RMSNorm inputs ``2d``; q/k/v ``3d``; attention scores ``Q K^T`` and their
    softmax ``2 * H * T`` (``keep_scores``; this project's attention kernel recomputes them in
    backward instead, so ``keep_scores=False`` describes it); the weighted sum of values ``d`` and
    the output projection ``d``; SwiGLU: ``W1 x``, ``W3 x``, ``SiLU(W1 x)``, their product
    (``4 d_ff``) and ``W2``'s output ``d`` (SiLU FFN: ``2 d_ff + d``). Once per token: the final
    RMSNorm ``d``, the logits ``V`` and the cross-entropy's softmax ``V``.
    """
    T = s.context_length if seq_len is None else seq_len
    d, H, L, BT = s.d_model, s.num_heads, s.num_layers, batch_size * T
    ffn = (4 * s.d_ff + d) if s.ffn_type != "silu" else (2 * s.d_ff + d)
    if s.ffn_type == "moe":  # each of a token's experts keeps a SwiGLU's activations; plus the router's logits
        ffn = (s.moe_top_k + s.moe_shared_expert) * ffn + s.num_experts
    norms = 0 if s.remove_rmsnorm else 2 * d
    out = {
        "norms": BT * (L * norms + (0 if s.remove_rmsnorm else d)),
        "attention": BT * L * (3 * d + d + d),
        "attention_scores": BT * L * 2 * H * T if keep_scores else 0,
        "ffn": BT * L * ffn,
        "logits_and_loss": BT * 2 * s.vocab_size,
    }
    out["total"] = sum(out.values())
    return out


def training_memory(
    s: Shape, batch_size: int, seq_len: int | None = None, *, bytes_per_value: int = 4, keep_scores: bool = True
) -> dict[str, float]:
    """AdamW training memory in bytes: ``parameters`` (P), ``gradients`` (P), ``optimizer_state``
    (first and second moments, 2P), ``activations`` (:func:`activation_elements`) and ``total``,
    all at ``bytes_per_value`` (4 = fp32) per element."""
    P = param_counts(s)["total"]
    act = activation_elements(s, batch_size, seq_len, keep_scores=keep_scores)["total"]
    out = {
        "parameters": P * bytes_per_value,
        "gradients": P * bytes_per_value,
        "optimizer_state": 2 * P * bytes_per_value,
        "activations": act * bytes_per_value,
    }
    out["total"] = sum(out.values())
    return out


def max_batch_size(s: Shape, memory_bytes: float, seq_len: int | None = None, **kw) -> int:
    """Largest batch whose :func:`training_memory` fits in ``memory_bytes`` (0 if not even one)."""
    fixed = training_memory(s, 0, seq_len, **kw)["total"]
    per_seq = training_memory(s, 1, seq_len, **kw)["total"] - fixed
    if memory_bytes < fixed + per_seq:
        return 0
    return int((memory_bytes - fixed) // per_seq)


def training_days(
    s: Shape, steps: int, batch_size: int, peak_flops: float, mfu: float, seq_len: int | None = None
) -> float:
    """Days for ``steps`` AdamW steps at ``mfu`` of ``peak_flops`` FLOP/s (3x forward per step)."""
    step_flops = 3 * forward_flops(s, seq_len, batch_size)["total"]
    return steps * step_flops / (peak_flops * mfu) / 86400.0


# ------------------------------------------------------------------------------------------------
# past one GPU: data parallel (DDP) and fully sharded (FSDP) training on N GPUs
# ------------------------------------------------------------------------------------------------
# A GPU's own link to the others in a multi-node ring: one 400 Gbit/s NDR InfiniBand NIC per GPU
# (as in DGX H100 nodes). Inside one NVLink node the ring runs far faster (H100: 450 GB/s each way).
DEFAULT_INTERCONNECT_GBPS = 400.0


def fsdp_memory(
    s: Shape, batch_size: int, gpus: int, seq_len: int | None = None, *, bytes_per_value: int = 4
) -> dict[str, float]:
    """Bytes per GPU under FSDP2 as this project applies it (each block, then the root, sharded).

    The weights, gradients and AdamW moments of :func:`training_memory` are split ``gpus`` ways;
    activations are not (each GPU runs its own micro-batch). ``unsharded`` is the transient working
    set: the full weights and gradient of the root unit (token embedding, ``lm_head``, final norm),
    which FSDP2 keeps gathered from forward through backward, plus those of one block while it runs
    (prefetching the next block's weights can add that block's weights on top).
    """
    full = training_memory(s, batch_size, seq_len, bytes_per_value=bytes_per_value)
    p = param_counts(s)
    root = p["total"] - p["attention"] - p["ffn"] - s.num_layers * p["per_layer_norms"]
    block = p["per_layer_attention"] + p["per_layer_ffn"] + p["per_layer_norms"]
    out = {k: full[k] / gpus for k in ("parameters", "gradients", "optimizer_state")}
    out["unsharded"] = 2 * (root + block) * bytes_per_value  # weights + gradient
    out["activations"] = full["activations"]
    out["total"] = sum(out.values())
    return out


def cluster_estimate(
    s: Shape,
    *,
    gpus: int,
    tokens: float,
    batch_size: int,
    peak_flops: float,
    mfu: float,
    interconnect_gbps: float = DEFAULT_INTERCONNECT_GBPS,
    grad_accum_steps: int = 1,
    seq_len: int | None = None,
    bytes_per_value: int = 4,
) -> dict[str, object]:
    """Time, traffic and memory of training on ``tokens`` tokens with ``gpus`` data-parallel GPUs.

    Each GPU runs ``grad_accum_steps`` micro-batches of ``batch_size`` sequences per optimizer step
    (as ``training_together`` does under torchrun). Per optimizer step and GPU:

    * compute: 3x the forward FLOPs of its micro-batches, at ``mfu`` of ``peak_flops``;
    * DDP: one ring all-reduce of the gradients, ``2 (N-1)/N * P * bytes`` sent (and received) by
      each GPU (a reduce-scatter, then an all-gather, each moving ``(N-1)/N`` of the data);
    * FSDP: all-gather of the weights for forward and again for backward, reduce-scatter of the
      gradients: ``3 (N-1)/N * P * bytes`` (1.5x DDP; ZeRO-3 in Rajbhandari et al. 2020; a little
      less here, as the root's weights stay gathered for backward);
    * at ``interconnect_gbps`` Gbit/s each way per GPU. DDP overlaps the all-reduce with backward,
      FSDP its all-gathers with the neighbouring blocks' compute, so a step takes about
      ``max(compute, communication)``: the larger one bounds it.

    The run's time is its optimizer steps (``ceil(tokens / tokens_per_step)``) at that bound.
    """
    P = param_counts(s)["total"]
    T = s.context_length if seq_len is None else seq_len
    tokens_per_step = batch_size * T * grad_accum_steps * gpus
    steps = math.ceil(tokens / tokens_per_step)
    step_flops = 3 * forward_flops(s, T, batch_size * grad_accum_steps)["total"]  # per GPU
    compute_s = step_flops / (peak_flops * mfu)
    link_bytes_per_s = interconnect_gbps * 1e9 / 8
    ring = (gpus - 1) / gpus
    comm_bytes = {"ddp": 2 * ring * P * bytes_per_value, "fsdp": 3 * ring * P * bytes_per_value}
    comm_s = {k: v / link_bytes_per_s for k, v in comm_bytes.items()}
    bound = {k: "communication" if comm_s[k] > compute_s else "compute" for k in comm_s}
    step_s = {k: max(compute_s, comm_s[k]) for k in comm_s}
    return {
        "gpus": gpus,
        "tokens": tokens,
        "batch_size": batch_size,
        "grad_accum_steps": grad_accum_steps,
        "context_length": T,
        "peak_flops": peak_flops,
        "mfu": mfu,
        "interconnect_gbps": interconnect_gbps,
        "tokens_per_step": tokens_per_step,
        "steps": steps,
        "step_flops_per_gpu": step_flops,
        "compute_s_per_step": compute_s,
        "comm_bytes_per_step": comm_bytes,
        "comm_s_per_step": comm_s,
        "bound": bound,
        "step_s": step_s,
        "run_s": {k: steps * v for k, v in step_s.items()},
        "compute_run_s": steps * compute_s,
        "memory_per_gpu": {
            "ddp": training_memory(s, batch_size, T, bytes_per_value=bytes_per_value),
            "fsdp": fsdp_memory(s, batch_size, gpus, T, bytes_per_value=bytes_per_value),
        },
    }


# ------------------------------------------------------------------------------------------------
# report + CLI
# ------------------------------------------------------------------------------------------------
def report(
    s: Shape,
    *,
    batch_size: int,
    contexts: Sequence[int],
    memory_gb: float,
    steps: int,
    train_batch: int,
    peak_tflops: float,
    mfu: float,
    cluster: dict | None = None,
) -> dict:
    """Everything the CLI prints, as plain data (``cluster``: :func:`cluster_estimate`'s arguments)."""
    out = {
        "shape": asdict(s),
        "params": param_counts(s),
        "forward_flops": forward_flops(s),
        "flop_shares": flop_shares(s, contexts),
        "memory": {
            "batch_size": batch_size,
            "bytes": training_memory(s, batch_size),
            "bytes_recompute_scores": training_memory(s, batch_size, keep_scores=False),
            "budget_gb": memory_gb,
            "max_batch_size": max_batch_size(s, memory_gb * 1e9),
        },
        "training": {
            "steps": steps,
            "batch_size": train_batch,
            "peak_tflops": peak_tflops,
            "mfu": mfu,
            "step_flops": 3 * forward_flops(s, None, train_batch)["total"],
            "days": training_days(s, steps, train_batch, peak_tflops * 1e12, mfu),
        },
    }
    if cluster is not None:
        kw = {k: v for k, v in cluster.items() if k != "gpu"}
        out["cluster"] = {"gpu": cluster.get("gpu"), **cluster_estimate(s, **kw)}
    return out


def _h(n: float) -> str:
    for div, unit in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


def format_report(r: dict, name: str) -> str:
    s, p, f = r["shape"], r["params"], r["forward_flops"]
    L = s["num_layers"]
    lines = [
        f"# {name}: vocab {s['vocab_size']}, context {s['context_length']}, d_model {s['d_model']}, "
        f"{L} layers, {s['num_heads']} heads, d_ff {s['d_ff']} ({s['ffn_type']}"
        + (
            f": {s['num_experts']} experts, top-{s['moe_top_k']}" + (" + shared" if s["moe_shared_expert"] else "")
            if s["ffn_type"] == "moe"
            else ""
        )
        + ")",  # fmt: skip
        "",
        "## Parameters",
        f"{'component':<28}{'count':>16}{'share':>9}",
    ]
    rows = [
        ("token embedding", p["embedding"]),
        (f"attention ({L} x {p['per_layer_attention']:,})", p["attention"]),
        (f"ffn ({L} x {p['per_layer_ffn']:,})", p["ffn"]),
        ("rmsnorm gains", p["norms"]),
        ("lm_head", p["lm_head"]),
    ]
    for label, n in rows:
        lines.append(f"{label:<28}{n:>16,}{100 * n / p['total']:>8.1f}%")
    lines.append(f"{'total':<28}{p['total']:>16,}   ({_h(p['total'])}; fp32 {p['total'] * 4 / 1e9:.2f} GB)")
    if p["active"] != p["total"]:
        lines.append(f"{'active per token (MoE)':<28}{p['active']:>16,}   ({_h(p['active'])}; FLOPs count these)")
    lines += [
        "",
        f"## Forward-pass matmul FLOPs (one sequence of {s['context_length']} tokens)",
        f"{'component':<28}{'FLOPs':>16}{'share':>9}",
    ]
    labels = {
        "attention_proj": "attention q/k/v/out proj",
        "attention_scores": "attention QK^T and PV",
        "ffn": "ffn",
        "lm_head": "lm_head",
    }
    for k in FLOP_COMPONENTS:
        lines.append(f"{labels[k]:<28}{_h(f[k]):>16}{100 * f[k] / f['total']:>8.1f}%")
    lines.append(f"{'total':<28}{_h(f['total']):>16}   (training step ~3x: {_h(3 * f['total'])})")
    short = {"attention_proj": "attn proj", "attention_scores": "attn QK^T/PV", "ffn": "ffn", "lm_head": "lm_head"}
    lines += [
        "",
        "## Share of forward FLOPs by context length",
        f"{'context':>8}{'total':>12}" + "".join(f"{short[k]:>16}" for k in FLOP_COMPONENTS),
    ]
    for row in r["flop_shares"]:
        lines.append(
            f"{row['context_length']:>8}{_h(row['total']):>12}"
            + "".join(f"{100 * row[k]:>15.1f}%" for k in FLOP_COMPONENTS)
        )
    m = r["memory"]
    b, br = m["bytes"], m["bytes_recompute_scores"]
    lines += [
        "",
        f"## AdamW training memory, fp32 (batch {m['batch_size']}, context {s['context_length']})",
        f"{'':<22}{'GB':>10}",
        f"{'parameters':<22}{b['parameters'] / 1e9:>10.2f}",
        f"{'gradients':<22}{b['gradients'] / 1e9:>10.2f}",
        f"{'optimizer state (m,v)':<22}{b['optimizer_state'] / 1e9:>10.2f}",
        f"{'activations':<22}{b['activations'] / 1e9:>10.2f}   (without stored T x T scores: {br['activations'] / 1e9:.2f})",
        f"{'total':<22}{b['total'] / 1e9:>10.2f}",
        "activations (elements) = B*T*[L*(2d + 5d + 2*H*T + 4*d_ff + d) + d + 2V]  (SwiGLU; see activation_elements)",
        f"static = 16 bytes/param = {b['parameters'] * 4 / 1e9:.2f} GB; largest batch in {m['budget_gb']:g} GB: "
        f"{m['max_batch_size']}",
    ]
    t = r["training"]
    lines += [
        "",
        f"## Training time: {t['steps']:,} steps x batch {t['batch_size']} at {100 * t['mfu']:g}% MFU "
        f"of {t['peak_tflops']:g} TFLOP/s",
        f"{_h(t['step_flops'])} FLOPs per step -> {t['days']:.1f} days on one device",
    ]
    if "cluster" in r:
        lines += format_cluster(r["cluster"])
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_cluster(c: dict) -> list[str]:
    n, gbps = c["gpus"], c["interconnect_gbps"]
    gpu = f"{c['gpu']}, " if c.get("gpu") else ""
    comp, comm, bound = c["compute_s_per_step"], c["comm_s_per_step"], c["bound"]
    m_ddp, m_fsdp = c["memory_per_gpu"]["ddp"], c["memory_per_gpu"]["fsdp"]
    lines = [
        "",
        f"## {n} GPUs ({gpu}{c['peak_flops'] / 1e12:g} TFLOP/s peak, {100 * c['mfu']:g}% MFU), {_h(c['tokens'])} tokens, "
        f"interconnect {gbps:g} Gbit/s per GPU ({gbps / 8:g} GB/s)",
        f"tokens per optimizer step: {c['tokens_per_step']:,} (batch {c['batch_size']} x context {c['context_length']} "
        f"x accum {c['grad_accum_steps']} x {n} GPUs) -> {c['steps']:,} steps",
        f"compute per step and GPU: {_h(c['step_flops_per_gpu'])} FLOPs -> {_duration(comp)}",
        f"{'':<6}{'traffic per GPU and step':>28}{'communication':>16}{'step':>12}  bound",
    ]
    for k, label, rule in (("ddp", "DDP", "2(N-1)/N x P x 4 B"), ("fsdp", "FSDP", "3(N-1)/N x P x 4 B")):
        lines.append(
            f"{label:<6}{_h(c['comm_bytes_per_step'][k]) + 'B (' + rule + ')':>28}{_duration(comm[k]):>16}"
            f"{_duration(c['step_s'][k]):>12}  {bound[k]}"
        )
    lines.append(
        f"run: {c['steps']:,} steps -> DDP {_duration(c['run_s']['ddp'])}, FSDP {_duration(c['run_s']['fsdp'])} "
        f"(compute alone {_duration(c['compute_run_s'])}; communication assumed overlapped with backward)"
    )
    comm_bound = [label for k, label in (("ddp", "DDP"), ("fsdp", "FSDP")) if bound[k] == "communication"]
    if comm_bound:
        lines.append(
            f"{' and '.join(comm_bound)}: communication, not compute, bounds the step; more tokens per step "
            "(--batch_size, --grad_accum_steps) or a faster interconnect amortize it"
        )
    lines += [
        "",
        f"## Memory per GPU, fp32 weights/gradients/AdamW state (batch {c['batch_size']} per GPU, {n} GPUs)",
        f"{'':<24}{'DDP GB':>10}{'FSDP GB':>10}",
    ]
    rows = (("parameters", "parameters"), ("gradients", "gradients"), ("optimizer_state", "optimizer state (m,v)"),
            ("unsharded", "unsharded root + block"), ("activations", "activations"), ("total", "total"))  # fmt: skip
    for k, label in rows:
        ddp = f"{m_ddp[k] / 1e9:.2f}" if k in m_ddp else "-"
        lines.append(f"{label:<24}{ddp:>10}{m_fsdp[k] / 1e9:>10.2f}")
    return lines


def _pos_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.tools.accounting",
        description="Parameters, forward FLOPs and AdamW training memory of this project's Transformer LM.",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="GPT-2 shapes with this architecture (d_ff = 4*d_model), or the course's TinyStories model; "
        "shape flags given as well override the preset",
    )
    for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff"):
        p.add_argument(f"--{name}", type=_pos_int, default=None)
    p.add_argument("--ffn_type", choices=("swiglu", "silu", "moe"), default=None)
    p.add_argument("--num_experts", type=_pos_int, default=None, help="--ffn_type moe: experts per layer")
    p.add_argument("--moe_top_k", type=_pos_int, default=None, help="--ffn_type moe: experts per token")
    p.add_argument(
        "--moe_shared_expert", action="store_true", default=None, help="--ffn_type moe: one always-on expert"
    )
    p.add_argument(
        "--batch_size", type=_pos_int, default=1, help="batch for the memory estimates (per GPU with --gpus)"
    )
    p.add_argument(
        "--contexts", default="1024,4096,16384", help="comma-separated context lengths for the FLOP-share table"
    )
    p.add_argument("--memory_gb", type=float, default=80.0, help="device memory for the largest-batch estimate")
    p.add_argument("--train_steps", type=_pos_int, default=400_000)
    p.add_argument("--train_batch", type=_pos_int, default=1024)
    p.add_argument("--peak_tflops", type=float, default=19.5, help="device peak (default: A100 fp32)")
    p.add_argument("--mfu", type=float, default=0.5, help="model FLOPs utilization for the time estimate")
    g = p.add_argument_group(
        "past one GPU", "--gpus N --tokens T: time, traffic and memory of data-parallel training (DDP vs FSDP)"
    )
    g.add_argument("--gpus", type=_pos_int, default=None, help="data-parallel GPUs (all nodes together)")
    g.add_argument("--tokens", type=float, default=None, help="training tokens, e.g. 10e9")
    g.add_argument("--grad_accum_steps", type=_pos_int, default=1, help="micro-batches per optimizer step")
    g.add_argument(
        "--gpu",
        type=str.upper,
        choices=sorted(PEAK_TFLOPS),
        default="H100",
        help="GPU whose dense bf16 peak sets the compute time (the table the training program's MFU uses)",
    )
    g.add_argument("--gpu_tflops", type=float, default=None, help="peak TFLOP/s per GPU; overrides --gpu")
    g.add_argument(
        "--interconnect_gbps",
        type=float,
        default=DEFAULT_INTERCONNECT_GBPS,
        help="each GPU's link in the gradient ring, Gbit/s each way (default: one 400G InfiniBand NIC per GPU; "
        "an H100 NVLink node is ~3600)",
    )
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of tables")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dims = ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff")
    base = asdict(PRESETS[args.preset]) if args.preset else {}
    for k in (*dims, "ffn_type", "num_experts", "moe_top_k", "moe_shared_expert"):
        if getattr(args, k) is not None:
            base[k] = getattr(args, k)
    missing = [k for k in dims if k not in base]
    if missing:
        raise UserError(f"give --preset or all of the shape flags; missing: {', '.join('--' + k for k in missing)}")
    try:
        shape = Shape(**base).validate()
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        contexts = [int(c) for c in args.contexts.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--contexts {args.contexts!r}: expected comma-separated integers") from None
    if not contexts or min(contexts) <= 0:
        raise UserError(f"--contexts {args.contexts!r}: expected positive integers")
    if not 0 < args.mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {args.mfu}")
    if args.peak_tflops <= 0 or args.memory_gb <= 0:
        raise UserError("--peak_tflops and --memory_gb must be positive")
    cluster = None
    if (args.gpus is None) != (args.tokens is None):
        raise UserError("--gpus and --tokens go together: give both for the multi-GPU estimate")
    if args.gpus is not None:
        if not args.tokens > 0 or not math.isfinite(args.tokens):
            raise UserError(f"--tokens must be a positive number, got {args.tokens:g}")
        for flag in ("gpu_tflops", "interconnect_gbps"):
            v = getattr(args, flag)
            if v is not None and not v > 0:
                raise UserError(f"--{flag} must be positive, got {v:g}")
        custom = args.gpu_tflops is not None
        cluster = dict(
            gpu=None if custom else args.gpu, gpus=args.gpus, tokens=args.tokens, batch_size=args.batch_size,
            grad_accum_steps=args.grad_accum_steps, mfu=args.mfu, interconnect_gbps=args.interconnect_gbps,
            peak_flops=(args.gpu_tflops if custom else PEAK_TFLOPS[args.gpu]["bf16"]) * 1e12,
        )  # fmt: skip
    r = report(
        shape,
        batch_size=args.batch_size,
        contexts=contexts,
        memory_gb=args.memory_gb,
        steps=args.train_steps,
        train_batch=args.train_batch,
        peak_tflops=args.peak_tflops,
        mfu=args.mfu,
        cluster=cluster,
    )
    print(json.dumps(r, indent=2) if args.json else format_report(r, args.preset or "custom"))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
