"""The generate CLI on a tiny saved model: deterministic with --seed, clear one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cs336_basics import generate
from cs336_basics.checkpoint import save_checkpoint
from cs336_basics.errors import run_cli
from cs336_basics.model import ModelConfig, TransformerLM
from cs336_basics.tokenizer import Tokenizer

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
    rc, out, _ = _gen(capsys, "--checkpoint", str(run_dir / "model"), "--prompt", "the", "--max_new_tokens", "5",
                      "--temperature", "0")
    assert rc == 0 and out == ("the" + tok.decode(new)).rstrip() + "\n"  # tokenizer found beside the run dir


def test_directory_prefers_best(run_dir, tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    for n in (2, 10, 9):
        (d / f"checkpoint_iter_{n}.pt").write_bytes(b"x")
    assert generate.resolve_checkpoint(d).name == "checkpoint_iter_10.pt"
    (d / "best.pt").write_bytes(b"x")
    assert generate.resolve_checkpoint(d).name == "best.pt"


def test_empty_prompt_starts_from_eot(run_dir, capsys):
    rc, out, err = _gen(capsys, "--checkpoint", str(run_dir / "model"), "--prompt", "", "--max_new_tokens", "4",
                        "--seed", "0")
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


def test_vocab_mismatch_names_both_sizes(run_dir, tmp_path, capsys):
    small = _tokenizer(extra_merges=False)
    small.save(tmp_path / "tok")
    rc, _, err = _gen(capsys, "--checkpoint", str(run_dir / "model"), "--tokenizer", str(tmp_path / "tok"))
    _one_line_error(rc, err, "257", "260")


def test_bad_flags(run_dir, capsys):
    rc, _, err = _gen(capsys, "--checkpoint", str(run_dir / "model"), "--top_p", "0")
    _one_line_error(rc, err, "--top_p")


def test_python_dash_m(run_dir):
    """The real entry point prints the sample and exits 0 (errors are covered in-process above)."""
    cmd = [sys.executable, "-m", "cs336_basics.generate", "--checkpoint", str(run_dir / "model"),
           "--prompt", "the", "--max_new_tokens", "3", "--temperature", "0"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the")
