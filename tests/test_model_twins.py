"""The engine's model (cs336_basics.lm.model) is the textbook's (cs336_basics.model) at the same settings.

Same seed: the same initial weights (the same state dict, key for key, bit for bit). Same weights:
the same logits, exactly on the plain paths and to float32 rounding on the fast ones, for the
handout's configuration and each of the course's ablations; state dicts move both ways. The engine's
KV-cached greedy ``generate`` gives the textbook ``decode``'s tokens.
"""

import pytest
import torch

from cs336_basics import model as textbook
from cs336_basics.lm.generate import generate
from cs336_basics.lm.model import ModelConfig, TransformerLM

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

SHAPE = dict(vocab_size=50, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=48, rope_theta=500.0)
ABLATIONS = [{}, {"remove_rmsnorm": True}, {"use_post_norm": True}, {"remove_rope": True}, {"ffn_type": "silu"}]


def pair(ablation: dict, attention: str = "plain", embedding: str = "plain"):
    torch.manual_seed(3)
    book = textbook.TransformerLM(**SHAPE, **ablation)
    torch.manual_seed(3)
    engine = TransformerLM(ModelConfig(**SHAPE, **ablation, attention=attention, embedding=embedding))
    return book, engine


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: next(iter(a), "handout"))
def test_same_seed_same_weights_and_same_logits(ablation):
    book, engine = pair(ablation)
    a, b = book.state_dict(), engine.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(0, 50, (3, 20))
    assert torch.equal(book(ids), engine(ids))  # the plain paths: the same operations


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: next(iter(a), "handout"))
def test_the_fast_paths_compute_the_same_function(ablation):
    book, engine = pair(ablation, attention="fast", embedding="deterministic")
    ids = torch.randint(0, 50, (3, 20))
    lb, le = book(ids), engine(ids)
    torch.testing.assert_close(le, lb, rtol=1e-5, atol=1e-5)
    lb.square().mean().backward()
    le.square().mean().backward()
    grads = dict(engine.named_parameters())
    for name, p in book.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_state_dicts_move_both_ways():
    book, engine = pair({})
    torch.manual_seed(9)
    other = TransformerLM(ModelConfig(**SHAPE))  # different weights, default (fast) paths
    book.load_state_dict(other.state_dict())
    ids = torch.randint(0, 50, (2, 10))
    torch.testing.assert_close(book(ids), other(ids), rtol=1e-5, atol=1e-5)
    engine.load_state_dict(textbook.TransformerLM(**SHAPE).state_dict())


def test_engine_generate_is_the_textbook_decode():
    book, engine = pair({}, attention="fast", embedding="deterministic")
    prompt = [3, 1, 4, 1, 5]
    want = textbook.decode(book, prompt, 30, temperature=0)  # 35 tokens: the window slides past 24
    assert generate(engine, prompt, 30, temperature=0) == want
    assert generate(engine, prompt, 30, temperature=0, use_cache=False) == want
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sampled = textbook.decode(book, prompt, 12, temperature=0.8, top_p=0.9, generator=g1)
    assert generate(engine, prompt, 12, temperature=0.8, top_p=0.9, generator=g2) == sampled
