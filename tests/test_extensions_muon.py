"""Muon and the named parameter groups, against independent references.

References: ``torch.linalg.svd`` (what Newton-Schulz approximates), a plain Muon step written out
below (its own Newton-Schulz loop, no helpers from cs336_basics.extensions.muon), ``torch.optim.AdamW``.
"""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch

from cs336_basics.extensions.muon import Muon, newton_schulz
from cs336_basics.fast.optim import AdamW, param_groups
from cs336_basics.lm.model import ModelConfig, TransformerLM

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[1]

TINY = ModelConfig(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=48)


# ----------------------------------------------------------------------------------------------
# Newton-Schulz
# ----------------------------------------------------------------------------------------------
def _with_spectrum(rows: int, cols: int, sv: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    U, _ = torch.linalg.qr(torch.randn(rows, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=torch.float64))
    return U @ torch.diag(sv.double()) @ V.T, U, V


@pytest.mark.parametrize("shape", [(48, 48), (96, 32), (32, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_newton_schulz_keeps_singular_vectors_and_maps_singular_values_near_one(shape, dtype):
    rows, cols = shape
    k = min(shape)
    # Singular values spread over 1.5 decades (all well above the iteration's reach limit
    # ~ ||G||_F / a**5 for small ones: a tiny singular value grows only ~3.44x per step).
    sv = torch.logspace(0, -1.5, k, dtype=torch.float64) * 7.0
    G, U, V = _with_spectrum(rows, cols, sv, seed=rows * 1000 + cols)
    O = newton_schulz(G.float(), steps=5, dtype=dtype).double()
    assert O.shape == G.shape and torch.isfinite(O).all()
    s = torch.linalg.svdvals(O)
    # The quintic (3.4445, -4.7750, 2.0315) does not converge to 1; it oscillates in a band.
    # Measured here: about 0.68 .. 1.20 (bf16 the same to ~0.01).
    assert s.min() > 0.6 and s.max() < 1.25, (s.min().item(), s.max().item())
    # Same singular vectors: U^T O V is (nearly) diagonal, with the new singular values on it.
    core = U.T @ O @ V
    off = core - torch.diag(torch.diagonal(core))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    assert off.abs().max() < tol
    # Orthogonal polar factor from the SVD: O is within the band's distance of it.
    Us, _, Vh = torch.linalg.svd(G, full_matrices=False)
    rel = (O - Us @ Vh).norm() / (Us @ Vh).norm()
    assert rel < 0.35


def test_newton_schulz_on_a_random_gaussian_rectangle():
    G = torch.randn(128, 40, generator=torch.Generator().manual_seed(3))
    s = torch.linalg.svdvals(newton_schulz(G).double())
    assert 0.6 < s.min() and s.max() < 1.25


def test_newton_schulz_batched_equals_one_by_one_and_rejects_vectors():
    G = torch.randn(3, 20, 12, generator=torch.Generator().manual_seed(1))
    batched = newton_schulz(G)
    for i in range(3):
        torch.testing.assert_close(batched[i], newton_schulz(G[i]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.ones(5))


# ----------------------------------------------------------------------------------------------
# One Muon step against a plain reference
# ----------------------------------------------------------------------------------------------
def _reference_muon(w, grads, *, lr, mu, wd, nesterov=True, steps=5):
    """Muon written out: EMA momentum, Nesterov, 5 quintic steps in float64, RMS-0.2 scale."""
    w = w.clone().double()
    m = torch.zeros_like(w)
    a, b, c = 3.4445, -4.7750, 2.0315
    for g in grads:
        g = g.double()
        m = mu * m + (1 - mu) * g
        u = (1 - mu) * g + mu * m if nesterov else m
        X = u.T if u.shape[0] > u.shape[1] else u
        X = X / (torch.sqrt((X * X).sum()) + 1e-7)
        for _ in range(steps):
            A = X @ X.T
            X = a * X + b * (A @ X) + c * (A @ (A @ X))
        O = X.T if u.shape[0] > u.shape[1] else X
        w = w * (1 - lr * wd)
        w = w - lr * 0.2 * math.sqrt(max(w.shape)) * O
    return w


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_muon_steps_match_reference(shape, nesterov):
    gen = torch.Generator().manual_seed(11)
    w0 = torch.randn(*shape, generator=gen)
    grads = [torch.randn(*shape, generator=gen) for _ in range(4)]
    hp = dict(lr=0.02, mu=0.9, wd=0.3)
    ref = _reference_muon(w0, grads, nesterov=nesterov, **hp)
    p = torch.nn.Parameter(w0.clone())
    opt = Muon([p], lr=hp["lr"], momentum=hp["mu"], weight_decay=hp["wd"], nesterov=nesterov)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    # float32 Newton-Schulz vs the float64 reference.
    torch.testing.assert_close(p.detach().double(), ref, rtol=0, atol=2e-5)
    # It really moved (a no-op optimizer would not pass the comparison above by accident).
    assert (p.detach() - w0).abs().max() > 1e-2


def test_muon_update_rms_matches_the_target_of_0_2():
    p = torch.nn.Parameter(torch.zeros(64, 160))
    opt = Muon([p], lr=1.0, weight_decay=0.0, momentum=0.0)
    p.grad = torch.randn(64, 160, generator=torch.Generator().manual_seed(0))
    opt.step()
    rms = p.detach().pow(2).mean().sqrt().item()
    assert 0.15 < rms < 0.22  # 0.2 * (typical singular value after Newton-Schulz, slightly < 1)


def test_muon_skips_parameters_without_gradient():
    a, b = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(8, 4))
    b0 = b.detach().clone()
    opt = Muon([a, b], lr=0.1)
    a.grad = torch.randn(8, 4)
    opt.step()
    assert torch.equal(b.detach(), b0)


# ----------------------------------------------------------------------------------------------
# AdamW groups inside Muon
# ----------------------------------------------------------------------------------------------
def _adam_problem(seed=5, steps=6):
    g = torch.Generator().manual_seed(seed)
    shapes = [(10, 6), (6,), (7, 3)]
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]
    return init, grads


def _run(make_opt, init, grads):
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = make_opt(params)
    for step_grads in grads:
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt.step()
    return params


def test_adamw_group_inside_muon_matches_torch_adamw_without_decay():
    init, grads = _adam_problem()
    hp = dict(lr=5e-3, betas=(0.85, 0.98), eps=1e-8, weight_decay=0.0)
    ours = _run(lambda ps: Muon([dict(params=ps, use_muon=False, **hp)]), init, grads)
    ref = _run(lambda ps: torch.optim.AdamW(ps, **hp), init, grads)
    for p, q, p0 in zip(ours, ref, init):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        assert (p.detach() - p0).abs().max() > 1e-3  # it moved


def test_adamw_group_inside_muon_is_the_course_adamw_with_decay():
    """Course convention (decay after the Adam step, unlike torch): bit-identical to optim.AdamW,
    and within the O(lr^2 * wd) convention gap of torch.optim.AdamW."""
    init, grads = _adam_problem(seed=9)
    hp = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.5)
    ours = _run(lambda ps: Muon([dict(params=ps, use_muon=False, **hp)]), init, grads)
    course = _run(lambda ps: AdamW(ps, **hp), init, grads)
    ref = _run(lambda ps: torch.optim.AdamW(ps, **hp), init, grads)
    for p, q, r in zip(ours, course, ref):
        assert torch.equal(p.detach(), q.detach())
        # per step the two conventions differ by lr*wd*|adam step| <= 1e-2 * 0.5 * ~1e-2
        torch.testing.assert_close(p, r, rtol=0, atol=6 * 1e-2 * 0.5 * 1.2e-2)


# ----------------------------------------------------------------------------------------------
# param_groups
# ----------------------------------------------------------------------------------------------
def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_param_groups_muon_splits_hidden_embed_head_scalar():
    torch.manual_seed(0)
    model = TransformerLM(TINY)
    groups = param_groups(model, "muon", weight_decay=0.1, lr=1e-3, lr_embed=3e-3, lr_scalar=5e-4)
    by = {g["name"]: g for g in groups}
    assert list(by) == ["hidden", "embed", "head", "scalar"]
    assert _names(model, by["embed"]) == ["token_embeddings.weight"]
    assert _names(model, by["head"]) == ["lm_head.weight"]
    assert all(n.startswith("layers.") and n.endswith(".weight") for n in _names(model, by["hidden"]))
    assert len(by["hidden"]["params"]) == TINY.num_layers * 7  # q, k, v, o, w1, w2, w3
    assert all(p.dim() == 1 for p in by["scalar"]["params"])
    assert by["hidden"]["use_muon"] and not any(by[k]["use_muon"] for k in ("embed", "head", "scalar"))
    assert by["scalar"]["weight_decay"] == 0.0 and by["hidden"]["weight_decay"] == 0.1
    assert by["embed"]["lr_scale"] == pytest.approx(3.0) and by["scalar"]["lr_scale"] == pytest.approx(0.5)
    assert by["hidden"]["lr_scale"] == 1.0 and by["head"]["lr_scale"] == 1.0
    assert by["embed"]["lr"] == pytest.approx(3e-3)
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters()) and len(set(all_ids)) == len(all_ids)
    Muon(groups, lr=1e-3)  # accepted as is


def test_param_groups_adamw_is_decay_and_no_decay():
    model = TransformerLM(TINY)
    groups = param_groups(model, "adamw", weight_decay=0.2, lr=1e-3)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.2
    assert all(p.dim() == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    assert all(g["lr_scale"] == 1.0 for g in groups)
    AdamW(groups, lr=1e-3)
    # A per-group LR equal to lr changes nothing: still the two groups.
    assert [g["name"] for g in param_groups(model, "adamw", weight_decay=0.2, lr=1e-3, lr_head=1e-3)] == [
        "decay",
        "no_decay",
    ]


def test_param_groups_adamw_with_per_group_lrs_splits_by_role():
    """AdamW takes the per-role LRs too (Muon's roles); the gains keep no weight decay."""
    model = TransformerLM(TINY)
    groups = param_groups(model, "adamw", weight_decay=0.1, lr=1e-3, lr_embed=3e-3, lr_head=5e-4)
    by = {g["name"]: g for g in groups}
    assert list(by) == ["hidden", "embed", "head", "scalar"]
    assert _names(model, by["embed"]) == ["token_embeddings.weight"] and _names(model, by["head"]) == ["lm_head.weight"]
    assert all(p.dim() == 1 for p in by["scalar"]["params"]) and by["scalar"]["weight_decay"] == 0.0
    assert by["hidden"]["weight_decay"] == 0.1 and not any("use_muon" in g for g in groups)
    assert (by["embed"]["lr"], by["head"]["lr"], by["hidden"]["lr"]) == pytest.approx((3e-3, 5e-4, 1e-3))
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    AdamW(groups, lr=1e-3)


def test_param_groups_sees_through_compile_style_prefixes():
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self._orig_mod = TransformerLM(TINY)

    groups = param_groups(Wrapper(), "muon", weight_decay=0.1, lr=1e-3)
    assert [g["name"] for g in groups] == ["hidden", "embed", "head", "scalar"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(optimizer="sgd"), "unknown optimizer"),
        (dict(lr=-1.0), "lr must be"),
        (dict(lr_head=float("nan")), "lr_head"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(lr=0.0, lr_hidden=1e-3), "needs lr > 0"),
    ],
)
def test_param_groups_rejects_bad_values(kwargs, match):
    args = dict(optimizer="muon", weight_decay=0.1, lr=1e-3) | kwargs
    opt = args.pop("optimizer")
    with pytest.raises(ValueError, match=match):
        param_groups(TransformerLM(TINY), opt, **args)


