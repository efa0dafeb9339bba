"""Encoding documents in batches, and the .npy header the token writers use."""

from __future__ import annotations

import io

import numpy as np
import pytest

from cs336_basics.corpus.encode import encode_batch, npy_header
from cs336_basics.fast.tokenizer import Tokenizer
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
