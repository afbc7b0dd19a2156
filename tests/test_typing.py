"""The stubs as a user's type checker sees them: real types revealed, wrong keywords and
wrong argument types flagged (mypy on a user script, from outside the source tree)."""
import pytest

mypy_api = pytest.importorskip("mypy.api")   # in the test extra: runs in CI

SCRIPT = """
import numpy as np
import fastmomentum as fm
from fastmomentum import baseline

p = np.zeros(4, np.float32)
g = np.ones(4, np.float32)
reveal_type(fm.momentum_step(p, g, g.copy(), lr=0.1, momentum=0.9))
reveal_type(fm.ema_update(p, g, 0.9))
reveal_type(fm.ewm_mean(np.zeros(3), alpha=0.1))
reveal_type(fm.ewm_mean(p, alpha=0.1))
reveal_type(baseline.ewm_mean([1.0, 2.0], span=3))
reveal_type(fm.SGD([p], lr=0.1, momentum=0.9).momentum_buffers)
reveal_type(fm.EMA([p]).averages)
reveal_type(fm.get_num_threads())
reveal_type(fm.BUILD_TARGET)
fm.ewm_mean(p, alpah=0.1)
fm.momentum_step(p, g, g, lr="fast")
fm.momentum_step(p, g, g, 0.1)
fm.SGD([p], lr="fast")
"""


def line_of(text):
    """The line number of the script's line that starts with ``text``."""
    (n,) = [i for i, line in enumerate(SCRIPT.splitlines(), 1) if line.startswith(text)]
    return n


@pytest.fixture(scope="module")
def mypy_lines(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    script = folder / "user.py"
    script.write_text(SCRIPT)
    out, err, status = mypy_api.run([str(script), "--no-incremental", "--no-error-summary",
                                     "--hide-error-context", "--no-pretty"])
    assert status == 1, err   # the four bad calls
    return [line.split(":", 2)[1:] for line in out.splitlines()
            if line.split(":", 1)[0].endswith("user.py")]


def test_revealed_types(mypy_lines):
    revealed = [text.split('Revealed type is "', 1)[1].rstrip('"')
                for _, text in mypy_lines if "Revealed type" in text]
    assert len(revealed) == SCRIPT.count("reveal_type(")
    f32 = "numpy.floating[numpy._typing._nbit_base._32Bit]"
    assert revealed[0] == "None"
    assert revealed[1].endswith(f"numpy.dtype[{f32}]]")
    assert revealed[2].endswith("numpy.dtype[numpy.float64]]")
    assert revealed[3].endswith(f"numpy.dtype[{f32}]]")
    assert revealed[4].endswith("numpy.dtype[numpy.float64]]")
    f16 = "numpy.floating[numpy._typing._nbit_base._16Bit]"
    either = f"numpy.dtype[{f32} | numpy.float64 | {f16}]]]"   # FloatArray (and float16)
    assert revealed[5].endswith(either + " | None") and "list[numpy.ndarray[" in revealed[5]
    assert revealed[6].endswith(either) and "list[numpy.ndarray[" in revealed[6]
    assert revealed[7] in ("int", "builtins.int")
    assert revealed[8] == "Literal['avx2'] | Literal['portable']"


def test_wrong_keywords_and_types_are_flagged(mypy_lines):
    errors = {}
    for n, text in mypy_lines:
        if " error: " in text:
            errors.setdefault(int(n), []).append(text)
    bad = {line_of(call): expected for call, expected in [
        ("fm.ewm_mean(p, alpah=", 'Unexpected keyword argument "alpah"'),
        ('fm.momentum_step(p, g, g, lr="fast")',
         'Argument "lr" to "momentum_step" has incompatible type "str"'),
        ("fm.momentum_step(p, g, g, 0.1)", "Too many positional arguments"),
        ('fm.SGD([p], lr="fast")', 'Argument "lr" to "SGD" has incompatible type "str"')]}
    assert set(errors) == set(bad), mypy_lines
    for n, expected in bad.items():
        assert any(expected in text for text in errors[n]), (expected, errors[n])


@pytest.mark.parametrize("name", ["momentum_step", "ema_update", "ewm_mean"])
def test_baseline_has_the_kernels_signatures(name):
    """The baseline's stub re-exports the kernels' stubs (which stubtest checks against the
    compiled functions): that is right only while the runtime signatures agree."""
    import inspect

    import fastmomentum
    from fastmomentum import baseline
    assert inspect.signature(getattr(baseline, name)) == inspect.signature(
        getattr(fastmomentum, name))
