"""The compiled API in one namespace, for fastmomentum's own Python modules.

``kernels.<name>`` is the function or class of that name from the compiled-once modules
(the multi-tensor driver and NumPy entry points, ewm_mean, threads, the torch bridge, the
reference loop); they run the numeric cores fastmomentum._target chose for this CPU.
"""
import types

from . import _target  # noqa: F401  (first: the CPU check, before any target's module)
from . import _ewm, _multi, _reference, _spans, _state, _threads, _torch_multi

kernels = types.SimpleNamespace(
    BUILD_TARGET=_target.BUILD_TARGET,
    HAS_OPENMP=_threads.HAS_OPENMP,
    set_num_threads=_threads.set_num_threads,
    get_num_threads=_threads.get_num_threads,
    _PARALLEL_MIN_SIZE=_threads._PARALLEL_MIN_SIZE,
    _NOGIL_MIN_SIZE=_threads._NOGIL_MIN_SIZE,
    _threads_for_size=_threads._threads_for_size,
    momentum_step=_multi.momentum_step,
    ema_update=_multi.ema_update,
    multi_momentum_step=_multi.multi_momentum_step,
    multi_ema_update=_multi.multi_ema_update,
    WrittenSpans=_spans.WrittenSpans,
    ewm_mean=_ewm.ewm_mean,
    roofline_stream=_reference.roofline_stream,
    TORCH_SHIM_FUNCTIONS=_torch_multi.TORCH_SHIM_FUNCTIONS,
    torch_bind=_torch_multi.torch_bind,
    torch_bind_halves=_torch_multi.torch_bind_halves,   # mp-dtypes
    torch_impl_address=_torch_multi.torch_impl_address,
    TorchGroupCache=_torch_multi.TorchGroupCache,
    INFERENCE_TENSOR_ERROR=_torch_multi.INFERENCE_TENSOR_ERROR,
    torch_sgd_group_plan=_torch_multi.torch_sgd_group_plan,
    torch_sgd_run=_torch_multi.torch_sgd_run,
    torch_sgd_clip_run=_torch_multi.torch_sgd_clip_run,
    torch_grads_norm=_torch_multi.torch_grads_norm,
    clip_coefficient=_torch_multi.clip_coefficient_of,
    # mp-state: fewer-byte momentum, split-bfloat16 master weights
    multi_state_step=_state.multi_state_step,
    torch_state_steps=_state.torch_state_steps,
    torch_flat_scan=_torch_multi.torch_flat_scan,  # flat
    torch_bind_impl_grad=_torch_multi.torch_bind_impl_grad,
    torch_bind_bump=_torch_multi.torch_bind_bump,
    VersionBumps=_torch_multi.VersionBumps,
    FlatStateMarks=_torch_multi.FlatStateMarks,
    FlatSteady=_torch_multi.FlatSteady,
    torch_flat_steady=_torch_multi.torch_flat_steady,
)
