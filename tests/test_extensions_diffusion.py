"""Masked diffusion (cs336_basics.extensions.diffusion) against independent references: torch's cross_entropy and
scaled_dot_product_attention, the exact expectation of the bound by enumerating every mask pattern,
and the real training program and generate CLI."""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cs336_basics import generate
from cs336_basics import training_together as tt
from cs336_basics.extensions import diffusion
from cs336_basics.fast.attention import FastCausalMultiHeadSelfAttention
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.lm.attention import Attention as CausalMultiHeadSelfAttention  # the engine's plain path
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.training.checkpoints import save_checkpoint
from cs336_basics.training.settings import parse_settings
from cs336_basics.utils.errors import run_cli

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
from ._train_utils import VOCAB, assert_weights_equal, base_argv, load_pt, records, train_losses, write_pattern_data

DIFF = ["--objective", "diffusion"]


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def _model(vocab=16, ctx=8, attention="fast", causal=False, seed=0) -> TransformerLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, context_length=ctx, d_model=16, num_layers=2, num_heads=2, d_ff=32,
                      attention=attention)  # fmt: skip
    if not causal:
        cfg = diffusion.with_mask_token(cfg)
    return TransformerLM(cfg)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_pattern_data(tmp_path_factory.mktemp("diffusion_data"))


# ---------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------
def test_fixed_mask_loss_equals_weighted_cross_entropy():
    torch.manual_seed(0)
    B, T, V = 3, 5, 7
    mask_id = V - 1
    logits = torch.randn(B, T, V)
    x = torch.randint(0, V - 1, (B, T))
    masked = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    t = torch.tensor([0.4, 0.1, 0.9])
    got = diffusion.weighted_masked_ce(logits, x, masked, t, mask_id)
    # Reference: torch's cross-entropy over the clean tokens only ([MASK]'s logit removed).
    ce = F.cross_entropy(logits[..., :mask_id].reshape(-1, V - 1), x.reshape(-1), reduction="none").view(B, T)
    want = torch.stack([(ce[b][masked[b]]).sum() / t[b] / T for b in range(B)])
    torch.testing.assert_close(got, want)
    assert got[1].item() == 0.0  # nothing masked: nothing to predict


def test_objective_loss_is_the_weighted_ce_of_the_model_on_the_corrupted_input():
    model = _model()
    obj = diffusion.MaskedDiffusion(model.config.mask_token_id, seed=5, rank=0)
    x = torch.randint(0, 16, (4, 8))
    loss, reported = obj.loss(model, x, x, _no_autocast, (3, 0))
    assert loss is reported
    t, masked = obj._noise(x, 0, 3, 0)  # the same key: the same draw
    x_t = torch.where(masked, torch.full_like(x, 16), x)
    logits = model(x_t)[..., :16]  # [MASK] is id 16, the last
    ce = F.cross_entropy(logits.reshape(-1, 16), x.reshape(-1), reduction="none").view(4, 8)
    want = ((ce * masked).sum(-1) / t / 8).mean()
    torch.testing.assert_close(loss, want)
    # A different step draws different masks; the same step the same ones.
    assert obj.loss(model, x, x, _no_autocast, (3, 0))[0].item() == loss.item()
    assert obj.loss(model, x, x, _no_autocast, (4, 0))[0].item() != loss.item()


def test_noise_levels_are_uniform_and_masks_follow_them():
    gen = torch.Generator().manual_seed(0)
    t, masked = diffusion.sample_noise(4000, 64, 1e-3, gen, "cpu")
    assert 1e-3 <= t.min() and t.max() < 1.0
    assert abs(t.mean().item() - (1 + 1e-3) / 2) < 0.01
    # Each position is masked with probability t: the masked fraction per sequence tracks t.
    assert (masked.float().mean(-1) - t).abs().mean() < 0.06


@pytest.mark.parametrize("attention", ["fast", "plain"])
def test_diffusion_attention_is_bidirectional_and_ar_is_causal(attention):
    for causal in (False, True):
        model = _model(attention=attention, causal=causal)
        x = torch.randint(0, 16, (1, 8))
        x2 = x.clone()
        x2[0, -1] = (x2[0, -1] + 1) % 16
        with torch.no_grad():
            first, second = model(x)[0, 0], model(x2)[0, 0]
        if causal:
            assert torch.equal(first, second), "the AR model's first position saw a later token"
        else:
            assert (first - second).abs().max() > 1e-4, "the diffusion model's first position ignores later tokens"


