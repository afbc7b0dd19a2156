"""pytest-benchmark glue: every benchmark is a fastmomentum.benchcases.Case.

Run:  pytest benchmarks --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
(add --benchmark-only when a plugin-free run is not wanted). Groups are one kernel, one size,
one dtype, so each group's table compares implementations directly.
"""
import pytest


def case_params(cases):
    """pytest parameters for a list of cases, with readable ids and skip marks."""
    return [pytest.param(c, id=f"{c.group}-{c.impl}",
                         marks=[pytest.mark.skip(reason=c.skip)] if c.skip else [])
            for c in cases]


#: whole-model cases moving more than this per call are timed in a few fixed rounds
BIG_CASE_BYTES = 1 << 28


@pytest.fixture
def run_case(benchmark):
    """Time a case; with ``few_rounds_when_big``, cases over BIG_CASE_BYTES get 5 rounds
    of one call (pytest-benchmark's calibration would take minutes on them)."""
    def run(case, few_rounds_when_big=False):
        benchmark.group = case.group
        benchmark.extra_info.update(impl=case.impl, size=case.size, dtype=case.dtype,
                                    bytes_moved=case.bytes_moved, **case.params)
        fn = case.make()
        if few_rounds_when_big and case.bytes_moved > BIG_CASE_BYTES:
            benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
        else:
            benchmark(fn)
    return run
