# torch.Tensor access for fastmomentum.torch with two Python calls per tensor (``p.grad``,
# ``grad.is_neg()``) instead of about ten.
#
# Reading a tensor's metadata from Python costs 50-100 ns per attribute. Instead we call
# PyTorch's stable C shim (the extern "C"
# aoti_torch_* functions of libtorch that AOTInductor and libtorch-stable extensions are
# built on): fastmomentum/torch.py looks their addresses up in the loaded libtorch and hands
# them to torch_bind(), so this module neither links against nor needs torch. A shim
# handle is an ``at::Tensor*``; the Python tensor object holds its ``at::Tensor`` right
# after the object header (THPVariable, torch/csrc/autograd/python_variable.h), which
# torch.py verifies against ``Tensor._cdata`` before enabling this path. Tensors that are
# not plain dense CPU float32/float64 C-contiguous torch.Tensor/Parameter objects (or
# bfloat16/float16 ones, once torch_bind_halves ran) are reported back and stepped by torch
# itself.
cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject, PyObject_TypeCheck, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcmp

from fastmomentum._multi cimport (WorkList, account, account_norm, all_f32, any_half,
                                  clip_coefficient,
                                  concurrent_step, finish_norm, items_norm, set_scalars,
                                  sgd_item)
from fastmomentum._multi cimport (DTYPE_BF16, DTYPE_F16, DTYPE_F32, DTYPE_F64, StepDtype,
                                  retype_item, set_rounding)
from fm_core_table cimport ROUND_ONCE, ROUND_TORCH, SGD_F32, SGD_F64
from fm_checks cimport fm_bfloat16_typenum, lookup_bfloat16
from fastmomentum._spans cimport WrittenSpans, order_free, pass_ns, record_grads
from fastmomentum._threads cimport threads_for
from fm_checks cimport bytes_overlap, finite_in, import_checks, usable
from fm_core_table cimport WorkItem
from fm_norms cimport larger
from fm_memory cimport grow
from fm_torch_state cimport (PyDict_Check, PyDict_GetItem, fm_dict_get_known_hash,
                             momentum_buffer, store_momentum_buffer)

from fastmomentum import _validation

cnp.import_array()
import_checks()

ctypedef void* TensorHandle
ctypedef int32_t (*shim_data_ptr_fn)(TensorHandle, void**) noexcept nogil
ctypedef int32_t (*shim_int32_fn)(TensorHandle, int32_t*) noexcept nogil
ctypedef int32_t (*shim_int64_fn)(TensorHandle, int64_t*) noexcept nogil
ctypedef int32_t (*shim_sizes_fn)(TensorHandle, int64_t**) noexcept nogil
ctypedef int32_t (*shim_bool_fn)(TensorHandle, uint8_t*) noexcept nogil  # C bool: one byte

ctypedef struct TorchShim:
    shim_data_ptr_fn get_data_ptr
    shim_int32_fn get_dtype, get_device_type, get_layout
    shim_int64_fn get_dim, get_numel
    shim_sizes_fn get_sizes
    shim_bool_fn is_contiguous
    int32_t float32, float64, cpu, strided

cdef TorchShim _shim
cdef PyTypeObject* _tensor_type = NULL
cdef PyTypeObject* _parameter_type = NULL
cdef object _is_neg = None  # torch.Tensor.is_neg: the one bit the shim cannot report
cdef object _is_inference = None            # torch.Tensor.is_inference
cdef object _inference_mode_enabled = None  # torch.is_inference_mode_enabled
cdef object _increment_version = None       # torch.autograd.graph.increment_version's op
cdef Py_ssize_t _key_set_offset = -1  # of DispatchKeySet in a TensorImpl (-1: unknown)
# torch's own words (c10 VariableVersion::bump) when an in-place op meets an inference tensor
INFERENCE_TENSOR_ERROR = ("Inplace update to inference tensor outside InferenceMode is not "
                          "allowed.You can make a clone to get a normal tensor before doing "
                          "inplace update.See https://github.com/pytorch/rfcs/pull/17 for more "
                          "details.")
cdef str _GRAD = "grad"

#: The shim functions torch_bind() needs, by name.
TORCH_SHIM_FUNCTIONS = ("aoti_torch_get_data_ptr", "aoti_torch_get_dtype",
                        "aoti_torch_get_device_type", "aoti_torch_get_layout",
                        "aoti_torch_get_dim", "aoti_torch_get_numel", "aoti_torch_get_sizes",
                        "aoti_torch_is_contiguous")


def torch_bind(dict addresses, int32_t float32, int32_t float64, int32_t cpu,
               int32_t strided, object tensor_type, object parameter_type, object is_neg,
               object is_inference, object inference_mode_enabled, object increment_version,
               Py_ssize_t key_set_offset):
    """Enable the torch fast path: ``addresses`` maps TORCH_SHIM_FUNCTIONS to their
    addresses in the loaded libtorch; the integers are the shim's dtype/device/layout codes.
    ``tensor_type`` / ``parameter_type`` are torch.Tensor and torch.nn.Parameter, the only
    Python types whose objects are read through the shim; ``is_neg`` is
    ``torch.Tensor.is_neg`` (a lazily negated view, e.g. ``z.conj().imag``, holds
    the un-negated numbers); ``is_inference``, ``inference_mode_enabled`` and
    ``increment_version`` are torch.Tensor.is_inference, torch.is_inference_mode_enabled and
    torch._C._increment_version; ``key_set_offset`` is where a TensorImpl keeps its
    DispatchKeySet (a 64-bit word holding the negation and inference bits, found by
    fastmomentum._torch_bridge), or -1 (then nothing is cached: torch is asked every step)."""
    global _tensor_type, _parameter_type, _is_neg, _is_inference, _inference_mode_enabled
    global _increment_version, _key_set_offset
    _key_set_offset = key_set_offset
    _is_neg, _is_inference = is_neg, is_inference
    _inference_mode_enabled, _increment_version = inference_mode_enabled, increment_version
    _shim.get_data_ptr = <shim_data_ptr_fn><uintptr_t>addresses["aoti_torch_get_data_ptr"]
    _shim.get_dtype = <shim_int32_fn><uintptr_t>addresses["aoti_torch_get_dtype"]
    _shim.get_device_type = <shim_int32_fn><uintptr_t>addresses["aoti_torch_get_device_type"]
    _shim.get_layout = <shim_int32_fn><uintptr_t>addresses["aoti_torch_get_layout"]
    _shim.get_dim = <shim_int64_fn><uintptr_t>addresses["aoti_torch_get_dim"]
    _shim.get_numel = <shim_int64_fn><uintptr_t>addresses["aoti_torch_get_numel"]
    _shim.get_sizes = <shim_sizes_fn><uintptr_t>addresses["aoti_torch_get_sizes"]
    _shim.is_contiguous = <shim_bool_fn><uintptr_t>addresses["aoti_torch_is_contiguous"]
    _shim.float32, _shim.float64, _shim.cpu, _shim.strided = float32, float64, cpu, strided
    Py_INCREF(tensor_type)
    Py_INCREF(parameter_type)
    _tensor_type = <PyTypeObject*>tensor_type
    _parameter_type = <PyTypeObject*>parameter_type


