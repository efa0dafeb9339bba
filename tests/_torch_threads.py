"""Shared test fixtures (conftest.py is the course's name, so ours lives here; import them by name).

from ._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
"""

import pytest
import torch

# What torch chose when this process started (the number of cores unless OMP_NUM_THREADS says
# otherwise): the thread count a user's run gets.
DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and OpenMP spinning on a busy 2-core box costs 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def default_torch_threads(one_torch_thread):
    """For tests of guarantees that must hold at the default settings (bit-exact resume)."""
    torch.set_num_threads(DEFAULT_THREADS)
    yield DEFAULT_THREADS
    torch.set_num_threads(1)
