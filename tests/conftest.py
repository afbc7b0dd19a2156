import os

import numpy as np
import pytest

import fastmomentum

DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="session", autouse=True)
def neutral_working_directory(tmp_path_factory):
    """Run every test, and every subprocess it starts, from an empty folder: from the
    clone or an unpacked sdist, a ``python -c``/``python -m`` child would otherwise import
    the bare source folder (no compiled kernels) instead of the installed package, and
    the tests' output files would litter the tree."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """Tests that change the thread count put it back."""
    n = fastmomentum.get_num_threads()
    yield
    fastmomentum.set_num_threads(n)