def torch_impl_address(tensor):
    """The word right after the object header of ``tensor`` (torch.py checks that it equals
    ``tensor._cdata``, the address of its TensorImpl, before calling torch_bind)."""
    return <uintptr_t>(<void**>(<char*><PyObject*>tensor + sizeof(PyObject)))[0]


ctypedef struct DenseTensor:
    char* data
    int64_t* sizes
    int64_t dim, numel, nbytes
    bint is_f32           # float32 or a 16-bit dtype (the kernel family: sgd_item)
    StepDtype dtype       # mp-dtypes


cdef inline bint _dense_cpu(object t, DenseTensor* out) noexcept:
    """Fill ``out`` when ``t`` is a plain torch.Tensor/Parameter that is CPU, strided,
    float32/float64, C-contiguous and has its data in memory; False otherwise (or when the
    shim reports an error). The negation bit is checked apart (TorchGroupCache.not_negated)."""
    cdef PyTypeObject* tp = <PyTypeObject*>Py_TYPE(t)
    if _tensor_type == NULL or (tp != _tensor_type and tp != _parameter_type):
        return False
    cdef TensorHandle h = <TensorHandle>(<char*><PyObject*>t + sizeof(PyObject))
    cdef int32_t device = -1, layout = -1, dtype = -1
    cdef uint8_t contiguous = 0
    cdef void* data = NULL
    if (_shim.get_device_type(h, &device) != 0 or device != _shim.cpu
            or _shim.get_layout(h, &layout) != 0 or layout != _shim.strided
            or _shim.get_dtype(h, &dtype) != 0
            or (dtype != _shim.float32 and dtype != _shim.float64
                and dtype != _halves.bf16 and dtype != _halves.f16)
            or _shim.is_contiguous(h, &contiguous) != 0 or not contiguous
            or _shim.get_dim(h, &out.dim) != 0 or _shim.get_sizes(h, &out.sizes) != 0
            or _shim.get_numel(h, &out.numel) != 0 or _shim.get_data_ptr(h, &data) != 0):
        return False
    if data == NULL and out.numel != 0:
        return False
    out.is_f32 = dtype != _shim.float64
    out.dtype = (DTYPE_F32 if dtype == _shim.float32 else DTYPE_F64 if dtype == _shim.float64
                 else DTYPE_BF16 if dtype == _halves.bf16 else DTYPE_F16)
    out.data = <char*>data
    out.nbytes = out.numel * (8 if out.dtype == DTYPE_F64 else 4 if out.dtype == DTYPE_F32
                              else 2)
    return True


# ---------------------------------------------------------------------------------------
# mp-dtypes: bfloat16 / float16 tensors

ctypedef struct TorchHalves:
    int32_t bf16, f16     # the shim's dtype codes (-2: not bound, matches no tensor)
    int lanes             # elements per step of torch's vector loop on this CPU (0: none)

cdef TorchHalves _halves = TorchHalves(bf16=-2, f16=-2, lanes=32)
cdef object _get_num_threads = None   # torch.get_num_threads


def torch_bind_halves(int32_t bf16, int32_t f16, int lanes, object get_num_threads):
    """Let the fast path take bfloat16/float16 tensors (the shim's dtype codes), with
    torch's for-loop bits for ``lanes`` (its vector loop's elements per step on this CPU:
    2 x Vectorized<BFloat16>::size(), 0 when it has none) at ``get_num_threads()`` threads,
    read when a group with such tensors steps."""
    global _get_num_threads
    _halves.bf16, _halves.f16, _halves.lanes = bf16, f16, lanes
    _get_num_threads = get_num_threads


cdef inline int _numpy_typenum(StepDtype dtype) noexcept:
    """The NumPy type number of a tensor's dtype (for its fused EMA average)."""
    if dtype == DTYPE_F32:
        return cnp.NPY_FLOAT
    if dtype == DTYPE_F64:
        return cnp.NPY_DOUBLE
    if dtype == DTYPE_F16:
        return cnp.NPY_FLOAT16
    return fm_bfloat16_typenum if fm_bfloat16_typenum >= 0 else lookup_bfloat16()


cdef inline int _half_rounding(WorkList work, bint once, bint has_half) except -1:
    """The group's rounding of 16-bit tensors: fused=True gives torch's fused kernel's
    (one rounding per stored value), else its for-loop's at torch's thread count now."""
    if once:
        set_rounding(&work.scalars, ROUND_ONCE, 1, _halves.lanes, 0)
    else:
        set_rounding(&work.scalars, ROUND_TORCH,
                     _get_num_threads() if has_half and _get_num_threads is not None else 1,
                     _halves.lanes, 0)
    return 0


cdef inline uint64_t _key_set(object t) noexcept:
    """The DispatchKeySet word of ``t``'s TensorImpl (its at::Tensor, after the object
    header, is a pointer to it); _key_set_offset >= 0."""
    cdef char* impl = (<char**>(<char*><PyObject*>t + sizeof(PyObject)))[0]
    return (<uint64_t*>(impl + _key_set_offset))[0]


cdef void _release_objects(PyObject** objects, Py_ssize_t size) noexcept:
    """Drop the strong references of a remembered-objects array and free it."""
    cdef Py_ssize_t i
    for i in range(size):
        Py_XDECREF(objects[i])
    free(objects)


