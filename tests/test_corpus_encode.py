"""Encoding documents in batches, and the .npy header the token writers use."""

from __future__ import annotations

import io

import numpy as np
import pytest

from cs336_basics.corpus.encode import TokenFile, TokenWriter, encode_batch, npy_header
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.utils.fsutil import discard_partial_writes
from tests._corpus_utils import EOT, make_tokenizer


@pytest.mark.parametrize(("dtype", "n"), [(np.uint16, 0), (np.uint16, 12345), (np.uint32, 7)])
def test_header_equals_numpys(dtype, n):
    """The writers' header is numpy's own, so a file written piecewise loads with np.load."""
    buf = io.BytesIO()
    np.save(buf, np.zeros(n, dtype=dtype))
    data = buf.getvalue()
    header = npy_header(np.dtype(dtype), n)
    assert data.startswith(header) and len(data) == len(header) + n * np.dtype(dtype).itemsize


def test_a_batch_is_each_document_encoded_with_its_end_token(tmp_path):
    tok = Tokenizer.from_dir(make_tokenizer(tmp_path / "tok", specials=[EOT]), [EOT])
    docs = ["Once upon a time.", "The cat sat."]
    packed, lengths, mask = encode_batch(tok, docs, np.dtype(np.uint16))
    want = [tok.encode(d + EOT) for d in docs]
    assert lengths == [len(w) for w in want] and mask is None
    assert np.frombuffer(packed, dtype=np.uint16).tolist() == want[0] + want[1]


@pytest.mark.parametrize("npy", [True, False])
def test_a_token_file_appears_whole_at_publish_and_loads_with_numpy(tmp_path, npy):
    """Both encoder paths write through TokenFile: the .npy header over its placeholder, the ids,
    nothing at the target before publish, and nothing left after discard."""
    ids = np.arange(1000, dtype="<u2")
    path = tmp_path / ("t.npy" if npy else "t.bin")
    f = TokenFile(path, np.dtype("<u2"), npy=npy)
    f.f.write(ids[:600].tobytes())
    f.f.write(ids[600:].tobytes())
    f.close(len(ids))
    assert not path.exists()
    f.publish()
    got = np.load(path) if npy else np.fromfile(path, dtype="<u2")
    assert got.tolist() == ids.tolist() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    g = TokenFile(tmp_path / "u.npy", np.dtype("<u2"), npy=True)
    g.f.write(b"\0\0")
    g.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_an_abort_that_cannot_unwind_still_removes_the_document_paths_temp_files(tmp_path):
    """The document path's temp files are the shared atomic ones, so the second Ctrl-C's
    ``discard_partial_writes`` removes them (its own temp files used to stay behind)."""
    writer = TokenWriter(tmp_path / "out.npy", np.dtype("<u2"), shard_tokens=None, masked=True)
    writer.write(np.arange(5, dtype="<u2").tobytes(), [5], bytes([1]) * 5)
    assert len(list(tmp_path.iterdir())) == 2  # the ids' and the mask's temp files
    discard_partial_writes()
    assert list(tmp_path.iterdir()) == []
