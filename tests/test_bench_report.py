"""The benchmark report's pieces on synthetic rows: the verdict, the plot's panels, the
per-sample thread count and the busy process of --contention."""
import os
import time

import pytest

import fastmomentum
from fastmomentum.bench import contention, plot, report, run, timing


def make_row(impl, size, median, iqr=0.0, kernel="momentum_step", group=None, **extra):
    row = {"kernel": kernel, "impl": impl, "size": size, "dtype": "float32",
           "params": {"variant": "plain"}, "bytes_moved": 20 * size, "reference": False,
           "status": "ok", "median_s": median, "q1_s": median * (1 - iqr / 2),
           "q3_s": median * (1 + iqr / 2), "group": group or f"{kernel}-{size}",
           "gbps": 20 * size / median / 1e9}
    row.update(extra)
    return row


def make_report(rows, load=0.0, cores=8, contention_info=None):
    return {"rows": rows, "load_before": load, "contention": contention_info,
            "machine": {"usable_cores": cores, "threads": 2, "cores": cores,
                        "build_target": "portable", "openmp": True, "cpu": "test CPU"},
            "versions": {"fastmomentum": "0", "numpy": "2", "torch": None, "pandas": None,
                         "scipy": None},
            "repeats": 5, "stream_loop": {}}


def test_verdict_counts_the_noisy_rows_and_says_what_to_do():
    rows = [make_row("fastmomentum", n, 1e-6, iqr=0.5 if n < 3 else 0.1) for n in range(1, 6)]
    (line,) = report.verdict_lines(make_report(rows))
    noisy = sum(r["q3_s"] - r["q1_s"] > 0.25 * r["median_s"] for r in rows)
    assert noisy == 2
    assert line == ("verdict: machine busy: 2 of 5 rows spread > 25%; the ratios are "
                    "unreliable: rerun on a quieter machine, or with --threads 1")


def test_verdict_quiet_machine_and_load_average():
    rows = [make_row("fastmomentum", n, 1e-6, iqr=0.01) for n in range(1, 21)]
    rows[0]["q3_s"] *= 2   # one noisy row of 20 is not a busy machine
    assert report.verdict_lines(make_report(rows)) == [
        "verdict: machine quiet (1 of 20 rows spread > 25%): the ratios hold for this machine"]
    (line,) = report.verdict_lines(make_report(rows, load=1.5, cores=2))
    assert line.startswith("verdict: machine busy: load average 1.5 on 2 cores before the run")


def test_verdict_under_contention_reports_the_thread_ratios():
    rows = [make_row("fastmomentum", 16, 2e-6, vs_1_thread=0.5),
            make_row("fastmomentum", 4096, 1e-6, vs_1_thread=1.0),
            make_row("fastmomentum", 1 << 20, 1e-4, vs_1_thread=1.8)]
    busy = {"core": 1, "wall_s": 12.0, "cpu_s": 11.0, "core_share": 11 / 12, "limit_s": 60}
    lines = report.verdict_lines(make_report(rows, contention_info=busy))
    assert lines[0] == "busy process: core 1, 12 s, got 92% of that core"
    assert lines[1] == ("fastmomentum on 2 threads over 1 thread under load (>1: the threads "
                        "help): median 1.00x, worst 0.50x (momentum_step plain float32 16 "
                        "fastmomentum)")
    assert lines[2].startswith("verdict: machine busy by --contention")


def test_plural():
    assert [report.plural(n, "thread") for n in (0, 1, 2)] == [
        "0 threads", "1 thread", "2 threads"]