cdef class TorchGroupCache:
    """What one param group's previous steps established, so steady-state steps re-check
    it for the price of a comparison.

    * Slots ``2*i`` (param i) and ``2*i+1`` (its momentum buffer) remember tensors seen to
      be plain (neither a lazily negated view nor an inference tensor: ``Tensor.is_neg()``
      and ``is_inference()`` cost a Python call each), with their data pointer and
      dispatch key set then. Both bits live in the key set, which ``p.data = ...`` (e.g.
      ``z.conj().imag``, even at the same address) and ``_set_neg`` change: the same object
      with the same data pointer and key set is the same plain tensor. Grads are new
      tensors every step and are always asked.
    * ``written``: what the multi-tensor pass writes and reads (see fastmomentum._spans.order_free).
    """
    cdef PyObject** objects  # strong references: an address is never reused while cached
    cdef char** data
    cdef uint64_t* key_sets
    cdef Py_ssize_t size
    cdef WrittenSpans written

    def __cinit__(self):
        self.written = WrittenSpans()

    def __dealloc__(self):
        _release_objects(self.objects, self.size)
        free(self.data)
        free(self.key_sets)

    cdef int reserve(self, Py_ssize_t params) except -1:
        """Room for ``params`` params."""
        cdef Py_ssize_t i, size = 2 * params
        if size <= self.size:
            return 0
        grow(<void**>&self.objects, size, sizeof(PyObject*))
        grow(<void**>&self.data, size, sizeof(char*))
        grow(<void**>&self.key_sets, size, sizeof(uint64_t))
        for i in range(self.size, size):
            self.objects[i] = NULL
            self.data[i] = NULL
            self.key_sets[i] = 0
        self.size = size
        return 0

    cdef int plain(self, Py_ssize_t slot, object t, char* data) except -1:
        """1 when ``t`` is neither a negated view nor an inference tensor (asking torch
        unless cached), else 0 (torch steps it). Raises torch's error for an inference
        tensor outside inference mode (torch refuses to update it)."""
        if (_key_set_offset >= 0 and self.objects[slot] == <PyObject*>t
                and self.data[slot] == data and self.key_sets[slot] == _key_set(t)):
            return 1
        if _is_neg(t) is not False:
            return 0
        if _is_inference(t) is not False:
            if _inference_mode_enabled():
                return 0
            raise RuntimeError(INFERENCE_TENSOR_ERROR)
        if _key_set_offset >= 0:
            Py_INCREF(t)
            Py_XDECREF(self.objects[slot])
            self.objects[slot] = <PyObject*>t
            self.data[slot] = data
            self.key_sets[slot] = _key_set(t)
        return 1


cdef inline bint _same_layout(const DenseTensor* a, const DenseTensor* b) noexcept:
    """Same dtype and shape, and disjoint memory."""
    return (a.dtype == b.dtype and a.dim == b.dim
            and memcmp(a.sizes, b.sizes, a.dim * sizeof(int64_t)) == 0
            and not bytes_overlap(a.data, a.nbytes, b.data, b.nbytes))


cdef inline list _appended(list items, object item):
    """``items`` with ``item`` appended (a new list when ``items`` is None)."""
    if items is None:
        return [item]
    items.append(item)
    return items


@cython.no_gc  # nothing it holds refers back to it: fewer GC-tracked allocations per step
cdef class TorchGroupPlan:
    """One param group's fast-path share of a step, checked and described, not yet run
    (torch_sgd_run runs every group's plan and does the bookkeeping in one C call)."""
    cdef WorkList work
    cdef readonly list stepped    # params the run writes
    cdef readonly list others     # indices of params with a grad that torch must step
    cdef list new_buffers         # (param, buffer) of first steps, stored after the run
    cdef list held                # grads, buffers and averages the items point into
    cdef WrittenSpans written     # its group cache's (busy while the plan runs)


