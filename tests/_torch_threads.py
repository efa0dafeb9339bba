"""Shared test fixture (conftest.py is the course's name, so ours lives here; import it by name).

    from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and OpenMP spinning on a busy 2-core box costs 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
