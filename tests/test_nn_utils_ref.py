"""cross_entropy, perplexity and clip_grad_norm vs independent references.

References: torch.nn.functional.cross_entropy and torch.nn.utils.clip_grad_norm_.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.fast.nn_utils import perplexity
from cs336_basics.nn_utils import clip_grad_norm, cross_entropy


# ----------------------------------------------------------------------------------------------
# cross-entropy
# ----------------------------------------------------------------------------------------------
def test_cross_entropy_2d_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 37, generator=g)
    targets = torch.randint(0, 37, (16,), generator=g)
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_cross_entropy_3d_batch_dims_mean_over_all():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=g)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    ref = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    out = cross_entropy(logits, targets)
    assert out.shape == ()
    torch.testing.assert_close(out, ref)


def test_cross_entropy_huge_logits_finite():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 50, generator=g) * 1000
    targets = torch.randint(0, 50, (8,), generator=g)
    out = cross_entropy(logits, targets)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, F.cross_entropy(logits, targets))
    big = torch.full((2, 4), 1e30)
    assert torch.isfinite(cross_entropy(big, torch.tensor([0, 3])))


def test_cross_entropy_gradient_matches_torch():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    targets = torch.randint(0, 9, (4, 6), generator=g)
    cross_entropy(a, targets).backward()
    F.cross_entropy(b.reshape(-1, 9), targets.reshape(-1)).backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cross_entropy_low_precision_computes_in_float32(dtype):
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(32, 1000, generator=g) * 5).to(dtype)
    targets = torch.randint(0, 1000, (32,), generator=g)
    out = cross_entropy(logits, targets)
    assert out.dtype == torch.float32
    ref = F.cross_entropy(logits.float(), targets)  # same (rounded) inputs, float32 math
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_cross_entropy_bf16_gradient_and_input_untouched():
    g = torch.Generator().manual_seed(6)
    base = (torch.randn(2, 3, 50, generator=g) * 4).to(torch.bfloat16)
    a = base.clone().requires_grad_(True)
    b = base.float().requires_grad_(True)
    targets = torch.randint(0, 50, (2, 3), generator=g)
    cross_entropy(a, targets).backward()
    F.cross_entropy(b.reshape(-1, 50), targets.reshape(-1)).backward()
    assert torch.equal(a.detach(), base)  # in-place work happens on a private copy
    assert a.grad.dtype == torch.bfloat16
    torch.testing.assert_close(a.grad.float(), b.grad, rtol=1e-2, atol=1e-3)
    f32 = torch.randn(4, 9, generator=g)
    before = f32.clone()
    cross_entropy(f32, torch.zeros(4, dtype=torch.long))
    assert torch.equal(f32, before)


def test_cross_entropy_shape_mismatch_raises():
    with pytest.raises(ValueError, match="targets shape"):
        cross_entropy(torch.randn(4, 5), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_one_log_sum_exp_matches_torch_and_every_loss_uses_it(dtype, monkeypatch):
    """``log_sum_exp`` (the textbook's, float32 for half logits, finite for huge ones) against
    ``torch.logsumexp``; the engine's losses (the masked one, diffusion's, the MoE z-loss) call it."""
    from cs336_basics import nn_utils
    from cs336_basics.extensions import diffusion, moe
    from cs336_basics.fast import nn_utils as fast_nn_utils

    g = torch.Generator().manual_seed(5)
    for scale in (1.0, 1e4):
        logits = (torch.randn(3, 4, 50, generator=g) * scale).to(dtype)
        got = nn_utils.log_sum_exp(logits)
        assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        want = torch.logsumexp(logits.double(), dim=-1)
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6 * scale)
    calls, one = [], nn_utils.log_sum_exp

    def counting(x):
        calls.append(tuple(x.shape))
        return one(x)

    for module in (nn_utils, fast_nn_utils, diffusion, moe):
        monkeypatch.setattr(module, "log_sum_exp", counting)
    x, y = torch.randn(2, 3, 9, generator=g), torch.randint(0, 8, (2, 3), generator=g)
    nn_utils.cross_entropy(x, y)
    fast_nn_utils.masked_cross_entropy(x, y, torch.ones(2, 3))
    diffusion.weighted_masked_ce(x, y, torch.ones(2, 3, dtype=torch.bool), torch.ones(2), mask_token_id=8)
    layer = moe.MoEFFN(8, 16, moe.MoESpec(num_experts=4, top_k=2))
    layer(torch.randn(5, 8, generator=g))
    assert calls == [(2, 3, 9)] * 3 + [(5, 4)]


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(torch.tensor(math.log(7.0))) == pytest.approx(7.0)
    assert perplexity(1e6) == math.inf


# ----------------------------------------------------------------------------------------------
# gradient clipping
# ----------------------------------------------------------------------------------------------
def _params_with_grads(scale: float, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (2, 2, 2), (4, 4)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for i, p in enumerate(params):
        if i != 2:  # one parameter has no gradient and must be skipped
            p.grad = torch.randn(p.shape, generator=g) * scale
    return params


def _clone(params):
    out = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


@pytest.mark.parametrize("scale", [10.0, 1e-3])
def test_clip_matches_torch(scale):
    ours = _params_with_grads(scale)
    ref = _clone(ours)
    before = [None if p.grad is None else p.grad.clone() for p in ours]
    norm = clip_grad_norm(ours, 1.0)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    assert isinstance(norm, float)
    assert norm == pytest.approx(ref_norm.item(), rel=1e-6)  # pre-clip norm
    for p, q, b in zip(ours, ref, before):
        if p.grad is None:
            assert q.grad is None
            continue
        torch.testing.assert_close(p.grad, q.grad)
        if scale < 1:  # below the threshold: untouched, bit for bit
            assert torch.equal(p.grad, b)


def test_clip_resulting_norm_and_formula():
    params = _params_with_grads(5.0, seed=3)
    grads = [p.grad.clone() for p in params if p.grad is not None]
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    norm = clip_grad_norm(params, 0.5)
    assert norm == pytest.approx(total, rel=1e-6)
    factor = 0.5 / (total + 1e-6)
    for g, p in zip(grads, [p for p in params if p.grad is not None]):
        torch.testing.assert_close(p.grad, g * factor)
    new_total = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None))
    assert new_total == pytest.approx(0.5, rel=1e-5)


def test_clip_fp16_grads_do_not_overflow():
    p = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float16))
    p.grad = torch.full((1000,), 300.0, dtype=torch.float16)  # sum of squares 9e7 > fp16 max
    norm = clip_grad_norm([p], 1.0)
    assert norm == pytest.approx(300.0 * math.sqrt(1000), rel=1e-6)
    assert p.grad.float().norm().item() == pytest.approx(1.0, rel=1e-2)


def test_clip_no_grads_and_mixed_dtypes():
    assert clip_grad_norm([torch.nn.Parameter(torch.ones(3))], 1.0) == 0.0
    a = torch.nn.Parameter(torch.ones(4))
    b = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    a.grad = torch.full((4,), 3.0)
    b.grad = torch.full((4,), 4.0, dtype=torch.float64)
    assert clip_grad_norm([a, b], 100.0) == pytest.approx(10.0)
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(10.0)
    assert a.grad[0].item() == pytest.approx(0.3, rel=1e-5)
    assert b.grad[0].item() == pytest.approx(0.4, rel=1e-5)
