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


@pytest.fixture
def run_case(benchmark):
    def run(case):
        benchmark.group = case.group
        benchmark.extra_info.update(impl=case.impl, size=case.size, dtype=case.dtype,
                                    bytes_moved=case.bytes_moved, **case.params)
        benchmark(case.make())
    return run
