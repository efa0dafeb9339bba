"""The engine's attention: the textbook's, plus what generation, diffusion and the recipe need.

:class:`Attention` subclasses ``layers.CausalMultiHeadSelfAttention`` (same ``q_proj`` / ``k_proj`` /
``v_proj`` / ``output_proj`` parameters, so checkpoints move freely between them) and adds, each fixed
at construction and off by default:

* a KV cache (:class:`KVCache`) for incremental decoding: ``forward(x, kv_cache=...)`` continues the
  cached prefix;
* ``causal=False``: no mask, every position sees every other (masked diffusion,
  ``cs336_basics.extensions.diffusion``);
* the leaderboard recipe's per-head QK-norm (``qk_norm``: RMSNorm gains ``q_norm`` / ``k_norm`` of
  size d_head) and value-residual mixing (``value_mix``, ``extensions.recipe.ValueResidual``).

With all of them off it computes exactly the textbook's function. Its fast twin is
``cs336_basics.fast.attention.FastCausalMultiHeadSelfAttention``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.layers import (
    CausalMultiHeadSelfAttention,
    RMSNorm,
    RotaryPositionalEmbedding,
    causal_mask,
    scaled_dot_product_attention,
)

__all__ = ["Attention", "KVCache"]


class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to ``max_len``.

    Each buffer is ``[batch, heads, max_len, d_head]``. ``length`` is a Python int (the number of
    positions already cached, equal for all layers); the model advances it once per forward, after
    every layer has written its keys/values.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys: list[Float[Tensor, "batch heads max_len d_head"]] = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)
        ]
        self.values: list[Float[Tensor, "batch heads max_len d_head"]] = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)
        ]
        self.max_len = max_len
        self.length = 0

    def update(
        self,
        layer: int,
        k: Float[Tensor, "batch heads seq d_head"],
        v: Float[Tensor, "batch heads seq d_head"],
    ) -> tuple[Float[Tensor, "batch heads kv_seq d_head"], Float[Tensor, "batch heads kv_seq d_head"]]:
        """Write ``k, v`` at positions ``length ..`` and return all cached keys/values so far
        (``kv_seq = length + seq``)."""
        start = self.length
        end = start + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(CausalMultiHeadSelfAttention):
    """The textbook's attention with a KV cache, ``causal=False``, QK-norm and value mixing (above)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryPositionalEmbedding | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        causal: bool = True,
        qk_norm: bool = False,
        value_mix: nn.Module | None = None,
    ) -> None:
        super().__init__(d_model, num_heads, rope=rope, device=device, dtype=dtype)
        self.causal = causal
        self.q_norm = RMSNorm(self.d_k, device=device, dtype=dtype) if qk_norm else None
        self.k_norm = RMSNorm(self.d_k, device=device, dtype=dtype) if qk_norm else None
        self.value_mix = value_mix

    def _positions(self, x: Tensor, token_positions: Tensor | None, start: int) -> Int[Tensor, "... seq"]:
        """Absolute positions of x's tokens: given, or ``start .. start+seq-1`` (after a cached prefix)."""
        if token_positions is None:
            return torch.arange(start, start + x.shape[-2], device=x.device)
        if token_positions.dim() > 1:  # [..., seq] lined up with x's leading dims
            token_positions = token_positions.broadcast_to(x.shape[:-1])
        return token_positions

    def forward(
        self,
        x: Float[Tensor, "... seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        first_values=None,
    ) -> Float[Tensor, "... seq d_model"]:
        """With ``kv_cache`` (x is ``[batch, seq, d_model]``), x continues the cached prefix.
        ``first_values``: the model's ``recipe.FirstValues`` when value residual is on."""
        start = 0 if kv_cache is None else kv_cache.length
        q, k, v = self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.value_mix is not None:
            v = self.value_mix(v, first_values)
        if self.rope is not None:
            positions = self._positions(x, token_positions, start)
            q = self.rope(q, positions)
            k = self.rope(k, positions)
        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)
        mask = causal_mask(q.shape[-2], k.shape[-2], device=x.device) if self.causal else None
        out = scaled_dot_product_attention(q, k, v, mask)
        out = rearrange(out, "... heads seq d_head -> ... seq (heads d_head)")
        return self.output_proj(out)
