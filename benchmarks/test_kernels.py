"""momentum_step and ema_update: fastmomentum vs the NumPy baseline and torch."""
import pytest
from conftest import case_params

from fastmomentum.benchcases.kernels import ema_cases, momentum_cases


@pytest.mark.parametrize("case", case_params(momentum_cases()))
def test_momentum_step(run_case, case):
    run_case(case)


@pytest.mark.parametrize("case", case_params(ema_cases()))
def test_ema_update(run_case, case):
    run_case(case)
