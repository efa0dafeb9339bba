"""The generate CLI on a tiny saved model: deterministic with --seed, clear one-line errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cs336_basics import generate
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.training.checkpoints import resolve_checkpoint, save_checkpoint
from cs336_basics.utils.errors import run_cli

EOT = "<|endoftext|>"
REPO = Path(__file__).resolve().parents[1]


def _tokenizer(extra_merges=True) -> Tokenizer:
    vocab = {0: EOT.encode()}
    vocab.update({i + 1: bytes([i]) for i in range(256)})
    merges = []
    if extra_merges:
        for a, b in [(b" ", b"t"), (b"h", b"e"), (b" t", b"he")]:
            vocab[len(vocab)] = a + b
            merges.append((a, b))
    return Tokenizer(vocab, merges, [EOT])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    tok = _tokenizer()
    tok.save(d / "tokenizer")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=32, d_model=16, num_layers=1, num_heads=2, d_ff=32)
    model = TransformerLM(cfg)
    (d / "model").mkdir()
    save_checkpoint(model, None, 7, d / "model" / "checkpoint_iter_7.pt")
    return d


def _gen(capsys, *argv):
    rc = run_cli(generate.main, list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_deterministic_with_seed_and_greedy(run_dir, capsys):
    ck, tok = str(run_dir / "model" / "checkpoint_iter_7.pt"), str(run_dir / "tokenizer")
    base = ["--checkpoint", ck, "--tokenizer", tok, "--prompt", "the cat", "--max_new_tokens", "12"]
    rc1, a, _ = _gen(capsys, *base, "--temperature", "0.9", "--top_p", "0.9", "--seed", "3", "--num_samples", "2")
    rc2, b, _ = _gen(capsys, *base, "--temperature", "0.9", "--top_p", "0.9", "--seed", "3", "--num_samples", "2")
    assert rc1 == rc2 == 0 and a == b
    assert a.count("--- sample") == 2 and a.count("the cat") == 2
    rc, g1, _ = _gen(capsys, *base, "--temperature", "0", "--seed", "1")
    _, g2, _ = _gen(capsys, *base, "--temperature", "0", "--seed", "99")
    assert rc == 0 and g1 == g2 and g1.startswith("the cat")  # greedy ignores the seed


def test_greedy_matches_model_argmax(run_dir, capsys):
    """The CLI's greedy continuation equals argmax decoding done by hand with the raw model."""
    model, _, _ = generate.load_model(run_dir / "model")
    tok = Tokenizer.from_dir(run_dir / "tokenizer")
    ids = tok.encode("the")
    new = []
    with torch.no_grad():
        for _ in range(5):
            nxt = int(model(torch.tensor([ids + new]))[0, -1].argmax())
            if nxt == tok.eot_id:
                break
            new.append(nxt)
    rc, out, err = _gen(
        capsys, "--checkpoint", str(run_dir / "model"), "--prompt", "the", "--max_new_tokens", "5", "--temperature", "0"
    )
    assert rc == 0 and out == ("the" + tok.decode(new)).rstrip() + "\n"  # tokenizer found beside the run dir
    # A directory was given: which file it chose goes to stderr, so stdout stays just the sample.
    assert err == f"Using checkpoint {run_dir / 'model' / 'checkpoint_iter_7.pt'} (iteration 7)\n"
    rc, _, err = _gen(
        capsys,
        "--checkpoint",
        str(run_dir / "model" / "checkpoint_iter_7.pt"),
        "--prompt",
        "the",
        "--max_new_tokens",
        "2",
    )
    assert rc == 0 and err == ""  # a file was named: nothing to announce