@pytest.mark.parametrize("T", [7, 130])
def test_plain_and_fast_non_causal_attention_agree_with_torch(T):
    torch.manual_seed(1)
    plain = CausalMultiHeadSelfAttention(16, 2, causal=False).double()
    fast = FastCausalMultiHeadSelfAttention(16, 2, causal=False).double()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, T, 16, dtype=torch.float64)
    xs = [x.clone().requires_grad_(True) for _ in range(3)]
    outs = [plain(xs[0]), fast(xs[1])]
    # Reference: torch's SDPA without a mask, on the same projections.
    q, k, v = (w(xs[2]).view(2, T, 2, 8).transpose(1, 2) for w in (plain.q_proj, plain.k_proj, plain.v_proj))
    ref = plain.output_proj(F.scaled_dot_product_attention(q, k, v, is_causal=False).transpose(1, 2).reshape(2, T, 16))
    outs.append(ref)
    g = torch.randn_like(ref)
    grads = []
    for out, xi in zip(outs, xs, strict=True):
        (out * g).sum().backward()
        grads.append(xi.grad)
    for out, grad in zip(outs[:2], grads[:2], strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, grads[2], rtol=1e-10, atol=1e-10)
    # Parameter gradients too (fast vs plain).
    plain.zero_grad()
    fast.zero_grad()
    (plain(x) * g).sum().backward()
    (fast(x) * g).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10, msg=name)


def _integral(m: int, n: int, eps: float) -> float:
    """``int_eps^1 t^(m-1) (1-t)^n dt``, exactly (binomial expansion of (1-t)^n)."""
    return sum(math.comb(n, j) * (-1) ** j * (1 - eps ** (m + j)) / (m + j) for j in range(n + 1))


def test_monte_carlo_bound_matches_the_exact_expectation():
    """Data vocabulary 3, length 3: the bound's expectation over t ~ U(eps, 1) and every mask pattern is

        (1/L) * sum_M [sum_{i in M} -log p(x_i | x_M)] * P(M) ,  E_t[(1/t) t^|M| (1-t)^(L-|M|)] = I(|M|) / (1-eps)

    with the model fixed; the objective's Monte-Carlo average over many draws must match it.
    """
    V, L, eps = 3, 3, 1e-3
    model = _model(vocab=V, ctx=L, seed=2)
    mask_id = model.config.mask_token_id
    x = torch.tensor([0, 2, 1])
    exact = 0.0
    with torch.no_grad():
        for pattern in product([False, True], repeat=L):
            m = sum(pattern)
            if m == 0:
                continue
            masked = torch.tensor(pattern)
            logits = model(torch.where(masked, mask_id, x).unsqueeze(0))[0, :, :V]
            nll = F.cross_entropy(logits, x, reduction="none")[masked].sum().item()
            exact += nll * _integral(m, L - m, eps) / (1 - eps) / L
    obj = diffusion.MaskedDiffusion(mask_id, eps=eps, seed=0)
    batch = x.repeat(4096, 1)
    with torch.no_grad():
        draws = torch.tensor([obj.loss(model, batch, batch, _no_autocast, (i, 0))[0].item() for i in range(16)])
    mc, se = draws.mean().item(), draws.std().item() / 4.0
    assert se < 0.01 * exact  # the test can tell a wrong weighting apart (e.g. no 1/t: ~half the value)
    assert abs(mc - exact) < 4 * se + 1e-4, f"MC {mc:.5f} +- {se:.5f} vs exact {exact:.5f}"


def test_evaluation_is_repeatable_and_reports_masked_accuracy():
    model = _model()
    obj = diffusion.MaskedDiffusion(model.config.mask_token_id, seed=1)
    x = torch.randint(0, 16, (4, 8))
    with torch.no_grad():
        a = obj.eval_batch(model, x, x, _no_autocast, ("val", 0))
        b = obj.eval_batch(model, x, x, _no_autocast, ("val", 0))
    assert [float(v) for v in a] == [float(v) for v in b]
    assert 0 <= int(a[1]) <= int(a[2]) and int(a[2]) > 0


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (1.5, 0.8)])
def test_samples_never_contain_the_mask_token(temperature, top_p):
    model = _model(vocab=16, ctx=24)
    mask_id = model.config.mask_token_id
    with torch.no_grad():  # make [MASK] the model's favourite output: it must still never be produced
        model.lm_head.weight[mask_id] = 10 * model.lm_head.weight.abs().max()
    gen = torch.Generator().manual_seed(0)
    for steps in (1, 4, None):
        new = diffusion.generate(model, [1, 2, 3], 16, steps=steps, temperature=temperature, top_p=top_p,
                                 generator=gen, vocab_limit=15)  # fmt: skip
        assert len(new) == 16 and mask_id not in new and max(new) < 15


def test_unmasking_takes_the_requested_steps_and_keeps_the_prompt():
    model = _model(vocab=16, ctx=24)
    calls = []
    model.register_forward_hook(lambda mod, args, out: calls.append(args[0].clone()))
    new = diffusion.generate(model, [1, 2, 3], 10, steps=4, temperature=0.0)
    assert len(calls) == 4
    masks_left = [int((c[0, 3:] == model.config.mask_token_id).sum()) for c in calls]
    assert masks_left == [10, 7, 4, 2]  # 10 tokens over 4 steps: 3, 3, 2, 2
    assert all(c[0, :3].tolist() == [1, 2, 3] for c in calls)
    assert len(new) == 10
    # Greedy with one step: every position's argmax at once.
    one = diffusion.generate(model, [1, 2, 3], 10, steps=1, temperature=0.0)
    with torch.no_grad():
        x = torch.tensor([[1, 2, 3, *([16] * 10)]])
        assert one == model(x)[0, 3:, :16].argmax(-1).tolist()


