"""Whole-model SGD steps and fused SGD+EMA: fastmomentum vs the baseline loop and torch.

BERT-base (109M params) and the 16M-element EMA cases run a few rounds only:
    pytest benchmarks/test_models.py --benchmark-group-by=group --benchmark-columns=median,rounds
"""
import pytest
from conftest import case_params

from fastmomentum.benchcases.models import model_cases

#: Cases moving more than this many bytes per call get a fixed, small number of rounds.
BIG_CASE_BYTES = 1 << 28


@pytest.mark.parametrize("case", case_params(model_cases()))
def test_model_step(benchmark, case):
    benchmark.group = case.group
    benchmark.extra_info.update(impl=case.impl, size=case.size, dtype=case.dtype,
                                bytes_moved=case.bytes_moved, **case.params)
    fn = case.make()
    if case.bytes_moved > BIG_CASE_BYTES:
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