def torch_sgd_group_plan(list params, object state, lr, momentum, dampening, weight_decay,
                         bint nesterov, bint maximize, new_buffer, TorchGroupCache checked,
                         list averages=None, decay=0.0, Py_ssize_t first_index=0,
                         object run_ema=False, bint once=False):
    """Check and describe (write nothing) the step of every param of one torch.optim param
    group whose param, grad and momentum buffer are plain dense CPU float32/float64
    C-contiguous tensors, bit for bit as torch.optim.SGD's for-loop, in one multi-tensor
    pass that torch_sgd_run makes.

    ``state`` is the optimizer's state (a dict keyed by param); ``new_buffer(param)`` makes
    and returns a momentum buffer for a param's first step (stored in ``state`` by
    torch_sgd_run, after the kernels filled it); ``checked`` is this group's
    TorchGroupCache. With ``averages`` (NumPy arrays, one per param), each param stepped
    here also gets ``ema_update(averages[i], param, decay)`` of its new weights in the same
    pass; ``first_index``: the index of ``params[0]`` among the optimizer's params (for
    error messages). ``run_ema`` (not False): when torch has no param of this group to
    step, run the plan at once (as ``torch_sgd_run([plan], state, run_ema, decay)``, one
    call instead of two for a one-group optimizer) and return what that returns (an int)
    instead of the plan. ``once``: bfloat16/float16 tensors round once per stored value
    (the group's ``fused=True``), else as torch's for-loop at torch.get_num_threads().
    Raises (before
    anything is written) what ``new_buffer`` raises,
    torch's RuntimeError for an inference tensor outside inference mode, or ValueError for
    an average unlike its param."""
    cdef Py_ssize_t n = len(params), i
    cdef double lr_ = lr, momentum_ = momentum, dampening_ = dampening
    cdef double weight_decay_ = weight_decay
    cdef double decay_ = decay
    cdef TorchGroupPlan plan = TorchGroupPlan()
    plan.work = WorkList(n)
    plan.stepped, plan.held = [], [averages]
    plan.others = plan.new_buffers = None  # lists once needed (most steps need neither)
    plan.written = checked.written
    cdef list first_steps = None
    cdef DenseTensor pt, gt, bt
    cdef object p, g, buf
    cdef char* average_data
    cdef bint first, fused_ema = averages is not None, has_half = False
    if not PyDict_Check(state):
        raise TypeError("torch_sgd_group_plan: `state` must be a dict")
    if fused_ema and (len(averages) != n or not finite_in(decay_, 0.0, 1.0)):
        raise ValueError("torch_sgd_group_plan: `averages` must hold one array per param "
                         "and `decay` be in [0, 1]")
    checked.reserve(n)
    set_scalars(&plan.work.scalars, lr_, momentum_, dampening_, weight_decay_, nesterov,
                maximize, decay_)
    for i in range(n):
        p = params[i]
        g = getattr(p, _GRAD)
        if g is None:
            continue
        if not (_dense_cpu(p, &pt) and _dense_cpu(g, &gt) and _same_layout(&pt, &gt)
                and _is_neg(g) is False and checked.plain(2 * i, p, pt.data)):
            plan.others = _appended(plan.others, i)
            continue
        first = False
        bt.data = NULL
        if momentum_ != 0.0:
            buf = momentum_buffer(state, p)
            first = buf is None
            if not first and not (_dense_cpu(buf, &bt) and _same_layout(&bt, &pt)
                                  and _same_layout(&bt, &gt)
                                  and checked.plain(2 * i + 1, buf, bt.data)):
                plan.others = _appended(plan.others, i)
                continue
            if first:
                # -1: empty params get a buffer (as in torch) but no work item.
                first_steps = _appended(first_steps, (plan.work.count if pt.numel else -1, p))
            else:
                plan.held.append(buf)
        average_data = NULL
        if fused_ema and pt.numel:
            if not (usable(averages[i], _numpy_typenum(pt.dtype), True)
                    and cnp.PyArray_SIZE(<cnp.ndarray>averages[i]) == pt.numel):
                raise ValueError(f"SGD.step: ema: `params[{first_index + i}]` is now a "
                                 f"{str(p.dtype).replace('torch.', '')} tensor of "
                                 f"{pt.numel} elements; its average is "
                                 f"{_validation.describe(averages[i])} (the EMA averages "
                                 f"params of fixed dtype and shape)")
            average_data = cnp.PyArray_BYTES(<cnp.ndarray>averages[i])
            if (bytes_overlap(average_data, pt.nbytes, pt.data, pt.nbytes)
                    or bytes_overlap(average_data, pt.nbytes, gt.data, pt.nbytes)
                    or (bt.data != NULL
                        and bytes_overlap(average_data, pt.nbytes, bt.data, pt.nbytes))):
                raise ValueError(f"SGD.step: ema: the average of `params[{first_index + i}]` "
                                 f"shares memory with its param, grad or momentum buffer")
        plan.stepped.append(p)
        plan.held.append(g)
        if pt.numel == 0:
            continue
        sgd_item(plan.work.append(pt.numel), &plan.work.scalars, pt.is_f32, pt.data, gt.data,
                 bt.data, average_data, first)
        retype_item(&plan.work.items[plan.work.count - 1], pt.dtype)
        has_half = has_half or pt.dtype == DTYPE_BF16 or pt.dtype == DTYPE_F16
    _half_rounding(plan.work, once, has_half)
    cdef Py_ssize_t item
    if not order_free(plan.work.items, plan.work.count, checked.written):
        # aliased memory (new buffers are fresh memory and cannot be): torch steps the
        # whole group, in its order
        plan.work = WorkList(0)
        plan.stepped, plan.held = [], []
        plan.others = [i for i in range(n) if getattr(params[i], _GRAD) is not None]
        return plan
    for item, p in first_steps or ():
        buf = new_buffer(p)
        plan.new_buffers = _appended(plan.new_buffers, (p, buf))
        if item >= 0:
            if not _dense_cpu(buf, &bt):
                raise AssertionError("torch_sgd_group_plan: new_buffer must return a dense "
                                     "C-contiguous CPU tensor like its param")
            plan.work.items[item].velocity = bt.data
    if run_ema is not False and not plan.others:
        return _run_plans([plan], state, run_ema, decay_)
    return plan


def torch_sgd_run(list plans, object state, object ema=None, double decay=0.0):
    """Run the plans of torch_sgd_group_plan (in order; RuntimeError, before anything is
    written, while another thread runs a step of the same optimizer or took the first step
    since these plans were made), then, in this same call (no interrupt can fall in
    between): store the first steps' momentum buffers in ``state``,
    bump the version counters of the params written (as an in-place op would, so autograd
    still catches use of stale saved weights) and advance ``ema`` (a fastmomentum.EMA whose
    averages the plans updated with ``decay``). Returns the number of params written."""
    return _run_plans(plans, state, ema, decay)


cdef object _run_plans(list plans, object state, object ema, double decay):
    cdef TorchGroupPlan plan
    cdef list stepped = None
    for plan in plans:  # another thread's step of this optimizer: running, or ahead of us
        if plan.written.busy:
            concurrent_step("SGD.step")
        for p, buf in plan.new_buffers or ():
            if momentum_buffer(state, p) is not None:
                concurrent_step("SGD.step")
    for plan in plans:
        plan.written.busy = True
    for plan in plans:
        plan.work.run(threads_for(pass_ns(plan.work.items, plan.work.total))
                      if plan.work.count else 1)
    for plan in plans:
        plan.written.busy = False
    for plan in plans:
        for p, buf in plan.new_buffers or ():
            store_momentum_buffer(state, p, buf)
        stepped = plan.stepped if stepped is None else stepped + plan.stepped
    if stepped:
        _increment_version(stepped)
    else:
        stepped = []
    account(None, None, False, ema, decay)
    return len(stepped)


# ---------------------------------------------------------------------------------------
# Global-norm clipping and AMP unscaling (clip-amp)

cdef double _plans_norm(list plans, bint inf_norm, bint* every_f32) except? -1.0:
    """The total norm of every plan's grads (plans in order, each in fixed chunks: the
    same bits for any thread count), rounded to float32 when every grad is float32."""
    cdef TorchGroupPlan plan
    cdef double acc = 0.0, part
    every_f32[0] = True
    for plan in plans:
        part = items_norm(plan.work.items, plan.work.count, plan.work.total, inf_norm)
        acc = larger(acc, part) if inf_norm else acc + part
        every_f32[0] = every_f32[0] and all_f32(plan.work.items, plan.work.count)
    return finish_norm(acc, inf_norm, every_f32[0])


