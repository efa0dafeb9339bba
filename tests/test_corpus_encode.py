"""The token writer's .npy header is numpy's own, so a file written piecewise loads with np.load."""

from __future__ import annotations

import io

import numpy as np
import pytest

from cs336_basics.corpus.encode import _npy_header


@pytest.mark.parametrize(("dtype", "n"), [(np.uint16, 0), (np.uint16, 12345), (np.uint32, 7)])
def test_header_equals_numpys(dtype, n):
    buf = io.BytesIO()
    np.save(buf, np.zeros(n, dtype=dtype))
    data = buf.getvalue()
    header = _npy_header(np.dtype(dtype), n)
    assert data.startswith(header) and len(data) == len(header) + n * np.dtype(dtype).itemsize
