"""Whole-model SGD steps and fused SGD+EMA: fastmomentum vs the baseline loop and torch.

BERT-base (109M params) and the 16M-element EMA cases run a few rounds only:
    pytest benchmarks/test_models.py --benchmark-group-by=group --benchmark-columns=median,rounds
"""
import pytest
from conftest import case_params

from fastmomentum.benchcases.models import model_cases


@pytest.mark.parametrize("case", case_params(model_cases()))
def test_model_step(run_case, case):
    run_case(case, few_rounds_when_big=True)
