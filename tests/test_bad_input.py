"""Every bad input raises a clear error naming the argument, in the kernels and the baseline
alike, and leaves every buffer byte-identical."""
import numpy as np
import pytest

from fastmomentum import baseline, ema_update, momentum_step
from _grid import snapshot

IMPLS = {"fastmomentum": (momentum_step, ema_update),
         "baseline": (baseline.momentum_step, baseline.ema_update)}


def arrays(n=6, dtype=np.float32):
    rng = np.random.default_rng(7)
    return [rng.standard_normal(n).astype(dtype) for _ in range(3)]


def readonly(a):
    a.flags.writeable = False
    return a


# (description, build(p, g, v) -> (args, kwargs), error type, words the message must contain)
OK = dict(lr=0.1, momentum=0.9)
MOMENTUM_CASES = [
    ("negative lr", lambda p, g, v: ((p, g, v), dict(lr=-0.1)), ValueError,
     ["Invalid learning rate: -0.1", "`lr`"]),
    ("nan lr", lambda p, g, v: ((p, g, v), dict(lr=float("nan"))), ValueError,
     ["Invalid learning rate: nan"]),
    ("inf lr", lambda p, g, v: ((p, g, v), dict(lr=float("inf"))), ValueError,
     ["Invalid learning rate: inf"]),
    ("string lr", lambda p, g, v: ((p, g, v), dict(lr="0.1")), TypeError, ["`lr`", "str"]),
    ("negative momentum", lambda p, g, v: ((p, g, v), dict(lr=0.1, momentum=-0.5)), ValueError,
     ["Invalid momentum value: -0.5"]),
    ("negative weight decay", lambda p, g, v: ((p, g, v), dict(OK, weight_decay=-1e-4)),
     ValueError, ["Invalid weight_decay value: -0.0001"]),
    ("nan dampening", lambda p, g, v: ((p, g, v), dict(OK, dampening=float("nan"))), ValueError,
     ["Invalid dampening value: nan"]),
    ("nesterov without momentum", lambda p, g, v: ((p, g, v), dict(lr=0.1, nesterov=True)),
     ValueError, ["Nesterov momentum requires a momentum and zero dampening"]),
    ("nesterov with dampening",
     lambda p, g, v: ((p, g, v), dict(OK, nesterov=True, dampening=0.1)), ValueError,
     ["Nesterov momentum requires a momentum and zero dampening"]),
    ("param is a list", lambda p, g, v: ((list(p), g, v), OK), TypeError,
     ["`param`", "list"]),
    ("param is int", lambda p, g, v: ((p.astype(np.int32), g, v), OK), TypeError,
     ["`param`", "int32"]),
    ("param is float16", lambda p, g, v: ((p.astype(np.float16), g, v), OK), TypeError,
     ["`param`", "float16"]),
    ("param read-only", lambda p, g, v: ((readonly(p), g, v), OK), TypeError,
     ["`param`", "writeable", "read-only"]),
    ("param not contiguous", lambda p, g, v: ((p[::2], g[:3], v[:3]), OK), TypeError,
     ["`param`", "C-contiguous", "not C-contiguous"]),
    ("param byte-swapped", lambda p, g, v: ((p.view(p.dtype.newbyteorder()), g, v), OK),
     TypeError, ["`param`", "byte order"]),
    ("grad dtype", lambda p, g, v: ((p, g.view(np.int32), v), OK), TypeError,
     ["`grad`", "float32 array like `param`", "int32"]),
    ("grad float64", lambda p, g, v: ((p, g.astype(np.float64), v), OK), TypeError,
     ["`grad`", "dtype=float64"]),
    ("grad shape", lambda p, g, v: ((p, g.reshape(2, 3), v), OK), ValueError,
     ["`grad`", "shape of `param` (6,)", "(2, 3)"]),
    ("grad not contiguous", lambda p, g, v: ((p[:3], g[::2], v[:3]), OK), TypeError,
     ["`grad`", "C-contiguous"]),
    ("grad is param", lambda p, g, v: ((p, p, v), OK), ValueError,
     ["`grad` must not share memory with `param`"]),
    ("velocity None with momentum", lambda p, g, v: ((p, g, None), OK), TypeError,
     ["`velocity`", "None"]),
    ("velocity dtype", lambda p, g, v: ((p, g, v.astype(np.float64)), OK), TypeError,
     ["`velocity` must be a writeable C-contiguous float32 array like `param`",
      "dtype=float64, shape=(6,)"]),
    ("velocity read-only", lambda p, g, v: ((p, g, readonly(v)), OK), TypeError,
     ["`velocity`", "read-only"]),
    ("velocity shape", lambda p, g, v: ((p, g, v[:5]), OK), ValueError,
     ["`velocity`", "(5,)"]),
    ("velocity overlaps param", lambda p, g, v: ((p[:3], g[:3], p[2:5]), OK), ValueError,
     ["`velocity` must not share memory with `param`"]),
    ("velocity is grad", lambda p, g, v: ((p, g, g), OK), ValueError,
     ["`velocity` must not share memory with `grad`"]),
]

