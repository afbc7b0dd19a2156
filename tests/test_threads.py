"""The thread count: set_num_threads, OMP_NUM_THREADS and threadpoolctl all control it."""
import os
import subprocess
import sys

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fastmomentum


def test_default_is_the_cores_this_process_may_use():
    code = "import fastmomentum; print(fastmomentum.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    expected = len(os.sched_getaffinity(0)) if fastmomentum.HAS_OPENMP else 1
    assert int(out) == expected


@pytest.mark.skipif(not fastmomentum.HAS_OPENMP, reason="serial build")
def test_omp_num_threads_is_respected():
    code = "import fastmomentum; print(fastmomentum.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert int(out) == 3


@pytest.mark.skipif(not fastmomentum.HAS_OPENMP, reason="serial build")
def test_set_num_threads_and_threadpoolctl(restore_threads):
    fastmomentum.set_num_threads(2)
    assert fastmomentum.get_num_threads() == 2
    assert any(info["user_api"] == "openmp" for info in threadpool_info())
    with threadpool_limits(limits=1, user_api="openmp"):
        assert fastmomentum.get_num_threads() == 1
    assert fastmomentum.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_refuses(bad):
    with pytest.raises(ValueError, match="set_num_threads: `n` must be an integer >= 1"):
        fastmomentum.set_num_threads(bad)
