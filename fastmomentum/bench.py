"""``python -m fastmomentum bench``: time fastmomentum against the NumPy baseline and peers."""
import argparse
import statistics
import time

from . import get_num_threads, set_num_threads
from .benchcases.kernels import DEFAULT_SIZES, ema_cases, momentum_cases


def time_call(fn, min_time=0.02):
    """Median seconds per call of ``fn`` over 5 batches, each run for at least ``min_time``."""
    fn()  # warm-up: page faults, lazy initialisation
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time / 5 or number >= 1 << 20:
            break
        number *= 4
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


def run(cases):
    """Time runnable cases; returns {case: seconds} (skipped cases are left out)."""
    return {case: time_call(case.make()) for case in cases if case.skip is None}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastmomentum bench",
                                     description=__doc__)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(DEFAULT_SIZES), help="comma-separated element counts")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        set_num_threads(args.threads)
    cases = momentum_cases(args.sizes, variants=("plain",)) + ema_cases(args.sizes)
    times = run(cases)
    print(f"threads: {get_num_threads()}")
    print(f"{'kernel':<15}{'impl':<16}{'size':>10}{'time':>12}{'vs baseline':>13}")
    baseline_time = {(c.kernel, c.size): t for c, t in times.items() if c.impl == "baseline"}
    for case in cases:
        if case.skip:
            print(f"{case.kernel:<15}{case.impl:<16}{case.size:>10}   skipped: {case.skip}")
            continue
        t = times[case]
        ratio = baseline_time[(case.kernel, case.size)] / t
        print(f"{case.kernel:<15}{case.impl:<16}{case.size:>10}{t * 1e6:>10.2f}us{ratio:>12.1f}x")
