"""cross_entropy, clip_grad_norm, AdamW and the cosine schedule vs independent references.

References: torch.nn.functional.cross_entropy, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW
(weight_decay=0, where it agrees with the course's algorithm), the course's AdamW written out in
float64 here, and the schedule formula evaluated by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.nn_utils import clip_grad_norm, cross_entropy, perplexity
from cs336_basics.optim import AdamW, lr_cosine_schedule


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


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("scale", [10.0, 1e-3])
def test_clip_matches_torch(scale, foreach):
    ours = _params_with_grads(scale)
    ref = _clone(ours)
    before = [None if p.grad is None else p.grad.clone() for p in ours]
    norm = clip_grad_norm(ours, 1.0, foreach=foreach)
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


@pytest.mark.parametrize("foreach", [None, False])
def test_clip_fp16_grads_do_not_overflow(foreach):
    p = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float16))
    p.grad = torch.full((1000,), 300.0, dtype=torch.float16)  # sum of squares 9e7 > fp16 max
    norm = clip_grad_norm([p], 1.0, foreach=foreach)
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


# ----------------------------------------------------------------------------------------------
# AdamW
# ----------------------------------------------------------------------------------------------
def _reference_adamw(params64, grads_per_step, groups):
    """The course's Algorithm 1, written out in float64. ``groups``: list of (indices, hparams)."""
    state = [dict(m=torch.zeros_like(p), v=torch.zeros_like(p), t=0) for p in params64]
    params64 = [p.clone() for p in params64]
    for grads in grads_per_step:
        for idx, h in groups:
            b1, b2 = h["betas"]
            for i in idx:
                g, s = grads[i].double(), state[i]
                s["t"] += 1
                s["m"] = b1 * s["m"] + (1 - b1) * g
                s["v"] = b2 * s["v"] + (1 - b2) * g * g
                lr_t = h["lr"] * math.sqrt(1 - b2 ** s["t"]) / (1 - b1 ** s["t"])
                params64[i] = params64[i] - lr_t * s["m"] / (s["v"].sqrt() + h["eps"])
                params64[i] = params64[i] - h["lr"] * h["weight_decay"] * params64[i]
    return params64


def _make_problem(seed=0, steps=6):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 4), (4,), (3, 5), (5,)]
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]
    return init, grads


GROUP_A = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
GROUP_B = dict(lr=3e-3, betas=(0.8, 0.999), eps=1e-6, weight_decay=0.0)


def _run_ours(init, grads_per_step, foreach=None, dtype=torch.float32):
    params = [torch.nn.Parameter(p.clone().to(dtype)) for p in init]
    opt = AdamW([dict(params=params[:2], **GROUP_A), dict(params=params[2:], **GROUP_B)], foreach=foreach)
    for grads in grads_per_step:
        for p, gr in zip(params, grads):
            p.grad = gr.clone().to(dtype)
        opt.step()
    return params, opt


@pytest.mark.parametrize("foreach", [None, False])
def test_adamw_matches_spec_algorithm_two_groups(foreach):
    init, grads = _make_problem()
    ours, _ = _run_ours(init, grads, foreach=foreach, dtype=torch.float64)
    ref = _reference_adamw([p.double() for p in init], grads, [([0, 1], GROUP_A), ([2, 3], GROUP_B)])
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    ours32, _ = _run_ours(init, grads, foreach=foreach)
    for p, r in zip(ours32, ref):
        torch.testing.assert_close(p.detach().double(), r, rtol=1e-5, atol=1e-6)


