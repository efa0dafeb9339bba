"""Repeated backward passes give bit-identical gradients at torch's default CPU thread count.

No thread pinning here on purpose: with several threads, autograd's own backward of ``weight[ids]``
adds rows for repeated ids with atomics in a timing-dependent order, so training runs drift apart.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.fast.layers import DeterministicEmbedding
from cs336_basics.layers import Embedding
from cs336_basics.lm.model import ModelConfig, TransformerLM

CFG = dict(vocab_size=16, context_length=64, d_model=128, num_layers=1, num_heads=4, d_ff=128)


def _grads(model: TransformerLM, idx: torch.Tensor, tgt: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits = model(idx)
    F.cross_entropy(logits.flatten(0, 1), tgt.flatten()).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("threads", ["default", 4])
def test_lm_gradients_bit_identical_across_repeats(threads):
    """A batch with many repeated ids (vocab 16, 16 x 64 tokens), 5 repeats: every parameter's
    gradient must be bit-identical. 4 threads also covers machines whose default is 1."""
    before = torch.get_num_threads()
    if threads != "default":
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = TransformerLM(ModelConfig(**CFG))
        idx = torch.randint(0, 16, (16, 64))
        tgt = torch.randint(0, 16, (16, 64))
        first = _grads(model, idx, tgt)
        for _ in range(4):
            again = _grads(model, idx, tgt)
            for k, g in first.items():
                assert torch.equal(again[k], g), f"{k} differs between identical backward passes"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("cls", [Embedding, DeterministicEmbedding])
def test_embedding_matches_f_embedding_forward_and_grad(cls):
    """The handout's lookup and its deterministic twin both equal torch's F.embedding."""
    torch.manual_seed(0)
    emb = cls(20, 8)
    w = emb.weight.detach().clone().requires_grad_()
    ids = torch.randint(0, 20, (3, 50))  # many repeats
    g = torch.randn(3, 50, 8)
    out = emb(ids)
    torch.testing.assert_close(out, F.embedding(ids, w))
    out.backward(g)
    F.embedding(ids, w).backward(g)
    torch.testing.assert_close(emb.weight.grad, w.grad)
    # a 0-d id and a bf16 table work too
    torch.testing.assert_close(emb(torch.tensor(3)), w.detach()[3])
    e16 = cls(5, 4, dtype=torch.bfloat16)
    out16 = e16(torch.tensor([[1, 1, 4]]))
    assert out16.dtype == torch.bfloat16 and out16.shape == (1, 3, 4)
    out16.float().sum().backward()
    assert e16.weight.grad.dtype == torch.bfloat16
    assert torch.equal(e16.weight.grad[1], torch.full((4,), 2.0, dtype=torch.bfloat16))


def test_the_model_uses_the_deterministic_twin_by_default_and_the_plain_one_on_request():
    assert isinstance(TransformerLM(ModelConfig(**CFG)).token_embeddings, DeterministicEmbedding)
    plain = TransformerLM(ModelConfig(**CFG, embedding="plain")).token_embeddings
    assert type(plain) is Embedding