def test_generate_cli_uses_diffusion_sampling_for_a_diffusion_checkpoint(tmp_path, capsys):
    eot = "<|endoftext|>"
    vocab = {0: eot.encode(), **{i + 1: bytes([i]) for i in range(256)}}
    tok = Tokenizer(vocab, [], [eot])
    tok.save(tmp_path / "tokenizer")
    torch.manual_seed(0)
    cfg = diffusion.with_mask_token(ModelConfig(vocab_size=tok.vocab_size, context_length=32, d_model=16,
                                                num_layers=1, num_heads=2, d_ff=32))  # fmt: skip
    model = TransformerLM(cfg)
    save_checkpoint(model, None, 3, tmp_path / "model.pt")
    argv = ["--checkpoint", str(tmp_path / "model.pt"), "--tokenizer", str(tmp_path / "tokenizer"), "--prompt", "ab",
            "--max_new_tokens", "8", "--diffusion_steps", "2", "--seed", "1"]  # fmt: skip
    rc = run_cli(generate.main, argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out.startswith("ab") and "note: tokenizer" not in out.err
    model2, _, _ = generate.load_model(tmp_path / "model.pt")
    assert diffusion.is_diffusion(model2.config)
    assert run_cli(generate.main, [*argv[:-4], "--diffusion_steps", "0"]) == 2


# ---------------------------------------------------------------------------------------------
# the training program
# ---------------------------------------------------------------------------------------------
def test_tiny_model_bound_drops_during_training(data, tmp_path, capsys):
    run_dir = tmp_path / "diff"
    argv = base_argv(data, run_dir, *DIFF, max_iters=60, lr=1e-2, min_lr=1e-3, eval_interval=10, log_interval=10)
    assert tt.main(argv) == 0, capsys.readouterr().err
    evals = [r["val_loss"] for r in records(run_dir, "eval") + records(run_dir, "final")]
    assert evals[-1] < evals[0] - 0.5, evals
    payload = load_pt(run_dir / "checkpoint_iter_60.pt")
    cfg = payload["model_config"]
    assert (cfg["vocab_size"], cfg["mask_token_id"], cfg["causal"]) == (VOCAB + 1, VOCAB, False)
    assert payload["train_config"]["objective"] == "diffusion"


def test_diffusion_resume_is_exact_and_the_objective_cannot_change(data, tmp_path, capsys):
    n = 5
    common = dict(lr=3e-3, min_lr=3e-3, warmup_iters=0, eval_interval=n, checkpoint_interval=n)
    full, part = tmp_path / "full", tmp_path / "part"
    assert tt.main(base_argv(data, full, *DIFF, max_iters=2 * n, **common)) == 0
    assert tt.main(base_argv(data, part, *DIFF, max_iters=n, **common)) == 0
    assert tt.main(base_argv(data, part, *DIFF, "--resume", max_iters=2 * n, **common)) == 0
    capsys.readouterr()
    assert_weights_equal(full / f"checkpoint_iter_{2 * n}.pt", part / f"checkpoint_iter_{2 * n}.pt")
    assert train_losses(full) == train_losses(part)
    ev = [{r["step"]: r["val_loss"] for r in records(d, "eval") + records(d, "final")} for d in (full, part)]
    assert ev[0][2 * n] == ev[1][2 * n]
    # Resuming a diffusion checkpoint as AR is refused in one line (exit 2); without --objective the
    # resumed run keeps the checkpoint's (the data vocabulary: 64 ids, the model's 65 less the [MASK]).
    ckpt = str(part / f"checkpoint_iter_{n}.pt")
    rc = tt.main(base_argv(data, part, "--resume_from", ckpt, "--objective", "ar", max_iters=3 * n))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--objective ar contradicts --resume_from" in err, err
    assert "(its objective is diffusion)" in err
    s = parse_settings(base_argv(data, part, "--resume_from", ckpt, max_iters=3 * n))
    assert (s.objective, s.vocab_size, s.model_config().vocab_size, s.model_config().mask_token_id) == (
        "diffusion", VOCAB, VOCAB + 1, VOCAB)  # fmt: skip


def test_data_shape_is_the_settings_that_made_a_saved_model():
    saved = {"vocab_size": 65, "mask_token_id": 64, "causal": False, "d_model": 32}
    assert diffusion.data_shape(saved) == {"vocab_size": 64, "mask_token_id": 64, "causal": False, "d_model": 32}
    ar = {"vocab_size": 65, "mask_token_id": None, "causal": True, "d_model": 32}
    assert diffusion.data_shape(ar) == ar
    assert diffusion.data_shape({"vocab_size": 65}) == {"vocab_size": 65}  # an old checkpoint: AR
