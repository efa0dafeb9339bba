"""train_step against one written with torch built-ins; a non-finite step leaves everything as it was."""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn.functional as F

from cs336_basics.fast.optim import AdamW
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.training.step import train_step

CFG = ModelConfig(vocab_size=32, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32)


def _run(model, opt, batches, clip):
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return train_step(
        model,
        opt,
        scaler,
        batches,
        accum_steps=len(batches),
        grad_clip=clip,
        autocast=contextlib.nullcontext,
        no_sync=contextlib.nullcontext,
    )


def test_accumulated_clipped_step_equals_torch_builtins():
    torch.manual_seed(0)
    ours = TransformerLM(CFG)
    ref = copy.deepcopy(ours)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 32, (2, 8), generator=g), torch.randint(0, 32, (2, 8), generator=g)) for _ in range(2)]

    # eps tiny: the course's AdamW adds eps before the bias correction, torch's after; otherwise equal.
    result = _run(ours, AdamW(ours.parameters(), lr=1e-2, weight_decay=0.0, eps=1e-12), batches, clip=0.05)

    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-12)
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(ref(x).flatten(0, 1), y.flatten())
        (loss / 2).backward()
        losses.append(loss.item())
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
    ref_opt.step()

    assert result.applied
    assert math.isclose(float(result.loss), sum(losses) / 2, rel_tol=1e-5)
    assert math.isclose(float(result.grad_norm), norm.item(), rel_tol=1e-4)
    for (k, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_a_non_finite_loss_skips_the_update_and_clears_gradients():
    torch.manual_seed(0)
    model = TransformerLM(CFG)
    opt = AdamW(model.parameters(), lr=1e-2)
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
        before["lm_head.weight"][0, 0] = float("nan")
    x = torch.randint(0, 32, (2, 8))
    result = _run(model, opt, [(x, x)], clip=1.0)
    assert not result.applied and not math.isfinite(float(result.loss))
    for k, v in model.state_dict().items():
        assert torch.equal(v.nan_to_num(7.0), before[k].nan_to_num(7.0)), k
    assert all(p.grad is None for p in model.parameters()) and not opt.state
