"""The report's PNG: one panel pair per kernel and dtype (time above, speed-up below).

Kernels timed at several sizes are lines over size (log-log); kernels timed at one size (a
whole-model step, an ewm layout) are bar charts. Every implementation keeps its colour in
every panel. The reference stream loop is drawn only in the panels whose rows were compared
with it (dashed: the time that loop takes to move the same bytes).
"""
from .report import header_lines, label


def _speedup_reference(rows):
    """The implementation a panel's speed-ups are over: the baseline, else the slowest."""
    impls = {r["impl"] for r in rows}
    if "baseline" in impls:
        return "baseline"
    return max(rows, key=lambda r: r["median_s"])["impl"]


def _stream_times(rows):
    """{size: seconds} the stream loop takes to move each row's bytes, where it was timed."""
    return {r["size"]: r["bytes_moved"] / (r["stream_gbps"] * 1e9)
            for r in rows if r.get("stream_gbps")}


def _lines(top, bottom, rows, colors, reference):
    base = {r["size"]: r["median_s"] for r in rows if r["impl"] == reference}
    for impl in dict.fromkeys(r["impl"] for r in rows):
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["size"])
        top.plot([r["size"] for r in mine], [r["median_s"] for r in mine], marker="o",
                 label=impl, color=colors[impl])
        pairs = [(r["size"], base[r["size"]] / r["median_s"]) for r in mine if r["size"] in base]
        if impl != reference and pairs:
            bottom.plot(*zip(*pairs), marker="o", label=impl, color=colors[impl])
    walls = sorted(_stream_times(rows).items())
    if len(walls) > 1:
        top.plot(*zip(*walls), "k--", label="C stream loop, same bytes")
    elif walls:
        top.plot(*zip(*walls), "k_", markersize=14, label="C stream loop, same bytes")
    for ax in (top, bottom):
        ax.set(xscale="log", yscale="log")
    bottom.set_xlabel("elements")


def _bars(top, bottom, rows, colors, reference):
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    median = {r["impl"]: r["median_s"] for r in rows}
    x = range(len(impls))
    top.bar(x, [median[i] for i in impls], color=[colors[i] for i in impls])
    walls = set(_stream_times(rows).values())
    if walls:
        top.axhline(min(walls), color="k", linestyle="--", label="C stream loop, same bytes")
        top.legend(fontsize="small")
    others = [i for i in impls if i != reference]
    speedups = [median[reference] / median[i] for i in others]
    bottom.bar(range(len(others)), speedups, color=[colors[i] for i in others])
    if speedups and max(speedups) > 20 * min(speedups):
        bottom.set_yscale("log")   # else a 5x bar next to a 600x one is invisible
    for ax, names in ((top, impls), (bottom, others)):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    top.set_yscale("log")
    bottom.set_xlabel(f"{rows[0]['size']:,} elements")


def make_figure(report):
    """The matplotlib Figure of ``report`` (the dict ``--json`` writes)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {}
    for row in report["rows"]:
        if row["status"] == "ok" and not row["reference"]:
            series.setdefault((label(row), row["dtype"]), []).append(row)
    palette = colormaps["tab20"].colors
    colors = {impl: palette[i % len(palette)] for i, impl in enumerate(dict.fromkeys(
        r["impl"] for rows in series.values() for r in rows))}
    ncols = min(3, max(1, len(series)))
    nrows = -(-len(series) // ncols) or 1
    fig = Figure(figsize=(5.5 * ncols, 8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * nrows, ncols, squeeze=False)
    for k, ((name, dtype), rows) in enumerate(series.items()):
        top, bottom = axes[2 * (k // ncols)][k % ncols], axes[2 * (k // ncols) + 1][k % ncols]
        reference = _speedup_reference(rows)
        draw = _lines if len({r["size"] for r in rows}) > 1 else _bars
        draw(top, bottom, rows, colors, reference)
        top.set(title=f"{name} {dtype}", ylabel="seconds per call")
        bottom.set_ylabel(f"speed-up over {reference}")
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        for ax in (top, bottom):
            if draw is _lines and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
    for k in range(len(series), nrows * ncols):
        axes[2 * (k // ncols)][k % ncols].set_axis_off()
        axes[2 * (k // ncols) + 1][k % ncols].set_axis_off()
    fig.suptitle(header_lines(report)[0], fontsize="small")
    return fig


def write_plot(report, path):
    """Write the PNG of ``report`` to ``path``."""
    make_figure(report).savefig(path, dpi=100)
