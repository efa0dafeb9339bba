"""The fused Triton attention (cs336_basics/triton_attention.py) against a float64 reference.

On a CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set before Triton is imported,
so in a subprocess), in fp16: the interpreter's bf16 matmul is broken (it returns garbage for a plain
16x16 bf16 ``tl.dot``), so bf16 is checked on CUDA only, by the gpu-marked tests below.
"""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cs336_basics import layers

REPO = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton", reason="Triton is installed with PyTorch's Linux wheels")

# (n, seq, kv_seq, d_head, causal): one partial block; several blocks with a ragged end; a cached
# prefix (kv_seq > seq: query i sits at kv_seq - seq + i); non-causal; the largest head size.
CASES = [(2, 40, 40, 16, True), (2, 150, 150, 32, True), (2, 70, 130, 32, True), (2, 96, 96, 64, False), (1, 65, 65, 128, True)]  # fmt: skip


def reference(q, k, v, do, scale: float, causal: bool):
    """Output and (dq, dk, dv) in float64 through the handout's attention (autograd)."""
    ins = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
    T, S = q.shape[-2], k.shape[-2]
    mask = None
    if causal:
        mask = torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]  # True = may attend
    out = layers.scaled_dot_product_attention(*ins, mask)
    return (out, *torch.autograd.grad(out, ins, do.cpu().double()))


def rel_err(a, b) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return ((a - b).norm() / b.norm()).item()


_INTERPRETED = textwrap.dedent(
    """
    import json, math, sys
    import torch
    from cs336_basics.fast.triton_attention import flash_attention
    from tests.test_fast_triton_attention import CASES, reference, rel_err

    out = []
    for n, t, s, d, causal in CASES:
        g = torch.Generator().manual_seed(n * 1000 + t + s + d)
        q = torch.randn(n, t, d, generator=g).half()
        k, v = (torch.randn(n, s, d, generator=g).half() for _ in range(2))
        do = torch.randn(n, t, d, generator=g).half()
        scale = 1.0 / math.sqrt(d)
        ins = [x.clone().requires_grad_() for x in (q, k, v)]
        o = flash_attention(*ins, scale, causal)
        grads = torch.autograd.grad(o, ins, do)
        ref = reference(q, k, v, do, scale, causal)
        out.append([rel_err(a, b) for a, b in zip((o, *grads), ref)] + [str(o.dtype)] + [str(x.dtype) for x in grads])
    print(json.dumps(out))
    """
)


def test_kernels_match_float64_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", _INTERPRETED], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    results = json.loads(r.stdout.strip().splitlines()[-1])
    for case, res in zip(CASES, results, strict=True):
        errs, dtypes = res[:4], res[4:]
        assert dtypes == ["torch.float16"] * 4, case
        # fp16 inputs and outputs: errors at fp16's level (~5e-4 relative), not an algorithm's
        for name, e in zip(("out", "dq", "dk", "dv"), errs, strict=True):
            assert e < 2e-3, f"{case}: {name} relative error {e:.2e}"


def test_unsupported_inputs_are_declined():
    from cs336_basics.fast import triton_attention

    x = torch.zeros(2, 8, 32, dtype=torch.float16)
    assert triton_attention.supported(x, x, x)
    assert not triton_attention.supported(x.float(), x.float(), x.float())  # fp32 keeps the blocked core
    y = torch.zeros(2, 8, 48, dtype=torch.float16)
    assert not triton_attention.supported(y, y, y)  # head size 48
    t = torch.zeros(2, 32, 8, dtype=torch.float16).transpose(1, 2)
    assert not triton_attention.supported(t, t, t)  # last dimension not contiguous


# ----------------------------------------------------------------------------------------------
# CUDA: bf16 and fp16, eager and compiled, inside the model
# ----------------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n, t, s, d, causal", CASES + [(32, 256, 256, 32, True), (16, 512, 512, 64, True)])
def test_cuda_no_less_accurate_than_plain_autograd(dtype, n, t, s, d, causal):
    """Against float64: the fused kernel's output and gradients are at least as accurate as the
    handout's attention run by autograd in the same dtype (FlashAttention accumulates in fp32)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, t, d, generator=g).to("cuda", dtype)
    k, v = (torch.randn(n, s, d, generator=g).to("cuda", dtype) for _ in range(2))
    do = torch.randn(n, t, d, generator=g).to("cuda", dtype)
    scale = 1.0 / math.sqrt(d)
    ref = reference(q, k, v, do, scale, causal)
    from cs336_basics.fast.triton_attention import flash_attention

    def errors(fn):
        ins = [x.clone().requires_grad_() for x in (q, k, v)]
        out = fn(*ins)
        return [rel_err(a, b) for a, b in zip((out, *torch.autograd.grad(out, ins, do)), ref, strict=True)]

    mask = (torch.arange(s)[None, :] <= torch.arange(s - t, s)[:, None]).cuda() if causal else None
    flash = errors(lambda a, b, c: flash_attention(a, b, c, scale, causal))
    plain = errors(lambda a, b, c: layers.scaled_dot_product_attention(a, b, c, mask))
    for name, f, p in zip(("out", "dq", "dk", "dv"), flash, plain, strict=True):
        assert f <= p * 1.05 + 1e-4, f"{name}: flash {f:.2e} vs plain {p:.2e}"


@pytest.mark.gpu
@cuda
def test_cuda_compiled_equals_eager():
    from cs336_basics.fast.triton_attention import flash_attention

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(8, 256, 32, generator=g).to("cuda", torch.bfloat16).requires_grad_() for _ in range(3))
    f = lambda a, b, c: flash_attention(a, b, c, 0.125, True).float().square().sum()  # noqa: E731
    eager = torch.autograd.grad(f(q, k, v), (q, k, v))
    compiled = torch.autograd.grad(torch.compile(f, fullgraph=True)(q, k, v), (q, k, v))
    for a, b in zip(eager, compiled, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@cuda
def test_cuda_model_uses_the_kernel_and_agrees_with_plain():
    from cs336_basics.lm.model import ModelConfig, TransformerLM

    cfg = dict(vocab_size=64, context_length=128, d_model=64, num_layers=2, num_heads=2, d_ff=128)
    torch.manual_seed(0)
    fast = TransformerLM(ModelConfig(**cfg)).cuda()
    plain = TransformerLM(ModelConfig(**cfg, attention="plain")).cuda()
    plain.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 64, (4, 128), device="cuda")
    calls = []
    from cs336_basics.fast import triton_attention

    real = triton_attention.flash_attention
    triton_attention.flash_attention = lambda *a, **kw: calls.append(1) or real(*a, **kw)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lf, lp = fast(idx), plain(idx)
    finally:
        triton_attention.flash_attention = real
    assert len(calls) == 2  # one per layer
    assert rel_err(lf.float(), lp.float()) < 3e-2
