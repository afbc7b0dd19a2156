"""The state_step benchmark cases (fewer-byte momentum, split bf16 master weights): what they
measure and how the report shows them. No assertion is about speed."""
import json
import statistics

import pytest

from fastmomentum import bench
import numpy as np

from fastmomentum.bench.run import STREAM_MIN_SIZE as REPORT_STREAM_MIN_SIZE
from fastmomentum.benchcases.state import QUICK_SIZES, SIZES, STREAM_MIN_SIZE, state_cases

BYTES_PER_ELEMENT = {
    ("bf16 momentum", "fastmomentum"): 16, ("bf16 momentum", "fastmomentum.torch"): 16,
    ("bf16 momentum", "baseline"): 16, ("bf16 momentum", "fastmomentum float32 momentum"): 20,
    ("bf16 momentum", "torch-forloop"): 20, ("bf16 momentum", "torch-fused"): 20,
    ("split bf16", "fastmomentum.torch"): 14, ("split bf16", "torch-forloop"): 20,
    ("split bf16", "torch-fused"): 20, ("split bf16", "torch-forloop bf16 params"): 10,
    # 16-bit params, grads and momentum: read 3 x 2 bytes, write 2 x 2
    **{(state, impl): 10 for state in ("bf16 params", "f16 params")
       for impl in ("fastmomentum", "fastmomentum.SGD", "fastmomentum.torch", "torch-forloop",
                    "torch-fused")},
}
#: the reference stream loop moving the same 10 bytes, in the bfloat16 groups from 64k on
STREAM = {("bf16 params", "C stream loop"): 10}


def test_cases_and_their_bytes():
    cases = state_cases(quick=True)
    got = {(c.params["state"], c.impl, c.size): c.bytes_moved for c in cases}
    expected = {(state, impl, n): per * n for (state, impl), per in BYTES_PER_ELEMENT.items()
                for n in QUICK_SIZES}
    expected.update({(state, impl, n): per * n for (state, impl), per in STREAM.items()
                     for n in QUICK_SIZES if n >= STREAM_MIN_SIZE})
    assert got == expected
    assert QUICK_SIZES[-1] >= STREAM_MIN_SIZE > QUICK_SIZES[0]  # both kinds of group exist
    assert all(c.skip is None for c in cases)  # torch and ml_dtypes are test requirements


@pytest.mark.parametrize("impl", ["fastmomentum", "fastmomentum.torch"])
def test_bf16_momentum_cases_step_with_bf16_state(impl):
    case = next(c for c in state_cases(quick=True) if c.impl == impl and c.size == 16
                and c.params["state"] == "bf16 momentum")
    step = case.make()
    owner = getattr(step, "__self__", None)  # a torch optimizer's bound step
    step()
    if owner is not None:
        buffers = [s["momentum_buffer"] for s in owner.state.values()]
        assert [str(b.dtype) for b in buffers] == ["torch.bfloat16"]
        assert owner.kernel_params == 1