EMA_CASES = [
    ("decay above 1", lambda a, x: (a, x, 1.5), ValueError, ["Invalid decay: 1.5", "[0, 1]"]),
    ("negative decay", lambda a, x: (a, x, -0.1), ValueError, ["Invalid decay: -0.1"]),
    ("nan decay", lambda a, x: (a, x, float("nan")), ValueError, ["Invalid decay: nan"]),
    ("decay None", lambda a, x: (a, x, None), TypeError, ["`decay`", "NoneType"]),
    ("average read-only", lambda a, x: (readonly(a), x, 0.9), TypeError,
     ["`average`", "read-only"]),
    ("average is a tuple", lambda a, x: (tuple(a), x, 0.9), TypeError, ["`average`", "tuple"]),
    ("value dtype", lambda a, x: (a, x.astype(np.float64), 0.9), TypeError,
     ["`value`", "float32 array like `average`", "float64"]),
    ("value scalar", lambda a, x: (a, 1.0, 0.9), TypeError, ["`value`", "float"]),
    ("value shape", lambda a, x: (a, x[:4], 0.9), ValueError, ["`value`", "(4,)"]),
    ("value is average", lambda a, x: (a, a, 0.9), ValueError,
     ["`value` must not share memory with `average`"]),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", MOMENTUM_CASES, ids=[c[0] for c in MOMENTUM_CASES])
def test_momentum_step_refuses(impl, case):
    _, build, error, words = case
    p, g, v = arrays()
    before = snapshot(p, g, v)
    args, kwargs = build(p, g, v)
    with pytest.raises(error) as info:
        IMPLS[impl][0](*args, **kwargs)
    message = str(info.value)
    assert message.startswith("momentum_step: ")
    for w in words:
        assert w in message
    assert snapshot(p, g, v) == before


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", EMA_CASES, ids=[c[0] for c in EMA_CASES])
def test_ema_update_refuses(impl, case):
    _, build, error, words = case
    a, x, _ = arrays()
    before = snapshot(a, x)
    with pytest.raises(error) as info:
        IMPLS[impl][1](*build(a, x))
    message = str(info.value)
    assert message.startswith("ema_update: ")
    for w in words:
        assert w in message
    assert snapshot(a, x) == before


@pytest.mark.parametrize("case", MOMENTUM_CASES, ids=[c[0] for c in MOMENTUM_CASES])
def test_kernel_and_baseline_say_the_same(case):
    messages = []
    for impl in IMPLS.values():
        p, g, v = arrays()
        args, kwargs = case[1](p, g, v)
        with pytest.raises(case[2]) as info:
            impl[0](*args, **kwargs)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("impl", IMPLS)
def test_velocity_is_ignored_without_momentum(impl):
    p, g, _ = arrays()
    expected = p - np.float32(0.1) * g
    IMPLS[impl][0](p, g, "not even an array", lr=0.1)  # momentum == 0: velocity unused
    np.testing.assert_allclose(p, expected, rtol=1e-6)
