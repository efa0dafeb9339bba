"""Masked diffusion language modelling: the objective, its bound, and sampling by unmasking.

The same ``TransformerLM``, trained not to continue text left to right but to fill in blanks. The
forward ("noising") process is absorbing-state discrete diffusion (D3PM, Austin et al. 2021): at
noise level ``t`` in [0, 1] every token of a clean sequence ``x`` (length L) is replaced by a
``[MASK]`` token independently with probability ``t``, giving ``x_t``. The model sees ``x_t`` with
*bidirectional* attention (``ModelConfig.causal = False``) and predicts the original token at every
masked position. Its training loss is the negative evidence lower bound of masked diffusion (MDLM,
Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models", eq. 10; LLaDA, Nie et
al. 2025, "Large Language Diffusion Models", eq. 3), per token:

    -log p(x) / L  <=  E_{t ~ U(0,1)} E_{x_t ~ q(x_t | x, t)} [ (1/t) * (1/L) * sum_{i : x_t[i] = MASK} -log p(x[i] | x_t) ]

The right side is an upper bound on the model's negative log-likelihood in nats per token, so it
compares with an autoregressive model's cross-entropy (which *is* its NLL per token): the AR loss
is exact, the diffusion number is a bound. One Monte-Carlo draw per sequence estimates it: draw
``t ~ U(eps, 1)`` (``eps`` keeps ``1/t`` finite, as in LLaDA's training; the tiny slice [0, eps)
is left out of the integral; the batch's t are spread evenly, see :func:`sample_noise`), mask
with probability t, and weight each masked position's cross-entropy by ``1/t``; average over all
``batch * L`` positions. The mean of ``1/t`` times the number of masked tokens is L, so a model
that predicts uniformly scores ``log V`` on average.

The ``[MASK]`` token is one extra vocabulary row: the training program builds the model with
``vocab_size + 1`` ids and ``mask_token_id = vocab_size`` (:func:`with_mask_token`), so no data id
is ever the mask, and the model's logit for ``[MASK]`` is set to ``-inf`` before every softmax
(MDLM's "zero masking probabilities": the model predicts clean tokens only), in the loss and in
sampling, so samples never contain it.

Generation (:func:`generate`, LLaDA's sampler with low-confidence remasking): the prompt followed
by ``n`` masks; over ``steps`` steps, predict every masked position at once, keep the most
confident predictions (``n / steps`` per step) and leave the rest masked for the next step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from cs336_basics.layers import softmax
from cs336_basics.lm.generate import check_sampling_args
from cs336_basics.lm.model import ModelConfig, unwrap_model
from cs336_basics.nn_utils import log_sum_exp

__all__ = [
    "OBJECTIVES",
    "with_mask_token",
    "is_diffusion",
    "sample_noise",
    "corrupt",
    "masked_logits",
    "weighted_masked_ce",
    "MaskedDiffusion",
    "generate",
]

OBJECTIVES = ("ar", "diffusion")
DEFAULT_EPS = 1e-3


def with_mask_token(config: ModelConfig) -> ModelConfig:
    """The diffusion model for a data vocabulary of ``config.vocab_size`` ids: one more id, the
    ``[MASK]`` (``mask_token_id = config.vocab_size``), and bidirectional attention."""
    return dataclasses.replace(
        config, vocab_size=config.vocab_size + 1, mask_token_id=config.vocab_size, causal=False
    ).validate()


def data_shape(model_config: dict[str, Any]) -> dict[str, Any]:
    """A saved ``model_config`` as the settings that made it: a diffusion model's ``vocab_size`` less
    its ``[MASK]`` (the inverse of :func:`with_mask_token`); any other config as it is."""
    mask = model_config.get("mask_token_id")
    if mask is None or model_config.get("causal", True) or model_config.get("vocab_size") != mask + 1:
        return dict(model_config)
    return {**model_config, "vocab_size": mask}


def is_diffusion(config: ModelConfig) -> bool:
    """A masked-diffusion model: it has a ``[MASK]`` token and bidirectional attention."""
    return config.mask_token_id is not None and not config.causal


def sample_noise(
    batch: int, seq: int, eps: float, generator: torch.Generator | None, device: torch.device | str
) -> tuple[Float[Tensor, " batch"], Bool[Tensor, "batch seq"]]:
    """One noise level per sequence, ``t ~ U(eps, 1)``, and the positions it masks (each w.p. t).

    The batch's levels are spread evenly (MDLM's low-discrepancy sampler: ``u_i = (u + i/batch) mod 1``
    with one uniform ``u``): each ``t_i`` is still uniform, so the estimate stays unbiased, but the
    batch covers [eps, 1) evenly, which lowers the variance of the ``1/t``-weighted loss a lot.
    """
    u = (torch.rand(1, generator=generator, device=device) + torch.arange(batch, device=device) / batch) % 1.0
    t = eps + (1.0 - eps) * u
    masked = torch.rand(batch, seq, generator=generator, device=device) < t[:, None]
    return t, masked


def corrupt(
    x: Int[Tensor, "batch seq"], masked: Bool[Tensor, "batch seq"], mask_token_id: int
) -> Int[Tensor, "batch seq"]:
    """``x_t``: the masked positions replaced by ``[MASK]``."""
    return torch.where(masked, torch.full_like(x, mask_token_id), x)


def masked_logits(logits: Float[Tensor, "... vocab"], mask_token_id: int) -> Float[Tensor, "... vocab"]:
    """Float32 logits with ``[MASK]``'s set to ``-inf``: the model predicts clean tokens only."""
    is_mask = torch.arange(logits.shape[-1], device=logits.device) == mask_token_id
    return logits.float().masked_fill(is_mask, float("-inf"))


