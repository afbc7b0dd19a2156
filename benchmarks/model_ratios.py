"""Speed ratios of the whole-model targets (issue 3), timed interleaved.

    python benchmarks/model_ratios.py [--quick] [--rounds 15] [--models mlp-20,10k-x-100]

On a shared machine the load drifts between consecutive benchmarks; here every round times
each implementation of a model once, round-robin, so drift hits all of them alike. Each
sample repeats a call until it lasts at least ``--min-sample`` seconds; the table shows
medians and the ratios the targets are stated in. Cases come from
fastmomentum.benchcases.models (the pytest-benchmark suite times the same cases).
"""
import argparse
import gc
import statistics
import time

from fastmomentum.benchcases.models import model_cases

#: (slower impl, faster impl) pairs reported as "faster is N x faster".
RATIOS = [("torch-fused", "fastmomentum.torch"), ("torch-forloop", "fastmomentum.torch"),
          ("torch-foreach", "fastmomentum.torch"), ("torch-fused", "fastmomentum"),
          ("torch-forloop", "fastmomentum"), ("baseline", "fastmomentum"),
          ("sgd then ema", "sgd+ema fused"), ("torch sgd then ema", "torch sgd+ema fused")]


def calls_per_sample(fn, min_sample):
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    return max(1, int(min_sample / max(once, 1e-9)))


def time_group(cases, rounds, min_sample):
    fns = {c.impl: c.make() for c in cases}
    counts = {impl: calls_per_sample(fn, min_sample) for impl, fn in fns.items()}
    samples = {impl: [] for impl in fns}
    for _ in range(rounds):
        for impl, fn in fns.items():
            n = counts[impl]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[impl].append((time.perf_counter() - t0) / n)
    return {impl: statistics.median(s) for impl, s in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out BERT-base, EMA at 1M")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-sample", type=float, default=0.005)
    parser.add_argument("--models", default=None, help="comma-separated model names")
    args = parser.parse_args(argv)
    groups = {}
    for case in model_cases(quick=args.quick):
        if case.skip:
            continue
        name = case.params.get("model", case.kernel)
        if args.models and name not in args.models.split(","):
            continue
        # the baseline loop over BERT-base takes seconds a call and is no target
        if name == "bert-base" and case.impl == "baseline":
            continue
        groups.setdefault(name, []).append(case)
    for name, cases in groups.items():
        rounds = max(3, args.rounds // 3) if cases[0].size > 50_000_000 else args.rounds
        medians = time_group(cases, rounds, args.min_sample)
        gc.collect()
        print(f"\n{name} ({cases[0].size:,} elements, {rounds} rounds)")
        for impl, t in sorted(medians.items(), key=lambda kv: kv[1]):
            print(f"  {impl:<22}{t * 1e3:>11.3f} ms")
        for slow, fast in RATIOS:
            if slow in medians and fast in medians:
                print(f"  {fast} vs {slow}: {medians[slow] / medians[fast]:.2f}x")


if __name__ == "__main__":
    main()
