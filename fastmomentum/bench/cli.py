"""``python -m fastmomentum bench``: options, progress, and where the output goes."""
import argparse
import json
import os
import sys

from ..benchcases import MATPLOTLIB_HINT, optional_import
from . import report as out
from .contention import BusyCore
from .run import KERNELS, collect_cases, group_cases, measure, stream_summary
from .timing import TIMING, library_versions, load_average, machine_info, thread_count

#: Where the plot goes when --plot is not given.
DEFAULT_PLOT = "fastmomentum-bench.png"


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


def parse_size(text):
    """``"4096"``, ``"4k"`` (4096) or ``"16M"`` (2**24) -> number of elements."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("empty size entry (two commas, or a trailing comma)")
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    try:
        n = int(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a size is a whole number, optionally with k, M or G; got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1; got {text!r}")
    return n


def _csv(parse, name):
    """argparse type: a comma-separated list of ``parse`` values (no empty entries)."""
    def parse_list(text):
        return [parse(x) for x in text.split(",")]
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
                    "peers (torch, pandas, scipy: pip install \"fastmomentum[peers]\"), timed "
                    "interleaved, with a reference C stream loop. Prints a table and a verdict "
                    f"and writes a plot (default: ./{DEFAULT_PLOT}).",
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
    parser.add_argument("--contention", action="store_true",
                        help="run a busy process on one core meanwhile (it stops by itself) and "
                             "time fastmomentum on 1 thread too: how it fares on a busy machine")
    parser.add_argument("--json", metavar="PATH", help="write every row and the machine here")
    parser.add_argument("--plot", metavar="PATH",
                        help=f"write the PNG plot here (default: {DEFAULT_PLOT}; needs "
                             "matplotlib)")
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write fastmomentum's rows as a Markdown table here")
    return parser


def _check_writable(parser, option, path):
    """Refuse an output path before the run rather than after it."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        parser.error(f"{option} {path}: is a directory; give a file name")
    if not os.path.isdir(folder):
        parser.error(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        parser.error(f"{option} {path}: not writable")


def run_report(quick=False, sizes=None, dtypes=None, only=None, threads=None, contention=False):
    """Measure everything; returns the report dict that ``--json`` writes."""
    cases = collect_cases(quick, sizes, dtypes, only)
    load_before = load_average()
    with thread_count(threads) as threads:
        groups = group_cases(cases, one_thread=contention and threads > 1)
        progress = Progress(sum(c.skip is None for m in groups.values() for c in m))

        def describe(lead):
            return f"{out.label(vars(lead))} {lead.dtype} {out.format_size(lead.size)}"

        busy = BusyCore() if contention else None
        if busy:
            with busy:
                rows = measure(groups, quick, progress, describe)
        else:
            rows = measure(groups, quick, progress, describe)
    return {"schema": 2, "machine": machine_info(threads), "versions": library_versions(),
            "options": {"quick": quick, "sizes": sizes, "dtypes": dtypes, "only": only,
                        "contention": contention},
            "load_before": load_before, "contention": busy.info() if busy else None,
            "repeats": TIMING[quick][0], "stream_loop": stream_summary(rows), "rows": rows}


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main(argv=None):
    """Run the report; returns the exit status (0 also when optional peers are missing)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1; got {args.threads}")
    if args.plot and args.no_plot:
        parser.error("--plot and --no-plot exclude each other")
    for option, path in (("--json", args.json), ("--markdown", args.markdown),
                         ("--plot", args.plot)):
        if path:
            _check_writable(parser, option, path)
    plot = None if args.no_plot else args.plot or DEFAULT_PLOT
    if plot == DEFAULT_PLOT and not args.plot and not os.access(".", os.W_OK):
        print("the working directory is not writable: no plot (give --plot PATH)",
              file=sys.stderr)
        plot = None
    if plot and optional_import("matplotlib") is None:
        print(f"the plot needs matplotlib, which is not installed: {MATPLOTLIB_HINT}. "
              "The table is printed anyway.", file=sys.stderr)
        plot = None
    report = run_report(args.quick, args.sizes, args.dtype, args.only, args.threads,
                        args.contention)
    report["command"] = " ".join(["python -m fastmomentum bench", *argv])
    print("\n".join(out.header_lines(report)))
    print()
    print(out.text_table(report["rows"]))
    print()
    for line in out.skipped_lines(report["rows"]):
        print(line)
    if args.json:
        _write(args.json, json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.markdown:
        _write(args.markdown, "".join(
            f"- {line}\n" for line in out.header_lines(report) + out.skipped_lines(
                report["rows"]) + out.verdict_lines(report)) + "\n"
            + out.markdown_table(report["rows"]) + "\n")
        print(f"wrote {args.markdown}")
    if plot:
        from .plot import write_plot
        write_plot(report, plot)
        print(f"wrote the plot: {plot}")
    print("\n".join(out.verdict_lines(report)))
    return 0
