import numpy as np
import pytest

import fastmomentum


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """Tests that change the thread count put it back."""
    n = fastmomentum.get_num_threads()
    yield
    fastmomentum.set_num_threads(n)