cdef int _claim(list plans) except -1:
    """Mark the plans busy, or RuntimeError (nothing written) if another step of their
    optimizer runs."""
    cdef TorchGroupPlan plan
    for plan in plans:
        if plan.written.busy:
            concurrent_step("SGD.step")
    for plan in plans:
        plan.written.busy = True
    return 0


cdef void _release(list plans) noexcept:
    cdef TorchGroupPlan plan
    for plan in plans:
        plan.written.busy = False


def torch_sgd_clip_run(list plans, object state, object ema, double decay, object optimizer,
                       object max_norm, bint inf_norm, bint skip_if_nonfinite,
                       double grad_coef, object unscale, WrittenSpans grad_spans=None):
    """torch_sgd_run with every grad read as ``grad * coefficient`` (rounded to its dtype).
    With ``max_norm`` (a float) or ``skip_if_nonfinite``, first the
    total norm of the plans' grads (2-norm, or the largest magnitude when ``inf_norm``):
    not finite and ``skip_if_nonfinite``: nothing is run or written and
    ``optimizer.skipped_steps`` grows by one; with ``max_norm`` the coefficient is
    torch.nn.utils.clip_grad_norm_'s (times nothing else: ``grad_coef`` must then be 1),
    else ``grad_coef`` (AMP's 1/scale). ``optimizer.last_grad_norm`` is set to the total, in
    this same call. Returns the number of params written, or None (nothing done) when a
    plan holds bfloat16/float16 params: their loops take no grad coefficient, so torch's
    unscale and clip run first (fastmomentum.torch.SGD._scaled_step). ``unscale`` (or
    None): called before the norm once no other step of the optimizer runs, with the plans
    busy meanwhile and through the norm (AMP with clipping: GradScaler.unscale_'s in-place unscaling, whose torch
    ops release the GIL), so a concurrent step is refused before it writes; not called
    when None is returned.

    ``grad_spans`` (a WrittenSpans kept by the optimizer), write-back: the grads are left
    holding ``grad * coefficient`` (clip_grad_norm_'s in-place result), stored by the step
    pass itself, and their version counters bumped as ``mul_`` would; None (nothing done)
    too when two grads share memory (torch's recipe then runs). A skipped step writes no
    grad here (the caller applies clip_grad_norm_'s coefficient: see
    fastmomentum.torch.SGD._scaled_step)."""
    cdef bint every_f32, measures = max_norm is not None or skip_if_nonfinite
    cdef bint writes = grad_spans is not None
    cdef double total = 0.0
    cdef Py_ssize_t slots = 0
    cdef TorchGroupPlan plan
    for plan in plans:
        if any_half(plan.work.items, plan.work.count):
            return None
        if writes:
            slots = record_grads(plan.work.items, plan.work.count, grad_spans, slots)
    if writes and not grad_spans.writes_disjoint(slots):
        return None
    if unscale is not None:
        # busy from the unscaling through the norm (both release the GIL): a concurrent
        # step can neither unscale the grads a second time nor write them mid-norm
        _claim(plans)
        try:
            unscale()
            if measures:
                total = _plans_norm(plans, inf_norm, &every_f32)
        finally:
            _release(plans)
    elif measures:
        total = _plans_norm(plans, inf_norm, &every_f32)
    if measures:
        if skip_if_nonfinite and total - total != 0.0:
            account_norm(optimizer, total, True)
            return 0
        if max_norm is not None:
            grad_coef = clip_coefficient(total, max_norm, every_f32)
    for plan in plans:
        plan.work.scalars.grad_coef = grad_coef
        plan.work.scalars.stores_grad = writes
    cdef object written = _run_plans(plans, state, ema, decay)
    if writes and grad_coef != 1.0:  # the grads changed in place: as torch's mul_ would
        grads = [getattr(p, _GRAD) for plan in plans for p in plan.stepped]
        if grads:
            _increment_version(grads)
    if measures:
        account_norm(optimizer, total, False)
    return written


def torch_grads_norm(list grads, bint inf_norm):
    """``(total, every_f32)``: the total norm of ``grads`` as torch_sgd_clip_run computes
    it, when every grad is a plain dense C-contiguous CPU float32/float64 tensor (not a
    negated view); None otherwise (then torch's own clip_grad_norm_ must run)."""
    cdef WorkList work = WorkList(len(grads))
    cdef DenseTensor gt
    cdef WorkItem* w
    cdef object g
    cdef bint every_f32 = True
    for g in grads:
        if not (_dense_cpu(g, &gt) and _is_neg(g) is False
                and (gt.dtype == DTYPE_F32 or gt.dtype == DTYPE_F64)):
            return None
        every_f32 = every_f32 and gt.is_f32
        if gt.numel == 0:
            continue
        w = work.append(gt.numel)
        w.grad, w.is_f32 = gt.data, gt.is_f32
        w.kernel = SGD_F32 if gt.is_f32 else SGD_F64   # the norm pass reads its grad format
    cdef double acc = items_norm(work.items, work.count, work.total, inf_norm)
    return finish_norm(acc, inf_norm, every_f32), every_f32


def clip_coefficient_of(double total, double max_norm, bint f32):
    """clip_grad_norm_'s coefficient as the kernels compute it (for tests)."""
    return clip_coefficient(total, max_norm, f32)
# flat: the per-step check of SGD(flat=True) (fastmomentum/_torch_flat.py)
# c10::TensorImpl::grad() const (exported by libc10: the at::Tensor its autograd meta holds,
# or the undefined tensor): asking it costs ~20 instructions against ~550 for ``p.grad``
# (getset descriptor, torch's getter, a new reference through torch's PyObject slot and the
# GIL re-acquired around it; callgrind, 10k params). NULL until torch_bind_impl_grad.
ctypedef const void* (*impl_grad_fn)(const void*) noexcept nogil
cdef impl_grad_fn _impl_grad = NULL


cdef inline const void* _impl(object t) noexcept:
    """The TensorImpl of a torch.Tensor object (its at::Tensor, right after the header,
    is one pointer to it: checked by fastmomentum._torch_bridge before torch_bind)."""
    return (<const void**>(<char*><PyObject*>t + sizeof(PyObject)))[0]


cdef inline bint _plain_type(object t) noexcept:
    cdef PyTypeObject* tp = <PyTypeObject*>Py_TYPE(t)
    return _tensor_type != NULL and (tp == _tensor_type or tp == _parameter_type)