def test_plot_panels_bars_for_one_size_lines_for_many_and_one_colour_per_impl():
    stream = dict(stream_gbps=50.0)
    rows = [make_row(impl, n, t * n * 1e-9, **(stream if n >= 1 << 16 else {}))
            for n in (16, 1 << 16, 1 << 20) for impl, t in (("fastmomentum", 1),
                                                            ("baseline", 9))]
    rows += [make_row(impl, 41600, t, kernel="model_step", group="m")
             for impl, t in (("fastmomentum", 1e-5), ("torch-fused", 3e-5))]
    fig = plot.make_figure(make_report(rows))
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == 4   # two panel pairs, the unused cells switched off
    lines_top, lines_bottom, bars_top, bars_bottom = axes[0], axes[2], axes[1], axes[3]

    labels = [line.get_label() for line in lines_top.get_lines()]
    assert labels == ["fastmomentum", "baseline", "C stream loop, same bytes"]
    assert list(lines_top.get_lines()[2].get_xdata()) == [1 << 16, 1 << 20]  # where timed
    assert [line.get_label() for line in lines_bottom.get_lines()][:1] == ["fastmomentum"]
    assert len(bars_top.patches) == 2 and not any(
        line.get_label().startswith("C stream") for line in bars_top.get_lines())
    # no baseline in the model panel: the speed-up is over the slowest, torch-fused
    assert [p.get_height() for p in bars_bottom.patches] == [pytest.approx(3.0)]
    assert bars_bottom.get_ylabel() == "speed-up over torch-fused"
    assert lines_top.get_lines()[0].get_color() == tuple(bars_top.patches[0].get_facecolor()[:3])


def test_time_interleaved_sets_each_functions_thread_count(restore_threads):
    fastmomentum.set_num_threads(2)
    seen = [set(), set()]
    fns = [lambda: seen[0].add(fastmomentum.get_num_threads()),
           lambda: seen[1].add(fastmomentum.get_num_threads())]
    samples, _ = timing.time_interleaved(fns, 3, 1e-4, threads=[1, None])
    assert seen == [{1}, {2}]
    assert [len(s) for s in samples] == [3, 3]
    assert fastmomentum.get_num_threads() == 2


def test_one_thread_copies_of_fastmomentum_cases_only():
    from fastmomentum.benchcases.kernels import ema_cases
    groups = run.group_cases(ema_cases(sizes=(16,)), one_thread=True)
    (members,) = groups.values()
    assert [(c.impl, c.threads) for c in members] == [
        ("fastmomentum", None), ("fastmomentum 1 thread", 1), ("baseline", None),
        ("torch-lerp_", None)]


def test_vs_1_thread_is_the_ratio_of_the_medians():
    rows = [make_row("fastmomentum", 16, 2.0), make_row("fastmomentum 1 thread", 16, 3.0),
            make_row("baseline", 16, 6.0)]
    run.compare(rows)
    assert rows[0]["vs_1_thread"] == 1.5
    assert "vs_1_thread" not in rows[1] and "vs_1_thread" not in rows[2]
    assert rows[0]["vs_baseline"] == 3.0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_busy_process_runs_on_one_core_and_is_killed_at_the_end():
    with contention.BusyCore(limit_s=60) as busy:
        pid = busy.process.pid
        assert _alive(pid)
        if hasattr(os, "sched_getaffinity"):
            assert os.sched_getaffinity(pid) == {busy.core}
    assert not _alive(pid)   # killed and reaped
    info = busy.info()
    assert info["core"] == busy.core and info["wall_s"] > 0 and info["cpu_s"] >= 0


def test_busy_process_is_killed_on_ctrl_c():
    with pytest.raises(KeyboardInterrupt):
        with contention.BusyCore(limit_s=60) as busy:
            pid = busy.process.pid
            raise KeyboardInterrupt
    assert not _alive(pid)


def test_busy_process_stops_by_itself():
    busy = contention.BusyCore(limit_s=0.5).__enter__()
    try:
        assert busy.process.wait(timeout=60) == 0   # its own deadline, no kill
    finally:
        busy.stop()


@pytest.mark.parametrize("x, text", [(None, "-"), (3.917, "3.92x"), (0.1, "0.10x"),
                                     (0.0013, "0.0013x"), (0.02857, "0.029x")])
def test_ratio_format_keeps_small_ratios_readable(x, text):
    assert report._ratio(x) == text
