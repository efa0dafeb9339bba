"""The Transformer language model (handout section 3.5), with the course's ablations (section 7.3).

``token_embeddings -> layers.0 .. layers.N-1 -> ln_final -> lm_head``. State-dict names match the
course's reference (``layers.{i}.attn.q_proj.weight``, ``layers.{i}.ffn.w1.weight``, ...), so its
weights load with ``load_state_dict``. The ablations, each off by default:

* ``remove_rmsnorm``: no RMSNorm anywhere (its ``.weight`` keys disappear from the state dict);
* ``use_post_norm``: norms after each residual add, ``z = ln1(x + attn(x)); out = ln2(z + ffn(z))``;
* ``remove_rope``: no position information at all (NoPE);
* ``ffn_type="silu"``: the ungated ``W2(SiLU(W1 x))`` (give ``d_ff = 4 * d_model`` to match SwiGLU's
  parameter count).

The training program builds the engine's model instead (``cs336_basics.lm.model``): the same
parameters and function, plus a KV cache, faster attention and the extensions.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.layers import (
    CausalMultiHeadSelfAttention,
    Embedding,
    Identity,
    Linear,
    RMSNorm,
    RotaryPositionalEmbedding,
    SiLUFFN,
    SwiGLU,
    softmax,
)


class TransformerBlock(nn.Module):
    """One pre-norm block: ``y = x + attn(ln1(x)); out = y + ffn(ln2(y))`` (or post-norm, above)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        max_seq_len: int,
        theta: float,
        *,
        remove_rmsnorm: bool = False,
        use_post_norm: bool = False,
        remove_rope: bool = False,
        ffn_type: str = "swiglu",
        rope: RotaryPositionalEmbedding | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if ffn_type not in ("swiglu", "silu"):
            raise ValueError(f"ffn_type must be swiglu or silu, got {ffn_type!r}")
        if remove_rope:
            rope = None
        elif rope is None:
            rope = RotaryPositionalEmbedding(theta, d_model // num_heads, max_seq_len, device=device)
        self.use_post_norm = use_post_norm
        self.attn = CausalMultiHeadSelfAttention(d_model, num_heads, rope=rope, device=device, dtype=dtype)
        norm = Identity if remove_rmsnorm else lambda: RMSNorm(d_model, device=device, dtype=dtype)
        self.ln1, self.ln2 = norm(), norm()
        ffn = SwiGLU if ffn_type == "swiglu" else SiLUFFN
        self.ffn = ffn(d_model, d_ff, device=device, dtype=dtype)

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], token_positions: Int[Tensor, "... seq"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        if self.use_post_norm:
            z = self.ln1(x + self.attn(x, token_positions))
            return self.ln2(z + self.ffn(z))
        y = x + self.attn(self.ln1(x), token_positions)
        return y + self.ffn(self.ln2(y))


class TransformerLM(nn.Module):
    """Token ids ``[batch, seq]`` to unnormalised next-token logits ``[batch, seq, vocab]``."""

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int,
        rope_theta: float = 10000.0,
        *,
        remove_rmsnorm: bool = False,
        use_post_norm: bool = False,
        remove_rope: bool = False,
        ffn_type: str = "swiglu",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embeddings = Embedding(vocab_size, d_model, device=device, dtype=dtype)
        # One RoPE table for every layer (its buffers are not in the state dict).
        rope = (
            None if remove_rope else RotaryPositionalEmbedding(rope_theta, d_model // num_heads, context_length, device)
        )
        self.layers = nn.ModuleList(
            TransformerBlock(
                d_model, num_heads, d_ff, context_length, rope_theta, remove_rmsnorm=remove_rmsnorm,
                use_post_norm=use_post_norm, remove_rope=remove_rope, ffn_type=ffn_type, rope=rope,
                device=device, dtype=dtype,
            )
            for _ in range(num_layers)
        )  # fmt: skip
        self.ln_final = Identity() if remove_rmsnorm else RMSNorm(d_model, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, vocab_size, device=device, dtype=dtype)

    def forward(self, in_indices: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        if in_indices.shape[-1] > self.context_length:
            raise ValueError(f"sequence length {in_indices.shape[-1]} exceeds context_length {self.context_length}")
        x = self.token_embeddings(in_indices)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.ln_final(x))


@torch.no_grad()
def decode(
    model: TransformerLM,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample a continuation of ``prompt`` (handout section 6): softmax with ``temperature`` (0 =
    greedy), keep the smallest set of tokens whose probability reaches ``top_p``, sample, append;
    stop after ``max_new_tokens`` or at ``eos_id`` (not returned). Returns the new ids."""
    ids = list(prompt)
    device = model.lm_head.weight.device
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids[-model.context_length :]], device=device))[0, -1].float()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            probs = softmax(logits / temperature)
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = (torch.cumsum(sorted_probs, 0) - sorted_probs) < top_p  # the mass before each < top_p
            sorted_probs = torch.where(keep, sorted_probs, 0.0)
            nxt = int(order[torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)])
        if nxt == eos_id:
            break
        ids.append(nxt)
        new.append(nxt)
    return new
