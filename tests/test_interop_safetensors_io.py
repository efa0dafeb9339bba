"""Our safetensors writer/reader against the ``safetensors`` package (both ways), and hand-broken files."""

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file as st_save_file

from cs336_basics.interop.safetensors_io import SafetensorsError, load_file, read_metadata, save_file


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.f32": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(4, 2, 3, generator=g).to(torch.bfloat16),
        "c.f16": torch.randn(7, generator=g).to(torch.float16),
        "d.f64": torch.randn(2, 2, generator=g, dtype=torch.float64),
        "e.i64": torch.arange(-5, 6, dtype=torch.int64),
        "f.i32": torch.tensor([[1, -2], [3, 2**31 - 1]], dtype=torch.int32),
        "g.i16": torch.tensor([-7, 9], dtype=torch.int16),
        "h.i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "i.u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "j.bool": torch.tensor([True, False, True]),
        "k.scalar": torch.tensor(3.25),
        "l.empty": torch.zeros(0, 4),
        "m.odd": torch.arange(3, dtype=torch.int8),  # 3 bytes: the next tensor starts unaligned
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def test_ours_loads_in_safetensors(tmp_path):
    ts = _tensors()
    p = tmp_path / "ours.safetensors"
    save_file(ts, p, metadata={"format": "pt", "note": "héllo"})
    _assert_same(ts, st_load_file(p))
    with safe_open(p, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "héllo"}
    assert (8 + struct.unpack("<Q", p.read_bytes()[:8])[0]) % 8 == 0  # the data part is 8-byte aligned


def test_theirs_loads_in_ours(tmp_path):
    ts = _tensors()
    p = tmp_path / "theirs.safetensors"
    st_save_file(ts, p, metadata={"format": "pt", "k": "v"})
    _assert_same(ts, load_file(p))
    assert read_metadata(p) == {"format": "pt", "k": "v"}


def test_no_metadata_and_empty_file(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file({}, p)
    assert load_file(p) == {} and read_metadata(p) == {}
    assert st_load_file(p) == {}


def test_writer_refusals(tmp_path):
    with pytest.raises(SafetensorsError, match="metadata must map strings to strings"):
        save_file({"a": torch.zeros(1)}, tmp_path / "m.safetensors", metadata={"n": 1})
    with pytest.raises(SafetensorsError, match="not a tensor"):
        save_file({"a": [1, 2]}, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def _file(tmp_path, header: dict | bytes, data: bytes, name="bad.safetensors", length: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = tmp_path / name
    p.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return p


def _refused(path, *fragments: str) -> str:
    with pytest.raises(SafetensorsError) as exc:
        load_file(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    # The reference reader refuses the same file.
    with pytest.raises(Exception):  # noqa: B017  (safetensors raises its own error types)
        st_load_file(path)
    return msg


def test_truncated_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(4, 4)}, good)
    data = good.read_bytes()
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02\x03")
    _refused(tiny, "truncated", "too short")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-5])
    _refused(cut, "tensor 'w' ends at data byte 64", "truncated")
    cut_header = tmp_path / "cut_header.safetensors"
    cut_header.write_bytes(data[:20])
    _refused(cut_header, "truncated", "header length says")


def test_oversized_header(tmp_path):
    p = _file(tmp_path, {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, length=2**40)
    _refused(p, "exceeds", "cap")


def test_overlapping_offsets(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    _refused(_file(tmp_path, header, b"\0" * 12), "'a' and 'b' overlap")


def test_gap_and_trailing_bytes(tmp_path):
    gap = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    _refused(_file(tmp_path, gap, b"\0" * 8, name="gap.safetensors"), "gap of 4")
    tail = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    _refused(_file(tmp_path, tail, b"\0" * 8, name="tail.safetensors"), "4 bytes after the last tensor")


def test_wrong_dtype_and_size(tmp_path):
    bad_dtype = {"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}
    _refused(_file(tmp_path, bad_dtype, b"\0" * 4, name="dtype.safetensors"), "unknown or unsupported dtype 'F33'")
    # F16 x 2 is 4 bytes, but the entry claims 8.
    wrong_size = {"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 8]}}
    _refused(_file(tmp_path, wrong_size, b"\0" * 8, name="size.safetensors"), "8 bytes for shape [2] of F16")
    neg = {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}
    _refused(_file(tmp_path, neg, b"\0" * 4, name="neg.safetensors"), "shape [-1]")


def test_bad_json_and_not_an_object(tmp_path):
    _refused(_file(tmp_path, b'{"a": ', b"", name="json.safetensors"), "not valid JSON")
    _refused(_file(tmp_path, b"[1, 2]", b"", name="list.safetensors"), "expected an object")
    _refused(_file(tmp_path, b"\xff\xfe{}", b"", name="utf.safetensors"), "not UTF-8")
    dup = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    with pytest.raises(SafetensorsError, match="appears twice"):
        load_file(_file(tmp_path, dup, b"\0", name="dup.safetensors"))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SafetensorsError, match="no such file"):
        load_file(tmp_path / "nope.safetensors")
    with pytest.raises(SafetensorsError, match="is a directory"):
        load_file(tmp_path)
