"""momentum_step and ema_update: fastmomentum vs the NumPy baseline and torch; the roofline."""
import pytest
from conftest import case_params

from fastmomentum.benchcases.kernels import (DEFAULT_SIZES, ema_cases, momentum_cases,
                                             roofline_case)


@pytest.mark.parametrize("case", case_params(momentum_cases()))
def test_momentum_step(run_case, case):
    run_case(case)


@pytest.mark.parametrize("case", case_params(ema_cases()))
def test_ema_update(run_case, case):
    run_case(case)


@pytest.mark.parametrize("case", case_params([roofline_case(n, "float32")
                                              for n in DEFAULT_SIZES]))
def test_roofline(run_case, case):
    """The bandwidth wall: compare its time with momentum_step's at the same size."""
    run_case(case)