cdef inline bint _at_slot(object t, int64_t address, int64_t numel) noexcept:
    """``t`` is a plain torch.Tensor/Parameter of ``numel`` C-contiguous elements at
    ``address`` (a flat buffer's slot: a dtype or device of its own would take
    set_/``.data =``, which moves the address; ``p.data = p.data.t()`` keeps it)."""
    if not _plain_type(t):
        return False
    cdef TensorHandle h = <TensorHandle>(<char*><PyObject*>t + sizeof(PyObject))
    cdef void* data = NULL
    cdef int64_t n = -1
    cdef uint8_t contiguous = 0
    return (_shim.get_data_ptr(h, &data) == 0 and <int64_t><uintptr_t>data == address
            and _shim.get_numel(h, &n) == 0 and n == numel
            and _shim.is_contiguous(h, &contiguous) == 0 and contiguous)


def torch_bind_impl_grad(uintptr_t address, object with_grad, object without_grad):
    """Let torch_flat_scan read grads through c10::TensorImpl::grad at ``address`` (found by
    fastmomentum._torch_flat), after checking it on two plain tensors: ``with_grad`` (whose
    ``.grad`` must come back as that very tensor's TensorImpl) and ``without_grad`` (no
    grad: not that TensorImpl either). Returns whether it is bound."""
    global _impl_grad
    _impl_grad = NULL
    if (address == 0 or not _plain_type(with_grad) or not _plain_type(without_grad)
            or getattr(with_grad, _GRAD) is None or getattr(without_grad, _GRAD) is not None
            or not _plain_type(getattr(with_grad, _GRAD))):
        return False
    cdef impl_grad_fn fn = <impl_grad_fn>address
    cdef const void* g = _impl(getattr(with_grad, _GRAD))
    if ((<const void**>fn(_impl(with_grad)))[0] != g
            or (<const void**>fn(_impl(without_grad)))[0] == g):
        return False
    _impl_grad = fn
    return True


# torch::autograd::impl::bump_version(const at::Tensor&) (exported by libtorch_cpu):
# torch._C._increment_version's work per tensor without its ~420 instructions of Python
# iteration, isinstance and reference counting per tensor (callgrind, 10k params). It
# raises (a C++ exception, fatal here) for an inference tensor outside inference mode:
# it is only called for tensors whose dispatch key set is one seen with
# ``is_inference() == False`` (the inference bits live in that word: _key_set_offset).
ctypedef void (*bump_fn)(const void*) noexcept nogil
cdef bump_fn _bump = NULL


def torch_bind_bump(uintptr_t address, object probe):
    """Let VersionBumps call torch::autograd::impl::bump_version at ``address`` (found by
    fastmomentum._torch_flat), after checking that it adds one to ``probe._version`` (a
    plain, non-inference tensor). Returns whether it is bound."""
    global _bump
    _bump = NULL
    if (address == 0 or _key_set_offset < 0 or not _plain_type(probe)
            or _is_inference(probe) is not False):
        return False
    cdef bump_fn fn = <bump_fn>address
    before = probe._version
    fn(<char*><PyObject*>probe + sizeof(PyObject))
    if probe._version != before + 1:
        return False
    _bump = fn
    return True


cdef class VersionBumps:
    """torch._C._increment_version over a flat bucket's params, in C: remembers each param
    object (strong reference: an address is never reused while remembered) with its
    dispatch key set once ``is_inference()`` said False; a param seen again with the same
    key set is bumped by bump_version, anything else goes through torch's own op (which
    leaves inference tensors alone)."""
    cdef PyObject** objects
    cdef uint64_t* key_sets
    cdef Py_ssize_t size

    def __dealloc__(self):
        _release_objects(self.objects, self.size)
        free(self.key_sets)

    def bump(self, list tensors):
        """Add one to the version counter of each of ``tensors`` (as
        torch._C._increment_version(tensors))."""
        self.bump_all(tensors)

    cdef int bump_all(self, list tensors) except -1:
        cdef Py_ssize_t n = len(tensors), i
        cdef object t
        cdef list others = None
        if _bump == NULL:
            _increment_version(tensors)
            return 0
        if n > self.size:
            grow(<void**>&self.objects, n, sizeof(PyObject*))
            grow(<void**>&self.key_sets, n, sizeof(uint64_t))
            for i in range(self.size, n):
                self.objects[i] = NULL
                self.key_sets[i] = 0
            self.size = n
        for i in range(n):
            t = tensors[i]
            if not _plain_type(t):
                others = _appended(others, t)
                continue
            if self.objects[i] != <PyObject*>t or self.key_sets[i] != _key_set(t):
                if _is_inference(t) is not False:
                    others = _appended(others, t)
                    continue
                Py_INCREF(t)
                Py_XDECREF(self.objects[i])
                self.objects[i] = <PyObject*>t
                self.key_sets[i] = _key_set(t)
            _bump(<char*><PyObject*>t + sizeof(PyObject))
        if others is not None:
            _increment_version(others)
        return 0


cdef extern from *:
    """
    /* A dict's modification stamp (PEP 509: a new process-wide value at every change, never
       reused); 0 where CPython keeps none (3.14 removed it): then nothing is remembered. */
    #if PY_VERSION_HEX < 0x030E0000
    #define fm_dict_stamp(d) (((PyDictObject*)(d))->ma_version_tag)
    #else
    #define fm_dict_stamp(d) ((uint64_t)0)
    #endif
    """
    uint64_t fm_dict_stamp(object d) noexcept


