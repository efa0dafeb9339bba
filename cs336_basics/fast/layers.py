"""Twins of ``layers.py`` pieces: the same parameters and function, computed differently.

* :class:`DeterministicEmbedding` -- ``layers.Embedding`` whose backward sums the gradient rows of
  repeated ids in a fixed order, so two identical CPU training runs stay bit-identical at any thread
  count. It is the model's default (``ModelConfig.embedding = "deterministic"``; ``"plain"`` picks
  the handout's lookup); ``tests/test_layers_embedding_determinism.py`` ties the two together.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cs336_basics.layers import Embedding


class _EmbeddingLookup(torch.autograd.Function):
    """``weight[ids]`` whose backward adds gradient rows in a fixed order (deterministic on CPU).

    Autograd's own backward for ``weight[ids]`` is an accumulating ``index_put_``, which on CPU with
    more than one thread adds float32 rows with atomics: repeated ids (common tokens) then sum in
    a thread-timing-dependent order, so two identical training runs drift apart. ``index_add_``
    along dim 0 on CPU walks the ids in order (each row add is elementwise), so the sum order is
    fixed at any thread count. (On CUDA ``index_add_`` uses atomics, like torch's own embedding.)
    """

    @staticmethod
    def forward(ctx, weight: Tensor, token_ids: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(token_ids)
        ctx.num_embeddings = weight.shape[0]
        flat = token_ids.reshape(-1)
        return weight.index_select(0, flat).view(*token_ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (token_ids,) = ctx.saved_tensors
        d = grad_out.shape[-1]
        grad_weight = grad_out.new_zeros(ctx.num_embeddings, d)
        grad_weight.index_add_(0, token_ids.reshape(-1), grad_out.reshape(-1, d))
        return grad_weight, None


class DeterministicEmbedding(Embedding):
    """``layers.Embedding`` (same ``weight``, same init, same forward) with a deterministic backward."""

    def forward(self, token_ids: Int[Tensor, " ..."]) -> Float[Tensor, "... d_model"]:
        return _EmbeddingLookup.apply(self.weight, token_ids)
