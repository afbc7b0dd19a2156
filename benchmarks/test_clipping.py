"""Clipped SGD steps: fastmomentum's fused clipping vs torch's clip_grad_norm_ then its SGD.

BERT-base (109M params) and the 16M-element case run a few rounds only:
    pytest benchmarks/test_clipping.py --benchmark-group-by=group --benchmark-columns=median,rounds
"""
import pytest
from conftest import case_params

from fastmomentum.benchcases.clipping import clip_cases


@pytest.mark.parametrize("case", case_params(clip_cases()))
def test_clip_step(run_case, case):
    run_case(case, few_rounds_when_big=True)
