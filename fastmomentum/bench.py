"""``python -m fastmomentum bench``: the benchmark report.

Times fastmomentum against the NumPy baseline and, when installed, torch, pandas and scipy,
on the cases of :mod:`fastmomentum.benchcases` (the same ones ``benchmarks/`` runs). Each
group of cases (one kernel, dtype and size) is timed interleaved (A B C A B C ...) after a
warm-up, so slow drifts of a shared machine hit every implementation alike; the table shows
medians with their interquartile range, speed-ups and bytes per second against the roofline:
a plain C OpenMP streaming loop with momentum_step's memory traffic, timed in the same groups.
"""
import argparse
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time

from . import BUILD_TARGET, HAS_OPENMP, __version__, get_num_threads, set_num_threads
from .benchcases import MATPLOTLIB_HINT, optional_import
from .benchcases.kernels import kernel_cases, roofline_case

from .benchcases.ewm import ewm_cases
from .benchcases.models import model_cases

#: provider -> (function(quick=...) returning a list of Case; the kernels its cases
#: measure). ``--sizes`` applies to the "kernels" provider only, ``--dtype`` selects the
#: dtypes of the "kernels" provider and filters the others.
PROVIDERS = {
    "kernels": (kernel_cases, ("momentum_step", "ema_update")),
    "ewm": (ewm_cases, ("ewm_mean", "ewm_var", "ewm_std", "ewm_cov", "ewm_corr")),
    "models": (model_cases, ("model_step", "model_step_ema")),
}
KERNELS = tuple(k for _, kernels in PROVIDERS.values() for k in kernels)

#: Groups of at least this many elements are timed with the roofline loop at their size: below
#: it the loop time is mostly call overhead, not memory traffic.
ROOFLINE_MIN_SIZE = 1 << 16
#: Beyond the caches bandwidth no longer depends on size: larger groups (whole models) compare
#: with the roofline at this size rather than allocating another few GB.
ROOFLINE_MAX_SIZE = 1 << 24
#: (repeats, seconds per sample) for the quick and the full run.
TIMING = {True: (5, 0.002), False: (9, 0.01)}


# ---------------------------------------------------------------------------------------
# Timing

def _seconds_per_call(fn, number):
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calls_per_sample(fn, target):
    """How many calls of ``fn`` take about ``target`` seconds (after warming it up)."""
    fn()  # warm-up: page faults, caches, lazy initialisation
    number = 1
    while True:
        per_call = _seconds_per_call(fn, number)
        if per_call * number >= target / 4 or number >= 1 << 20:
            return max(1, min(1 << 20, round(target / max(per_call, 1e-9))))
        number = min(1 << 20, number * 8)


def time_interleaved(fns, repeats, target):
    """Seconds per call of each function: ``repeats`` samples each, taken in rotating order
    (A B C, B C A, ...) so that drift and position in the round hit every function alike."""
    numbers = [calls_per_sample(fn, target) for fn in fns]
    samples = [[] for _ in fns]
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for k in range(len(fns)):
                j = (r + k) % len(fns)
                samples[j].append(_seconds_per_call(fns[j], numbers[j]))
    finally:
        if gc_enabled:
            gc.enable()
    return samples, numbers


# ---------------------------------------------------------------------------------------
# Cases

def parse_size(text):
    """``"4096"``, ``"4k"`` (4096) or ``"16M"`` (2**24) -> number of elements."""
    text = text.strip()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    n = int(text[:-1] if scale > 1 else text) * scale
    if n < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1; got {text!r}")
    return n


def format_size(n):
    """16, 4k, 256k, 16M (binary multiples), 100k, 10M (decimal multiples), else digits."""
    for base in (1 << 10, 1000):
        for suffix, scale in (("M", base * base), ("k", base)):
            if n >= scale and n % scale == 0:
                return f"{n // scale}{suffix}"
    return str(n)


