"""File names of the corpus layout (shards, masks) and how a data-path value names token files."""

from __future__ import annotations

import numpy as np
import pytest

from cs336_basics.corpus.layout import CorpusError, existing_shards, mask_path, resolve_token_paths, shard_path


def test_names():
    assert mask_path("d/train.npy").as_posix() == "d/train.mask.npy"
    assert shard_path("d/owt.npy", 3).as_posix() == "d/owt_000003.npy"


def test_existing_shards_in_order_and_only_numbered_ones(tmp_path):
    for i in (2, 0, 1):
        np.save(shard_path(tmp_path / "owt.npy", i), np.zeros(3, np.uint16))
    np.save(tmp_path / "owt_extra.npy", np.zeros(3, np.uint16))
    assert [p.name for p in existing_shards(tmp_path / "owt.npy")] == [f"owt_00000{i}.npy" for i in range(3)]


def test_a_data_path_may_be_a_file_a_directory_a_glob_or_a_list(tmp_path):
    names = ["a.npy", "b.npy", "c.bin"]
    for n in names:
        (tmp_path / n).write_bytes(b"\0\0")
    np.save(mask_path(tmp_path / "a.npy"), np.ones(1, np.uint8))  # masks are not token files
    assert [p.name for p in resolve_token_paths(str(tmp_path), "--train_data_path")] == names
    assert [p.name for p in resolve_token_paths(f"{tmp_path}/*.npy", "--x")] == ["a.npy", "b.npy"]
    both = resolve_token_paths(f"{tmp_path / 'c.bin'},{tmp_path / 'a.npy'},{tmp_path / 'c.bin'}", "--x")
    assert [p.name for p in both] == ["c.bin", "a.npy"]
    with pytest.raises(CorpusError, match=r"--val_data_path .*nothing\*.npy: no token file matches"):
        resolve_token_paths(f"{tmp_path}/nothing*.npy", "--val_data_path")
