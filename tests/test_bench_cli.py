"""The benchmark report CLI (`python -m fastmomentum bench`): rows, JSON, plot, missing peers.

Runs the real CLI in --quick mode on tiny sizes; no assertion is about speed, only about what
the report contains and how it is derived from its own measurements."""
import json
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
        assert "roofline_pct" not in row  # these sizes are below the roofline's

    assert report["command"].startswith("python -m fastmomentum bench --quick --sizes 16,64")
    machine = report["machine"]
    assert machine["build_target"] == fastmomentum.BUILD_TARGET
    assert machine["threads"] == fastmomentum.get_num_threads()
    assert machine["cpu"] and machine["cores"] >= 1
    assert report["versions"]["numpy"] == np.__version__
    assert report["versions"]["torch"] == torch.__version__
    assert [r["kernel"] for r in report["rows"] if r["status"] == "skipped"] == []

    # the terminal table and the Markdown table show the measured rows
    assert "vs best other" in out and "% roofline" in out
    assert out.count("torch-fused") >= 8
    md_rows = [line for line in md_path.read_text().splitlines()
               if line.startswith("| ") and "| fastmomentum |" in line]
    assert len(md_rows) == sum(r["impl"] == "fastmomentum" for r in rows) == 12

    assert png_path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(png_path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300


def test_large_groups_are_timed_with_the_roofline(tmp_path, capsys):
    n = bench.ROOFLINE_MIN_SIZE
    json_path = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "--quick", "--sizes", f"16,{n}", "--only", "ema_update",
                             "--json", str(json_path))
    assert status == 0
    report = json.loads(json_path.read_text())
    references = [r for r in report["rows"] if r["reference"]]
    assert [(r["kernel"], r["size"], r["dtype"], r["group"]) for r in references] == [
        ("roofline", n, "float32", f"ema_update-float32-n{n}")]
    roofline = references[0]
    assert roofline["bytes_moved"] == 5 * n * 4  # momentum_step's traffic
    assert report["roofline"] == {"float32": {"size": n, "gbps": roofline["gbps"]}}
    for row in measured(report):
        if row["size"] == n:
            assert row["roofline_pct"] == pytest.approx(100 * row["gbps"] / roofline["gbps"])
        else:
            assert "roofline_pct" not in row
    assert "roofline: C stream loop" in out and "roofline float32:" in out


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
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {r["impl"] for r in json.loads(json_path.read_text())["rows"]} == EMA_IMPLS


def test_cases_of_other_providers_are_measured_and_filtered(tmp_path, capsys, monkeypatch):
    """A provider module added later (ewm, models) plugs in through PROVIDERS: called with
    ``quick``, its cases filtered by --dtype and --only, timed with the roofline when large."""
    from fastmomentum.benchcases import Case

    calls = []

    def make_sum(n, dtype):
        x = np.ones(n, dtype)
        return lambda: np.cumsum(x)

    def fake_ewm_cases(quick=False):
        calls.append(quick)
        n = bench.ROOFLINE_MIN_SIZE
        return [Case("ewm_mean", impl, n, dtype, make=lambda dtype=dtype: make_sum(n, dtype),
                     bytes_moved=2 * n * np.dtype(dtype).itemsize, params={"shape": "1-D"})
                for dtype in ("float32", "float64") for impl in ("fastmomentum", "baseline")]

    monkeypatch.setitem(bench.PROVIDERS, "ewm", (fake_ewm_cases, ("ewm_mean",)))
    json_path = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "--quick", "--only", "ewm_mean", "--dtype", "float64",
                             "--json", str(json_path))
    assert status == 0 and calls == [True]
    rows = json.loads(json_path.read_text())["rows"]
    assert [(r["kernel"], r["impl"], r["dtype"], r["params"]) for r in rows] == [
        ("ewm_mean", "fastmomentum", "float64", {"shape": "1-D"}),
        ("ewm_mean", "baseline", "float64", {"shape": "1-D"}),
        ("roofline", "C stream loop", "float64", {})]
    assert rows[0]["roofline_pct"] == pytest.approx(100 * rows[0]["gbps"] / rows[2]["gbps"])
    assert "ewm_mean 1-D" in out


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


def test_target_ratios_script_runs_every_ewm_group():
    from fastmomentum.benchcases.ewm import ewm_cases
    result = subprocess.run(
        [sys.executable, "benchmarks/target_ratios.py", "--quick", "--only", "ewm",
         "--rounds", "3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    module = load_target_ratios()
    listed = ewm_cases(quick=True)
    cases = {case.group: case for case in listed}
    assert set(cases) <= set(lines)
    # every fastmomentum implementation over every other one, per group (ewm_mean: ours and
    # ours out= over baseline, pandas and scipy-lfilter); the quick groups are too small for
    # the fresh-array floor
    ratios = [line for line in lines if " vs " in line]
    assert all(c.size < module.PAGE_FLOOR_MIN for c in cases.values())
    assert not any(module.PAGE_FLOOR in line for line in lines)
    ours = {g: sum(c.impl.startswith("fastmomentum") for c in listed if c.group == g)
            for g in cases}
    total = {g: sum(c.group == g for c in listed) for g in cases}
    assert len(ratios) == sum(ours[g] * (total[g] - ours[g]) for g in cases)
    assert ours["ewm_mean-series-adjust-float64-n100000"] == 2 and total[
        "ewm_mean-series-adjust-float64-n100000"] == 5
    assert all(float(line.rsplit(": ", 1)[1].rstrip("x")) > 0 for line in ratios)


def test_target_ratios_page_floor_case_touches_a_new_array_of_the_group_size():
    from fastmomentum.benchcases.ewm import ewm_cases
    module = load_target_ratios()
    lead = ewm_cases(quick=True)[0]
    floor = module.page_floor_case(lead)
    assert (floor.impl, floor.kernel, floor.params, floor.group) == (
        module.PAGE_FLOOR, lead.kernel, lead.params, lead.group)
    assert floor.bytes_moved == 8 * lead.size and floor.skip is None
    assert floor.make()() is None   # runs: np.empty(size) with one store per page