def collect_cases(quick=False, sizes=None, dtypes=None, only=None):
    """The cases of every provider, filtered by dtype and kernel."""
    cases = []
    for name, (provider, kernels) in PROVIDERS.items():
        if only and not set(kernels) & set(only):
            continue
        found = (provider(quick=quick, sizes=sizes, dtypes=dtypes) if name == "kernels"
                 else provider(quick=quick))
        cases += [c for c in found if (not only or c.kernel in only)
                  and (not dtypes or c.dtype in dtypes)]
    return cases


def group_cases(cases):
    """{group: [cases]} in first-seen order, each group with a roofline case when large."""
    groups = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    for members in groups.values():
        lead = members[0]
        if lead.size >= ROOFLINE_MIN_SIZE and any(c.skip is None for c in members):
            members.append(roofline_case(min(lead.size, ROOFLINE_MAX_SIZE), lead.dtype))
    return groups


# ---------------------------------------------------------------------------------------
# Measuring and deriving the table

def _row(case):
    return {"kernel": case.kernel, "impl": case.impl, "size": case.size, "dtype": case.dtype,
            "params": dict(case.params), "bytes_moved": case.bytes_moved,
            "reference": case.kernel == "roofline",
            "status": "skipped" if case.skip else "ok", "skip_reason": case.skip}


def measure_group(members, repeats, target):
    """Rows for one group: timings of the runnable cases, then speed-ups and bandwidth."""
    rows = [dict(_row(c), group=members[0].group) for c in members]
    runnable = [(row, case) for row, case in zip(rows, members) if case.skip is None]
    fns = [case.make() for _, case in runnable]
    samples, numbers = time_interleaved(fns, repeats, target)
    del fns  # free this group's buffers before the next one is allocated
    for (row, _), times, number in zip(runnable, samples, numbers):
        q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
        row.update(median_s=median, q1_s=q1, q3_s=q3, min_s=min(times), max_s=max(times),
                   repeats=len(times), calls_per_sample=number,
                   gbps=row["bytes_moved"] / median / 1e9 if row["bytes_moved"] else None)
    _compare(rows)
    return rows


def is_ours(row):
    """A fastmomentum implementation (its variants are compared with the others only)."""
    return row["impl"].startswith("fastmomentum")


def _compare(rows):
    """Speed-up vs the baseline and vs the fastest other implementation; % of the roofline."""
    timed = [r for r in rows if r["status"] == "ok"]
    peers = [r for r in timed if not r["reference"]]
    baseline = next((r for r in peers if r["impl"] == "baseline"), None)
    roofline = next((r for r in timed if r["reference"]), None)
    for row in peers:
        # fastmomentum's variants (e.g. with out=) are compared with the others, not each other
        others = [r for r in peers if r is not row
                  and not (is_ours(r) and is_ours(row))]
        best = min(others, key=lambda r: r["median_s"]) if others else None
        row["vs_baseline"] = baseline["median_s"] / row["median_s"] if baseline else None
        row["best_other"] = best["impl"] if best else None
        row["vs_best_other"] = best["median_s"] / row["median_s"] if best else None
        if roofline and row["gbps"]:
            row["roofline_gbps"] = roofline["gbps"]
            row["roofline_pct"] = 100 * row["gbps"] / roofline["gbps"]


def roofline_summary(rows):
    """{dtype: {"size", "gbps"}}: the roofline at the largest size measured for each dtype
    (the median over the groups that timed it there)."""
    summary = {}
    for dtype in sorted({r["dtype"] for r in rows if r["reference"]}):
        at = [r for r in rows if r["reference"] and r["dtype"] == dtype]
        size = max(r["size"] for r in at)
        summary[dtype] = {"size": size, "gbps": statistics.median(
            r["gbps"] for r in at if r["size"] == size)}
    return summary


# ---------------------------------------------------------------------------------------
# Machine description