cdef class FlatStateMarks:
    """What torch_flat_scan found in ``state`` at its last clean scan of one flat bucket: the
    state dict and momentum-view list it read, their stamps, and each param's entry dict
    (strong references: no address is reused while remembered) with its stamp. While the
    state dict is unchanged, ``state[p]`` is still that entry, and while the entry is
    unchanged, its ``'momentum_buffer'`` is still the view found then: the two dict lookups
    per param (~280 of the scan's ~530 instructions per param, callgrind, 10k params) become
    one comparison."""
    cdef PyObject* state
    cdef PyObject* buffers
    cdef uint64_t state_stamp
    cdef PyObject** entries
    cdef uint64_t* stamps
    cdef Py_ssize_t size, count  # allocated, remembered (0: nothing)

    def __dealloc__(self):
        self.forget()
        free(self.entries)
        free(self.stamps)

    cdef void forget(self) noexcept:
        cdef Py_ssize_t i
        for i in range(self.count):
            Py_XDECREF(self.entries[i])
            self.entries[i] = NULL
        Py_XDECREF(self.state)
        Py_XDECREF(self.buffers)
        self.state = self.buffers = NULL
        self.count = 0

    cdef bint valid(self, object state, list buffers, Py_ssize_t n) noexcept:
        return (self.count == n and n > 0 and self.state == <PyObject*>state
                and self.buffers == <PyObject*>buffers
                and self.state_stamp == fm_dict_stamp(state) and self.state_stamp != 0)

    cdef inline bint same_entry(self, Py_ssize_t i) noexcept:
        return (self.entries[i] != NULL
                and fm_dict_stamp(<object>self.entries[i]) == self.stamps[i])

    cdef int remember(self, object state, list buffers, list params) except -1:
        """Remember the entry of every param whose ``state[p]['momentum_buffer']`` is its
        view in ``buffers`` now (looked up here: the rest, e.g. params without a grad nor
        state yet, stay NULL and are looked up at every scan), and the stamps."""
        cdef Py_ssize_t n = len(params), i
        cdef PyObject* entry
        cdef PyObject* buf
        self.forget()
        if fm_dict_stamp(state) == 0:
            return 0
        if n > self.size:
            grow(<void**>&self.entries, n, sizeof(PyObject*))
            grow(<void**>&self.stamps, n, sizeof(uint64_t))
            self.size = n
        for i in range(n):
            p = params[i]
            self.entries[i] = NULL
            self.count = i + 1
            entry = fm_dict_get_known_hash(state, p, <Py_hash_t><uintptr_t><PyObject*>p)
            if entry == NULL or not PyDict_Check(<object>entry):
                continue
            buf = PyDict_GetItem(<object>entry, "momentum_buffer")
            if buf == NULL or buf != <PyObject*>buffers[i]:
                continue
            Py_INCREF(<object>entry)
            self.entries[i] = entry
            self.stamps[i] = fm_dict_stamp(<object>entry)
        Py_INCREF(state)
        Py_INCREF(buffers)
        self.state, self.buffers = <PyObject*>state, <PyObject*>buffers
        self.state_stamp = fm_dict_stamp(state)
        return 0


def torch_flat_scan(list params, list grads, list buffers, object state,
                    cnp.ndarray addresses, FlatStateMarks marks=None):
    """None when every param of one flat buffer is as its last flat step left it: its
    data still over its whole slot (``addresses``: int64, the param then grad address of
    each param, then each param's element count), its ``.grad`` the very view object in
    ``grads`` (read through c10::TensorImpl::grad once torch_bind_impl_grad bound it, else
    ``p.grad``) and (``buffers`` not None) its momentum buffer in ``state`` the one in
    ``buffers``. The grad view's own data pointer is not asked: that one shim call
    measured 2-8x the rest of the scan (10k params: 100-130 against 300-1050 ns per param,
    interleaved medians on the loaded machine), so ``p.grad.data = x`` on the view is the
    one replacement the scan misses (docs/flat-buffers.md). Otherwise a bytearray with,
    per param, 0 (so), 1 (no grad: not stepped) or 2 (something replaced or missing:
    fastmomentum._torch_flat repairs it). ``marks`` (the bucket's FlatStateMarks, or None)
    spares the state lookups of params whose entry no one changed since the last clean
    scan."""
    return _flat_scan(params, grads, buffers, state, addresses, marks)


cdef object _flat_scan(list params, list grads, list buffers, object state,
                       cnp.ndarray addresses, FlatStateMarks marks):
    cdef Py_ssize_t n = len(params), i
    cdef object p, g, view
    cdef bytearray status = None
    cdef const int64_t* expected
    cdef const int64_t* numel
    cdef int code
    if (cnp.PyArray_TYPE(addresses) != cnp.NPY_INT64 or not cnp.PyArray_ISCARRAY_RO(addresses)
            or cnp.PyArray_SIZE(addresses) != 3 * n or len(grads) != n
            or (buffers is not None and len(buffers) != n) or not PyDict_Check(state)):
        raise ValueError("torch_flat_scan: `addresses` must be 3 int64 per param, "
                         "`grads` (and `buffers`) one per param, `state` a dict")
    expected = <const int64_t*>cnp.PyArray_DATA(addresses)
    numel = expected + 2 * n
    cdef bint repaired = False
    cdef bint marked = (buffers is not None and marks is not None
                        and marks.valid(state, buffers, n))
    for i in range(n):
        p = params[i]
        view = grads[i]
        # p.grad is the view exactly when its at::Tensor holds the view's TensorImpl: a
        # TensorImpl has one Python object, the view alive in ``grads`` (so never freed and
        # reused); anything else (another tensor, None, a subclass) takes getattr
        if (_impl_grad != NULL and _plain_type(p) and _plain_type(view)
                and (<const void**>_impl_grad(_impl(p)))[0] == _impl(view)):
            g = view
        else:
            g = getattr(p, _GRAD)
        if g is None:
            code = 1
        elif (g is view and _at_slot(p, expected[2 * i], numel[i])
              and (buffers is None or (marked and marks.same_entry(i))
                   or momentum_buffer(state, p) is buffers[i])):
            code = 0
        else:
            code = 2
        repaired = repaired or code == 2
        if code and status is None:
            status = bytearray(n)
        if status is not None:
            status[i] = code
    if marks is not None:
        if buffers is not None and not repaired:  # (a repair re-views: look up again)
            if not marked:
                marks.remember(state, buffers, params)
        else:
            marks.forget()
    return status


# flat: the steady-state step of SGD(flat=True). A step whose every scan is clean steps each
# bucket's whole carrier with the plan an earlier clean step made (same memory, same
# kernels): only the hyperparameters are read again. Through Python (_plan_buckets: the
# plan, the closure, sums and generators) the mlp-20 step's fixed path was ~52k
# instructions (callgrind).