# ----------------------------------------------------------------------------------------------
# Hyperparameter validation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1e-3), "lr must be"),
        (dict(lr=float("inf")), "lr must be"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=-0.1), "momentum"),
        (dict(ns_steps=0), "ns_steps"),
        (dict(ns_steps=2.5), "ns_steps"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(nesterov="yes"), "nesterov"),
        (dict(betas=(0.9, 1.0)), "beta2"),
        (dict(eps=-1.0), "eps"),
        (dict(ns_dtype="bf16"), "ns_dtype"),
    ],
)
def test_muon_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Muon([torch.nn.Parameter(torch.zeros(3, 3))], **kwargs)


def test_muon_rejects_bad_groups_with_the_group_name():
    with pytest.raises(ValueError, match=r"2-D.*\(4,\).*'scalar'"):
        Muon([dict(params=[torch.nn.Parameter(torch.zeros(4))], name="scalar")])
    with pytest.raises(ValueError, match=r"momentum.*'hidden'"):
        Muon([dict(params=[torch.nn.Parameter(torch.zeros(4, 4))], name="hidden", momentum=1.5)])
    with pytest.raises(ValueError, match=r"beta1.*'embed'"):
        Muon([dict(params=[torch.nn.Parameter(torch.zeros(4, 4))], name="embed", use_muon=False,
                   betas=(1.2, 0.9))])  # fmt: skip


