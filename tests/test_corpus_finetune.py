"""Fine-tuning: ``--init_from`` starts from another run's weights (shape from the checkpoint, a
contradicting flag refused), and a short SFT run on a tiny synthetic chat set lowers the masked
validation loss (the loss over the answers only)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cs336_basics import tokenize_data
from cs336_basics import training_together as tt
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.utils.errors import run_cli
from tests._corpus_utils import EOT, WORDS, make_tokenizer, sentences
from tests._train_utils import assert_weights_equal, load_pt, records

from ._torch_threads import one_torch_thread  # noqa: F401  (fixture)

SHAPE = ["--d_model", "32", "--num_layers", "1", "--num_heads", "2", "--d_ff", "64", "--context_length", "32"]
COMMON = ["--device", "cpu", "--batch_size", "8", "--eval_iters", "4", "--log_interval", "5", "--seed", "3"]


def chat_rows(n: int, seed: int) -> list[dict]:
    """ "repeat: W1 W2" -> "W1 W2": the answer is a copy of the prompt's words, easy to learn."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(r.choice(WORDS) for _ in range(2))
        rows.append({"messages": [{"role": "user", "content": f"repeat: {words}"},
                                  {"role": "assistant", "content": words}]})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ft")
    tok = make_tokenizer(d / "tok")
    (d / "pre.txt").write_text(EOT.join(sentences(300, seed=9)), encoding="utf-8")
    assert run_cli(tokenize_data.main, ["--quiet", "--tokenizer", str(tok), "--input", str(d / "pre.txt"),
                                        "--output", str(d / "pre.npy")]) == 0  # fmt: skip
    for name, n, seed in (("sft", 400, 1), ("val", 60, 2)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat_rows(n, seed)))
        assert run_cli(tokenize_data.main, ["--quiet", "--tokenizer", str(tok), "--input", str(d / f"{name}.jsonl"),
                                            "--output", str(d / f"{name}.npy"), "--chat"]) == 0  # fmt: skip
    vocab = str(Tokenizer.from_dir(tok).vocab_size)
    pre = d / "pre_run"
    argv = ["--train_data_path", str(d / "pre.npy"), "--val_data_path", str(d / "pre.npy"), "--vocab_size", vocab,
            *SHAPE, *COMMON, "--max_iters", "10", "--eval_interval", "10", "--checkpoint_dir", str(pre)]  # fmt: skip
    assert tt.main(argv) == 0
    return {"dir": d, "tok": tok, "pre": pre, "ckpt": pre / "checkpoint_iter_10.pt"}


def sft_argv(s: dict[str, Path], run: Path, *extra: str) -> list[str]:
    d = s["dir"]
    return ["--train_data_path", str(d / "sft.npy"), "--val_data_path", str(d / "val.npy"),
            "--init_from", str(s["ckpt"]), *COMMON, "--checkpoint_dir", str(run), *extra]  # fmt: skip


def test_init_from_starts_at_step_0_with_the_source_weights(setup, tmp_path, capsys):
    run = tmp_path / "ft0"
    assert tt.main(sft_argv(setup, run, "--max_iters", "0")) == 0  # no shape flags: taken from the checkpoint
    out = capsys.readouterr().out
    assert f"Initialized weights from {setup['ckpt']}" in out
    assert out.count("Loss: mean over masked targets only") == 1
    saved = load_pt(run / "checkpoint_iter_0.pt")
    assert saved["iteration"] == 0 and saved["optimizer"]["state"] == {}  # a fresh optimizer
    assert saved["model_config"] == load_pt(setup["ckpt"])["model_config"]
    assert_weights_equal(run / "checkpoint_iter_0.pt", setup["ckpt"])
    # an independent load: the source weights in a model built by hand from its config
    ref = TransformerLM(ModelConfig.from_dict(load_pt(setup["ckpt"])["model_config"]))
    ref.load_state_dict(load_pt(setup["ckpt"])["model"])
    for k, v in ref.state_dict().items():
        assert torch.equal(saved["model"][k], v)