@cython.final
cdef class _SteadyBucket:
    cdef Py_ssize_t group          # its param group's index
    cdef list params, grads, buffers  # the FlatBucket's params and views (buffers: None
    cdef cnp.ndarray addresses     # without momentum) and its scan's addresses
    cdef FlatStateMarks marks
    cdef VersionBumps bumps
    cdef TorchGroupPlan plan       # of its runs, run again at each steady step
    cdef list stepped              # the params those runs hold
    cdef bytearray status          # its clean scan's answer (None, or only 0 and 1)


cdef class FlatSteady:
    """The plans of the last clean step of an SGD(flat=True) (fastmomentum._torch_flat), run
    again by torch_flat_steady while every scan stays clean, the group count and the
    momentum's being zero stay the same and no group leaves the fast path."""
    cdef list buckets             # of _SteadyBucket (None: nothing captured)
    cdef list carriers            # their whole carriers, in order
    cdef VersionBumps carrier_bumps
    cdef Py_ssize_t groups, params
    cdef object params_count      # params as an int object: set as kernel_params

    def __cinit__(self):
        self.carrier_bumps = VersionBumps()

    @property
    def active(self):
        """Whether plans are held (a steady step can be taken)."""
        return self.buckets is not None

    def forget(self):
        self.buckets = self.carriers = None

    def capture(self, list entries, Py_ssize_t groups):
        """Hold ``entries``: per flat bucket ``(group_index, bucket, plan, carriers,
        stepped, status)``, the plan of that bucket's runs (``carriers``, holding the
        params ``stepped``) made by a clean step of ``groups`` param groups after a scan
        that answered ``status`` (None, or params without a grad only). Plans torch
        must share or that take first steps are not held: nothing is."""
        cdef _SteadyBucket b
        cdef TorchGroupPlan plan
        cdef list buckets = [], carriers = []
        cdef Py_ssize_t params = 0
        for group, bucket, plan, runs, stepped, status in entries:
            if plan.others is not None or plan.new_buffers is not None:
                self.forget()
                return
            b = _SteadyBucket()
            b.group = group
            b.params, b.grads = bucket.params, bucket.grad_views
            # the views the scan checks exactly when the plan steps momentum
            b.buffers = (bucket.momentum_views if plan.work.scalars.sgd.momentum != 0.0
                         else None)
            b.addresses = bucket.addresses
            b.marks, b.bumps, b.plan = bucket.marks, bucket.bumps, plan
            b.stepped, b.status = stepped, status
            buckets.append(b)
            carriers += runs
            params += len(stepped)
        self.buckets, self.carriers = buckets, carriers
        self.groups, self.params, self.params_count = groups, params, params


cdef PyObject* _group_value(object group, str key) noexcept:
    return PyDict_GetItem(group, key)


def torch_flat_steady(FlatSteady steady, list param_groups, object state, object optimizer):
    """The step of an SGD(flat=True) when nothing changed since ``steady`` captured its
    plans: every bucket's scan (torch_flat_scan) clean, as many param groups, each a dict
    still on the fast path (``differentiable`` false, ``weight_decay`` not a tensor: see
    SGD._fast_path_fits; ``state`` a dict) with its momentum zero exactly when it was.
    Then, in this call: the hyperparameters read (as torch_sgd_group_plan reads them), the
    plans run (RuntimeError, nothing written, while another step of the optimizer runs),
    the carriers' and params' version counters bumped, ``optimizer.kernel_params`` set;
    returns the number of runs stepped. None (nothing written, nothing
    raised) when anything differs: fastmomentum._torch_flat's full step then runs."""
    cdef _SteadyBucket b
    cdef PyObject* value
    cdef object group = None
    cdef Py_ssize_t last = -1
    cdef double lr_ = 0.0, momentum_ = 0.0, dampening_ = 0.0, weight_decay_ = 0.0
    cdef bint nesterov = False, maximize = False
    cdef list hypers = []   # per bucket, read before any plan is written
    if (steady.buckets is None or len(param_groups) != steady.groups
            or not PyDict_Check(state) or _tensor_type == NULL):
        return None
    for b in steady.buckets:
        if b.group != last:
            last = b.group
            group = param_groups[last]
            if not PyDict_Check(group):
                return None
            # a missing key or a bad value: the full step raises torch's error
            value = _group_value(group, "differentiable")
            if value == NULL or <object>value is not False:
                return None
            value = _group_value(group, "weight_decay")
            if value == NULL or PyObject_TypeCheck(<object>value, _tensor_type):
                return None
            for key in ("lr", "momentum", "dampening", "nesterov", "maximize"):
                if _group_value(group, key) == NULL:
                    return None
            try:
                weight_decay_ = <object>value
                lr_ = <object>_group_value(group, "lr")
                momentum_ = <object>_group_value(group, "momentum")
                dampening_ = <object>_group_value(group, "dampening")
                nesterov = <object>_group_value(group, "nesterov")
                maximize = <object>_group_value(group, "maximize")
            except Exception:  # the full step raises it where torch_sgd_group_plan does
                return None
        if (momentum_ != 0.0) != (b.buffers is not None):
            return None
        status = _flat_scan(b.params, b.grads, b.buffers, state, b.addresses, b.marks)
        if (status is not None or b.status is not None) and (
                status is None or b.status is None or status != b.status):
            return None
        hypers.append((lr_, momentum_, dampening_, weight_decay_, nesterov, maximize))
    # the plans are written only once no step of this optimizer runs them (the checks
    # above may have run Python code, and another thread with it)
    for b in steady.buckets:
        if b.plan.written.busy:
            concurrent_step("SGD.step")
    for b, hyper in zip(steady.buckets, hypers):
        lr_, momentum_, dampening_, weight_decay_, nesterov, maximize = hyper
        set_scalars(&b.plan.work.scalars, lr_, momentum_, dampening_, weight_decay_,
                    nesterov, maximize, 0.0)
        b.plan.written.busy = True
    for b in steady.buckets:
        b.plan.work.run(threads_for(pass_ns(b.plan.work.items, b.plan.work.total))
                        if b.plan.work.count else 1)
    for b in steady.buckets:
        b.plan.written.busy = False
    # as torch_sgd_run and the full step's finish: the carriers', then the params' counters
    steady.carrier_bumps.bump_all(steady.carriers)
    for b in steady.buckets:
        b.bumps.bump_all(b.stepped)
    optimizer.kernel_params = steady.params_count
    return len(steady.carriers)
