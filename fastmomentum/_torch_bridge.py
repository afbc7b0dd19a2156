"""The link between torch and fastmomentum's kernels, probed once when fastmomentum.torch
is imported.

The kernels read a Python tensor's ``at::Tensor`` straight from the object (it sits right
after the object header, torch/csrc/autograd/python_variable.h) and ask libtorch's stable C
shim (the extern "C" ``aoti_torch_*`` functions AOTInductor is built on) for its dtype,
device, sizes and data: two Python calls per tensor instead of about ten (see
src/torch/_torch_multi.pyx). This module looks those functions up, checks that layout on a few
probe tensors, and looks up, once, the few private torch names the fast path cannot do
without. Anything missing or different leaves :data:`FAST_PATH_REASON` saying what, and
every step to torch's own SGD (correct, not faster): it never breaks ``step()``.

``FASTMOMENTUM_TORCH_FAST_PATH=0`` turns the fast path off (e.g. to test the fallback).
"""
import ctypes
import glob
import os

import torch
from torch.optim import optimizer as _torch_optimizer

from ._dispatch import kernels as _kernels

#: The environment switch that turns the fast path off when set to 0.
FAST_PATH_ENV = "FASTMOMENTUM_TORCH_FAST_PATH"


def _private(owner, name):
    """``owner.name`` (a private torch name the fast path needs), or None."""
    return getattr(owner, name, None)


#: The private torch names the fast path uses, each for a reason nothing public serves:
#: bumping version counters after writing behind autograd's back (public
#: torch.autograd.graph.increment_version takes one tensor per Python call), and the
#: grad-mode and profiler switches torch.optim's own step wrapper uses.
PRIVATE = {
    "increment_version": _private(torch._C, "_increment_version"),
    "set_grad_enabled": _private(torch._C, "_set_grad_enabled"),
    "profiler_enabled": _private(getattr(torch._C, "_autograd", None), "_profiler_enabled"),
    "global_pre_hooks": _private(_torch_optimizer, "_global_optimizer_pre_hooks"),
    "global_post_hooks": _private(_torch_optimizer, "_global_optimizer_post_hooks"),
}


#: Whether every name of PRIVATE was found.
PRIVATE_FOUND = all(value is not None for value in PRIVATE.values())


def _words(tensor, count):
    return list((ctypes.c_uint64 * count).from_address(tensor._cdata))


def _key_set_offset():
    """Where a TensorImpl keeps its DispatchKeySet (a 64-bit word whose bits include the
    lazy negation and, by their absence, the inference-tensor keys), or -1. Found as the
    one word, among a TensorImpl's first 22, that differs by exactly one bit between
    ``z.imag`` and ``z.conj().imag`` (the Negative key) and also between an inference
    tensor and a normal one. The kernels compare it to notice ``p.data = ...`` changing a
    param's negation or inference bit (see TorchGroupCache); -1 makes them ask torch every
    step instead."""
    # 22 words: TensorImpl is 23 words on torch 2.13 (malloc_usable_size 184 bytes; its key
    # set is word 21), and a 24th word read the next heap chunk's header, which passed
    # both tests in 106 of 2000 probes (-1: the fast path's caching off, at random). Each
    # candidate must also pass on three fresh sets of tensors (no stray word passes all).
    count = 22

    def candidates():
        z = torch.zeros(3, dtype=torch.complex64)
        plain, negated = _words(z.imag, count), _words(z.conj().imag, count)
        with torch.inference_mode():
            inference = torch.zeros(3)
        normal = torch.zeros(3)
        return {i for i, (x, y) in enumerate(zip(plain, negated))
                if bin(x ^ y).count("1") == 1
                and _words(inference, count)[i] != _words(normal, count)[i]}

    found = sorted(candidates() & candidates() & candidates())
    return found[0] * 8 if len(found) == 1 else -1


def _bind_shim():
    """Bind the shim; returns None when bound, else why not."""
    if os.environ.get(FAST_PATH_ENV, "").strip() == "0":
        return f"turned off by {FAST_PATH_ENV}=0"
    if not PRIVATE_FOUND:
        missing = [name for name, value in PRIVATE.items() if value is None]
        return f"this torch lacks the private names {missing}"
    libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "*torch_cpu.*"))
    if not libs:
        return "libtorch_cpu not found next to torch"
    try:
        lib = ctypes.CDLL(libs[0])
        addresses = {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                     for name in _kernels.TORCH_SHIM_FUNCTIONS}
        codes = {}
        for name in ("dtype_float32", "dtype_float64", "device_type_cpu", "layout_strided"):
            fn = getattr(lib, "aoti_torch_" + name)
            fn.restype = ctypes.c_int32
            codes[name] = fn()
    except (OSError, AttributeError) as exc:
        return f"libtorch's stable C shim is incomplete here ({exc})"
    probes = [torch.zeros(3), torch.nn.Parameter(torch.zeros(2, 2)), torch.zeros(0)]
    if any(_kernels.torch_impl_address(t) != getattr(t, "_cdata", None) for t in probes):
        return "torch's Python tensor object does not hold its at::Tensor after the header"
    if any(hash(t) != id(t) for t in probes):
        return "torch.Tensor.__hash__ is not id()"
    _kernels.torch_bind(addresses, codes["dtype_float32"], codes["dtype_float64"],
                        codes["device_type_cpu"], codes["layout_strided"], torch.Tensor,
                        torch.nn.Parameter, torch.Tensor.is_neg, torch.Tensor.is_inference,
                        torch.is_inference_mode_enabled, PRIVATE["increment_version"],
                        _key_set_offset())
    _bind_halves(lib)
    return None


#: torch's vectorised loop's elements per step for 16-bit dtypes by its CPU capability
#: (0: DEFAULT, no vector loop: every element by the scalar code), measured with torch
#: 2.13 under ATEN_CPU_CAPABILITY=avx512/avx2/default on sizes 60-200 (32 on AVX512 too);
#: on other capabilities bfloat16/float16 params stay torch's.
TORCH_HALF_LANES = {"AVX2": 32, "AVX512": 32, "DEFAULT": 0}


def _bind_halves(lib):
    """bfloat16/float16 tensors on the fast path (mp-dtypes), when this CPU's torch loops
    are ones the kernels reproduce."""
    lanes = TORCH_HALF_LANES.get(torch.backends.cpu.get_cpu_capability())
    if lanes is None:
        return
    try:
        codes = []
        for name in ("dtype_bfloat16", "dtype_float16"):
            fn = getattr(lib, "aoti_torch_" + name)
            fn.restype = ctypes.c_int32
            codes.append(fn())
    except AttributeError:
        return
    _kernels.torch_bind_halves(codes[0], codes[1], lanes, torch.get_num_threads)


#: None when dense CPU float32/float64 params go through fastmomentum's kernels, else why
#: they do not (every step is then torch's own).
FAST_PATH_REASON = _bind_shim()
