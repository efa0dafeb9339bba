"""A mixture-of-experts feed-forward layer (``ffn_type="moe"``) and its router losses.

Each token picks ``top_k`` of ``num_experts`` SwiGLU experts and gets the weighted sum of their
outputs (Shazeer et al. 2017, "Outrageously Large Neural Networks"; Fedus et al. 2021, "Switch
Transformers"; the top-2 softmax router of Mixtral, Jiang et al. 2024):

    p = softmax(x W_router^T)                        # [tokens, experts], the router's probabilities
    S = the top_k experts of p per token             # the chosen experts
    y = sum_{e in S} (p_e / sum_{j in S} p_j) * expert_e(x)    (+ shared_expert(x), if any)

The weights are renormalised over the chosen k (so with k = 1 each token gets its expert's output
unscaled). ``shared_expert`` adds one always-on SwiGLU every token passes through (DeepSeekMoE, Dai
et al. 2024). Parameters grow with ``num_experts``; compute per token only with ``top_k``, which is
why :func:`cs336_basics.tools.accounting.param_counts` reports *active* parameters next to total.

Dispatch is written to be followed, not to be fast: for each expert, gather the tokens that chose
it (``torch.where``), run the expert on that smaller batch, multiply by the tokens' weights and
scatter-add the result back into the output (``index_add_``). By default nothing is dropped
(capacity-free). With ``capacity_factor`` c an expert takes at most ``ceil(c * tokens * k /
experts)`` tokens, in token order (Switch Transformer's rule); the rest of its tokens skip it (the
residual stream carries them on) and are counted as dropped.

Router losses (one function, :func:`router_losses`, which the trainer adds to the LM loss) keep
the router from sending everything to a few experts. With ``f_i`` the fraction of the token-slots
routed to expert i (``count_i / (tokens * k)``, summing to 1) and ``P_i`` the mean router
probability of expert i:

* load balance ``E * sum_i f_i * P_i`` (Switch Transformer eq. 4): 1 when routing is uniform, up
  to E when it collapses onto one expert; only ``P`` carries a gradient (``f`` is a count).
* auxiliary ``sum_i (f_i - 1/E)^2``: the squared distance of the load from uniform (0 when
  balanced). ``f`` is a count with no gradient, so it is trained through a straight-through
  estimator: the value of ``f_i``, the gradient of ``P_i``.
* z-loss ``mean_tokens(logsumexp(router_logits)^2)`` (ST-MoE, Zoph et al. 2022): keeps the router
  logits small, which keeps the softmax stable under bf16.

Each is averaged over the MoE layers (so their logged values do not grow with depth) and scaled by
its coefficient (``--moe_load_balance_coef``, ``--moe_aux_coef``, ``--moe_z_coef``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.layers import Linear, SwiGLU, softmax
from cs336_basics.nn_utils import log_sum_exp

__all__ = ["MoESpec", "RouterStats", "MoEFFN", "router_losses", "RouterLoss", "check_moe_fields"]


@dataclass(frozen=True)
class MoESpec:
    """The MoE part of a ModelConfig: how many experts, how many per token, shared expert, capacity."""

    num_experts: int = 8
    top_k: int = 2
    shared_expert: bool = False
    capacity_factor: float | None = None  # None: capacity-free (no token is ever dropped)

    @classmethod
    def from_config(cls, config) -> MoESpec:
        return cls(config.num_experts, config.moe_top_k, config.moe_shared_expert, config.moe_capacity_factor)


def check_moe_fields(config) -> None:
    """``ModelConfig.validate``'s check of the MoE fields: ``ValueError`` with one line naming the value.

    They must keep their defaults unless ``ffn_type == "moe"`` (so a flag that would do nothing is
    an error rather than silently ignored).
    """
    for name in ("num_experts", "moe_top_k"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"model config {name} must be a positive integer, got {value!r}")
    if config.moe_top_k > config.num_experts:
        raise ValueError(f"model config moe_top_k ({config.moe_top_k}) exceeds num_experts ({config.num_experts})")
    if not isinstance(config.moe_shared_expert, bool):
        raise ValueError(f"model config moe_shared_expert must be true/false, got {config.moe_shared_expert!r}")
    c = config.moe_capacity_factor
    if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < math.inf):
        raise ValueError(f"model config moe_capacity_factor must be a positive number, got {c!r}")
    if config.ffn_type != "moe":
        default = MoESpec()
        given = {"num_experts": default.num_experts, "moe_top_k": default.top_k,
                 "moe_shared_expert": default.shared_expert, "moe_capacity_factor": default.capacity_factor}  # fmt: skip
        changed = [name for name, value in given.items() if getattr(config, name) != value]
        if changed:
            raise ValueError(
                f"model config {', '.join(changed)}: MoE settings apply to ffn_type moe only "
                f"(ffn_type is {config.ffn_type!r})"
            )


@dataclass
class RouterStats:
    """What one MoE layer's last forward says about its routing (tensors: no host sync in forward)."""

    load: Float[Tensor, " experts"]  # f_i: fraction of token-slots routed to expert i (sums to 1; no grad)
    mean_prob: Float[Tensor, " experts"]  # P_i: mean router probability of expert i (differentiable)
    z: Float[Tensor, ""]  # mean over tokens of logsumexp(router logits)^2 (differentiable)
    dropped: Int[Tensor, ""]  # token-slots over an expert's capacity (0 when capacity-free)
    slots: int  # tokens * top_k


