"""Clipped SGD steps: fastmomentum's fused clipping vs torch's clip_grad_norm_ then its SGD.

BERT-base (109M params) and the 16M-element case run a few rounds only:
    pytest benchmarks/test_clipping.py --benchmark-group-by=group --benchmark-columns=median,rounds
"""
import pytest
from conftest import case_params
from test_models import BIG_CASE_BYTES

from fastmomentum.benchcases.clipping import clip_cases


@pytest.mark.parametrize("case", case_params(clip_cases()))
def test_clip_step(benchmark, case):
    benchmark.group = case.group
    benchmark.extra_info.update(impl=case.impl, size=case.size, dtype=case.dtype,
                                bytes_moved=case.bytes_moved, **case.params)
    fn = case.make()
    if case.bytes_moved > BIG_CASE_BYTES:
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
