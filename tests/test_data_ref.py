"""get_batch and load_tokens: shapes, coverage of every valid start, memmaps, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cs336_basics.corpus.tokens import DataError, get_batch, load_tokens
from cs336_basics.utils.errors import UserError


# ----------------------------------------------------------------------------------------------
# get_batch
# ----------------------------------------------------------------------------------------------
def test_shapes_dtype_and_shift():
    data = np.arange(1000)
    x, y = get_batch(data, batch_size=8, context_length=16, device="cpu")
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.int64
    assert x.device.type == "cpu"
    # arange data: each row is consecutive and y is x shifted by one position
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)
    assert x.is_contiguous() and y.is_contiguous()


def test_starts_cover_every_valid_start_and_never_beyond():
    n, t = 20, 5  # valid starts: 0 .. 14
    data = np.arange(n)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        x, y = get_batch(data, 16, t, "cpu", rng=rng)
        starts.update(x[:, 0].tolist())
        assert int(y.max()) <= n - 1
    assert starts == set(range(n - t))


def test_default_rng_uses_numpy_global_seed():
    data = np.arange(500)
    np.random.seed(123)
    a = get_batch(data, 4, 8, "cpu")
    np.random.seed(123)
    b = get_batch(data, 4, 8, "cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_rng_reproducible():
    data = np.arange(10_000)
    a = get_batch(data, 4, 32, "cpu", rng=np.random.default_rng(7))
    b = get_batch(data, 4, 32, "cpu", rng=np.random.default_rng(7))
    c = get_batch(data, 4, 32, "cpu", rng=np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_memmap_token_file(tmp_path, dtype):
    path = tmp_path / "tokens.bin"
    values = (np.arange(5000) % 60000).astype(dtype)
    values.tofile(path)
    mm = np.memmap(path, dtype=dtype, mode="r")
    x, y = get_batch(mm, 4, 64, "cpu", rng=np.random.default_rng(0))
    assert x.dtype == torch.int64
    assert torch.equal(y, x + 1)
    starts = x[:, 0].numpy()
    for row, s in zip(x.numpy(), starts):
        assert np.array_equal(row, values[s : s + 64].astype(np.int64))


def test_large_ids_survive_uint32():
    data = np.array([70000, 4_000_000_000, 5, 6], dtype=np.uint32)
    x, y = get_batch(data, 2, 3, "cpu", rng=np.random.default_rng(0))
    assert x[0].tolist() == [70000, 4_000_000_000, 5]
    assert y[0].tolist() == [4_000_000_000, 5, 6]


@pytest.mark.parametrize("device", ["cuda:99", "nonsense", "cpu:abc"])
def test_invalid_device_raises(device):
    # RuntimeError is what torch raises and what the course's own test accepts; ours is also a
    # UserError (and a ValueError) so the CLIs print one line.
    with pytest.raises(RuntimeError) as e:
        get_batch(np.arange(100), 2, 4, device)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    assert device in str(e.value)


def test_dataset_too_short_or_bad_sizes():
    with pytest.raises(DataError, match="context_length"):
        get_batch(np.arange(8), 2, 8, "cpu")
    with pytest.raises(DataError):
        get_batch(np.arange(100), 0, 8, "cpu")
    with pytest.raises(DataError, match="1-D"):
        get_batch(np.arange(100).reshape(10, 10), 2, 4, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch():
    x, y = get_batch(np.arange(1000, dtype=np.uint16), 4, 8, "cuda")
    assert x.device.type == "cuda" and y.device.type == "cuda"
    assert torch.equal(y, x + 1)


# ----------------------------------------------------------------------------------------------
# load_tokens
# ----------------------------------------------------------------------------------------------
def test_load_npy_is_memory_mapped(tmp_path):
    path = tmp_path / "ok.npy"
    np.save(path, np.arange(100, dtype=np.uint16))
    data = load_tokens(path, vocab_size=100, context_length=10)
    assert isinstance(data, np.memmap)
    assert data.dtype == np.uint16 and len(data) == 100


def test_load_bin_default_uint16_and_uint32(tmp_path):
    p16 = tmp_path / "a.bin"
    np.arange(50, dtype=np.uint16).tofile(p16)
    d = load_tokens(p16, vocab_size=50)
    assert d.dtype == np.uint16 and d[-1] == 49
    p32 = tmp_path / "b.bin"
    np.array([0, 70000, 3], dtype=np.uint32).tofile(p32)
    d = load_tokens(p32, vocab_size=70001, dtype="uint32")
    assert d.tolist() == [0, 70000, 3]


def test_errors_are_user_errors_and_value_errors():
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as e:
        load_tokens(tmp_path / "nope.npy")
    assert "nope.npy" in str(e.value)


def test_unknown_extension(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("1 2 3")
    with pytest.raises(DataError, match=r"tokens\.txt.*extension"):
        load_tokens(path)


@pytest.mark.parametrize("suffix", [".bin", ".npy"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    if suffix == ".npy":
        np.save(path, np.zeros(0, dtype=np.uint16))
    else:
        path.write_bytes(b"")
    with pytest.raises(DataError, match="empty|no tokens") as e:
        load_tokens(path)
    assert path.name in str(e.value)


def test_too_short(tmp_path):
    path = tmp_path / "short.npy"
    np.save(path, np.arange(10, dtype=np.uint16))
    with pytest.raises(DataError, match=r"short\.npy.*too short.*10 tokens.*context_length=10"):
        load_tokens(path, context_length=10)
    assert len(load_tokens(path, context_length=9)) == 10


def test_npy_must_be_1d_integer(tmp_path):
    p2 = tmp_path / "twod.npy"
    np.save(p2, np.zeros((3, 4), dtype=np.uint16))
    with pytest.raises(DataError, match=r"twod\.npy.*1-D"):
        load_tokens(p2)
    pf = tmp_path / "float.npy"
    np.save(pf, np.zeros(10, dtype=np.float32))
    with pytest.raises(DataError, match=r"float\.npy.*integer"):
        load_tokens(pf)
    po = tmp_path / "obj.npy"
    np.save(po, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy"):
        load_tokens(po)


def test_corrupt_npy(tmp_path):
    path = tmp_path / "junk.npy"
    path.write_bytes(b"this is not numpy")
    with pytest.raises(DataError, match=r"junk\.npy"):
        load_tokens(path)


def test_bad_id_reports_file_position_value(tmp_path):
    path = tmp_path / "bad.npy"
    arr = np.arange(200, dtype=np.uint16) % 50
    arr[137] = 77
    arr[150] = 99
    np.save(path, arr)
    with pytest.raises(DataError) as e:
        load_tokens(path, vocab_size=50)
    msg = str(e.value)
    assert "bad.npy" in msg and "137" in msg and "77" in msg and "vocab_size=50" in msg
    assert "\n" not in msg


def test_bad_id_in_later_chunk(tmp_path, monkeypatch):
    import cs336_basics.corpus.tokens as data_mod

    monkeypatch.setattr(data_mod, "_CHECK_CHUNK", 64)
    path = tmp_path / "later.bin"
    arr = np.zeros(1000, dtype=np.uint16)
    arr[901] = 12345
    arr.tofile(path)
    with pytest.raises(DataError, match=r"later\.bin.*12345.*901.*wrong --data_dtype"):
        load_tokens(path, vocab_size=1000)


def test_negative_ids_rejected(tmp_path):
    path = tmp_path / "neg.npy"
    np.save(path, np.array([1, 2, -3, 4], dtype=np.int32))
    with pytest.raises(DataError, match=r"-3.*position 2"):
        load_tokens(path, vocab_size=10)


def test_bin_uint32_read_as_uint16_is_caught(tmp_path):
    """The classic mistake: a uint32 file read with the default uint16 dtype."""
    path = tmp_path / "u32.bin"
    np.array([1, 2, 3], dtype=np.uint32).tofile(path)  # 12 bytes: divisible by 2, so size won't catch it
    data = load_tokens(path)  # no vocab check: plausible garbage
    assert len(data) == 6
    path2 = tmp_path / "odd.bin"
    path2.write_bytes(b"\x01\x00\x02")
    with pytest.raises(DataError, match=r"odd\.bin.*not a multiple.*data_dtype"):
        load_tokens(path2)
    big = tmp_path / "big32.bin"
    np.array([70000, 1], dtype=np.uint32).tofile(big)
    d = load_tokens(big, vocab_size=70001, dtype="uint32")
    assert d.tolist() == [70000, 1]
    with pytest.raises(DataError, match=r"big32\.bin.*4464.*position 0.*wrong --data_dtype"):
        load_tokens(big, vocab_size=4000)  # uint16 view of 70000: low half 4464, high half 1


def test_bin_rejects_non_integer_dtype(tmp_path):
    path = tmp_path / "f.bin"
    np.zeros(4, dtype=np.float32).tofile(path)
    with pytest.raises(DataError, match="integer"):
        load_tokens(path, dtype="float32")
    with pytest.raises(DataError, match="dtype"):
        load_tokens(path, dtype="notatype")


@pytest.mark.parametrize("name", ["zero.npy", "zero.bin"])
def test_zero_byte_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: file is empty"):
        load_tokens(path)


def test_ids_files_are_raw_token_files(tmp_path):
    """``.ids`` (the naming older docs of the training program use) is raw ids like ``.bin``."""
    ids = (np.arange(1000) % 50).astype(np.uint32)
    ids.tofile(tmp_path / "train.ids")
    got = load_tokens(tmp_path / "train.ids", vocab_size=50, dtype="uint32")
    assert np.array_equal(np.asarray(got), ids)


def test_a_npy_file_under_a_raw_name_is_refused(tmp_path):
    """Its header would otherwise be read as token ids, silently."""
    np.save(tmp_path / "x.npy", np.arange(1000, dtype=np.uint16))
    (tmp_path / "x.bin").write_bytes((tmp_path / "x.npy").read_bytes())
    with pytest.raises(DataError, match=r"x\.bin.*\.npy header.*rename it to x\.npy"):
        load_tokens(tmp_path / "x.bin", vocab_size=50257)


def test_textbook_get_batch_is_the_engines_twin(tmp_path):
    """cs336_basics.data.get_batch (the handout's) draws the same windows from the same generator."""
    from cs336_basics import data as textbook

    np.save(tmp_path / "ids.npy", np.arange(5000, dtype=np.uint16) % 997)
    ids = np.load(tmp_path / "ids.npy", mmap_mode="r")
    for seed in range(3):
        a = textbook.get_batch(ids, 8, 32, "cpu", np.random.default_rng(seed))
        b = get_batch(ids, 8, 32, "cpu", np.random.default_rng(seed))
        assert all(torch.equal(u, v) and u.dtype == torch.int64 for u, v in zip(a, b, strict=True))
    x, y = textbook.get_batch(ids, 4, 16, "cpu")  # NumPy's global generator, as the course's test uses
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="context_length"):
        textbook.get_batch(ids[:10], 2, 16, "cpu")
