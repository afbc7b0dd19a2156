"""ewm_mean: fastmomentum vs the NumPy baseline, pandas ewm().mean() and scipy lfilter."""
import pytest
from conftest import case_params

from fastmomentum.benchcases.ewm import ewm_cases


@pytest.mark.parametrize("case", case_params(ewm_cases()))
def test_ewm_mean(run_case, case):
    run_case(case)