class MoEFFN(nn.Module):
    """Top-k mixture of SwiGLU experts with a linear router (see the module docstring).

    Keys: ``router.weight [experts, d_model]``, ``experts.{i}.w1/w2/w3.weight`` (each expert is a
    ``layers.SwiGLU`` of width ``d_ff``), and ``shared.w1/w2/w3.weight`` with a shared expert.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        spec: MoESpec,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.d_model = d_model
        self.router = Linear(d_model, spec.num_experts, device=device, dtype=dtype)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_ff, device=device, dtype=dtype) for _ in range(spec.num_experts))
        self.shared = SwiGLU(d_model, d_ff, device=device, dtype=dtype) if spec.shared_expert else None
        self.router_stats: RouterStats | None = None  # set by every forward, read by router_losses

    def capacity(self, num_tokens: int) -> int | None:
        """Most token-slots one expert takes (None: unlimited)."""
        c = self.spec.capacity_factor
        if c is None:
            return None
        return max(1, math.ceil(c * num_tokens * self.spec.top_k / self.spec.num_experts))

    def inactive_matmul_params(self) -> int:
        """Expert weights a token does not use (``num_experts - top_k`` experts): FLOPs count active ones."""
        per_expert = sum(p.numel() for p in self.experts[0].parameters())
        return (self.spec.num_experts - self.spec.top_k) * per_expert

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        E, k = self.spec.num_experts, self.spec.top_k
        flat = x.reshape(-1, self.d_model)  # [tokens, d_model]
        N = flat.shape[0]
        logits = self.router(flat).float()  # [tokens, experts]; routing decisions in float32
        probs = softmax(logits, dim=-1)
        top_p, top_idx = probs.topk(k, dim=-1)  # [tokens, k]: the chosen experts, best first
        weights = top_p / top_p.sum(dim=-1, keepdim=True)  # renormalised over the chosen k

        capacity = self.capacity(N)
        out = flat.new_zeros(flat.shape)
        dropped = torch.zeros((), dtype=torch.long, device=flat.device)
        for e, expert in enumerate(self.experts):
            # Which tokens chose expert e, and in which of their k slots (token order is kept).
            token, slot = torch.where(top_idx == e)
            if capacity is not None:
                dropped = dropped + (token.shape[0] - min(token.shape[0], capacity))
                token, slot = token[:capacity], slot[:capacity]
            # Run even an expert that got no tokens (an empty batch): its weights then get a zero
            # gradient rather than none, which DDP needs (every parameter must take part).
            y = expert(flat[token]) * weights[token, slot].unsqueeze(-1).to(flat.dtype)
            out.index_add_(0, token, y.to(out.dtype))  # scatter-add back to the tokens' rows
        if self.shared is not None:
            out = out + self.shared(flat)

        chosen = top_idx.unsqueeze(-1) == torch.arange(E, device=flat.device)  # [tokens, k, experts]
        self.router_stats = RouterStats(
            load=chosen.sum(dim=(0, 1)).float() / (N * k),
            mean_prob=probs.mean(dim=0),
            z=log_sum_exp(logits).square().mean(),
            dropped=dropped,
            slots=N * k,
        )
        return out.view(x.shape)


def router_losses(stats: list[RouterStats]) -> dict[str, Tensor]:
    """Load-balance, auxiliary and z-loss, each averaged over the MoE layers (see the module docstring).

    Returns ``{"load_balance", "aux", "z"}`` (scalar tensors with gradients to the routers).
    """
    if not stats:
        raise ValueError("router_losses: no MoE layer has run a forward yet")
    lb, aux, z = [], [], []
    for s in stats:
        E = s.load.shape[0]
        lb.append(E * (s.load * s.mean_prob).sum())
        load_st = s.load + s.mean_prob - s.mean_prob.detach()  # f's value, P's gradient (straight-through)
        aux.append((load_st - 1.0 / E).square().sum())
        z.append(s.z)
    n = len(stats)
    return {"load_balance": sum(lb) / n, "aux": sum(aux) / n, "z": sum(z) / n}


class RouterLoss:
    """The router losses of a model's MoE layers, weighted, plus what the log shows about them.

    ``__call__`` (after a forward) returns ``lb_coef * load_balance + aux_coef * aux + z_coef * z``
    to add to the LM loss, and accumulates each term, the dropped fraction and the per-expert load
    (detached, on the device: no host sync) until :meth:`take_record` averages and resets them.
    """

    def __init__(self, model: nn.Module, load_balance_coef: float, aux_coef: float, z_coef: float) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, MoEFFN)]
        if not self.layers:
            raise ValueError("RouterLoss: the model has no MoE layer")
        self.coefs = {"load_balance": load_balance_coef, "aux": aux_coef, "z": z_coef}
        self._sums: Tensor | None = None  # [load_balance, aux, z, dropped fraction]
        self._load: Tensor | None = None  # [layers, experts]
        self._count = 0

    def __call__(self) -> Tensor:
        stats = [m.router_stats for m in self.layers]
        assert all(s is not None for s in stats), "RouterLoss called before a forward"
        parts = router_losses(stats)  # type: ignore[arg-type]
        dropped = sum(s.dropped.float() / s.slots for s in stats) / len(stats)
        terms = torch.stack([parts["load_balance"], parts["aux"], parts["z"], dropped]).detach().float()
        load = torch.stack([s.load for s in stats]).detach()
        self._sums = terms if self._sums is None else self._sums + terms
        self._load = load if self._load is None else self._load + load
        self._count += 1
        return sum(self.coefs[name] * parts[name] for name in ("load_balance", "aux", "z"))

    def take_record(self) -> dict[str, object]:
        """``moe``: the mean of each loss and of the dropped fraction since the last call;
        ``moe_expert_load``: per layer, each expert's share of the token-slots."""
        if self._sums is None:
            return {}
        sums = (self._sums / self._count).tolist()
        load = (self._load / self._count).tolist()
        self._sums, self._load, self._count = None, None, 0
        names = ("load_balance", "aux", "z", "dropped_fraction")
        return {"moe": dict(zip(names, sums, strict=True)), "moe_expert_load": load}