def test_adamw_matches_torch_without_weight_decay():
    init, grads = _make_problem(seed=5, steps=8)
    ours = [torch.nn.Parameter(p.clone()) for p in init]
    ref = [torch.nn.Parameter(p.clone()) for p in init]
    hp = dict(lr=5e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    o1, o2 = AdamW(ours, **hp), torch.optim.AdamW(ref, **hp)
    for step_grads in grads:
        for p, q, gr in zip(ours, ref, step_grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        o1.step()
        o2.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_adamw_decay_is_applied_after_update_not_before():
    """Spec: p -= lr_t*m/(sqrt(v)+eps); then p -= lr*wd*p (torch decays first)."""
    p = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=0.0, weight_decay=0.5)
    p.grad = torch.tensor([1.0], dtype=torch.float64)
    opt.step()
    # t=1: m=0.1, v=0.001, lr_t=0.1*sqrt(0.001)/0.1; m/sqrt(v)=0.1/sqrt(0.001) -> step = 0.1 exactly
    expected = (2.0 - 0.1) * (1 - 0.1 * 0.5)
    assert p.item() == pytest.approx(expected, rel=1e-12)


def test_adamw_skips_params_without_grad_and_counts_steps_per_param():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = AdamW([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3))
    assert b not in opt.state or len(opt.state[b]) == 0
    b.grad = torch.ones(3)
    opt.step()
    assert opt.state[a]["step"] == 2 and opt.state[b]["step"] == 1


def test_adamw_state_dict_round_trip_is_bit_identical():
    init, grads = _make_problem(seed=7, steps=10)
    full, _ = _run_ours(init, grads)

    first, opt = _run_ours(init, grads[:4])
    saved_opt = opt.state_dict()
    import copy
    import io

    buf = io.BytesIO()
    torch.save({"opt": saved_opt, "params": [p.detach() for p in first]}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    params = [torch.nn.Parameter(t.clone()) for t in loaded["params"]]
    opt2 = AdamW([dict(params=params[:2], **GROUP_A), dict(params=params[2:], **GROUP_B)])
    opt2.load_state_dict(copy.deepcopy(loaded["opt"]))
    for step_grads in grads[4:]:
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt2.step()
    for p, q in zip(params, full):
        assert torch.equal(p, q)


def test_adamw_group_lr_can_be_changed_by_a_schedule():
    p = torch.nn.Parameter(torch.ones(2))
    opt = AdamW([p], lr=1.0, weight_decay=0.0)
    for group in opt.param_groups:
        group["lr"] = 0.0
    p.grad = torch.ones(2)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(2))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 0.9)), "beta1"),
        (dict(betas=(0.9, -0.1)), "beta2"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_adamw_rejects_bad_hyperparameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        AdamW([torch.nn.Parameter(torch.ones(1))], **kwargs)


def test_adamw_constructed_like_the_course_adapter():
    model = torch.nn.Linear(3, 2)
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    assert all(opt.state[p]["step"] == 1 for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# cosine schedule
# ----------------------------------------------------------------------------------------------
def _by_hand(it, mx, mn, tw, tc):
    if it < tw:
        return it / tw * mx
    if it <= tc:
        return mn + 0.5 * (1 + math.cos(math.pi * (it - tw) / (tc - tw))) * (mx - mn)
    return mn


def test_cosine_schedule_course_values():
    expected = [
        0,
        0.14285714285714285,
        0.2857142857142857,
        0.42857142857142855,
        0.5714285714285714,
        0.7142857142857143,
        0.8571428571428571,
        1.0,
        0.9887175604818206,
        0.9554359905560885,
        0.9018241671106134,
        0.8305704108364301,
        0.7452476826029011,
        0.6501344202803414,
        0.55,
        0.44986557971965857,
        0.3547523173970989,
        0.26942958916356996,
        0.19817583288938662,
        0.14456400944391146,
        0.11128243951817937,
        0.1,
        0.1,
        0.1,
        0.1,
    ]
    got = [lr_cosine_schedule(it, 1.0, 0.1, 7, 21) for it in range(25)]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert got == pytest.approx([_by_hand(it, 1.0, 0.1, 7, 21) for it in range(25)], rel=1e-12)


def test_cosine_schedule_edges():
    assert lr_cosine_schedule(0, 1e-3, 1e-4, 0, 100) == pytest.approx(1e-3)  # no warmup
    assert lr_cosine_schedule(100, 1e-3, 1e-4, 0, 100) == pytest.approx(1e-4)
    assert lr_cosine_schedule(10, 1e-3, 1e-4, 10, 10) == pytest.approx(1e-3)  # Tc == Tw
    assert lr_cosine_schedule(11, 1e-3, 1e-4, 10, 10) == pytest.approx(1e-4)
    assert lr_cosine_schedule(5, 1e-3, 1e-4, 10, 10) == pytest.approx(5e-4)
    with pytest.raises(ValueError):
        lr_cosine_schedule(-1, 1e-3, 1e-4, 10, 100)
