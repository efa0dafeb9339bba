"""The safetensors file format, written and read here (no pickle, no dependency).

A safetensors file (Hugging Face's format for weights; spec: https://github.com/huggingface/safetensors)
is three parts::

    [8 bytes]  N, the header length, unsigned little-endian
    [N bytes]  a JSON object, UTF-8: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
               ..., "__metadata__": {"key": "value"}}   (padded with spaces to a multiple of 8)
    [rest]     every tensor's bytes, little-endian, row-major, back to back; ``data_offsets`` are
               ``[begin, end)`` byte positions counted from the start of this part

Reading is the safe path: nothing is executed (there is no pickle to run), and every number in the
header is checked before a byte of data is trusted: the header has a size cap, each tensor's byte
range lies inside the file, equals ``prod(shape) * itemsize``, and the ranges tile the data part
exactly (start at 0, no overlap, no gap, nothing after the last). Any violation is one
:class:`SafetensorsError` line naming the file and the problem.

    >>> save_file({"w": torch.ones(2, 3)}, "m.safetensors", metadata={"format": "pt"})  # doctest: +SKIP
    >>> load_file("m.safetensors")["w"].shape  # doctest: +SKIP
    torch.Size([2, 3])
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from cs336_basics.utils.errors import UserError, os_reason, read_error_line
from cs336_basics.utils.fsutil import atomic_write

__all__ = ["SafetensorsError", "save_file", "load_file", "read_metadata", "read_header", "MAX_HEADER_BYTES"]

# The format's dtype names <-> torch dtypes (the subset torch can hold).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"), ("F8_E4M3", "float8_e4m3fn"),
                     ("F8_E5M2", "float8_e5m2")):  # fmt: skip
    if hasattr(torch, _attr):  # newer torch versions only
        DTYPES[_name] = getattr(torch, _attr)
_NAMES = {dt: name for name, dt in DTYPES.items()}

# A header larger than this is refused before it is read (the reference implementation's cap too):
# a few thousand tensors need well under 1 MB, so a huge one means a corrupt or hostile file.
MAX_HEADER_BYTES = 100_000_000
_ALIGN = 8  # the data part starts at a multiple of 8 bytes, so 8-byte dtypes can be read in place
_METADATA = "__metadata__"


class SafetensorsError(UserError, ValueError):
    """A safetensors file cannot be written or read; ``str(err)`` names the file and the problem."""


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _tensor_bytes(t: Tensor) -> bytes:
    """The raw little-endian bytes of a tensor, row-major (a 0-d tensor is its one element)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def save_file(
    tensors: Mapping[str, Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (name -> tensor) and optional string ``metadata`` to ``path``, atomically.

    Tensors are written in name order, each a copy of its own bytes (tensors that share storage are
    fine: each is written whole). The file appears only complete.
    """
    path = Path(path)
    if sys.byteorder != "little":  # pragma: no cover - every platform torch ships wheels for is little-endian
        raise SafetensorsError(f"{path}: writing safetensors needs a little-endian machine")
    header: dict[str, object] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise SafetensorsError(f"{path}: metadata must map strings to strings")
        header[_METADATA] = dict(metadata)
    names = sorted(tensors)
    offset = 0
    for name in names:
        t = tensors[name]
        if not isinstance(name, str) or not name or name == _METADATA:
            raise SafetensorsError(f"{path}: bad tensor name {name!r}")
        if not isinstance(t, Tensor):
            raise SafetensorsError(f"{path}: {name} is a {type(t).__name__}, not a tensor")
        if t.dtype not in _NAMES:
            raise SafetensorsError(f"{path}: {name} has dtype {t.dtype}, which safetensors cannot store")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % _ALIGN)  # pad with spaces (valid JSON whitespace) so data is aligned
    try:
        with atomic_write(path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name in names:
                f.write(_tensor_bytes(tensors[name]))
    except OSError as err:
        raise SafetensorsError(f"{path}: cannot write: {os_reason(err)}") from None


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str], int]:
    """Parse and check the header: ``(entries, metadata, data_start)``; reads no tensor data.

    ``entries`` maps each name to ``{"dtype", "shape", "data_offsets"}``, already checked against
    the file's size; ``data_start`` is where the data part begins.
    """
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{name}: truncated: {size} bytes, too short for the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise SafetensorsError(
                    f"{name}: header length {n:,} bytes exceeds the {MAX_HEADER_BYTES:,}-byte cap (corrupt file?)"
                )
            if 8 + n > size:
                raise SafetensorsError(
                    f"{name}: truncated: header length says {n:,} bytes but only {size - 8:,} follow it"
                )
            raw = f.read(n)
    except OSError as err:
        raise SafetensorsError(read_error_line(name, err, expected="a safetensors file")) from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as err:
        raise SafetensorsError(f"{name}: header is not UTF-8 (byte {err.start}); not a safetensors file?") from None
    except ValueError as err:  # JSONDecodeError or a duplicate key
        msg = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        raise SafetensorsError(f"{name}: header is not valid JSON ({msg}); not a safetensors file?") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{name}: header is a JSON {type(header).__name__}, expected an object")

    metadata = header.pop(_METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{name}: {_METADATA} must map strings to strings")
    data_start = 8 + n
    data_len = size - data_start
    spans = []
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{name}: tensor {key!r}: entry must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise SafetensorsError(f"{name}: tensor {key!r}: unknown or unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise SafetensorsError(f"{name}: tensor {key!r}: shape {shape!r} is not a list of sizes >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise SafetensorsError(f"{name}: tensor {key!r}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise SafetensorsError(f"{name}: tensor {key!r}: data_offsets [{begin}, {end}] are out of order")
        if end > data_len:
            raise SafetensorsError(
                f"{name}: tensor {key!r} ends at data byte {end:,} but the file holds only {data_len:,} (truncated?)"
            )
        want = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != want:
            raise SafetensorsError(
                f"{name}: tensor {key!r}: {end - begin:,} bytes for shape {shape} of {dtype}, which needs {want:,}"
            )
        spans.append((begin, end, key))
    spans.sort()
    pos, prev = 0, None
    for begin, end, key in spans:
        if begin < pos:
            raise SafetensorsError(f"{name}: tensors {prev!r} and {key!r} overlap (bytes {begin:,}-{pos:,})")
        if begin > pos:
            raise SafetensorsError(f"{name}: gap of {begin - pos:,} unused bytes before tensor {key!r}")
        pos, prev = end, key
    if pos != data_len:
        raise SafetensorsError(f"{name}: {data_len - pos:,} bytes after the last tensor (corrupt file?)")
    return header, dict(metadata), data_start


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The file's ``__metadata__`` (empty when it has none), after checking the whole header."""
    return read_header(path)[1]


def load_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Every tensor of the file, on the CPU, each in its own memory (in header order)."""
    path = Path(path)
    if sys.byteorder != "little":  # pragma: no cover
        raise SafetensorsError(f"{path}: reading safetensors needs a little-endian machine")
    entries, _, data_start = read_header(path)
    out: dict[str, Tensor] = {}
    try:
        with open(path, "rb") as f:
            for key, entry in entries.items():
                begin, end = entry["data_offsets"]
                buf = bytearray(end - begin)
                f.seek(data_start + begin)
                if f.readinto(buf) != len(buf):
                    raise SafetensorsError(f"{path}: truncated while reading tensor {key!r}")
                dtype = DTYPES[entry["dtype"]]
                flat = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
                out[key] = flat.reshape(entry["shape"])
    except OSError as err:
        raise SafetensorsError(f"{path}: cannot read: {os_reason(err)}") from None
    return out
