"""fastmomentum.FlatParams: named views into one buffer, stepped by fastmomentum.SGD in one
work item, bit for bit as torch.optim.SGD on the separate tensors."""
import types

import numpy as np
import pytest
import torch

import fastmomentum as fm
from fastmomentum import optim

SHAPES = {"w1": (16, 8), "b1": 16, "w2": (3, 16), "b2": (3,), "scale": ()}


def test_views_share_one_buffer_in_order():
    rng = np.random.default_rng(0)
    init = rng.standard_normal((3, 16))
    flat = fm.FlatParams({**SHAPES, "w2": init}, dtype=np.float64)
    assert list(flat) == list(SHAPES) and len(flat) == 5 and "b1" in flat
    assert flat.buffer.size == 16 * 8 + 16 + 48 + 3 + 1 and flat.buffer.dtype == np.float64
    assert np.shares_memory(flat["w1"], flat.buffer) and flat["b1"].shape == (16,)
    assert np.array_equal(flat["w2"], init) and flat["scale"].shape == ()
    offset = 16 * 8 + 16
    assert np.array_equal(flat.buffer[offset:offset + 48], init.ravel())
    flat.grads["b2"][...] = 2.0
    assert np.array_equal(flat.grad_buffer[offset + 48:offset + 51], [2.0, 2.0, 2.0])
    flat.zero_grad()
    assert not flat.grad_buffer.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True,
                                                                weight_decay=0.01),
                                     dict(momentum=0.0, weight_decay=0.1)], ids=str)
def test_steps_equal_torch_per_tensor_in_one_work_item(options, dtype, monkeypatch):
    calls = []
    kernels = optim._kernels
    counting = types.SimpleNamespace(**vars(kernels))

    def multi_momentum_step(params, grads, *args, **kwargs):
        calls.append(len(params))
        return kernels.multi_momentum_step(params, grads, *args, **kwargs)
    counting.multi_momentum_step = multi_momentum_step
    monkeypatch.setattr(optim, "_kernels", counting)
    rng = np.random.default_rng(1)
    flat = fm.FlatParams({k: rng.standard_normal(np.shape(np.zeros(v)))
                          for k, v in SHAPES.items()}, dtype=dtype)
    tensors = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in flat.items()}
    opt = fm.SGD(flat, lr=0.05, **options)
    ref = torch.optim.SGD(tensors.values(), lr=0.05, **options)
    for _ in range(4):
        for name, g in flat.grads.items():
            g[...] = rng.standard_normal(g.shape)
            tensors[name].grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step()
        for name in flat:
            assert np.array_equal(flat[name], tensors[name].detach().numpy())
    assert calls == [1] * 4  # one array: the whole buffer
    if options["momentum"]:
        buffers = flat.view(opt.momentum_buffers[0])
        for name, p in tensors.items():
            assert np.array_equal(buffers[name], ref.state[p]["momentum_buffer"].numpy())


def test_bad_input():
    with pytest.raises(TypeError, match="FlatParams: `shapes` must be a dict"):
        fm.FlatParams([(3,)])
    with pytest.raises(TypeError, match="FlatParams: `dtype` must be float32 or float64; "
                                        "got int32"):
        fm.FlatParams({"w": 3}, dtype=np.int32)
    with pytest.raises(ValueError, match=r"FlatParams: `shapes\['w'\]` must be a shape"):
        fm.FlatParams({"w": (3, -1)})
    with pytest.raises(TypeError, match="the names in `shapes` must be str"):
        fm.FlatParams({1: 3})
    flat = fm.FlatParams({"w": 3})
    with pytest.raises(ValueError, match="FlatParams.view: `buffer` must be a C-contiguous "
                                         "1-D array of 3 elements"):
        flat.view(np.zeros(4))
    with pytest.raises(TypeError, match="SGD.step: `grads` must be a list of arrays"):
        fm.SGD([np.zeros(3)], lr=0.1).step()
