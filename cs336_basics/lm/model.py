"""The engine's Transformer LM: one config, every option, the textbook's pieces underneath.

The textbook (``cs336_basics.model``) is the handout's model and its ablations. This one is what the
training program, generation, export and the tools build: the same parameters, state-dict names and
function at the same settings (``tests/test_model_twins.py`` ties the two), plus

* ``ModelConfig``, everything needed to rebuild a model, saved as JSON beside every checkpoint;
* implementation choices that keep the function: ``attention`` "fast" (default:
  ``fast.attention.FastCausalMultiHeadSelfAttention``) or "plain" (``lm.attention.Attention``), and
  ``embedding`` "deterministic" (default: ``fast.layers.DeterministicEmbedding``) or "plain";
* a KV cache for generation (``lm.attention.KVCache``, :mod:`cs336_basics.lm.generate`), activation
  checkpointing, FLOP counting;
* the extensions: masked diffusion (``causal``, ``mask_token_id``), mixture of experts
  (``ffn_type="moe"``), and the leaderboard recipe (``qk_norm``, ``ffn_type="relu2"``,
  ``zero_init_proj``, ``tie_embeddings``, ``logit_softcap``, ``value_residual``, ``embed_norm``).

State-dict names match the course's reference exactly (``token_embeddings.weight``,
``layers.{i}.attn.q_proj.weight``, ..., ``ln_final.weight``, ``lm_head.weight``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cs336_basics.extensions import recipe
from cs336_basics.extensions.moe import MoEFFN, MoESpec, check_moe_fields
from cs336_basics.fast.attention import FastCausalMultiHeadSelfAttention
from cs336_basics.fast.layers import DeterministicEmbedding
from cs336_basics.layers import Embedding, Identity, Linear, RMSNorm, RotaryPositionalEmbedding, SiLUFFN, SwiGLU
from cs336_basics.lm.attention import Attention, KVCache

__all__ = [
    "ModelConfig",
    "TransformerBlock",
    "TransformerLM",
    "KVCache",
    "FFN_TYPES",
    "ATTENTION_TYPES",
    "EMBEDDING_TYPES",
    "unwrap_model",
]

FFN_TYPES = ("swiglu", "silu", "moe", "relu2")
ATTENTION_TYPES = ("fast", "plain")
EMBEDDING_TYPES = ("deterministic", "plain")
# ModelConfig fields that choose how, not what, is computed: same parameters and function, so a
# checkpoint resumes under either value.
IMPLEMENTATION_FIELDS = ("attention", "embedding")
_ATTENTION_CLASSES: dict[str, type[Attention]] = {"fast": FastCausalMultiHeadSelfAttention, "plain": Attention}
_EMBEDDING_CLASSES = {"deterministic": DeterministicEmbedding, "plain": Embedding}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a TransformerLM; saved as JSON beside every checkpoint.

    Ablations: ``remove_rmsnorm`` drops every RMSNorm (ln1, ln2 and ln_final become parameter-free
    identities, so their ``.weight`` keys disappear from the state dict); ``use_post_norm`` puts the
    norms after each residual add; ``remove_rope`` drops positional information entirely (NoPE);
    ``ffn_type="silu"`` uses the non-gated ``W2(SiLU(W1 x))`` FFN with ``d_ff`` as given (use
    4 * d_model to match a SwiGLU's parameter count).

    The leaderboard recipe (``cs336_basics.extensions.recipe``, every field off by default): ``qk_norm``,
    ``zero_init_proj``, ``tie_embeddings``, ``logit_softcap`` (0 = off), ``value_residual``,
    ``embed_norm``, and ``ffn_type="relu2"`` (``d_ff`` as given: ``recipe.relu2_d_ff`` of a SwiGLU's
    width, i.e. 3/2 of it, matches its parameter count).


    ``attention`` and ``embedding`` are implementation choices, not architecture changes: "fast"
    (default) or "plain" attention, "deterministic" (default) or "plain" embedding compute the same
    function with the same parameters. Dicts saved before these fields existed load with the defaults.
    """

    vocab_size: int = 10000
    context_length: int = 256
    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    d_ff: int = 2048
    rope_theta: float = 10000.0
    remove_rmsnorm: bool = False
    use_post_norm: bool = False
    remove_rope: bool = False
    ffn_type: str = "swiglu"
    attention: str = "fast"
    embedding: str = "deterministic"
    # -- masked diffusion (cs336_basics.extensions.diffusion) and mixture of experts (cs336_basics.extensions.moe) -----------
    # causal=False: bidirectional attention; mask_token_id: diffusion's [MASK] id, one vocabulary row
    # that no data uses. The num_experts/moe_* fields apply to ffn_type="moe" only (each expert is a
    # SwiGLU of width d_ff; top-k routing; capacity None = no token dropped).
    causal: bool = True
    mask_token_id: int | None = None
    num_experts: int = 8
    moe_top_k: int = 2
    moe_shared_expert: bool = False
    moe_capacity_factor: float | None = None
    # -- leaderboard recipe (cs336_basics.extensions.recipe; all off by default) --
    qk_norm: bool = False
    zero_init_proj: bool = False
    tie_embeddings: bool = False
    logit_softcap: float = 0.0
    value_residual: bool = False
    embed_norm: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (round-trips through ``from_dict``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a dict (e.g. a checkpoint's ``model_config``); unknown keys are an error."""
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(map(str, unknown))}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> ModelConfig:
        """Raise ``ValueError`` with one line naming the bad value; returns self when fine."""
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"model config {name} must be an integer, got {value!r}")
            if value <= 0:
                raise ValueError(f"model config {name} must be positive, got {value}")
        if isinstance(self.rope_theta, bool) or not isinstance(self.rope_theta, (int, float)):
            raise ValueError(f"model config rope_theta must be a number, got {self.rope_theta!r}")
        if not self.rope_theta > 0 or math.isinf(self.rope_theta):
            raise ValueError(f"model config rope_theta must be positive and finite, got {self.rope_theta}")
        for name in ("remove_rmsnorm", "use_post_norm", "remove_rope"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model config {name} must be true/false, got {getattr(self, name)!r}")
        if self.d_model % self.num_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        head_dim = self.d_model // self.num_heads
        if not self.remove_rope and head_dim % 2 != 0:
            raise ValueError(
                f"RoPE needs an even head dimension, but d_model/num_heads = "
                f"{self.d_model}/{self.num_heads} = {head_dim}"
            )
        if self.ffn_type not in FFN_TYPES:
            raise ValueError(f"model config ffn_type must be one of {', '.join(FFN_TYPES)}, got {self.ffn_type!r}")
        if self.attention not in ATTENTION_TYPES:
            raise ValueError(
                f"model config attention must be one of {', '.join(ATTENTION_TYPES)}, got {self.attention!r}"
            )
        if self.embedding not in EMBEDDING_TYPES:
            raise ValueError(
                f"model config embedding must be one of {', '.join(EMBEDDING_TYPES)}, got {self.embedding!r}"
            )
        # The masked-diffusion / MoE block.
        if not isinstance(self.causal, bool):
            raise ValueError(f"model config causal must be true/false, got {self.causal!r}")
        m = self.mask_token_id
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < self.vocab_size):
            raise ValueError(
                f"model config mask_token_id must be an id in [0, vocab_size={self.vocab_size}), got {m!r}"
            )
        check_moe_fields(self)
        recipe.validate_recipe(self)
        return self


