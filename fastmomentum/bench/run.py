"""Measuring the report: the cases of every provider, grouped, timed and compared.

Each group of cases (one kernel, dtype and size) is timed interleaved (A B C A B C ...) after a
warm-up, so slow drifts of a shared machine hit every implementation alike. Groups of the
element-wise kernels also time a reference: a plain C loop with momentum_step's memory traffic
(``src/reference/fm_stream.h``), whose bandwidth the rows are set against. It is a reference, not a
bound: a kernel with a better schedule can beat it.
"""
import dataclasses
import statistics

from ..benchcases.clipping import clip_cases
from ..benchcases.ewm import ewm_cases
from ..benchcases.kernels import STREAM_LOOP, kernel_cases, stream_loop_case
from ..benchcases.models import model_cases
from ..benchcases.state import state_cases
from .timing import TIMING, time_interleaved

#: provider -> (function(quick=...) returning a list of Case; the kernels its cases
#: measure). ``--sizes`` applies to the "kernels" provider only, ``--dtype`` selects the
#: dtypes of the "kernels" provider and filters the others.
PROVIDERS = {
    "kernels": (kernel_cases, ("momentum_step", "ema_update")),
    "ewm": (ewm_cases, ("ewm_mean", "ewm_var", "ewm_std", "ewm_cov", "ewm_corr")),
    "models": (model_cases, ("model_step", "model_step_ema")),
    "clipping": (clip_cases, ("clip_step",)),
    "state": (state_cases, ("state_step",)),   # fewer-byte momentum, split bf16 weights
}
KERNELS = tuple(k for _, kernels in PROVIDERS.values() for k in kernels)
#: The kernels whose time is memory traffic, one pass over their buffers: their groups are
#: timed with the reference stream loop (ewm_mean is a scan: its time is arithmetic).
STREAM_KERNELS = ("momentum_step", "ema_update", "model_step", "model_step_ema")
#: Groups of at least this many elements are timed with the stream loop at their size: below
#: it the loop time is mostly call overhead, not memory traffic.
STREAM_MIN_SIZE = 1 << 16
#: Beyond the caches bandwidth no longer depends on size: larger groups (whole models) compare
#: with the stream loop at this size rather than allocating another few GB.
STREAM_MAX_SIZE = 1 << 24
#: The suffix of fastmomentum's rows timed on one thread (``--contention``).
ONE_THREAD = " 1 thread"


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


def is_ours(row):
    """A fastmomentum implementation (its variants are compared with the others only)."""
    return row["impl"].startswith("fastmomentum")


def group_cases(cases, one_thread=False):
    """{group: [cases]} in first-seen order. Large groups of the element-wise kernels get the
    stream loop; with ``one_thread`` every fastmomentum case also gets a copy on one thread."""
    groups = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
        if one_thread and is_ours({"impl": case.impl}) and case.skip is None:
            groups[case.group].append(dataclasses.replace(
                case, impl=case.impl + ONE_THREAD, threads=1))
    for members in groups.values():
        lead = members[0]
        if (lead.kernel in STREAM_KERNELS and lead.size >= STREAM_MIN_SIZE
                and any(c.skip is None for c in members)):
            members.append(stream_loop_case(min(lead.size, STREAM_MAX_SIZE), lead.dtype))
    return groups


def _row(case):
    return {"kernel": case.kernel, "impl": case.impl, "size": case.size, "dtype": case.dtype,
            "params": dict(case.params), "bytes_moved": case.bytes_moved,
            "reference": case.reference or case.kernel == STREAM_LOOP, "threads": case.threads,
            "status": "skipped" if case.skip else "ok", "skip_reason": case.skip}


def measure_group(members, repeats, target):
    """Rows for one group: timings of the runnable cases, then speed-ups and bandwidth."""
    rows = [dict(_row(c), group=members[0].group) for c in members]
    runnable = [(row, case) for row, case in zip(rows, members) if case.skip is None]
    fns = [case.make() for _, case in runnable]
    samples, numbers = time_interleaved(fns, repeats, target,
                                        threads=[case.threads for _, case in runnable])
    del fns  # free this group's buffers before the next one is allocated
    for (row, _), times, number in zip(runnable, samples, numbers):
        q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
        row.update(median_s=median, q1_s=q1, q3_s=q3, min_s=min(times), max_s=max(times),
                   repeats=len(times), calls_per_sample=number,
                   gbps=row["bytes_moved"] / median / 1e9 if row["bytes_moved"] else None)
    compare(rows)
    return rows


def compare(rows):
    """Speed-up vs the baseline, vs the fastest other implementation and (``--contention``)
    vs the same implementation on one thread; bandwidth over the stream loop's."""
    timed = [r for r in rows if r["status"] == "ok"]
    peers = [r for r in timed if not r["reference"]]
    baseline = next((r for r in peers if r["impl"] == "baseline"), None)
    stream = next((r for r in timed if r["reference"]), None)
    medians = {r["impl"]: r["median_s"] for r in peers}
    for row in peers:
        # fastmomentum's variants (e.g. with out=) are compared with the others, not each other
        others = [r for r in peers if r is not row
                  and not (is_ours(r) and is_ours(row))]
        best = min(others, key=lambda r: r["median_s"]) if others else None
        row["vs_baseline"] = baseline["median_s"] / row["median_s"] if baseline else None
        row["best_other"] = best["impl"] if best else None
        row["vs_best_other"] = best["median_s"] / row["median_s"] if best else None
        single = medians.get(row["impl"] + ONE_THREAD)
        if single is not None:
            row["vs_1_thread"] = single / row["median_s"]
        if stream and row["gbps"]:
            row["stream_gbps"] = stream["gbps"]
            row["vs_stream"] = row["gbps"] / stream["gbps"]


def stream_summary(rows):
    """{dtype: {"size", "gbps"}}: the stream loop at the largest size measured for each dtype
    (the median over the groups that timed it there)."""
    summary = {}
    timed = [r for r in rows if r["reference"] and r["status"] == "ok"]  # (skipped: no gbps)
    for dtype in sorted({r["dtype"] for r in timed}):
        at = [r for r in timed if r["dtype"] == dtype]
        size = max(r["size"] for r in at)
        summary[dtype] = {"size": size, "gbps": statistics.median(
            r["gbps"] for r in at if r["size"] == size)}
    return summary


def measure(groups, quick, progress, label):
    """Every group's rows, in order; ``progress`` shows ``label(lead case)`` per group."""
    repeats, target = TIMING[quick]
    rows = []
    try:
        for members in groups.values():
            progress.start(label(members[0]))
            rows += measure_group(members, repeats, target)
            progress.advance(sum(c.skip is None for c in members))
    finally:
        progress.close()
    return rows