# ----------------------------------------------------------------------------------------------
# state_dict round trip on a real model (all four groups)
# ----------------------------------------------------------------------------------------------
def _train(model, opt, batches):
    for x, y in batches:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def test_muon_state_dict_round_trip_continues_bit_for_bit():
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randint(0, 64, (2, 16), generator=g), torch.randint(0, 64, (2, 16), generator=g))
               for _ in range(6)]  # fmt: skip

    def fresh():
        torch.manual_seed(0)
        model = TransformerLM(TINY)
        return model, Muon(param_groups(model, "muon", weight_decay=0.1, lr=1e-2, lr_embed=2e-2), lr=1e-2)

    model, opt = fresh()
    _train(model, opt, batches)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, opt = fresh()
    _train(model, opt, batches[:3])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2, opt2 = fresh()
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(copy.deepcopy(saved["opt"]))
    assert [g["name"] for g in opt2.param_groups] == ["hidden", "embed", "head", "scalar"]
    assert opt2.param_groups[1]["lr_scale"] == pytest.approx(2.0)
    _train(model2, opt2, batches[3:])
    for k, v in model2.state_dict().items():
        assert torch.equal(v, straight[k]), k
    # The momentum buffers were really needed: restarting without optimizer state diverges.
    model3, opt3 = fresh()
    model3.load_state_dict(saved["model"])
    _train(model3, opt3, batches[3:])
    assert not torch.equal(model3.lm_head.weight, straight["lm_head.weight"])


