"""The benchmark report CLI (`python -m fastmomentum bench`): rows, JSON, plot, missing peers.

Runs the real CLI in --quick mode on tiny sizes; no assertion is about speed, only about what
the report contains and how it is derived from its own measurements."""
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

import fastmomentum
from fastmomentum import bench

ROOT = Path(__file__).resolve().parent.parent
MOMENTUM_IMPLS = {"fastmomentum", "baseline", "torch-forloop", "torch-foreach", "torch-fused"}
EMA_IMPLS = {"fastmomentum", "baseline", "torch-lerp_"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """The report writes its default plot into the working directory: keep it in tmp_path."""
    monkeypatch.chdir(tmp_path)


def run_cli(capsys, *argv):
    status = bench.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def measured(report):
    return [r for r in report["rows"] if r["status"] == "ok" and not r["reference"]]


def test_quick_run_writes_every_row_json_markdown_and_png(tmp_path, capsys):
    json_path, png_path, md_path = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.md"
    status, out, _ = run_cli(capsys, "--quick", "--sizes", "16,64", "--dtype", "float32,float64",
                             "--only", "momentum_step,ema_update", "--json", str(json_path),
                             "--plot", str(png_path), "--markdown", str(md_path))
    assert status == 0
    report = json.loads(json_path.read_text())

    expected = {("momentum_step", variant, impl, n, dtype)
                for variant in ("plain", "nesterov") for impl in MOMENTUM_IMPLS
                for n in (16, 64) for dtype in ("float32", "float64")}
    expected |= {("ema_update", None, impl, n, dtype)
                 for impl in EMA_IMPLS for n in (16, 64) for dtype in ("float32", "float64")}
    rows = measured(report)
    got = [(r["kernel"], r["params"].get("variant"), r["impl"], r["size"], r["dtype"])
           for r in rows]
    assert sorted(got, key=str) == sorted(expected, key=str)  # each exactly once

    for row in rows:
        assert row["repeats"] == bench.TIMING[True][0]
        assert 0 < row["min_s"] <= row["q1_s"] <= row["median_s"] <= row["q3_s"] <= row["max_s"]
        assert row["gbps"] == pytest.approx(row["bytes_moved"] / row["median_s"] / 1e9)
        peers = {r["impl"]: r["median_s"] for r in rows if r["group"] == row["group"]}
        assert row["vs_baseline"] == pytest.approx(peers["baseline"] / row["median_s"])
        # fastmomentum's own variants are not each other's "other"
        others = {k: v for k, v in peers.items() if k != row["impl"] and not (
            k.startswith("fastmomentum") and row["impl"].startswith("fastmomentum"))}
        assert row["best_other"] == min(others, key=others.get)
        assert row["vs_best_other"] == pytest.approx(min(others.values()) / row["median_s"])
        assert "vs_stream" not in row  # these sizes are below the stream loop's

    assert report["command"].startswith("python -m fastmomentum bench --quick --sizes 16,64")
    machine = report["machine"]
    assert machine["build_target"] == fastmomentum.BUILD_TARGET
    assert machine["threads"] == fastmomentum.get_num_threads()
    assert machine["cpu"] and machine["cores"] >= 1
    assert report["versions"]["numpy"] == np.__version__
    assert report["versions"]["torch"] == torch.__version__
    assert [r["kernel"] for r in report["rows"] if r["status"] == "skipped"] == []

    # the terminal table and the Markdown table show the measured rows
    assert "vs best other" in out and "vs stream loop" in out
    assert out.count("torch-fused") >= 8
    md_rows = [line for line in md_path.read_text().splitlines()
               if line.startswith("| ") and "| fastmomentum |" in line]
    assert len(md_rows) == sum(r["impl"] == "fastmomentum" for r in rows) == 12

    assert png_path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(png_path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300


def test_large_groups_are_timed_with_the_stream_loop(tmp_path, capsys):
    n = bench.STREAM_MIN_SIZE
    json_path = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "--quick", "--sizes", f"16,{n}", "--only", "ema_update",
                             "--json", str(json_path))
    assert status == 0
    report = json.loads(json_path.read_text())
    references = [r for r in report["rows"] if r["reference"]]
    assert [(r["kernel"], r["size"], r["dtype"], r["group"]) for r in references] == [
        ("stream loop", n, "float32", f"ema_update-float32-n{n}")]
    stream = references[0]
    assert stream["bytes_moved"] == 5 * n * 4  # momentum_step's traffic
    assert report["stream_loop"] == {"float32": {"size": n, "gbps": stream["gbps"]}}
    for row in measured(report):
        if row["size"] == n:
            assert row["vs_stream"] == pytest.approx(row["gbps"] / stream["gbps"])
        else:
            assert "vs_stream" not in row
    assert "reference: C stream loop" in out and "stream loop float32:" in out
    assert "a reference, not a bound" in out and "roofline" not in out


def test_missing_torch_is_listed_as_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    json_path = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "--quick", "--sizes", "16",
                             "--only", "momentum_step,ema_update", "--json", str(json_path))
    assert status == 0
    report = json.loads(json_path.read_text())
    skipped = {(r["kernel"], r["impl"]) for r in report["rows"] if r["status"] == "skipped"}
    assert skipped == {("momentum_step", i) for i in MOMENTUM_IMPLS if i.startswith("torch")} | {
        ("ema_update", "torch-lerp_")}
    assert {r["skip_reason"] for r in report["rows"] if r["status"] == "skipped"} == {
        "torch not installed"}
    assert {r["impl"] for r in measured(report)} == {"fastmomentum", "baseline"}
    assert report["versions"]["torch"] == torch.__version__  # metadata, not an import
    assert "skipped (torch not installed): momentum_step/torch-forloop" in out


