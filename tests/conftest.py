import numpy as np
import pytest

import fastmomentum
from fastmomentum._dispatch import kernels

DTYPES = [np.float32, np.float64]

#: Elements enough for a pass to be split across (at least) two threads: derived from the
#: kernels' private threshold, which may change.
THREADED = 3 * kernels._PARALLEL_MIN_SIZE + 5


def assert_threads_run(n):
    """A pass over ``n`` elements runs on two or more threads here, when the build and the
    thread count allow it (a test of the threaded path must not silently run serial)."""
    if fastmomentum.HAS_OPENMP and fastmomentum.get_num_threads() >= 2:
        assert kernels._threads_for_size(n) >= 2


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """Tests that change the thread count put it back."""
    n = fastmomentum.get_num_threads()
    yield
    fastmomentum.set_num_threads(n)