def cpu_model():
    """The CPU's marketing name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions():
    """Versions of fastmomentum, NumPy and every optional peer (None when not installed),
    read from package metadata so nothing is imported."""
    versions = {"fastmomentum": __version__, "python": platform.python_version()}
    for dist in ("numpy", "torch", "pandas", "scipy", "matplotlib", "tqdm", "Cython"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def machine_info(threads):
    """Where the report ran: CPU, cores, build and thread count."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "platform": platform.platform(), "build_target": BUILD_TARGET,
            "openmp": HAS_OPENMP, "threads": threads}


# ---------------------------------------------------------------------------------------
# Output

def _format_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _ratio(x):
    return f"{x:.2f}x" if x is not None else "-"


def _label(row):
    extra = "".join(f" {v}" for v in row["params"].values())
    return f"{row['kernel']}{extra}"


def _cells(row):
    """A measured row's table cells after kernel/dtype/size/impl."""
    spread = (row["q3_s"] - row["q1_s"]) / row["median_s"]
    best = row.get("best_other")
    return [_format_time(row["median_s"]),
            f"{100 * spread:.1f}%{'!' if spread > NOISY_SPREAD else ''}",
            _ratio(row.get("vs_baseline")),
            f"{_ratio(row.get('vs_best_other'))} {best}" if best else "-",
            f"{row['gbps']:.1f}" if row.get("gbps") else "-",
            f"{row['roofline_pct']:.0f}%" if row.get("roofline_pct") else "-"]


HEADER = ["kernel", "dtype", "size", "impl", "median", "IQR", "vs baseline", "vs best other",
          "GB/s", "% roofline"]
#: An interquartile range above this fraction of the median marks a row as noisy ("!").
NOISY_SPREAD = 0.25


def text_table(rows):
    """Every measured row, one block per group, aligned for a terminal."""
    lines, previous = [HEADER], None
    for row in rows:
        if row["status"] != "ok":
            continue
        if previous is not None and row["group"] != previous:
            lines.append(None)  # blank line between groups
        first = row["group"] != previous
        previous = row["group"]
        impl = "roofline: " + row["impl"] if row["reference"] else row["impl"]
        lines.append(([_label(row), row["dtype"], format_size(row["size"])] if first
                      else ["", "", ""]) + [impl] + _cells(row))
    widths = [max(len(line[i]) for line in lines if line) for i in range(len(HEADER))]
    right = {2, 4, 5, 6, 8, 9}
    out = []
    for line in lines:
        if line is None:
            out.append("")
            continue
        out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    return "\n".join(out)


def markdown_table(rows):
    """fastmomentum's rows only, as a Markdown table (for the README)."""
    out = ["| " + " | ".join(HEADER) + " |",
           "|" + "|".join("---:" if i >= 4 or i == 2 else "---" for i in range(len(HEADER))) + "|"]
    for row in rows:
        if row["status"] == "ok" and is_ours(row):
            cells = [_label(row), row["dtype"], format_size(row["size"]), row["impl"]]
            out.append("| " + " | ".join(cells + _cells(row)) + " |")
    return "\n".join(out)


def skipped_lines(rows):
    """One line per reason: what was not measured and why."""
    by_reason = {}
    for row in rows:
        if row["status"] == "skipped":
            name = f"{row['kernel']}/{row['impl']}"
            names = by_reason.setdefault(row["skip_reason"], [])
            if name not in names:
                names.append(name)
    return [f"skipped ({reason}): {', '.join(names)}" for reason, names in by_reason.items()]


