"""The state_step benchmark cases (fewer-byte momentum, split bf16 master weights): what they
measure and how the report shows them. No assertion is about speed."""
import json

import pytest

from fastmomentum import bench
from fastmomentum.benchcases.state import QUICK_SIZES, state_cases

BYTES_PER_ELEMENT = {
    ("bf16 momentum", "fastmomentum"): 16, ("bf16 momentum", "fastmomentum.torch"): 16,
    ("bf16 momentum", "baseline"): 16, ("bf16 momentum", "fastmomentum float32 momentum"): 20,
    ("bf16 momentum", "torch-forloop"): 20, ("bf16 momentum", "torch-fused"): 20,
    ("split bf16", "fastmomentum.torch"): 14, ("split bf16", "torch-forloop"): 20,
    ("split bf16", "torch-fused"): 20, ("split bf16", "torch-forloop bf16 params"): 10,
}


def test_cases_and_their_bytes():
    cases = state_cases(quick=True)
    got = {(c.params["state"], c.impl, c.size): c.bytes_moved for c in cases}
    assert got == {(state, impl, n): per * n for (state, impl), per in BYTES_PER_ELEMENT.items()
                   for n in QUICK_SIZES}
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
    assert {(r["params"]["state"], r["impl"]) for r in rows} == set(BYTES_PER_ELEMENT)
    for row in rows:
        per = BYTES_PER_ELEMENT[(row["params"]["state"], row["impl"])]
        assert row["bytes_moved"] == per * row["size"]
        assert row["gbps"] == pytest.approx(row["bytes_moved"] / row["median_s"] / 1e9)
        assert f"{row['gbps']:.1f} ({per} B/elt)" in out