def test_a_contradicting_shape_flag_is_refused_in_one_line(setup, tmp_path, capsys):
    assert tt.main(sft_argv(setup, tmp_path / "x", "--d_model", "64", "--max_iters", "0")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--d_model 64 contradicts --init_from" in err and "d_model is 32" in err
    assert tt.main(sft_argv(setup, tmp_path / "y", "--d_model", "32", "--max_iters", "0")) == 0  # agreeing: fine


def test_a_shape_set_by_override_or_config_is_checked_like_a_flag(setup, tmp_path, capsys):
    """The settings given (flags, --config keys, --override paths) are read one way: an --override
    contradicting the checkpoint used to be dropped silently for the checkpoint's value."""
    assert tt.main(sft_argv(setup, tmp_path / "o", "--override", "d_model=64", "--max_iters", "0")) == 2
    assert "--d_model 64 contradicts --init_from" in capsys.readouterr().err
    (tmp_path / "c.toml").write_text("[model]\nd_model = 64\n")
    assert tt.main(sft_argv(setup, tmp_path / "c", "--config", str(tmp_path / "c.toml"), "--max_iters", "0")) == 2
    assert "--d_model 64 contradicts --init_from" in capsys.readouterr().err
    assert tt.main(sft_argv(setup, tmp_path / "a", "--d_mod", "32", "--max_iters", "0")) == 0  # an abbreviation


def test_the_python_api_takes_the_init_from_checkpoints_model_shape(setup, tmp_path):
    """train(TrainSettings.from_kwargs(init_from=...)) builds the checkpoint's model, as the CLI does
    (it used to keep the default shape and fail loading the weights)."""
    from cs336_basics.training.settings import TrainSettings
    from cs336_basics.utils.errors import UserError

    d = setup["dir"]
    kw = dict(train_data_path=d / "sft.npy", val_data_path=d / "val.npy", init_from=setup["ckpt"], device="cpu",
              batch_size=8, eval_iters=4, max_iters=0, seed=3)  # fmt: skip
    s = TrainSettings.from_kwargs(**kw, checkpoint_dir=tmp_path / "api")
    want = load_pt(setup["ckpt"])["model_config"]
    assert (s.d_model, s.num_layers, s.num_heads, s.d_ff, s.context_length) == (32, 1, 2, 64, 32)
    run = tt.train(s)
    assert run.state.model.config == ModelConfig.from_dict(want)
    assert_weights_equal(tmp_path / "api" / "checkpoint_iter_0.pt", setup["ckpt"])
    with pytest.raises(UserError, match="--d_model 64 contradicts --init_from"):
        TrainSettings.from_kwargs(**kw, d_model=64)


def test_init_from_a_run_directory_uses_its_best_checkpoint(setup, tmp_path, capsys):
    argv = sft_argv(setup, tmp_path / "z", "--max_iters", "0")
    argv[argv.index("--init_from") + 1] = str(setup["pre"])
    assert tt.main(argv) == 0
    assert f"Initialized weights from {setup['pre'] / 'best.pt'}" in capsys.readouterr().out
    assert_weights_equal(tmp_path / "z" / "checkpoint_iter_0.pt", setup["pre"] / "best.pt")


def test_short_sft_run_lowers_the_masked_validation_loss(setup, tmp_path):
    before = tmp_path / "before"
    assert tt.main(sft_argv(setup, before, "--max_iters", "0")) == 0
    after = tmp_path / "after"
    assert tt.main(sft_argv(setup, after, "--max_iters", "60", "--eval_interval", "30", "--lr", "3e-3")) == 0
    loss0 = records(before, "final")[0]["val_loss"]
    loss1 = records(after, "final")[0]["val_loss"]
    assert loss1 < 0.7 * loss0, (loss0, loss1)
    # the masked loss is over answers only: the ids at masked targets are all answer words or <|endoftext|>
    mask = np.load(setup["dir"] / "val.mask.npy")
    assert 0 < mask.mean() < 0.5


def test_train_and_eval_losses_are_the_mean_over_masked_targets(tmp_path):
    """train_step and evaluate on masked shards against F.cross_entropy(ignore_index=-100) on the same windows."""
    import contextlib
    from types import SimpleNamespace

    import torch.nn.functional as F

    from cs336_basics.corpus.shards import open_token_data
    from cs336_basics.corpus.tokens import get_batch
    from cs336_basics.fast.optim import AdamW
    from cs336_basics.training.state import make_eval_rng
    from cs336_basics.training.step import evaluate, train_step

    rng = np.random.default_rng(0)
    for i, n in enumerate((300, 500)):
        np.save(tmp_path / f"c_{i}.npy", rng.integers(0, 50, n).astype(np.uint16))
        np.save(tmp_path / f"c_{i}.mask.npy", (rng.random(n) < 0.3).astype(np.uint8))
    data = open_token_data(str(tmp_path / "c_*.npy"), 50, None, 16, "--train_data_path")
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=50, context_length=16, d_model=16, num_layers=1, num_heads=2, d_ff=32))

    def reference(batches) -> tuple[float, float]:
        losses, counts = [], []
        with torch.no_grad():
            for x, y, m in batches:
                logits = model(x)
                t = torch.where(m.bool(), y, -100)
                losses.append(
                    F.cross_entropy(logits.reshape(-1, 50), t.reshape(-1), ignore_index=-100, reduction="sum")
                )
                counts.append(m.sum())
        return float(sum(losses) / sum(counts)), float(losses[0] / counts[0])

    state = SimpleNamespace(seed=5, rank=0, world_size=1)
    eval_rng = make_eval_rng(5, 0, "val")
    want_eval, _ = reference([get_batch(data, 4, 16, "cpu", rng=eval_rng) for _ in range(3)])
    got_eval, _ = evaluate(model, data, state, split="val", batches=3, batch_size=4, context_length=16,
                           device=torch.device("cpu"), autocast=contextlib.nullcontext)  # fmt: skip
    assert got_eval == pytest.approx(want_eval, rel=1e-5)

    batch = get_batch(data, 4, 16, "cpu", rng=np.random.default_rng(1))
    _, want_step = reference([batch])
    opt = AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    res = train_step(model, opt, scaler, [batch], accum_steps=1, grad_clip=1.0, autocast=contextlib.nullcontext,
                     no_sync=contextlib.nullcontext)  # fmt: skip
    assert res.loss == pytest.approx(want_step, rel=1e-5)


def test_init_from_a_run_directory_takes_best_then_the_newest(tmp_path):
    from cs336_basics.corpus.finetune import resolve_init_checkpoint
    from cs336_basics.utils.errors import UserError

    for n in (5, 10):
        (tmp_path / f"checkpoint_iter_{n}.pt").write_bytes(b"x")
    assert resolve_init_checkpoint(tmp_path).name == "checkpoint_iter_10.pt"
    (tmp_path / "best.pt").write_bytes(b"x")
    assert resolve_init_checkpoint(tmp_path).name == "best.pt"
    with pytest.raises(UserError, match="--init_from .*: no such file or directory"):
        resolve_init_checkpoint(tmp_path / "missing")
