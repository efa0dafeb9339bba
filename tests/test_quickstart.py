"""The quickstart end to end in its seconds-long --quick mode: every artifact appears and loss falls."""

import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest

from cs336_basics import generate, quickstart
from cs336_basics.tools import plot_metrics
from cs336_basics.utils.errors import run_cli


def test_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert run_cli(quickstart.main, ["--quick", "--out", str(out), "--device", "cpu", "--num_samples", "2"]) == 0
    printed = capsys.readouterr().out

    for f in (
        "data/train.txt",
        "data/valid.txt",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens.json",
        "train.npy",
        "valid.npy",
        "model/metrics.jsonl",
        "model/run_config.json",
        "model/checkpoint_iter_20.pt",
        "model/best.pt",
    ):
        assert (out / f).is_file(), f
    assert "<|endoftext|>" in (out / "data/train.txt").read_text()
    vocab = json.loads((out / "tokenizer/vocab.json").read_text())
    ids = np.load(out / "train.npy")
    assert ids.size > 1000 and int(ids.max()) < len(vocab)

    recs = [json.loads(line) for line in (out / "model/metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r["loss"] for r in recs if r["type"] == "train"]
    final = [r for r in recs if r["type"] == "final"][-1]
    assert train[0] > final["val_loss"] + 0.3  # it learned something
    assert final["val_loss"] < math.log(len(vocab))
    assert printed.count("Once upon a time") >= 1 and "Next:" in printed and "cs336_basics.generate" in printed

    # The printed next steps work when followed literally (the `uv run ... python -m X` part is run in-process).
    hints = {}
    for line in printed.split("Next:")[1].splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:2] == ["uv", "run"] and "-m" in argv:
            module = argv[argv.index("-m") + 1]
            hints[module] = argv[argv.index("-m") + 2 :]
    assert set(hints) >= {"cs336_basics.generate", "cs336_basics.tools.plot_metrics"}, printed
    assert run_cli(generate.main, hints["cs336_basics.generate"] + ["--max_new_tokens", "5"]) == 0
    plot_args = hints["cs336_basics.tools.plot_metrics"]
    assert "--out" in plot_args, plot_args  # says where the picture goes ...
    assert run_cli(plot_metrics.main, plot_args) == 0
    png = Path(plot_args[plot_args.index("--out") + 1])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # ... and it is there
    assert f"Saved plot to {png}" in capsys.readouterr().out

    # A second run into the same directory is allowed (it cleans its own previous run).
    assert (
        run_cli(
            quickstart.main, ["--quick", "--out", str(out), "--device", "cpu", "--num_samples", "0", "--max_iters", "3"]
        )
        == 0
    )
    assert (out / "model/checkpoint_iter_3.pt").is_file() and not (out / "model/checkpoint_iter_20.pt").exists()


def test_refuses_foreign_dir_and_bad_paths(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    assert run_cli(quickstart.main, ["--quick", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--out" in err and err.count("\n") == 1
    assert (foreign / "precious.txt").read_text() == "keep me"

    assert run_cli(quickstart.main, ["--quick", "--out", str(tmp_path / "o"), "--train", str(tmp_path / "no.txt")]) == 2
    assert "no.txt" in capsys.readouterr().err


@pytest.mark.parametrize("with_valid", [True, False])
def test_copy_prefix_cuts_at_document_boundary(tmp_path, with_valid):
    src = tmp_path / "src.txt"
    src.write_text("".join(f"Story number {i} é.\n<|endoftext|>\n" for i in range(200)), encoding="utf-8")
    dst = tmp_path / "dst.txt"
    n = quickstart._copy_prefix(src, dst, 1000)
    text = dst.read_text(encoding="utf-8")
    assert n == len(text.encode()) <= 1000 + 1
    assert text.rstrip("\n").endswith("<|endoftext|>") and text.startswith("Story number 0")