def test_report_rows_say_bytes_per_element(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    json_path = tmp_path / "r.json"
    status = bench.main(["--quick", "--only", "state_step", "--json", str(json_path),
                         "--no-plot"])
    out, _ = capsys.readouterr()
    assert status == 0
    rows = [r for r in json.loads(json_path.read_text())["rows"] if r["status"] == "ok"]
    assert {(r["params"]["state"], r["impl"]) for r in rows} == set(BYTES_PER_ELEMENT) | set(STREAM)
    for row in rows:
        per = {**BYTES_PER_ELEMENT, **STREAM}[(row["params"]["state"], row["impl"])]
        assert row["bytes_moved"] == per * row["size"]
        assert row["gbps"] == pytest.approx(row["bytes_moved"] / row["median_s"] / 1e9)
        assert f"{row['gbps']:.1f} ({per} B/elt)" in out


def test_full_sizes_and_stream_threshold():
    assert SIZES == (16, 1 << 24)
    assert STREAM_MIN_SIZE == REPORT_STREAM_MIN_SIZE


@pytest.mark.parametrize("state, dtype", [("bf16 params", "bfloat16"), ("f16 params", "float16")])
@pytest.mark.parametrize("impl", ["fastmomentum", "fastmomentum.SGD", "fastmomentum.torch",
                                  "torch-forloop", "torch-fused"])
def test_half_param_cases_step_on_16_bit_buffers(state, dtype, impl):
    case = next(c for c in state_cases(quick=True) if c.impl == impl and c.size == 16
                and c.params["state"] == state)
    assert case.dtype == dtype and not case.reference
    step = case.make()
    step()
    owner = getattr(step, "__self__", None)  # a torch optimizer's bound step
    if owner is not None:
        (param,) = owner.state
        assert str(param.dtype) == f"torch.{dtype}"
        assert str(owner.state[param]["momentum_buffer"].dtype) == f"torch.{dtype}"
        if impl == "fastmomentum.torch":
            assert owner.kernel_params == 1   # the 16-bit kernels ran, not torch's fallback


def test_bf16_stream_row_is_the_reference_on_bf16_buffers():
    (case,) = [c for c in state_cases(quick=True) if c.impl == "C stream loop"]
    assert (case.size, case.dtype, case.reference) == (QUICK_SIZES[-1], "bfloat16", True)
    step = case.make()
    cells = dict(zip(step.__code__.co_freevars, (c.cell_contents for c in step.__closure__)))
    p, g, v = cells["p"], cells["g"], cells["v"]
    assert [str(a.dtype) for a in (p, g, v)] == ["bfloat16"] * 3
    # the loop's closed form (scale 0.5) in float32, each stored value rounded once
    v32 = 0.5 * v.astype(np.float32) + g.astype(np.float32)
    want_v = v32.astype(v.dtype)
    want_p = (p.astype(np.float32) - 0.5 * v32).astype(p.dtype)
    step()
    np.testing.assert_array_equal(v.view(np.uint16), want_v.view(np.uint16))
    np.testing.assert_array_equal(p.view(np.uint16), want_p.view(np.uint16))


def test_skipped_bf16_stream_row_leaves_the_summary_to_the_timed_ones(tmp_path, capsys,
                                                                        monkeypatch):
    """Without ml_dtypes the bf16 C stream loop (a reference row) is skipped: the report
    is still written, its stream loop summary holding the timed float32 loop only, and the
    skip line names the row and why (the summary read its missing gbps: KeyError)."""
    from fastmomentum.benchcases import state as state_module
    real = state_module.optional_import
    monkeypatch.setattr(state_module, "optional_import",
                        lambda name: None if name == "ml_dtypes" else real(name))
    monkeypatch.chdir(tmp_path)
    json_path = tmp_path / "r.json"
    status = bench.main(["--quick", "--only", "state_step,momentum_step", "--sizes", "64k",
                         "--json", str(json_path), "--no-plot"])
    out, _ = capsys.readouterr()
    assert status == 0
    report = json.loads(json_path.read_text())
    refs = [r for r in report["rows"] if r["reference"]]
    (skipped,) = [r for r in refs if r["status"] == "skipped"]
    timed = [r for r in refs if r["status"] == "ok"]   # one per momentum_step group
    assert (skipped["impl"], skipped["dtype"], skipped["skip_reason"]) == (
        "C stream loop", "bfloat16", "ml_dtypes not installed")
    assert timed and {(r["kernel"], r["dtype"], r["size"]) for r in timed} == {
        ("stream loop", "float32", 1 << 16)}
    gbps = statistics.median(r["gbps"] for r in timed)
    assert report["stream_loop"] == {"float32": {"size": 1 << 16, "gbps": gbps}}
    assert f"stream loop float32: {gbps:.1f} GB/s at 64k elements" in out
    assert "stream loop bfloat16" not in out
    (line,) = [s for s in out.splitlines() if s.startswith("skipped (ml_dtypes")]
    assert "state_step/C stream loop" in line.split(": ", 1)[1].split(", ")