def test_directory_prefers_best(run_dir, tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    for n in (2, 10, 9):
        (d / f"checkpoint_iter_{n}.pt").write_bytes(b"x")
    assert resolve_checkpoint(d).name == "checkpoint_iter_10.pt"
    (d / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(d).name == "best.pt"


def test_empty_prompt_starts_from_eot(run_dir, capsys):
    rc, out, err = _gen(
        capsys, "--checkpoint", str(run_dir / "model"), "--prompt", "", "--max_new_tokens", "4", "--seed", "0"
    )
    assert rc == 0, err


def _one_line_error(rc, err, *needles):
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for n in needles:
        assert n in err


def test_missing_checkpoint_and_tokenizer(run_dir, tmp_path, capsys):
    rc, _, err = _gen(capsys, "--checkpoint", str(tmp_path / "nope.pt"), "--tokenizer", str(run_dir / "tokenizer"))
    _one_line_error(rc, err, "nope.pt")
    rc, _, err = _gen(capsys, "--checkpoint", str(run_dir / "model"), "--tokenizer", str(tmp_path / "notok"))
    _one_line_error(rc, err, "notok")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    rc, _, err = _gen(capsys, "--checkpoint", str(empty), "--tokenizer", str(run_dir / "tokenizer"))
    _one_line_error(rc, err, "empty_dir")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(run_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    bad = tmp_path / "evil.pt"
    torch.save({"model": evil, "iteration": 0}, bad)
    rc, _, err = _gen(capsys, "--checkpoint", str(bad), "--tokenizer", str(run_dir / "tokenizer"))
    _one_line_error(rc, err, "evil.pt")
    assert not marker.exists()


def test_corrupt_file(run_dir, tmp_path, capsys):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all" * 10)
    rc, _, err = _gen(capsys, "--checkpoint", str(bad), "--tokenizer", str(run_dir / "tokenizer"))
    _one_line_error(rc, err, "garbage.pt")


def test_tokenizer_larger_than_model_names_both_sizes(tmp_path, capsys):
    tok = _tokenizer()  # 260 tokens
    cfg = ModelConfig(vocab_size=258, context_length=16, d_model=16, num_layers=1, num_heads=2, d_ff=32)
    save_checkpoint(TransformerLM(cfg), None, 1, tmp_path / "small.pt")
    tok.save(tmp_path / "tok")
    rc, _, err = _gen(capsys, "--checkpoint", str(tmp_path / "small.pt"), "--tokenizer", str(tmp_path / "tok"))
    _one_line_error(rc, err, "258", "260")


@pytest.fixture(scope="module")
def padded_vocab_ckpt(tmp_path_factory):
    """A 260-id model with a 257-token tokenizer whose logits always favour the ids the tokenizer lacks.

    Only dimension 0 survives the final norm, and lm_head rows 258/259 carry +-100 there (other rows are
    small), so whatever the sign of that dimension, an unmasked argmax picks 258 or 259.
    """
    d = tmp_path_factory.mktemp("padded")
    tok = _tokenizer(extra_merges=False)  # 257 tokens: ids 0..256
    tok.save(d / "tok")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=260, context_length=32, d_model=16, num_layers=1, num_heads=2, d_ff=32)
    model = TransformerLM(cfg)
    with torch.no_grad():
        model.ln_final.weight.zero_()
        model.ln_final.weight[0] = 1.0
        model.lm_head.weight.uniform_(-1, 1)
        model.lm_head.weight[258, 0] = 100.0
        model.lm_head.weight[259, 0] = -100.0
    save_checkpoint(model, None, 3, d / "padded.pt")
    return d


def test_tokenizer_smaller_than_model_never_samples_missing_ids(padded_vocab_ckpt, capsys):
    d = padded_vocab_ckpt
    model, _, _ = generate.load_model(d / "padded.pt")
    tok = Tokenizer.from_dir(d / "tok")
    ids = tok.encode("the")
    with torch.no_grad():
        assert int(model(torch.tensor([ids]))[0, -1].argmax()) in (258, 259)  # the trap is armed
        new = []
        for _ in range(6):  # by hand: greedy over the ids the tokenizer has
            nxt = int(model(torch.tensor([ids + new]))[0, -1, :257].argmax())
            if nxt == tok.eot_id:
                break
            new.append(nxt)
    base = ["--checkpoint", str(d / "padded.pt"), "--tokenizer", str(d / "tok"), "--prompt", "the"]
    rc, out, err = _gen(capsys, *base, "--max_new_tokens", "6", "--temperature", "0")
    assert rc == 0, err
    assert out == ("the" + tok.decode(new)).rstrip() + "\n"
    assert "257" in err and "260" in err and "never sampled" in err and err.count("\n") == 1
    # Sampling at temperature 1 without top-p truncation: every id decodes (an id >= 257 would not).
    rc, out, err = _gen(
        capsys,
        *base,
        "--max_new_tokens",
        "20",
        "--temperature",
        "1",
        "--top_p",
        "1",
        "--num_samples",
        "4",
        "--seed",
        "0",
    )
    assert rc == 0 and out.count("--- sample") == 4, err


def test_tokenizer_fingerprint_mismatch_warns(run_dir, tmp_path, capsys):
    from cs336_basics.corpus.tokens import tokenizer_fingerprint

    tok_dir = run_dir / "tokenizer"
    model, _, _ = generate.load_model(run_dir / "model")
    meta = {"vocab_size": 260, "tokenizer_sha256": tokenizer_fingerprint(tok_dir), "tokenizer_dir": "tokenizers/ts"}
    save_checkpoint(model, None, 5, tmp_path / "with_meta.pt", tokenizer=meta)
    same = tmp_path / "same_tok"
    shutil.copytree(tok_dir, same)  # same files elsewhere: the same tokenizer
    rc, _, err = _gen(
        capsys, "--checkpoint", str(tmp_path / "with_meta.pt"), "--tokenizer", str(same), "--max_new_tokens", "2"
    )
    assert rc == 0 and err == ""

    vocab = {0: EOT.encode(), **{i + 1: bytes([i]) for i in range(256)}}
    merges = [(b"a", b"b"), (b"c", b"d"), (b"ab", b"cd")]  # same size (260), different merges
    for a, b in merges:
        vocab[len(vocab)] = a + b
    Tokenizer(vocab, merges, [EOT]).save(tmp_path / "other_tok")
    rc, out, err = _gen(
        capsys,
        "--checkpoint",
        str(tmp_path / "with_meta.pt"),
        "--tokenizer",
        str(tmp_path / "other_tok"),
        "--max_new_tokens",
        "2",
    )
    assert rc == 0 and out.startswith("Once upon a time")
    assert err.startswith("warning: ") and err.count("\n") == 1
    assert "other_tok" in err and "tokenizers/ts" in err

    save_checkpoint(model, None, 5, tmp_path / "no_meta.pt", tokenizer=None)  # trainer had no sidecar
    rc, _, err = _gen(
        capsys,
        "--checkpoint",
        str(tmp_path / "no_meta.pt"),
        "--tokenizer",
        str(tmp_path / "other_tok"),
        "--max_new_tokens",
        "2",
    )
    assert rc == 0 and err == ""


def test_bad_flags(run_dir, capsys):
    rc, _, err = _gen(capsys, "--checkpoint", str(run_dir / "model"), "--top_p", "0")
    _one_line_error(rc, err, "--top_p")


def test_python_dash_m(run_dir):
    """The real entry point prints the sample and exits 0 (errors are covered in-process above)."""
    cmd = [
        sys.executable,
        "-m",
        "cs336_basics.generate",
        "--checkpoint",
        str(run_dir / "model"),
        "--prompt",
        "the",
        "--max_new_tokens",
        "3",
        "--temperature",
        "0",
    ]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the")
