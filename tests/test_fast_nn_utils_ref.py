"""The fast clip_grad_norm twin (fast_nn_utils) against the plain one (nn_utils) and
torch.nn.utils.clip_grad_norm_ (the independent reference); the on-device variant against the
host-sync one, bit for bit (it is what the training step uses)."""

from __future__ import annotations

import math

import pytest
import torch

from cs336_basics import nn_utils
from cs336_basics.fast import nn_utils as fast_nn_utils


def _params(scale: float, seed: int = 0, dtype=torch.float32) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in [(5, 3), (7,), (2, 2, 2), (4, 4)]]
    for i, p in enumerate(params):
        if i != 2:  # one parameter has no gradient and must be skipped
            p.grad = (torch.randn(p.shape, generator=g) * scale).to(dtype)
    return params


def _clone(params):
    out = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


def _grads(params):
    return [p.grad for p in params if p.grad is not None]


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("scale", [10.0, 1e-3])
def test_fast_twin_matches_plain_and_torch(scale, foreach):
    fast = _params(scale)
    plain, ref = _clone(fast), _clone(fast)
    before = [g.clone() for g in _grads(fast)]
    norm = fast_nn_utils.clip_grad_norm(fast, 1.0, foreach=foreach)
    plain_norm = nn_utils.clip_grad_norm(plain, 1.0)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, 1.0).item()
    assert isinstance(norm, float) and isinstance(plain_norm, float)
    assert norm == pytest.approx(ref_norm, rel=1e-6) and plain_norm == pytest.approx(ref_norm, rel=1e-6)
    for a, b, c, g0 in zip(_grads(fast), _grads(plain), _grads(ref), before):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)
        if scale < 1:  # below the threshold: untouched, bit for bit
            assert torch.equal(a, g0) and torch.equal(b, g0)


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("scale", [10.0, 1e-3, float("inf"), float("nan")])
def test_on_device_variant_is_bit_identical_to_the_host_one(scale, foreach):
    host = _params(scale if math.isfinite(scale) else 1.0, seed=4)
    if not math.isfinite(scale):
        host[0].grad[0, 0] = scale  # one non-finite entry: the norm is inf / nan, gradients untouched
    dev = _clone(host)
    want = fast_nn_utils.clip_grad_norm(host, 0.5, foreach=foreach)
    got = fast_nn_utils.clip_grad_norm_on_device(dev, 0.5, foreach=foreach)
    assert isinstance(got, torch.Tensor) and got.dim() == 0
    assert (math.isnan(want) and math.isnan(got.item())) or got.item() == want
    for a, b in zip(_grads(host), _grads(dev)):
        assert torch.equal(a.nan_to_num(), b.nan_to_num()), (a - b).abs().max()


def test_on_device_clip_is_off_for_infinite_max_norm():
    params = _params(10.0)
    before = [g.clone() for g in _grads(params)]
    norm = fast_nn_utils.clip_grad_norm_on_device(params, math.inf)
    assert norm.item() == pytest.approx(torch.nn.utils.get_total_norm(before).item(), rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(_grads(params), before))


@pytest.mark.parametrize("foreach", [None, False])
def test_fast_fp16_grads_do_not_overflow(foreach):
    p = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float16))
    p.grad = torch.full((1000,), 300.0, dtype=torch.float16)  # sum of squares 9e7 > fp16 max
    norm = fast_nn_utils.clip_grad_norm([p], 1.0, foreach=foreach)
    assert norm == pytest.approx(300.0 * math.sqrt(1000), rel=1e-6)
    assert p.grad.float().norm().item() == pytest.approx(1.0, rel=1e-2)


def test_fast_mixed_dtypes_and_no_grads():
    assert fast_nn_utils.clip_grad_norm([torch.nn.Parameter(torch.ones(3))], 1.0) == 0.0
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    a.grad, b.grad = torch.full((4,), 3.0), torch.full((4,), 4.0, dtype=torch.float64)
    assert fast_nn_utils.clip_grad_norm([a, b], 1.0) == pytest.approx(10.0)
    assert a.grad[0].item() == pytest.approx(0.3, rel=1e-5) and b.grad[0].item() == pytest.approx(0.4, rel=1e-5)