def weighted_masked_ce(
    logits: Float[Tensor, "batch seq vocab"],
    x: Int[Tensor, "batch seq"],
    masked: Bool[Tensor, "batch seq"],
    t: Float[Tensor, " batch"],
    mask_token_id: int,
) -> Float[Tensor, " batch"]:
    """Each sequence's one-draw estimate of the bound: ``(1/L) * sum_{masked i} CE_i / t`` (nats/token).

    ``logits`` are the model's output on ``x_t``; the mean over the batch is the training loss.
    """
    work = masked_logits(logits, mask_token_id)
    nll = log_sum_exp(work) - work.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)  # [batch, seq]
    nll = torch.where(masked, nll, torch.zeros_like(nll))  # unmasked positions cost nothing
    return nll.sum(dim=-1) / t / x.shape[-1]


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: nearby inputs give unrelated seeds)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


_EVAL_STREAM = {"train": 1, "val": 2}


def _no_loss_mask(mask: Tensor | None) -> None:
    if mask is not None:  # the training program refuses this combination at setup; this is the backstop
        raise ValueError("loss masks (conversation data) apply to --objective ar, not diffusion")


class MaskedDiffusion:
    """The training program's objective for ``--objective diffusion`` (see :mod:`cs336_basics.training.step`).

    The noise (t and the mask) of micro-batch ``i`` of step ``s`` on rank ``r`` comes from a fresh
    generator seeded by ``(seed, r, s, i)``: a pure function of the step, so a resumed run draws
    exactly the masks the uninterrupted run would have, with nothing extra in the checkpoint.
    Evaluation uses ``(seed, r, split, batch)``, the same masks at every evaluation, so successive
    bounds compare (the eval batches are fixed too).
    """

    def __init__(self, mask_token_id: int, eps: float = DEFAULT_EPS, seed: int = 0, rank: int = 0) -> None:
        if not 0.0 < eps < 1.0:
            raise ValueError(f"diffusion eps must be in (0, 1), got {eps}")
        self.mask_token_id, self.eps, self.seed, self.rank = mask_token_id, eps, seed, rank

    def _noise(self, x: Tensor, *key: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(_seed(self.seed, self.rank, *key))
        return sample_noise(x.shape[0], x.shape[1], self.eps, gen, x.device)

    def _forward(
        self, model: nn.Module, x: Tensor, autocast: Callable[[], contextlib.AbstractContextManager], key: tuple
    ) -> tuple[Tensor, Tensor, Tensor]:
        t, masked = self._noise(x, *key)
        with autocast():
            logits = model(corrupt(x, masked, self.mask_token_id))
        return logits, t, masked

    def loss(self, model, x, y, autocast, key: tuple[int, int], mask=None) -> tuple[Tensor, Tensor]:
        """``(loss, loss)``: the bound's one-draw estimate (``y`` is unused: x is its own target)."""
        _no_loss_mask(mask)
        logits, t, masked = self._forward(model, x, autocast, (0, *key))
        loss = weighted_masked_ce(logits, x, masked, t, self.mask_token_id).mean()
        return loss, loss

    def eval_batch(self, model, x, y, autocast, key: tuple[str, int], mask=None) -> tuple[Tensor, Tensor, Tensor]:
        """The bound on this batch, and accuracy at the masked positions: ``(bound, correct, count)``."""
        _no_loss_mask(mask)
        split, index = key
        logits, t, masked = self._forward(model, x, autocast, (_EVAL_STREAM.get(split, 3), index))
        bound = weighted_masked_ce(logits, x, masked, t, self.mask_token_id).mean()
        pred = masked_logits(logits, self.mask_token_id).argmax(dim=-1)
        return bound, ((pred == x) & masked).sum(), masked.sum()

    def log_record(self) -> dict[str, object]:
        return {}


# ==============================================================================================
# sampling
# ==============================================================================================
def _sample_positions(
    logits: Float[Tensor, "n vocab"], temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[Int[Tensor, " n"], Float[Tensor, " n"]]:
    """A token per row (argmax at temperature 0, else nucleus sampling as for AR) and its confidence.

    The confidence is the model's softmax probability of the chosen token (LLaDA's low-confidence
    remasking ranks positions by it).
    """
    probs = softmax(logits, dim=-1)
    if temperature == 0:
        ids = probs.argmax(dim=-1)
    else:
        p = softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, sorted_idx = torch.sort(p, dim=-1, descending=True)
            cum = torch.cumsum(sorted_p, dim=-1)
            keep = (cum - sorted_p) < top_p  # the smallest prefix whose mass reaches top_p
            keep[:, 0] = True
            sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
            p = torch.zeros_like(p).scatter(-1, sorted_idx, sorted_p)
        ids = torch.multinomial(p / p.sum(dim=-1, keepdim=True), 1, generator=generator).squeeze(-1)
    return ids, probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _tokens_per_step(n: int, steps: int) -> list[int]:
    """Split ``n`` unmaskings over ``steps`` steps as evenly as possible (earlier steps take the rest)."""
    base, rest = divmod(n, steps)
    return [base + (1 if s < rest else 0) for s in range(steps)]


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    steps: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    vocab_limit: int | None = None,
) -> list[int]:
    """Sample ``max_new_tokens`` ids after ``prompt_ids`` by unmasking (the new ids only).

    Starts from ``prompt + [MASK] * n`` (n = ``max_new_tokens``, at most what fits in the context
    after the prompt; the prompt is cut to its last ``context_length - 1`` tokens). Each of ``steps``
    steps (default: n, one token per step) runs the model on the whole sequence, samples a token at
    every masked position (``temperature`` / ``top_p`` as for AR; 0 is greedy), and unmasks the
    ``n / steps`` most confident of them; the others are masked again. The result is cut before the
    first ``eos_id``. ``[MASK]`` and ids ``>= vocab_limit`` are never produced.
    """
    base = unwrap_model(model)
    cfg = base.config
    if not is_diffusion(cfg):
        raise ValueError("diffusion.generate needs a masked-diffusion model (mask_token_id set, causal false)")
    check_sampling_args(prompt_ids, max_new_tokens, temperature, top_p)
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ctx, mask_id = cfg.context_length, cfg.mask_token_id
    prompt = list(prompt_ids)[-(ctx - 1) :] if ctx > 1 else list(prompt_ids)[-1:]
    n = min(max_new_tokens, ctx - len(prompt))
    if n <= 0:
        return []
    steps = n if steps is None else min(steps, n)
    device = next(base.parameters()).device
    seq = torch.tensor([*prompt, *([mask_id] * n)], dtype=torch.long, device=device)
    P = len(prompt)
    banned = torch.arange(cfg.vocab_size, device=device) == mask_id
    if vocab_limit is not None:
        banned |= torch.arange(cfg.vocab_size, device=device) >= vocab_limit
    for k in _tokens_per_step(n, steps):
        still = seq[P:] == mask_id  # [n]
        logits = base(seq.unsqueeze(0))[0, P:].float().masked_fill(banned, float("-inf"))  # [n, vocab]
        ids, conf = _sample_positions(logits, temperature, top_p, generator)
        conf = torch.where(still, conf, torch.full_like(conf, -1.0))  # only masked positions compete
        keep = torch.topk(conf, k).indices  # the k most confident masked positions
        seq[P + keep] = ids[keep]
    new = seq[P:].tolist()
    if eos_id is not None and eos_id in new:
        new = new[: new.index(eos_id)]
    return new