# The fields that define the architecture (what a checkpoint's weights are for), less the
# implementation choices, which a resumed run may change freely. --objective diffusion sets the
# objective's fields (one more id, the [MASK]; bidirectional attention): they are no flags of their
# own, and a resume checks them too, so a checkpoint of one objective never resumes under the other.
OBJECTIVE_MODEL_FIELDS = ("causal", "mask_token_id")
MODEL_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(ModelConfig)
    if f.name not in IMPLEMENTATION_FIELDS and f.name not in OBJECTIVE_MODEL_FIELDS
)


class TransformerBlock(nn.Module):
    """One pre-norm block: ``y = x + attn(ln1(x)); out = y + ffn(ln2(y))``.

    ``use_post_norm``: ``z = ln1(x + attn(x)); out = ln2(z + ffn(z))``. Keys: ``attn.*``, ``ln1``,
    ``ffn.*``, ``ln2`` (no ``ln*`` keys with ``remove_rmsnorm``).
    """

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
        attention: str = "fast",
        rope: RotaryPositionalEmbedding | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        causal: bool = True,
        moe: MoESpec | None = None,
        qk_norm: bool = False,
        value_mix: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if ffn_type not in FFN_TYPES:
            raise ValueError(f"ffn_type must be one of {', '.join(FFN_TYPES)}, got {ffn_type!r}")
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_TYPES)}, got {attention!r}")
        if remove_rope:
            rope = None
        elif rope is None:
            rope = RotaryPositionalEmbedding(theta, d_model // num_heads, max_seq_len, device=device)
        self.use_post_norm = use_post_norm
        self.attn = _ATTENTION_CLASSES[attention](
            d_model,
            num_heads,
            rope=rope,
            device=device,
            dtype=dtype,
            causal=causal,
            qk_norm=qk_norm,
            value_mix=value_mix,
        )
        if remove_rmsnorm:
            self.ln1: nn.Module = Identity()
            self.ln2: nn.Module = Identity()
        else:
            self.ln1 = RMSNorm(d_model, device=device, dtype=dtype)
            self.ln2 = RMSNorm(d_model, device=device, dtype=dtype)
        if ffn_type == "swiglu":
            self.ffn: nn.Module = SwiGLU(d_model, d_ff, device=device, dtype=dtype)
        elif ffn_type == "moe":
            self.ffn = MoEFFN(d_model, d_ff, moe or MoESpec(), device=device, dtype=dtype)
        elif ffn_type == "relu2":
            self.ffn = recipe.ReLU2FFN(d_model, d_ff, device=device, dtype=dtype)
        else:
            self.ffn = SiLUFFN(d_model, d_ff, device=device, dtype=dtype)

    def forward(
        self,
        x: Float[Tensor, "batch seq d_model"],
        token_positions: Int[Tensor, "... seq"] | None = None,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        first_values: recipe.FirstValues | None = None,
    ) -> Float[Tensor, "batch seq d_model"]:
        if self.use_post_norm:
            z = self.ln1(x + self.attn(x, token_positions, kv_cache, layer_idx, first_values))
            return self.ln2(z + self.ffn(z))
        y = x + self.attn(self.ln1(x), token_positions, kv_cache, layer_idx, first_values)
        return y + self.ffn(self.ln2(y))


class TransformerLM(nn.Module):
    """``token_embeddings -> layers.0..N-1 -> ln_final -> lm_head``; returns unnormalized logits."""

    def __init__(
        self,
        config: ModelConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.token_embeddings = _EMBEDDING_CLASSES[c.embedding](c.vocab_size, c.d_model, device=device, dtype=dtype)
        # One RoPE table shared by every layer (its buffers are non-persistent: not in the state dict).
        rope = (
            None
            if c.remove_rope
            else RotaryPositionalEmbedding(c.rope_theta, c.d_model // c.num_heads, c.context_length, device=device)
        )
        self.layers = nn.ModuleList(
            TransformerBlock(
                c.d_model,
                c.num_heads,
                c.d_ff,
                c.context_length,
                c.rope_theta,
                remove_rmsnorm=c.remove_rmsnorm,
                use_post_norm=c.use_post_norm,
                remove_rope=c.remove_rope,
                ffn_type=c.ffn_type,
                attention=c.attention,
                rope=rope,
                device=device,
                dtype=dtype,
                causal=c.causal,
                moe=MoESpec.from_config(c) if c.ffn_type == "moe" else None,
                qk_norm=c.qk_norm,
                value_mix=recipe.ValueResidual(i == 0, device=device, dtype=dtype) if c.value_residual else None,
            )
            for i in range(c.num_layers)
        )
        self.ln_final: nn.Module = Identity() if c.remove_rmsnorm else RMSNorm(c.d_model, device=device, dtype=dtype)
        self.lm_head = Linear(c.d_model, c.vocab_size, device=device, dtype=dtype)
        # The leaderboard recipe's construction-time pieces (cs336_basics.extensions.recipe), off by default.
        self.embed_norm = RMSNorm(c.d_model, device=device, dtype=dtype) if c.embed_norm else None
        if c.tie_embeddings:
            recipe.tie_embeddings(self)
        if c.zero_init_proj:
            recipe.zero_init_projections(self)
        # Recompute each block in backward instead of keeping its activations (a training-time
        # memory/speed trade, not part of the architecture: set by the training program).
        self.activation_checkpointing = False

    def forward(
        self,
        in_indices: Int[Tensor, "batch seq"],
        kv_cache: KVCache | None = None,
    ) -> Float[Tensor, "batch seq vocab"]:
        """Logits for every position. With ``kv_cache``, ``in_indices`` continue the cached prefix."""
        T = in_indices.shape[-1]
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.config.context_length:
            raise ValueError(
                f"sequence length {start + T} exceeds the model's context_length {self.config.context_length}"
            )
        x = self.token_embeddings(in_indices)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        first_values = recipe.FirstValues() if self.config.value_residual else None
        recompute = self.activation_checkpointing and kv_cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if recompute:
                # Keep only each block's input for backward and run the block again there: memory
                # for activations drops from all of every block's insides to one block's at a time.
                x = checkpoint(layer, x, None, None, i, first_values, use_reentrant=False)
            else:
                x = layer(x, None, kv_cache, i, first_values)
        if kv_cache is not None:
            kv_cache.length += T
        logits = self.lm_head(self.ln_final(x))
        if self.config.logit_softcap:
            logits = recipe.softcap(logits, self.config.logit_softcap)
        return logits

    def make_kv_cache(self, batch_size: int = 1) -> KVCache:
        """An empty cache sized for this model's context length (on its device, in its dtype)."""
        c = self.config
        w = self.lm_head.weight
        return KVCache(
            c.num_layers,
            batch_size,
            c.num_heads,
            c.context_length,
            c.d_model // c.num_heads,
            device=w.device,
            dtype=w.dtype,
        )

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the token embedding table (not lm_head)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.token_embeddings.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Forward-pass FLOPs per token at sequence length ``seq_len`` (default: context_length).

        ``2 * N_matmul + 4 * num_layers * seq_len * d_model``: every matmul weight (attention
        projections, FFN, lm_head; not the embedding lookup or norm gains) costs a multiply-add per
        token, and attention's QK^T and AV cost ``2 * seq_len * d_model`` FLOPs each per token per layer
        (full, un-masked count as in the PaLM/nanoGPT MFU convention). A training step costs ~3x this.
        """
        c = self.config
        T = c.context_length if seq_len is None else seq_len
        n_matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, Linear))
        # MoE: only top_k of the experts run per token, so count the active weights (MFU uses this).
        n_matmul -= sum(m.inactive_matmul_params() for m in self.modules() if isinstance(m, MoEFFN))
        return 2 * n_matmul + 4 * c.num_layers * T * c.d_model


def unwrap_model(model: Any) -> nn.Module:
    """Strip ``torch.compile`` (``_orig_mod``) and DDP/DataParallel-style (``.module``) wrappers.

    Checkpoints save the bare module, so their keys don't depend on how training was launched, and
    generation decodes with it. A ``.module`` attribute is only treated as a wrapper when the
    object is DDP/DataParallel, is not an ``nn.Module`` at all, or has ``module`` as its only child
    (a user model with a submodule that happens to be called ``module`` is left alone).
    """
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    for _ in range(16):  # wrappers nest a few deep at most; never loop forever on a cycle
        orig = getattr(model, "_orig_mod", None)
        if isinstance(orig, nn.Module):
            model = orig
            continue
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and (
            isinstance(model, (DistributedDataParallel, DataParallel))
            or not isinstance(model, nn.Module)
            or [name for name, _ in model.named_children()] == ["module"]
        ):
            model = inner
            continue
        break
    return model
