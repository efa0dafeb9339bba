"""AdamW and the cosine schedule vs independent references.

References: torch.optim.AdamW (weight_decay=0, where it agrees with the course's algorithm), the
course's AdamW written out in float64 here, and the schedule formula evaluated by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from cs336_basics.fast.optim import AdamW
from cs336_basics.optim import lr_cosine_schedule


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


# One rule per hyperparameter (cs336_basics.optim.check_hparam), worked out by hand: beta1/beta2 (and
# Muon's momentum) in [0, 1); lr, eps and weight_decay finite and >= 0; booleans are no numbers.
BAD_HPARAMS = [("lr", -1e-3), ("lr", float("inf")), ("lr", float("nan")), ("lr", True), ("beta1", 1.0),
               ("beta2", -0.1), ("beta2", float("nan")), ("eps", -1e-8), ("eps", float("inf")),
               ("weight_decay", -0.1), ("weight_decay", float("nan")), ("weight_decay", True)]  # fmt: skip
EDGE_HPARAMS = dict(lr=0.0, beta1=0.0, beta2=0.0, eps=0.0, weight_decay=0.0)


def _adamw_kwargs(name, value):
    kw = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    if name in ("beta1", "beta2"):
        kw["betas"] = (value, 0.95) if name == "beta1" else (0.9, value)
    else:
        kw[name] = value
    return kw


@pytest.mark.parametrize("name, value", BAD_HPARAMS)
def test_every_optimizer_refuses_a_bad_hyperparameter_by_the_same_rule(name, value):
    from cs336_basics import optim as textbook
    from cs336_basics.extensions.muon import Muon
    from cs336_basics.fast.optim import param_groups
    from cs336_basics.lm.model import ModelConfig, TransformerLM

    def p():
        return torch.nn.Parameter(torch.zeros(2, 2))

    kw = _adamw_kwargs(name, value)
    for build in (textbook.AdamW, AdamW, lambda ps, **k: Muon([dict(params=ps, use_muon=False)], **k)):
        with pytest.raises(ValueError, match=rf"\b{name} must be"):
            build([p()], **kw)
    if name in ("lr", "weight_decay"):  # Muon's own groups and the engine's parameter groups
        with pytest.raises(ValueError, match=rf"Muon: {name} must be"):
            Muon([p()], **{name: value})
        model = TransformerLM(ModelConfig(vocab_size=8, context_length=4, d_model=8, num_heads=2, d_ff=8,
                                          num_layers=1))  # fmt: skip
        args = dict(lr=1e-3, weight_decay=0.1) | {name: value}
        with pytest.raises(ValueError, match=rf"param_groups: {name} must be"):
            param_groups(model, "adamw", **args)


def test_every_optimizer_takes_the_edges_of_the_rule():
    from cs336_basics import optim as textbook
    from cs336_basics.extensions.muon import Muon

    e = EDGE_HPARAMS
    kw = dict(lr=e["lr"], betas=(e["beta1"], e["beta2"]), eps=e["eps"], weight_decay=e["weight_decay"])
    for build in (textbook.AdamW, AdamW, Muon):
        build([torch.nn.Parameter(torch.zeros(2, 2))], **kw)
    Muon([torch.nn.Parameter(torch.zeros(2, 2))], momentum=0.0)


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


# ----------------------------------------------------------------------------------------------
# The textbook's AdamW (cs336_basics.optim) and the fast twin (cs336_basics.fast.optim)
# ----------------------------------------------------------------------------------------------
def _run_textbook(init, grads_per_step):
    from cs336_basics import optim as textbook

    params = [torch.nn.Parameter(p.clone()) for p in init]
    opt = textbook.AdamW([dict(params=params[:2], **GROUP_A), dict(params=params[2:], **GROUP_B)])
    for grads in grads_per_step:
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
    return params, opt


def test_textbook_adamw_matches_the_spec_and_equals_the_fast_twin():
    init, grads = _make_problem(seed=4)
    ref = _reference_adamw([p.double() for p in init], grads, [(range(2), GROUP_A), (range(2, 4), GROUP_B)])
    book, book_opt = _run_textbook(init, grads)
    for ours, want in zip(book, ref, strict=True):
        torch.testing.assert_close(ours.detach().double(), want, rtol=1e-5, atol=1e-6)
    for foreach in (False, None):  # the per-parameter loop and the multi-tensor kernels
        fast, fast_opt = _run_ours(init, grads, foreach=foreach)
        for a, b in zip(book, fast, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # the same state, under the same keys: a checkpoint of one resumes in the other
    a, b = book_opt.state_dict()["state"], fast_opt.state_dict()["state"]
    assert a.keys() == b.keys() and all(a[k].keys() == b[k].keys() for k in a)
    assert all(a[k]["step"] == b[k]["step"] == len(grads) for k in a)


def test_textbook_adamw_refuses_bad_hyperparameters():
    from cs336_basics import optim as textbook

    with pytest.raises(ValueError, match="beta2"):
        textbook.AdamW([torch.nn.Parameter(torch.zeros(2))], betas=(0.9, 1.0))
