"""momentum_step and ema_update: fastmomentum vs the NumPy baseline and torch; the reference
stream loop."""
import pytest
from conftest import case_params

from fastmomentum.benchcases.kernels import (DEFAULT_SIZES, ema_cases, momentum_cases,
                                             stream_loop_case)


@pytest.mark.parametrize("case", case_params(momentum_cases()))
def test_momentum_step(run_case, case):
    run_case(case)


@pytest.mark.parametrize("case", case_params(ema_cases()))
def test_ema_update(run_case, case):
    run_case(case)


@pytest.mark.parametrize("case", case_params([stream_loop_case(n, "float32")
                                              for n in DEFAULT_SIZES]))
def test_stream_loop(run_case, case):
    """A plain C loop with momentum_step's traffic: compare its time with momentum_step's."""
    run_case(case)