def header_lines(report):
    m, v = report["machine"], report["versions"]
    peers = ", ".join(f"{k} {v[k]}" for k in ("numpy", "torch", "pandas", "scipy") if v[k])
    lines = [f"fastmomentum {v['fastmomentum']} ({m['build_target']} build, "
             f"{'OpenMP' if m['openmp'] else 'no OpenMP'}, {m['threads']} threads) | "
             f"{m['cpu']}, {m['cores']} cores | {peers}",
             f"median of {report['repeats']} interleaved samples per row, IQR in % of it "
             f"('!' above {100 * NOISY_SPREAD:.0f}%: a busy machine, rerun); "
             f"speed-ups are time ratios (>1 = faster)"]
    for dtype, roof in report["roofline"].items():
        lines.append(f"roofline {dtype}: {roof['gbps']:.1f} GB/s (C OpenMP stream loop, "
                     f"3 reads + 2 writes, {format_size(roof['size'])} elements)")
    return lines


def write_plot(report, path):
    """PNG: per kernel/dtype, time vs size (log-log, one line per implementation, roofline
    dashed) above the speed-up of every implementation over the baseline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {}
    for row in report["rows"]:
        if row["status"] == "ok" and not row["reference"]:
            series.setdefault((_label(row), row["dtype"]), []).append(row)
    # one colour per implementation across all panels
    colors = {impl: f"C{i % 10}" for i, impl in enumerate(dict.fromkeys(
        r["impl"] for rows in series.values() for r in rows))}
    ncols = min(3, max(1, len(series)))
    nrows = -(-len(series) // ncols) or 1
    fig = Figure(figsize=(5 * ncols, 7 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * nrows, ncols, squeeze=False)
    for k, ((label, dtype), rows) in enumerate(series.items()):
        top, bottom = axes[2 * (k // ncols)][k % ncols], axes[2 * (k // ncols) + 1][k % ncols]
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        baseline = {r["size"]: r["median_s"] for r in rows if r["impl"] == "baseline"}
        for impl in impls:
            mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["size"])
            sizes = [r["size"] for r in mine]
            top.plot(sizes, [r["median_s"] for r in mine], marker="o", label=impl,
                     color=colors[impl])
            pairs = [(r["size"], baseline[r["size"]] / r["median_s"]) for r in mine
                     if r["size"] in baseline]
            if impl != "baseline" and pairs:
                bottom.plot(*zip(*pairs), marker="o", label=impl, color=colors[impl])
        walls = sorted({(r["size"], r["bytes_moved"] / (r["roofline_gbps"] * 1e9))
                        for r in rows if r.get("roofline_gbps")})
        if walls:
            top.plot(*zip(*walls), "k--", label="roofline (C stream loop)")
        top.set(xscale="log", yscale="log", title=f"{label} {dtype}", ylabel="seconds per call")
        top.legend(fontsize="small")
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        bottom.set(xscale="log", yscale="log", xlabel="elements",
                   ylabel="speed-up over baseline")
        if bottom.get_legend_handles_labels()[0]:  # a kernel without a NumPy baseline has none
            bottom.legend(fontsize="small")
    for k in range(len(series), nrows * ncols):
        axes[2 * (k // ncols)][k % ncols].set_axis_off()
        axes[2 * (k // ncols) + 1][k % ncols].set_axis_off()
    fig.suptitle(" | ".join(header_lines(report)[:1]), fontsize="small")
    fig.savefig(path, dpi=100)


class Progress:
    """tqdm on stderr when installed, else a plain counter."""

    def __init__(self, total):
        tqdm = optional_import("tqdm")
        self.bar = tqdm.tqdm(total=total, file=sys.stderr, unit="case") if tqdm else None
        self.total, self.done = total, 0

    def start(self, label):
        """Show what is being measured now."""
        if self.bar is not None:
            self.bar.set_description(label)
        else:
            print(f"\r[{self.done}/{self.total}] {label:<40}", end="", file=sys.stderr,
                  flush=True)

    def advance(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        else:
            print(f"\r[{self.done}/{self.total}] done{' ' * 40}", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# Command line

def _csv(parse, name):
    """argparse type: a comma-separated list of ``parse`` values."""
    def parse_list(text):
        return [parse(x) for x in text.split(",") if x.strip()]
    parse_list.__name__ = name  # argparse's error says "invalid <name> value"
    return parse_list


def _dtype(text):
    if text not in ("float32", "float64"):
        raise argparse.ArgumentTypeError(f"dtype must be float32 or float64; got {text!r}")
    return text


def _kernel(text):
    if text not in KERNELS:
        raise argparse.ArgumentTypeError(f"unknown kernel {text!r}; one of {', '.join(KERNELS)}")
    return text


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fastmomentum bench",
        description="The benchmark report: fastmomentum vs the NumPy baseline and the installed "
                    "peers (torch, pandas, scipy), timed interleaved, with the machine's "
                    "memory-bandwidth roofline.",
        epilog="Example: python -m fastmomentum bench --quick --plot bench.png")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes (16, 4k, 256k, 16M), float32, fewer samples: "
                             "under a minute")
    parser.add_argument("--sizes", type=_csv(parse_size, "size"), default=None,
                        help="element counts for momentum_step/ema_update, e.g. 16,4k,16M "
                             "(default: 16 to 16M, every power of 4)")
    parser.add_argument("--dtype", type=_csv(_dtype, "dtype"), default=None,
                        help="float32, float64 or both comma-separated (default: both; "
                             "float32 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastmomentum and torch (default: all cores)")
    parser.add_argument("--only", type=_csv(_kernel, "kernel"), default=None,
                        help=f"comma-separated kernels: {', '.join(KERNELS)}")
    parser.add_argument("--json", metavar="PATH", help="write every row and the machine here")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write fastmomentum's rows as a Markdown table here")
    return parser


@contextlib.contextmanager
def thread_count(threads):
    """Run fastmomentum, and torch when the cases imported it, on ``threads`` threads (default:
    fastmomentum's current count); restores both afterwards. Yields the count used."""
    previous = get_num_threads()
    threads = threads or previous
    torch = sys.modules.get("torch")
    torch_previous = torch.get_num_threads() if torch else None
    set_num_threads(threads)
    if torch:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        set_num_threads(previous)
        if torch:
            torch.set_num_threads(torch_previous)


def run_report(quick=False, sizes=None, dtypes=None, only=None, threads=None):
    """Measure everything; returns the report dict that ``--json`` writes."""
    cases = collect_cases(quick, sizes, dtypes, only)
    groups = group_cases(cases)
    repeats, target = TIMING[quick]
    rows = []
    progress = Progress(sum(c.skip is None for m in groups.values() for c in m))
    with thread_count(threads) as threads:
        try:
            for members in groups.values():
                lead = members[0]
                progress.start(f"{_label(_row(lead))} {lead.dtype} {format_size(lead.size)}")
                rows += measure_group(members, repeats, target)
                progress.advance(sum(c.skip is None for c in members))
        finally:
            progress.close()
    return {"schema": 1, "machine": machine_info(threads), "versions": library_versions(),
            "options": {"quick": quick, "sizes": sizes, "dtypes": dtypes, "only": only},
            "repeats": repeats, "roofline": roofline_summary(rows), "rows": rows}


def main(argv=None):
    """Run the report; returns the exit status (0 also when optional peers are missing)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1; got {args.threads}")
    if args.plot and optional_import("matplotlib") is None:
        print(f"--plot needs matplotlib, which is not installed: {MATPLOTLIB_HINT}. "
              "The table is printed anyway.", file=sys.stderr)
        args.plot = None
    report = run_report(args.quick, args.sizes, args.dtype, args.only, args.threads)
    report["command"] = " ".join(["python -m fastmomentum bench", *argv])
    print("\n".join(header_lines(report)))
    print()
    print(text_table(report["rows"]))
    for line in skipped_lines(report["rows"]):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("".join(f"- {line}\n" for line in header_lines(report) + skipped_lines(
                report["rows"])) + "\n" + markdown_table(report["rows"]) + "\n")
    if args.plot:
        write_plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
