"""Speed ratios of ewm_mean against its peers, measured in one run (issue 4's targets).

    PYTHONPATH=. python benchmarks/ewm_ratios.py [--quick] [--threads=N]

Times every runnable case of ``fastmomentum.benchcases.ewm.ewm_cases`` with
``fastmomentum.bench.time_call`` in three interleaved rounds (the machine is shared: a
slow moment hits every implementation), and prints the median times and fastmomentum's
speed-up over each peer, per group (one layout, size and ``adjust``).
"""
import statistics
import sys

import fastmomentum
from fastmomentum.bench import time_call
from fastmomentum.benchcases.ewm import ewm_cases


def main(argv):
    for arg in argv:
        if arg.startswith("--threads="):
            fastmomentum.set_num_threads(int(arg.split("=", 1)[1]))
    cases = [c for c in ewm_cases(quick="--quick" in argv) if c.skip is None]
    samples = {case: [] for case in cases}
    for _ in range(3):
        for case in cases:
            samples[case].append(time_call(case.make(), min_time=0.2))
    groups = {}
    for case in cases:
        groups.setdefault(case.group, {})[case.impl] = statistics.median(samples[case])
    print(f"threads: {fastmomentum.get_num_threads()}")
    for group, times in groups.items():
        print(group, " ".join(f"{impl}={t * 1e3:.3f}ms" for impl, t in times.items()))
        for variant in ("fastmomentum", "fastmomentum out="):
            ours = times[variant]
            print(f"  {variant} speed-up:",
                  " ".join(f"{impl} {t / ours:.1f}x" for impl, t in times.items()
                           if not impl.startswith("fastmomentum")))


if __name__ == "__main__":
    main(sys.argv[1:])
