"""The leaderboard recipe: techniques behind the best small-model runs, each one ``ModelConfig`` flag.

Every piece is off by default (the default model does exactly what it did before); the model and the
two attention paths only hold small hooks chosen once at construction, and the machinery lives here.

==================  =====================================================================================
flag                what it does, where it comes from, and why it helps
==================  =====================================================================================
``qk_norm``         RMSNorm (one gain of size ``d_head``) on every head's queries and keys, before RoPE.
                    Bounds the attention logits, so large LRs do not blow up the softmax into one-hot
                    ("attention entropy collapse"). Dehghani et al. 2023 (ViT-22B), Wortsman et al. 2023
                    ("Small-scale proxies for large-scale Transformer training instabilities"), OLMo 2
                    (2024); modded-nanogpt uses it in every record.
``ffn_type relu2``  ``W2 relu(W1 x)^2`` (:class:`ReLU2FFN`): the squared ReLU that Primer (So et al. 2021)
                    found by architecture search; two matrices instead of SwiGLU's three, so at equal
                    parameters the hidden width is 3/2 of SwiGLU's (:func:`relu2_d_ff`). modded-nanogpt.
``zero_init_proj``  Each block's last matrices (attention ``output_proj`` and FFN ``w2``) start at zero, so
                    every block starts as the identity and the residual stream is the embedding: the
                    signal path is short at step 0 and the blocks grow in (cf. "ReZero", Bachlechner et
                    al. 2020; Fixup; modded-nanogpt zero-inits its ``c_proj``).
``tie_embeddings``  The LM head reuses the token-embedding matrix (Press & Wolf 2017, GPT-2): fewer
                    parameters, and the rarely-seen input rows learn from every softmax gradient. Here the
                    shared matrix starts at the head's scale (``Linear``'s init), not the embedding's N(0, 1).
``logit_softcap``   ``C * tanh(logits / C)`` before the loss and sampling (Gemma 2, 2024; modded-nanogpt,
                    C = 15..30): the logits stay in (-C, C), which keeps the head from becoming
                    over-confident early and the loss from spiking. 0 = off.
``value_residual``  Every layer after the first mixes its values with the first layer's,
                    ``v <- (1 - lam) v + lam v_1`` with one learned scalar per layer (initial 0.5):
                    "Value Residual Learning" (ResFormer, Zhou et al. 2024), used by modded-nanogpt. The
                    first layer's token-level information reaches every layer without going through the
                    residual stream, which relieves the deeper layers' attention.
``embed_norm``      RMSNorm (with gain) right after the token embedding (modded-nanogpt; Gemma normalises
                    / scales its embeddings too): the residual stream starts at unit RMS whatever the
                    embedding's scale, which matters with tied embeddings and with weight decay.
==================  =====================================================================================

References: K. Jordan et al., modded-nanogpt (github.com/KellerJordan/modded-nanogpt); Gemma Team,
"Gemma 2" (2024); Zhou et al., "Value Residual Learning For Alleviating Attention Concentration In
Transformers" (2024); OLMo Team, "2 OLMo 2 Furious" (2024); So et al., "Primer: Searching for Efficient
Transformers for Language Modeling" (2021); Press & Wolf, "Using the Output Embedding to Improve
Language Models" (2017).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.layers import Linear, default_d_ff

__all__ = [
    "RECIPE_FIELDS",
    "ReLU2FFN",
    "relu2",
    "relu2_d_ff",
    "softcap",
    "FirstValues",
    "ValueResidual",
    "tie_embeddings",
    "zero_init_projections",
    "validate_recipe",
]

# The ModelConfig fields of the recipe (all off by default) and their off values.
RECIPE_FIELDS = {
    "qk_norm": False,
    "zero_init_proj": False,
    "tie_embeddings": False,
    "logit_softcap": 0.0,
    "value_residual": False,
    "embed_norm": False,
}


def validate_recipe(cfg) -> None:
    """Raise ``ValueError`` (one line) for a bad recipe field of a ``ModelConfig``."""
    for name, off in RECIPE_FIELDS.items():
        value = getattr(cfg, name)
        if isinstance(off, bool):
            if not isinstance(value, bool):
                raise ValueError(f"model config {name} must be true/false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"model config {name} must be a finite number >= 0 (0 = off), got {value!r}")


# ----------------------------------------------------------------------------------------------
# Squared-ReLU FFN (Primer)
# ----------------------------------------------------------------------------------------------
def relu2(x: Tensor) -> Tensor:
    """``relu(x)^2``: zero for x < 0, x^2 above (Primer's squared ReLU).

    The formula is ``x.clamp_min(0).square()``; autograd through it would keep both ``x`` and the
    clamped ``r`` and spend three passes (``2 r``, times the gradient, then a masked copy) in backward.
    :class:`_ReLU2` keeps ``r`` only and returns ``grad * 2r``, which is already zero where ``x < 0``:
    the same gradient (bit for bit, up to the sign of a zero; ``test_extensions_recipe``), in two passes.
    """
    return _ReLU2.apply(x)


class _ReLU2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        r = x.clamp_min(0)
        ctx.save_for_backward(r)
        return r.square()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (r,) = ctx.saved_tensors
        return grad * (2 * r)


def relu2_d_ff(swiglu_d_ff: int) -> int:
    """The ReLU^2 hidden width with a SwiGLU's parameter count: SwiGLU has 3 ``d_model x d_ff``
    matrices, ReLU^2 two, so ``floor(3/2 * swiglu_d_ff)`` (704 -> 1056, 1344 -> 2016)."""
    return swiglu_d_ff * 3 // 2


class ReLU2FFN(nn.Module):
    """``W2(relu(W1 x)^2)`` with ``w1: [d_ff, d_model]``, ``w2: [d_model, d_ff]`` (same names as SwiGLU's).

    Primer (So et al. 2021) found the squared ReLU by searching over Transformer variants: as good as
    a gated unit per parameter with one matrix fewer, and its output is sparse (exact zeros).

    ``d_ff`` defaults to ``relu2_d_ff(default_d_ff(d_model))``: the SwiGLU's parameter count.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_ff = relu2_d_ff(default_d_ff(d_model)) if d_ff is None else d_ff
        self.d_model = d_model
        self.d_ff = d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.w2(relu2(self.w1(x)))


# ----------------------------------------------------------------------------------------------
# Logit soft-capping (Gemma 2)
# ----------------------------------------------------------------------------------------------
def softcap(logits: Float[Tensor, "... vocab"], cap: float) -> Float[Tensor, "... vocab"]:
    """``cap * tanh(logits / cap)``: about the identity for |logits| << cap, never beyond +-cap.

    Gemma 2's final-logit soft-capping (cap 30), adopted by modded-nanogpt: it stops the head from
    buying loss with ever larger logits, which steadies training at high learning rates.

    The derivative is ``1 - tanh(logits / cap)^2`` (the ``cap`` and ``1 / cap`` cancel), so
    :class:`_SoftCap` keeps only ``t = tanh(logits / cap)`` and spends one pass in backward
    (``torch.ops.aten.tanh_backward``, which is ``grad * (1 - t^2)``) where autograd through the formula
    spends three over these vocabulary-wide tensors. Equal to autograd through the formula up to
    rounding (``test_extensions_recipe``).
    """
    return _SoftCap.apply(logits, float(cap))


class _SoftCap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, cap: float) -> Tensor:
        t = (logits / cap).tanh_()
        ctx.save_for_backward(t)
        return t * cap

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (t,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, t), None


# ----------------------------------------------------------------------------------------------
# Value residual (ResFormer / modded-nanogpt)
# ----------------------------------------------------------------------------------------------
class FirstValues:
    """Carries the first layer's values to the later layers during one forward pass.

    The model makes a fresh one per forward and hands it to every block; layer 0 stores its values,
    the others read them. (Under activation checkpointing a block's recomputation reads the same
    stored tensor as its forward did, since backward recomputes the later layers before layer 0.)
    """

    def __init__(self) -> None:
        self.v: Tensor | None = None


class ValueResidual(nn.Module):
    """``v <- (1 - lam) v + lam v_first`` for layers after the first (``lam`` learned, starts at 0.5);
    the first layer (``first=True``, no parameter) only stores its values.

    ResFormer ("Value Residual Learning", Zhou et al. 2024) and modded-nanogpt: a residual path for
    the values themselves, so later layers can attend over token-level information directly.

    ``v`` is ``[batch, heads, seq, d_head]`` in both attention paths and is mixed before it goes into
    a KV cache, so cached decoding mixes the same per-position values as a full forward.
    """

    def __init__(self, first: bool, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.first = first
        self.lam = None if first else nn.Parameter(torch.full((), 0.5, device=device, dtype=dtype))

    def forward(self, v: Float[Tensor, "... seq d_head"], store: FirstValues | None) -> Float[Tensor, "... seq d_head"]:
        if store is None:
            raise ValueError("value_residual: the attention layer needs the model's FirstValues (pass first_values)")
        if self.first:
            store.v = v
            return v
        if store.v is None:
            raise ValueError("value_residual: the first layer's values are missing (run layer 0 first)")
        return torch.lerp(v, store.v, self.lam.to(v.dtype))

    def extra_repr(self) -> str:
        return "first" if self.first else "learned lam"


# ----------------------------------------------------------------------------------------------
# Construction-time changes to a built TransformerLM
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def tie_embeddings(model: nn.Module) -> None:
    """Make ``lm_head.weight`` the same Parameter as ``token_embeddings.weight``, at the head's init.

    Both state-dict keys stay (they hold the same tensor), so checkpoints load into tied and untied
    models alike; ``named_parameters()`` lists the shared matrix once (as ``token_embeddings.weight``),
    so optimizer groups hold it once. N(0, 1) rows would make logits ~sqrt(d_model) large at step 0;
    the head's ``Linear`` init (std sqrt(2 / (d_model + vocab))) is used instead.
    """
    model.lm_head.weight = model.token_embeddings.weight
    model.lm_head.reset_parameters()


@torch.no_grad()
def zero_init_projections(model: nn.Module) -> None:
    """Zero every block's attention ``output_proj`` and FFN ``w2``: each block is the identity at step 0.

    As modded-nanogpt does for its output projections (in the spirit of ReZero and Fixup): the
    network starts shallow and each block's contribution grows from zero, with no init scale to tune.
    """
    for layer in model.layers:
        layer.attn.output_proj.weight.zero_()
        layer.ffn.w2.weight.zero_()