def test_muon_load_state_dict_keeps_the_constructed_ns_dtype():
    """ns_dtype says how a step is computed: a resumed Muon uses its own, not the checkpoint's."""
    torch.manual_seed(0)
    model = TransformerLM(TINY)
    bf16 = Muon(param_groups(model, "muon", weight_decay=0.1, lr=1e-2), lr=1e-2, ns_dtype=torch.bfloat16)
    batches = [(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))]
    _train(model, bf16, batches)
    buf = io.BytesIO()
    torch.save(bf16.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert saved["param_groups"][0]["ns_dtype"] == torch.bfloat16
    fp32 = Muon(param_groups(model, "muon", weight_decay=0.1, lr=1e-2), lr=1e-2, ns_dtype=torch.float32)
    fp32.load_state_dict(saved)
    assert [g["ns_dtype"] for g in fp32.param_groups] == [torch.float32] * 4
    p = fp32.param_groups[0]["params"][0]
    assert torch.equal(fp32.state[p]["momentum_buffer"], bf16.state[p]["momentum_buffer"])


# ----------------------------------------------------------------------------------------------
# Newton-Schulz in bf16 only where bf16 matmuls are fast (CUDA, CPUs with AMX)
# ----------------------------------------------------------------------------------------------
def test_cpu_flags_reads_the_flags_line(tmp_path):
    from cs336_basics.utils.devices import cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n\n")
    assert {"avx2", "amx_bf16"} <= cpu_flags(str(info)) and "amx_int8" not in cpu_flags(str(info))
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("flags, want", [(frozenset({"avx2"}), torch.float32), (frozenset({"avx2", "amx_bf16"}), torch.bfloat16)])  # fmt: skip
def test_auto_newton_schulz_dtype_follows_the_cpu(monkeypatch, flags, want):
    """`auto` (no ns_dtype): bf16 on a CPU with AMX bf16 units, float32 on one without (where bf16
    matmuls are emulated and several times slower). The result's dtype is the iteration's."""
    from cs336_basics.utils import devices

    monkeypatch.setattr(devices, "_cpu_flags_cached", lambda: flags)
    assert newton_schulz(torch.randn(8, 16)).dtype == want
    assert devices.fast_bf16_matmuls("cuda") and not devices.fast_bf16_matmuls("mps")


def test_bench_quality_recipes_do_not_force_bf16_and_reference_only_for_its_files(tmp_path):
    """The recipes use Muon's own choice (`auto`), not forced bf16; the 3.13 reference line is printed
    only for the files it was measured on (by content), a note otherwise."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "scripts" / "bench_quality.py")
    bq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bq)
    for name in ("leaderboard", "leaderboard_all"):
        assert "--muon_ns_dtype" not in bq.technique_flags(bq.RECIPES[name]), name
        assert "muon" in bq.RECIPES[name]
    other = tmp_path / "valid.txt"
    other.write_text("Once upon a time.<|endoftext|>")
    line = bq.reference_line(other, other, 3.0, 480)
    assert "3.13" in line and "not these files" in line and "MET" not in line
    # the matching branch: this file's hash in the table (the reference files are not in the repository)
    import hashlib

    h = hashlib.sha256(other.read_bytes()).hexdigest()
    bq.REFERENCE_SHA256 = {"train": h, "valid": h}
    assert bq.reference_line(other, other, 3.0, 480).startswith("Reference (PyTorch built-ins + HF BPE): 3.13")
