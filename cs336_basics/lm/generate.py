"""Sampling from the engine's model: greedy, temperature and nucleus (top-p), with a KV cache.

The textbook's ``model.decode`` is the handout's loop (the whole window through the model for every
new token); :func:`generate` is its fast twin, feeding one new position per step through a
``KVCache`` (``tests/test_model_twins.py`` holds the two equal).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.layers import softmax
from cs336_basics.lm.model import unwrap_model

__all__ = ["generate", "check_sampling_args"]


def _sample_next(
    logits: Float[Tensor, " vocab"],
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    """Pick the next id: argmax at temperature 0, else nucleus (top-p) sampling at ``temperature``."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = softmax(logits.float() / temperature, -1)
    if top_p < 1.0:
        sorted_probs, sorted_idx = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it < top_p.
        keep = (cum - sorted_probs) < top_p
        keep[0] = True
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(sorted_idx[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def check_sampling_args(prompt_ids: Any, max_new_tokens: int, temperature: float, top_p: float) -> None:
    """The arguments every sampler shares, checked once (``generate`` and diffusion's sampler)."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: generation needs at least one prompt token")


def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
) -> list[int]:
    """Sample up to ``max_new_tokens`` continuation ids of ``prompt_ids`` (the new ids only).

    Stops right after sampling ``eos_id`` (which is not returned). ``temperature == 0`` is greedy.
    The prompt is cut to its last ``context_length`` tokens. With ``use_cache`` each new token costs
    one position through a KV cache; once the sequence outgrows ``context_length`` the window must
    slide, and every cached key would change, so it falls back to recomputing the last
    ``context_length`` tokens per step -- exactly what ``use_cache=False`` does, so both agree.
    A torch.compile / DDP wrapper is unwrapped first: batch-1 decoding changes shapes every step,
    which would only trigger recompiles.

    ``vocab_limit``: ids ``>= vocab_limit`` are never produced (their logits are set to -inf before
    greedy / temperature / top-p), for a tokenizer with fewer ids than the model's vocabulary.
    """
    check_sampling_args(prompt_ids, max_new_tokens, temperature, top_p)
    if vocab_limit is not None and (
        isinstance(vocab_limit, bool) or not isinstance(vocab_limit, int) or vocab_limit < 1
    ):
        raise ValueError(f"vocab_limit must be a positive integer, got {vocab_limit!r}")
    base = unwrap_model(model)
    ctx = base.config.context_length
    device = next(base.parameters()).device

    seq = list(prompt_ids)[-ctx:]
    new: list[int] = []
    cache = base.make_kv_cache(1) if use_cache else None
    pending = seq  # tokens not yet fed through the cache
    for _ in range(max_new_tokens):
        if cache is not None and cache.length + len(pending) <= ctx:
            ids = torch.tensor([pending], dtype=torch.long, device=device)
            logits = base(ids, kv_cache=cache)[0, -1]
        else:
            ids = torch.tensor([seq[-ctx:]], dtype=torch.long, device=device)
            logits = base(ids)[0, -1]
        if vocab_limit is not None and vocab_limit < logits.shape[-1]:
            logits = logits.clone()
            logits[vocab_limit:] = float("-inf")
        nxt = _sample_next(logits, temperature, top_p, generator)
        if eos_id is not None and nxt == eos_id:
            break
        new.append(nxt)
        seq.append(nxt)
        pending = [nxt]
    return new
