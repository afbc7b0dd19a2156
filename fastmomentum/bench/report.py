"""The report's output: terminal table, Markdown table, verdict and PNG plot."""
import statistics

from .run import ONE_THREAD, is_ours

#: An interquartile range above this fraction of the median marks a row as noisy ("!").
NOISY_SPREAD = 0.25
#: More than this fraction of noisy rows: the machine was busy and the ratios are not reliable.
BUSY_FRACTION = 0.1
HEADER = ["kernel", "dtype", "size", "impl", "median", "IQR", "vs baseline", "vs best other",
          "GB/s", "vs stream loop"]
_RIGHT = {2, 4, 5, 6, 8, 9}


def plural(n, word):
    """``1 thread``, ``2 threads``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_size(n):
    """16, 4k, 256k, 16M (binary multiples), 100k, 10M (decimal multiples), else digits."""
    for base in (1 << 10, 1000):
        for suffix, scale in (("M", base * base), ("k", base)):
            if n >= scale and n % scale == 0:
                return f"{n // scale}{suffix}"
    return str(n)


def format_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _ratio(x):
    """``3.92x``; below 0.1 two significant digits (``0.0013x``, not ``0.00x``)."""
    if x is None:
        return "-"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def label(row):
    """The kernel and its parameters, e.g. ``momentum_step nesterov``."""
    extra = "".join(f" {v}" for v in row["params"].values())
    return f"{row['kernel']}{extra}"


def spread(row):
    """The interquartile range as a fraction of the median."""
    return (row["q3_s"] - row["q1_s"]) / row["median_s"]


def _cells(row):
    """A measured row's table cells after kernel/dtype/size/impl."""
    best = row.get("best_other")
    return [format_time(row["median_s"]),
            f"{100 * spread(row):.1f}%{'!' if spread(row) > NOISY_SPREAD else ''}",
            _ratio(row.get("vs_baseline")),
            f"{_ratio(row.get('vs_best_other'))} {best}" if best else "-",
            f"{row['gbps']:.1f} ({row['bytes_moved'] / row['size']:g} B/elt)"
            if row.get("gbps") else "-",
            _ratio(row.get("vs_stream"))]


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
        impl = "reference: " + row["impl"] if row["reference"] else row["impl"]
        lines.append(([label(row), row["dtype"], format_size(row["size"])] if first
                      else ["", "", ""]) + [impl] + _cells(row))
    widths = [max(len(line[i]) for line in lines if line) for i in range(len(HEADER))]
    out = []
    for line in lines:
        if line is None:
            out.append("")
            continue
        out.append("  ".join(c.rjust(w) if i in _RIGHT else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    return "\n".join(out)


def markdown_table(rows):
    """fastmomentum's rows only, as a Markdown table (for the README)."""
    out = ["| " + " | ".join(HEADER) + " |",
           "|" + "|".join("---:" if i in _RIGHT else "---" for i in range(len(HEADER))) + "|"]
    for row in rows:
        if row["status"] == "ok" and is_ours(row):
            cells = [label(row), row["dtype"], format_size(row["size"]), row["impl"]]
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
             f"{'OpenMP' if m['openmp'] else 'no OpenMP'}, {plural(m['threads'], 'thread')}) | "
             f"{m['cpu']}, {plural(m['cores'], 'core')} | {peers}",
             f"median of {report['repeats']} interleaved samples per row, IQR in % of it "
             f"('!' above {100 * NOISY_SPREAD:.0f}%: a busy machine, rerun); "
             f"speed-ups are time ratios (>1 = faster)"]
    for dtype, ref in report["stream_loop"].items():
        lines.append(f"stream loop {dtype}: {ref['gbps']:.1f} GB/s at "
                     f"{format_size(ref['size'])} elements (a plain C loop with momentum_step's "
                     f"traffic, 3 reads + 2 writes: a reference, not a bound)")
    busy = report.get("contention")
    if busy:
        lines.append(f"--contention: a busy process on core {busy['core']} for the whole run; "
                     f"'{ONE_THREAD.strip()}' rows: fastmomentum on one thread under the same "
                     f"load")
    return lines


def _contention_lines(report, rows):
    busy = report["contention"]
    share = busy.get("core_share")
    lines = [f"busy process: core {busy['core']}, {busy['wall_s']:.0f} s"
             + (f", got {100 * share:.0f}% of that core" if share is not None else "")]
    threaded = [r for r in rows if r.get("vs_1_thread") is not None]
    if threaded:
        worst = min(threaded, key=lambda r: r["vs_1_thread"])
        lines.append(
            f"fastmomentum on {plural(report['machine']['threads'], 'thread')} over 1 thread "
            f"under load (>1: the threads help): median "
            f"{_ratio(statistics.median(r['vs_1_thread'] for r in threaded))}, worst "
            f"{_ratio(worst['vs_1_thread'])} ({label(worst)} {worst['dtype']} "
            f"{format_size(worst['size'])} {worst['impl']})")
    return lines


def verdict_lines(report):
    """What the run says about the machine, ending with what to do."""
    rows = [r for r in report["rows"] if r["status"] == "ok" and not r["reference"]]
    if not rows:
        return ["verdict: nothing was measured"]
    noisy = [r for r in rows if spread(r) > NOISY_SPREAD]
    machine, load = report["machine"], report.get("load_before")
    lines = _contention_lines(report, rows) if report.get("contention") else []
    reasons = []
    if len(noisy) > BUSY_FRACTION * len(rows):
        reasons.append(f"{len(noisy)} of {plural(len(rows), 'row')} spread > "
                       f"{100 * NOISY_SPREAD:.0f}%")
    if load is not None and load >= max(1.0, 0.5 * machine["usable_cores"]):
        reasons.append(f"load average {load:.1f} on {plural(machine['usable_cores'], 'core')} "
                       f"before the run")
    if report.get("contention"):
        lines.append("verdict: machine busy by --contention"
                     + (f" (and {'; '.join(reasons)})" if reasons else "")
                     + ": compare the thread counts above; "
                     "rerun without --contention for quiet-machine numbers")
    elif reasons:
        lines.append(f"verdict: machine busy: {'; '.join(reasons)}; the ratios are unreliable: "
                     f"rerun on a quieter machine, or with --threads 1")
    else:
        lines.append(f"verdict: machine quiet ({len(noisy)} of {plural(len(rows), 'row')} "
                     f"spread > {100 * NOISY_SPREAD:.0f}%): the ratios hold for this machine")
    return lines
