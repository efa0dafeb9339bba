"""Activation checkpointing recomputes each block in backward: the same loss and gradients as the
plain model, for both attention paths, with fewer tensors kept for backward."""

from __future__ import annotations

import pytest
import torch

from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.nn_utils import cross_entropy

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)


def _saved_bytes(fn) -> int:
    """Bytes autograd keeps for backward while ``fn`` runs (an independent count via saved-tensor hooks)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


@pytest.mark.parametrize("attention", ["fast", "plain"])
def test_checkpointed_gradients_equal_the_plain_run(attention):
    cfg = ModelConfig(vocab_size=97, context_length=64, d_model=32, num_layers=3, num_heads=4, d_ff=64,
                      attention=attention)  # fmt: skip
    torch.manual_seed(0)
    model = TransformerLM(cfg)
    x = torch.randint(0, 97, (3, 64))
    y = torch.randint(0, 97, (3, 64))

    def grads(checkpointing: bool):
        model.zero_grad(set_to_none=True)
        model.activation_checkpointing = checkpointing
        saved, loss = _saved_bytes(lambda: cross_entropy(model(x), y))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved

    loss_a, ga, saved_plain = grads(False)
    loss_b, gb, saved_ckpt = grads(True)
    assert torch.equal(loss_a, loss_b)
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f"{n}: {m}")
    assert saved_ckpt < saved_plain / 2, (saved_ckpt, saved_plain)
