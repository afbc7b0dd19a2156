import os

import numpy as np
import pytest

import fastmomentum
from fastmomentum._dispatch import kernels

#: Elements enough for a pass to be split across (at least) two threads: derived from the
#: kernels' private threshold, which may change.
THREADED = 3 * kernels._PARALLEL_MIN_SIZE + 5


@pytest.fixture(autouse=True)
def threaded_paths_take_threads():
    """A low estimate of the pool's overhead (1 us; it adapts from there) during every
    test, so that tests of threaded paths take threads whatever the machine's load; the
    estimate the pool had is put back after (timing-sensitive tests see the pool's own)."""
    from fastmomentum import _threads
    before = _threads._pool_stats()[-1]
    _threads._pool_set_overhead(1000)
    yield
    _threads._pool_set_overhead(before)


def assert_threads_run(n):
    """A pass over ``n`` elements runs on two or more threads here, when the build and the
    thread count allow it (a test of the threaded path must not silently run serial)."""
    if fastmomentum.HAS_OPENMP and fastmomentum.get_num_threads() >= 2:
        assert kernels._threads_for_size(n) >= 2


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


def targets_beside_portable():
    """The CPU targets other than the portable one, each to be compared with it (not the
    chosen target with itself). On a CPU with AVX2+FMA the AVX2 cores must be among them;
    elsewhere there is nothing to compare and the calling test is skipped, saying so."""
    from fastmomentum import _cpu, _target
    others = [name for name in _target.TARGETS if name != "portable"]
    if _cpu.cpu_has_avx2_fma():
        assert "avx2" in others, f"this CPU has AVX2+FMA but only the targets {_target.BUILT}"
    if not others:
        pytest.skip("one target here (portable): nothing to compare it with")
    return others


def on_target(target, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run on ``target``'s numeric cores."""
    from fastmomentum import _target
    with _target.using(target):
        return fn(*args, **kwargs)
