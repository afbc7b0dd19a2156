"""The speed ratios the issues set as targets, measured in one run.

    python benchmarks/target_ratios.py [--quick] [--only ewm,models] [--rounds 9] [--threads N]

Times the whole-model cases (fastmomentum.benchcases.models: MLP-20, BERT-base, 10k x 100,
fused SGD+EMA) and the ewm_mean cases (fastmomentum.benchcases.ewm: pandas, scipy lfilter,
the baseline) group by group with the benchmark report's own interleaved timing
(``fastmomentum.bench.measure_group``: samples taken in rotating order, so a slow moment of
the shared machine hits every implementation alike), and prints the medians and every
ratio of a fastmomentum implementation over each other one, plus fused SGD+EMA over a step
followed by a separate EMA update.

Every ewm_mean group of 32 MiB of float64 or more also times the floor of any fresh result:
a new array of that size with one store per 4 KiB page, i.e. the kernel mapping and
zeroing its pages, which every implementation that returns a new array pays.
"""
import argparse
import gc
import json
import os

import numpy as np

from fastmomentum.bench import PROVIDERS, TIMING, is_ours, measure_group, thread_count
from fastmomentum.benchcases import Case

#: (slower, faster) pairs of the fused SGD+EMA target, whose names are not fastmomentum's
FUSED_EMA = [("sgd then ema", "sgd+ema fused"), ("torch sgd then ema", "torch sgd+ema fused")]
TARGETS = ("models", "ewm", "clipping", "state")   # the providers of fastmomentum.bench with issue targets
#: From 32 MiB on, glibc's malloc always maps new pages (its largest mmap threshold); a
#: smaller freed array may be handed out again already faulted in, and is no floor.
PAGE_FLOOR_MIN = 1 << 22
PAGE_FLOOR = "new array, pages touched"


def _touch_new_pages(size):
    stride = os.sysconf("SC_PAGE_SIZE") // 8
    def run():
        np.empty(size)[::stride] = 0.0
    return lambda: run


def page_floor_case(case):
    """The allocation floor next to an ewm_mean case (float64, ``case.size`` values)."""
    return Case(case.kernel, PAGE_FLOOR, case.size, "float64",
                make=_touch_new_pages(case.size), bytes_moved=8 * case.size,
                params=dict(case.params))


def ratio_lines(rows):
    """``fast vs slow: N x`` for every fastmomentum row against every other row."""
    timed = [row for row in rows if row["status"] == "ok"]
    medians = {row["impl"]: row["median_s"] for row in timed}
    pairs = [(slow["impl"], fast["impl"]) for fast in timed if is_ours(fast)
             for slow in timed if not is_ours(slow)]
    pairs += [pair for pair in FUSED_EMA if set(pair) <= set(medians)]
    return [f"  {fast} vs {slow}: {medians[slow] / medians[fast]:.2f}x" for slow, fast in pairs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, no BERT-base (a smoke run, not the targets)")
    parser.add_argument("--only", default=",".join(TARGETS), help=", ".join(TARGETS))
    parser.add_argument("--rounds", type=int, default=None,
                        help="samples per implementation, at least 2 (default: the report's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", help="write every group's rows here")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 2:
        parser.error(f"--rounds must be >= 2 (quartiles need two samples); got {args.rounds}")
    if not set(args.only.split(",")) <= set(TARGETS):
        parser.error(f"--only takes {' and/or '.join(TARGETS)}; got {args.only!r}")
    repeats, target = TIMING[args.quick]
    repeats = args.rounds or repeats
    groups = {}   # listing the model cases imports torch, whose threads follow --threads too
    for name in args.only.split(","):
        for case in PROVIDERS[name][0](quick=args.quick):
            members = groups.setdefault(case.group, [])
            if not members and name == "ewm" and case.size >= PAGE_FLOOR_MIN:
                members.append(page_floor_case(case))
            members.append(case)
    measured = {}
    with thread_count(args.threads) as threads:
        print(f"threads: {threads}, {repeats} interleaved samples each")
        for group, members in groups.items():
            rows = measured[group] = measure_group(members, repeats, target)
            gc.collect()
            print(f"\n{group}")
            for row in sorted(rows, key=lambda r: r.get("median_s", float("inf"))):
                time = (f"{row['median_s'] * 1e3:11.3f} ms" if row["status"] == "ok"
                        else f"  skipped: {row['skip_reason']}")
                print(f"  {row['impl']:<24}{time}")
            print("\n".join(ratio_lines(rows)), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(measured, f, indent=1)


if __name__ == "__main__":
    main()