def test_without_matplotlib_and_tqdm_the_table_still_prints(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    png_path = tmp_path / "r.png"
    status, out, err = run_cli(capsys, "--quick", "--sizes", "16", "--only", "ema_update",
                               "--plot", str(png_path))
    assert status == 0
    assert not png_path.exists()
    assert 'pip install "fastmomentum[bench]"' in err
    assert "[3/3] done" in err  # the plain progress counter
    assert "ema_update" in out and "torch-lerp_" in out


def test_threads_option_is_used_and_restored(tmp_path, capsys):
    before = fastmomentum.get_num_threads(), torch.get_num_threads()
    json_path = tmp_path / "r.json"
    status, _, _ = run_cli(capsys, "--quick", "--sizes", "16", "--only", "ema_update",
                           "--threads", "1", "--json", str(json_path))
    assert status == 0
    assert json.loads(json_path.read_text())["machine"]["threads"] == 1
    assert (fastmomentum.get_num_threads(), torch.get_num_threads()) == before


@pytest.mark.parametrize("argv", [["--only", "nonsense"], ["--dtype", "float16"],
                                  ["--sizes", "0"], ["--threads", "0"]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("text, n", [("16", 16), ("4k", 4096), ("256K", 262144),
                                     ("16M", 1 << 24), ("1000", 1000)])
def test_parse_size(text, n):
    assert bench.parse_size(text) == n


@pytest.mark.parametrize("n, text", [(16, "16"), (4096, "4k"), (1 << 24, "16M"),
                                     (100_000, "100k"), (10_000_000, "10M"), (1234, "1234")])
def test_format_size(n, text):
    assert bench.format_size(n) == text


def test_module_entry_point_runs(tmp_path):
    json_path = tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "-m", "fastmomentum", "bench", "--quick", "--sizes", "16",
         "--only", "ema_update", "--json", str(json_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {r["impl"] for r in json.loads(json_path.read_text())["rows"]} == EMA_IMPLS


@pytest.mark.parametrize("kernel, provider, with_stream", [
    ("model_step", "models", True),   # element-wise: memory traffic, the stream loop applies
    ("ewm_mean", "ewm", False),       # a scan: no stream loop
])
def test_cases_of_other_providers_are_measured_and_filtered(tmp_path, capsys, monkeypatch,
                                                            kernel, provider, with_stream):
    """A provider plugs in through PROVIDERS: called with ``quick``, its cases filtered by
    --dtype and --only, timed with the stream loop when large and element-wise."""
    from fastmomentum.benchcases import Case

    calls = []

    def make_sum(n, dtype):
        x = np.ones(n, dtype)
        return lambda: np.cumsum(x)

    def fake_cases(quick=False):
        calls.append(quick)
        n = bench.STREAM_MIN_SIZE
        return [Case(kernel, impl, n, dtype, make=lambda dtype=dtype: make_sum(n, dtype),
                     bytes_moved=2 * n * np.dtype(dtype).itemsize, params={"shape": "1-D"})
                for dtype in ("float32", "float64") for impl in ("fastmomentum", "baseline")]

    monkeypatch.setitem(bench.PROVIDERS, provider, (fake_cases, (kernel,)))
    json_path = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "--quick", "--only", kernel, "--dtype", "float64",
                             "--json", str(json_path))
    assert status == 0 and calls == [True]
    rows = json.loads(json_path.read_text())["rows"]
    expected = [(kernel, "fastmomentum", "float64", {"shape": "1-D"}),
                (kernel, "baseline", "float64", {"shape": "1-D"})]
    if with_stream:
        expected.append(("stream loop", "C stream loop", "float64", {}))
    assert [(r["kernel"], r["impl"], r["dtype"], r["params"]) for r in rows] == expected
    if with_stream:
        assert rows[0]["vs_stream"] == pytest.approx(rows[0]["gbps"] / rows[2]["gbps"])
    else:
        assert "vs_stream" not in rows[0]
    assert f"{kernel} 1-D" in out


def load_target_ratios():
    import importlib.util
    spec = importlib.util.spec_from_file_location("target_ratios",
                                                  ROOT / "benchmarks" / "target_ratios.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_ratios_pairs_fastmomentum_with_every_other_implementation():
    rows = [{"impl": impl, "median_s": t, "status": "ok"} for impl, t in
            [("fastmomentum", 1.0), ("fastmomentum.torch", 2.0), ("torch-fused", 10.0),
             ("baseline", 30.0), ("sgd then ema", 4.0), ("sgd+ema fused", 3.0)]]
    rows.append({"impl": "pandas", "status": "skipped"})
    assert load_target_ratios().ratio_lines(rows) == [
        "  fastmomentum vs torch-fused: 10.00x", "  fastmomentum vs baseline: 30.00x",
        "  fastmomentum vs sgd then ema: 4.00x", "  fastmomentum vs sgd+ema fused: 3.00x",
        "  fastmomentum.torch vs torch-fused: 5.00x", "  fastmomentum.torch vs baseline: 15.00x",
        "  fastmomentum.torch vs sgd then ema: 2.00x",
        "  fastmomentum.torch vs sgd+ema fused: 1.50x",
        "  sgd+ema fused vs sgd then ema: 1.33x"]


def test_target_ratios_script_runs_every_ewm_group(tmp_path):
    from fastmomentum.benchcases.ewm import ewm_cases
    json_path = tmp_path / "ratios.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "target_ratios.py"), "--quick", "--only",
         "ewm", "--rounds", "3", "--json", str(json_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    module = load_target_ratios()
    cases = {case.group: case for case in ewm_cases(quick=True)}
    measured_groups = json.loads(json_path.read_text())
    assert list(measured_groups) == list(cases)
    # the quick groups are too small for the fresh-array floor
    assert all(c.size < module.PAGE_FLOOR_MIN for c in cases.values())
    assert not any(module.PAGE_FLOOR in line for line in lines)
    for group, rows in measured_groups.items():
        # each group's printed ratios, recomputed from its medians: slower over faster, for
        # every fastmomentum implementation against every other one (ewm_mean: ours and ours
        # out= against baseline, pandas and scipy-lfilter; the family also against numbagg)
        start = lines.index(group)
        printed = {}
        for line in lines[start + 1:]:
            if not line.startswith("  "):
                break
            if " vs " in line:
                pair, ratio = line.strip().rsplit(": ", 1)
                printed[tuple(pair.split(" vs "))] = float(ratio.rstrip("x"))
        # (a peer whose package is missing, e.g. numbagg without the peers extra, is skipped)
        medians = {r["impl"]: r["median_s"] for r in rows if "median_s" in r}
        ours = [impl for impl in medians if impl.startswith("fastmomentum")]
        expected = {(fast, slow): medians[slow] / medians[fast]
                    for fast in ours for slow in medians if slow not in ours}
        assert ours and expected
        assert set(printed) == set(expected)
        for pair, ratio in expected.items():
            assert printed[pair] == pytest.approx(ratio, abs=0.0051), pair


def test_target_ratios_page_floor_case_touches_a_new_array_of_the_group_size():
    from fastmomentum.benchcases.ewm import ewm_cases
    module = load_target_ratios()
    lead = ewm_cases(quick=True)[0]
    floor = module.page_floor_case(lead)
    assert (floor.impl, floor.kernel, floor.params, floor.group) == (
        module.PAGE_FLOOR, lead.kernel, lead.params, lead.group)
    assert floor.bytes_moved == 8 * lead.size and floor.skip is None
    assert floor.make()() is None   # runs: np.empty(size) with one store per page


def test_one_thread_header_is_singular(capsys):
    status, out, _ = run_cli(capsys, "--quick", "--sizes", "16", "--only", "ema_update",
                             "--threads", "1", "--no-plot")
    assert status == 0
    assert "1 thread)" in out and "1 threads" not in out


def test_main_job_writes_its_default_plot_and_says_where(tmp_path, capsys):
    status, out, _ = run_cli(capsys, "--quick", "--sizes", "16", "--only", "ema_update")
    assert status == 0
    png = tmp_path / bench_cli_module().DEFAULT_PLOT
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote the plot: {bench_cli_module().DEFAULT_PLOT}" in out
    assert out.rstrip().splitlines()[-1].startswith("verdict: machine ")


def bench_cli_module():
    from fastmomentum.bench import cli
    return cli


def test_contention_times_one_and_n_threads_under_a_busy_process(tmp_path, capsys):
    import os
    json_path = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "--quick", "--sizes", "16", "--only", "ema_update",
                             "--threads", "2", "--contention", "--no-plot",
                             "--json", str(json_path))
    assert status == 0
    report = json.loads(json_path.read_text())
    rows = {r["impl"]: r for r in measured(report)}
    assert set(rows) == EMA_IMPLS | {"fastmomentum 1 thread"}
    assert rows["fastmomentum 1 thread"]["threads"] == 1
    assert rows["fastmomentum"]["threads"] is None    # the report's count: 2
    assert rows["fastmomentum"]["vs_1_thread"] == pytest.approx(
        rows["fastmomentum 1 thread"]["median_s"] / rows["fastmomentum"]["median_s"])
    busy = report["contention"]
    assert busy["wall_s"] > 0 and report["options"]["contention"] is True
    with pytest.raises(ProcessLookupError):
        os.kill(busy["pid"], 0)   # the busy process is gone with the run
    assert "fastmomentum on 2 threads over 1 thread under load" in out
    assert "verdict: machine busy by --contention" in out


def test_contention_script_runs_and_derives_its_ratios():
    """benchmarks/contention.py (the thread-count A/B behind docs/internals.md's figures)
    runs against the installed package; each ratio it prints is its own medians' ratio."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "contention.py"),
                           "--quiet", "--sizes", "16", "65536", "--rounds", "3",
                           "--only", "momentum_step", "ema_update"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "Nt/1t=" in line]
    assert [r.split()[:2] for r in rows] == [["momentum_step", "16"], ["momentum_step", "65536"],
                                             ["ema_update", "16"], ["ema_update", "65536"]]
    for row in rows:
        many, one, ratio = (float(x) for x in re.findall(r"=\s*([0-9.]+)", row))
        # times are printed to 0.01 us and ratios to 0.01: the ratio lies within the
        # range the rounded times allow
        low, high = (many - 0.005) / (one + 0.005), (many + 0.005) / (one - 0.005)
        assert low - 0.005 <= ratio <= high + 0.005
