"""Training from shards: proportional sampling (chi-square), no window across a boundary, one
tokenizer, directories/globs/lists, and a resumed sharded run equal to an uninterrupted one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cs336_basics import training_together as tt
from cs336_basics.corpus.layout import CorpusError, resolve_token_paths
from cs336_basics.corpus.shards import TokenShards, open_token_data
from cs336_basics.corpus.tokens import get_batch
from cs336_basics.utils.token_files import tokens_meta_path
from tests._train_utils import VOCAB, assert_weights_equal, base_argv, train_losses, write_pattern_data

from ._torch_threads import default_torch_threads, one_torch_thread  # noqa: F401  (fixtures)

SIZES = [1_000, 3_000, 6_000, 500]


def write_numbered_shards(d: Path) -> list[Path]:
    """Shard s holds the distinct values offset_s .. offset_s + n_s - 1 (so a window shows where it came from)."""
    d.mkdir(parents=True, exist_ok=True)
    paths, offset = [], 0
    for i, n in enumerate(SIZES):
        p = d / f"part_{i:06d}.npy"
        np.save(p, np.arange(offset, offset + n, dtype=np.uint32))
        paths.append(p)
        offset += n
    return paths


def test_windows_come_from_shards_in_proportion_to_their_tokens_and_never_cross(tmp_path):
    paths = write_numbered_shards(tmp_path / "s")
    data = open_token_data(str(tmp_path / "s"), None, None, 16, "--train_data_path")
    assert isinstance(data, TokenShards) and data.paths == paths and len(data) == sum(SIZES)
    rng = np.random.Generator(np.random.PCG64(7))
    bounds = np.cumsum([0, *SIZES])
    counts = np.zeros(len(SIZES))
    draws = 0
    for _ in range(200):
        x, y = get_batch(data, 64, 16, "cpu", rng=rng)
        x, y = x.numpy(), y.numpy()
        assert np.all(np.diff(x, axis=1) == 1) and np.all(y == x + 1)  # consecutive ids: one shard, in order
        first, last = x[:, 0], y[:, -1]
        s_first = np.searchsorted(bounds, first, side="right") - 1
        s_last = np.searchsorted(bounds, last, side="right") - 1
        assert np.array_equal(s_first, s_last), "a window crossed a shard boundary"
        counts += np.bincount(s_first, minlength=len(SIZES))
        draws += len(first)
    expected = draws * np.array(SIZES) / sum(SIZES)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 3 degrees of freedom: P(chi2 > 16.27) = 0.001 under the null; the seed is fixed, so no flakes.
    assert chi2 < 16.27, (counts, expected, chi2)


def test_every_start_of_a_shard_is_reachable_and_uniform(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    np.save(d / "a.npy", np.arange(0, 40, dtype=np.uint16))
    np.save(d / "b.npy", np.arange(100, 140, dtype=np.uint16))
    data = open_token_data(f"{d}/*.npy", None, None, 8, "--train_data_path")
    rng = np.random.Generator(np.random.PCG64(1))
    x, _ = get_batch(data, 20_000, 8, "cpu", rng=rng)
    starts = x[:, 0].numpy()
    valid = set(range(0, 32)) | set(range(100, 132))  # n - T starts in each shard
    assert set(starts.tolist()) == valid
    hist = np.bincount(starts, minlength=140)[sorted(valid)]
    assert hist.min() > 0.7 * hist.mean() and hist.max() < 1.3 * hist.mean()  # 64 bins of ~312: loose on purpose


def test_specs_lists_globs_directories_and_one_file(tmp_path):
    paths = write_numbered_shards(tmp_path / "s")
    np.save(tmp_path / "s" / "part_000000.mask.npy", np.ones(SIZES[0], np.uint8))  # never a token file
    assert resolve_token_paths(str(tmp_path / "s"), "--x") == paths
    assert resolve_token_paths(str(tmp_path / "s" / "part_*.npy"), "--x") == paths
    assert resolve_token_paths(f"{paths[2]},{paths[0]}", "--x") == [paths[2], paths[0]]
    with pytest.raises(CorpusError, match="no token file matches"):
        resolve_token_paths(str(tmp_path / "none_*.npy"), "--train_data_path")
    one = open_token_data(str(paths[1]), None, None, 16, "--x")  # one file, no mask: the plain memmap
    assert isinstance(one, np.memmap) and not isinstance(one, TokenShards)


def test_shards_of_different_tokenizers_are_refused_in_one_line(tmp_path, capsys):
    data = write_pattern_data(tmp_path / "d")
    d = tmp_path / "shards"
    d.mkdir()
    for i, sha in enumerate(["a" * 64, "b" * 64]):
        shutil.copy(data["train"], d / f"t_{i}.npy")
        tokens_meta_path(d / f"t_{i}.npy").write_text(json.dumps({"vocab_size": VOCAB, "tokenizer_sha256": sha}))
    argv = base_argv(data, tmp_path / "run")
    argv[argv.index("--train_data_path") + 1] = str(d)
    assert tt.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "were made by different tokenizers" in err and "t_0.npy" in err


def test_resumed_sharded_run_equals_an_uninterrupted_one(default_torch_threads, tmp_path):
    data = write_pattern_data(tmp_path / "d", n_train=12_000)
    full = np.load(data["train"])
    d = tmp_path / "shards"
    d.mkdir()
    for i, (a, b) in enumerate([(0, 2_000), (2_000, 7_000), (7_000, 12_000)]):
        np.save(d / f"train_{i:06d}.npy", full[a:b])

    def argv(run: Path, *extra: str) -> list[str]:
        a = base_argv(data, run, *extra, max_iters=12, checkpoint_interval=6, eval_interval=6)
        a[a.index("--train_data_path") + 1] = str(d / "train_*.npy")
        return a

    assert tt.main(argv(tmp_path / "ref")) == 0
    part = tmp_path / "part"
    assert tt.main(argv(part, "--resume_from", str(tmp_path / "ref" / "checkpoint_iter_6.pt"))) == 0
    assert_weights_equal(part / "checkpoint_iter_12.pt", tmp_path / "ref" / "checkpoint_iter_12.pt")
    ref_losses = {k: v for k, v in train_losses(tmp_path / "ref").items() if k > 6}
    assert train_losses(part) == ref_losses
