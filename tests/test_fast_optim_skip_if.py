"""GroupStepOptimizer.step(skip_if=flag): a set flag leaves weights and optimizer state exactly as they
were (compared with copies taken before), a clear flag is bit for bit a plain step(), and
settle_skips() takes the skipped steps off the step counts, so that a run with skipped steps ends
exactly where a run that never took them does (for AdamW and Muon). Until settle_skips() runs, the
integer step counts run ahead by the skipped steps (AdamW's bias correction with them)."""

from __future__ import annotations

import copy

import pytest
import torch

from cs336_basics.extensions.muon import Muon
from cs336_basics.fast.optim import AdamW


def _make(kind: str):
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 4, generator=g))
    b = torch.nn.Parameter(torch.randn(4, generator=g))
    if kind == "adamw":
        opt = AdamW([w, b], lr=0.1, weight_decay=0.1)
    else:
        opt = Muon([{"params": [w], "use_muon": True}, {"params": [b], "use_muon": False}], lr=0.1)
    return [w, b], opt


def _grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def _state(opt):
    return [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
            for group in opt.param_groups for p in group["params"]]  # fmt: skip


def _equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k], k


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_skip_if(kind):
    params, opt = _make(kind)
    ref_params, ref = _make(kind)
    for seed, skip in enumerate([False, True, False, True, True, False]):
        _grads(params, seed)
        if skip:
            before_w, before_s = [p.detach().clone() for p in params], _state(opt)
            params[0].grad[0, 0] = float("nan")  # what a skipped step usually carries
            opt.step(skip_if=torch.tensor(True))
            assert all(torch.equal(p, q) for p, q in zip(params, before_w)), "a skipped step moved the weights"
            after = _state(opt)
            for st in after:
                st.pop("step", None)  # the integer count advances until settle_skips()
            for st in before_s:
                st.pop("step", None)
            _equal(after, before_s)
            assert opt.settle_skips() == 1  # the loop's read-back (here after every skipped step)
        else:
            _grads(ref_params, seed)
            opt.step(skip_if=torch.tensor(False))
            ref.step()
            assert all(torch.equal(p, q) for p, q in zip(params, ref_params)), "a clear flag is not a plain step"
    _equal(_state(opt), _state(ref))
    assert opt.settle_skips() == 0
    assert copy.deepcopy(opt.state_dict())["state"].keys() == ref.state_dict()["state"].keys()
