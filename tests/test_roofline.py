"""The benchmark report's roofline loop (src/reference/fm_stream.h): right numbers, checked input."""
import numpy as np
import pytest

import fastmomentum
from fastmomentum._dispatch import kernels
from conftest import THREADED, assert_threads_run


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [0, 1, 17, THREADED])
def test_stream_computes_its_formula(dtype, n):
    rng = np.random.default_rng(n)
    p, g, v = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    scale = np.asarray(0.5, dtype)
    # -ffp-contract=off: the C loop rounds the product and the sum separately, as NumPy does
    expected_v = scale * v + g
    expected_p = p - scale * expected_v
    kernels.roofline_stream(p, g, v, 0.5)
    np.testing.assert_array_equal(v, expected_v)
    np.testing.assert_array_equal(p, expected_p)


def test_stream_does_not_depend_on_thread_count(restore_threads):
    results = []
    for threads in (1, 2):
        fastmomentum.set_num_threads(threads)
        rng = np.random.default_rng(1)  # one generator: p, g and v differ
        p, g, v = (rng.standard_normal(THREADED) for _ in range(3))
        if threads == 2:
            assert_threads_run(p.size)
        kernels.roofline_stream(p, g, v, 0.25)
        results.append((p, v))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("make", [
    lambda a: (a, a, np.zeros(4)),                        # grad aliases param
    lambda a: (a, np.zeros(4), a),                        # velocity aliases param
    lambda a: (a, np.zeros(4, "float32"), np.zeros(4)),   # dtype mismatch
    lambda a: (a, np.zeros(5), np.zeros(4)),              # shape mismatch
    lambda a: (a[::2], np.zeros(2), np.zeros(2)),         # not contiguous
    lambda a: (a.astype(int), np.zeros(4, int), np.zeros(4, int)),  # not float
    lambda a: (list(a), np.zeros(4), np.zeros(4)),        # not an array
])
def test_stream_refuses_bad_input(make):
    args = make(np.arange(4.0))
    snapshot = [np.array(x, copy=True) for x in args]
    with pytest.raises(TypeError, match="roofline_stream"):
        kernels.roofline_stream(*args, 0.5)
    for x, before in zip(args, snapshot):
        np.testing.assert_array_equal(np.asarray(x), before)


def test_stream_refuses_read_only_velocity():
    v = np.zeros(4)
    v.flags.writeable = False
    with pytest.raises(TypeError, match="roofline_stream"):
        kernels.roofline_stream(np.zeros(4), np.zeros(4), v, 0.5)
