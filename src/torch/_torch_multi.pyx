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
# not plain dense CPU float32/float64 C-contiguous torch.Tensor/Parameter objects are
# reported back and stepped by torch itself.
cimport numpy as cnp
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcmp

from fastmomentum._multi cimport WorkList, set_scalars, sgd_item
from fastmomentum._spans cimport WrittenSpans, order_free
from fastmomentum._spans cimport pass_ns
from fastmomentum._threads cimport threads_for
from fm_checks cimport bytes_overlap, finite_in, usable
from fm_memory cimport grow

cnp.import_array()

cdef extern from "Python.h":
    PyObject* PyErr_Occurred()
    PyObject* PyDict_GetItem(object mp, object key)
    bint PyDict_Check(object o)

cdef extern from *:
    """
    /* A dict lookup with the key's hash given (CPython < 3.13 exports it; later versions
       hash the key themselves, through Tensor.__hash__, slower but the same result). */
    #if PY_VERSION_HEX < 0x030D0000
    #define fm_dict_get_known_hash(d, k, h) _PyDict_GetItem_KnownHash(d, k, h)
    #else
    #define fm_dict_get_known_hash(d, k, h) PyDict_GetItemWithError(d, k)
    #endif
    """
    PyObject* fm_dict_get_known_hash(object mp, object key, Py_hash_t hash)

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
cdef str _GRAD = "grad"
cdef str _MOMENTUM_BUFFER = "momentum_buffer"

#: The shim functions torch_bind() needs, by name.
TORCH_SHIM_FUNCTIONS = ("aoti_torch_get_data_ptr", "aoti_torch_get_dtype",
                        "aoti_torch_get_device_type", "aoti_torch_get_layout",
                        "aoti_torch_get_dim", "aoti_torch_get_numel", "aoti_torch_get_sizes",
                        "aoti_torch_is_contiguous")


def torch_bind(dict addresses, int32_t float32, int32_t float64, int32_t cpu,
               int32_t strided, object tensor_type, object parameter_type, object is_neg):
    """Enable the torch fast path: ``addresses`` maps TORCH_SHIM_FUNCTIONS to their
    addresses in the loaded libtorch; the integers are the shim's dtype/device/layout codes.
    ``tensor_type`` / ``parameter_type`` are torch.Tensor and torch.nn.Parameter, the only
    Python types whose objects are read through the shim; ``is_neg`` is
    ``torch.Tensor.is_neg`` (a lazily negated view, e.g. ``z.conj().imag``, holds
    the un-negated numbers)."""
    global _tensor_type, _parameter_type, _is_neg
    _is_neg = is_neg
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
    bint is_f32


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
            or (dtype != _shim.float32 and dtype != _shim.float64)
            or _shim.is_contiguous(h, &contiguous) != 0 or not contiguous
            or _shim.get_dim(h, &out.dim) != 0 or _shim.get_sizes(h, &out.sizes) != 0
            or _shim.get_numel(h, &out.numel) != 0 or _shim.get_data_ptr(h, &data) != 0):
        return False
    if data == NULL and out.numel != 0:
        return False
    out.is_f32 = dtype == _shim.float32
    out.data = <char*>data
    out.nbytes = out.numel * (4 if out.is_f32 else 8)
    return True


cdef class TorchGroupCache:
    """What one param group's previous steps established, so steady-state steps re-check
    it for the price of a comparison.

    * Slots ``2*i`` (param i) and ``2*i+1`` (its momentum buffer) remember tensors seen not
      to be lazily negated views, with their data pointer then: ``Tensor.is_neg()`` costs a
      Python call, and a tensor's negation bit only changes with its storage
      (``p.data = ...``) or through torch's private ``_set_neg``. Grads are new tensors
      every step and are always asked.
    * ``written``: what the multi-tensor pass writes and reads (see fastmomentum._spans.order_free).
    """
    cdef PyObject** objects  # strong references: an address is never reused while cached
    cdef char** data
    cdef Py_ssize_t size
    cdef WrittenSpans written

    def __cinit__(self):
        self.written = WrittenSpans()

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.size):
            Py_XDECREF(self.objects[i])
        free(self.objects)
        free(self.data)

    cdef int reserve(self, Py_ssize_t params) except -1:
        """Room for ``params`` params."""
        cdef Py_ssize_t i, size = 2 * params
        if size <= self.size:
            return 0
        grow(<void**>&self.objects, size, sizeof(PyObject*))
        grow(<void**>&self.data, size, sizeof(char*))
        for i in range(self.size, size):
            self.objects[i] = NULL
            self.data[i] = NULL
        self.size = size
        return 0

    cdef int not_negated(self, Py_ssize_t slot, object t, char* data) except -1:
        """1 when ``t`` is not a negated view (asking torch unless cached), else 0."""
        if self.objects[slot] == <PyObject*>t and self.data[slot] == data:
            return 1
        if _is_neg(t) is not False:
            return 0
        Py_INCREF(t)
        Py_XDECREF(self.objects[slot])
        self.objects[slot] = <PyObject*>t
        self.data[slot] = data
        return 1


cdef inline bint _same_layout(const DenseTensor* a, const DenseTensor* b) noexcept:
    """Same dtype and shape, and disjoint memory."""
    return (a.is_f32 == b.is_f32 and a.dim == b.dim
            and memcmp(a.sizes, b.sizes, a.dim * sizeof(int64_t)) == 0
            and not bytes_overlap(a.data, a.nbytes, b.data, b.nbytes))


cdef int raise_error_set() except -1:
    """Propagate the Python error a C-API call left set."""
    return -1


cdef inline object _momentum_buffer(object state, object param):
    """``state[param]['momentum_buffer']`` or None, without calling Tensor.__hash__ (a
    Python function returning id(param): the hash is the object's address)."""
    cdef PyObject* entry = fm_dict_get_known_hash(state, param,
                                                  <Py_hash_t><uintptr_t><PyObject*>param)
    if entry == NULL and PyErr_Occurred():
        raise_error_set()
    if entry == NULL or not PyDict_Check(<object>entry):
        return None
    cdef PyObject* buf = PyDict_GetItem(<object>entry, _MOMENTUM_BUFFER)
    return None if buf == NULL else <object>buf


def torch_sgd_group_step(list params, object state, lr, momentum, dampening, weight_decay,
                         bint nesterov, bint maximize, new_buffer, TorchGroupCache checked,
                         list averages=None, decay=0.0):
    """Step every param of one torch.optim param group whose param, grad and momentum
    buffer are plain dense CPU float32/float64 C-contiguous tensors, bit for bit as
    torch.optim.SGD's for-loop, in one multi-tensor pass.

    ``state`` is the optimizer's state (a dict keyed by param); ``new_buffer(param)`` makes,
    stores and returns a param's momentum buffer on its first step (its contents are
    overwritten); ``checked`` is this group's TorchGroupCache. With ``averages`` (NumPy
    arrays, one per param), each param stepped here also gets
    ``ema_update(averages[i], param, decay)`` of its new weights in the same pass.

    Returns ``(stepped, others, no_grad)``: the params written here (their version
    counters still need a bump), the indices of params with a grad that this path does not
    take (torch must step them) and of params without grad. Raises (before anything is
    written) what ``new_buffer`` raises, or ValueError for an average unlike its param."""
    cdef Py_ssize_t n = len(params), i
    cdef double lr_ = lr, momentum_ = momentum, dampening_ = dampening
    cdef double weight_decay_ = weight_decay
    cdef WorkList work = WorkList(n)
    cdef double decay_ = decay
    cdef list stepped = [], others = [], no_grad = [], first_steps = []
    cdef DenseTensor pt, gt, bt
    cdef object p, g, buf
    cdef char* average_data
    cdef bint first, fused_ema = averages is not None
    if not PyDict_Check(state):
        raise TypeError("torch_sgd_group_step: `state` must be a dict")
    if fused_ema and (len(averages) != n or not finite_in(decay_, 0.0, 1.0)):
        raise ValueError("torch_sgd_group_step: `averages` must hold one array per param "
                         "and `decay` be in [0, 1]")
    checked.reserve(n)
    set_scalars(&work.scalars, lr_, momentum_, dampening_, weight_decay_, nesterov, maximize,
                decay_)
    for i in range(n):
        p = params[i]
        g = getattr(p, _GRAD)
        if g is None:
            no_grad.append(i)
            continue
        if not (_dense_cpu(p, &pt) and _dense_cpu(g, &gt) and _same_layout(&pt, &gt)
                and _is_neg(g) is False and checked.not_negated(2 * i, p, pt.data)):
            others.append(i)
            continue
        first = False
        bt.data = NULL
        if momentum_ != 0.0:
            buf = _momentum_buffer(state, p)
            first = buf is None
            if not first and not (_dense_cpu(buf, &bt) and _same_layout(&bt, &pt)
                                  and _same_layout(&bt, &gt)
                                  and checked.not_negated(2 * i + 1, buf, bt.data)):
                others.append(i)
                continue
            if first:
                # -1: empty params get a buffer (as in torch) but no work item.
                first_steps.append((work.count if pt.numel else -1, p))
        average_data = NULL
        if fused_ema and pt.numel:
            if not (usable(averages[i], cnp.NPY_FLOAT if pt.is_f32 else cnp.NPY_DOUBLE, True)
                    and cnp.PyArray_SIZE(<cnp.ndarray>averages[i]) == pt.numel):
                raise ValueError(f"torch_sgd_group_step: `averages[{i}]` must be a writeable "
                                 f"C-contiguous array of the dtype and size of its param")
            average_data = cnp.PyArray_BYTES(<cnp.ndarray>averages[i])
            if (bytes_overlap(average_data, pt.nbytes, pt.data, pt.nbytes)
                    or bytes_overlap(average_data, pt.nbytes, gt.data, pt.nbytes)
                    or (bt.data != NULL
                        and bytes_overlap(average_data, pt.nbytes, bt.data, pt.nbytes))):
                raise ValueError(f"torch_sgd_group_step: `averages[{i}]` shares memory "
                                 f"with its param, grad or momentum buffer")
        stepped.append(p)
        if pt.numel == 0:
            continue
        sgd_item(work.append(pt.numel), &work.scalars, pt.is_f32, pt.data, gt.data, bt.data,
                 average_data, first)
    cdef Py_ssize_t item
    if not order_free(work.items, work.count, checked.written):
        # aliased memory (new buffers are fresh memory and cannot be): torch steps the
        # whole group, in its order
        skipped = set(no_grad)
        return [], [i for i in range(n) if i not in skipped], no_grad
    for item, p in first_steps:
        buf = new_buffer(p)
        if item >= 0:
            if not _dense_cpu(buf, &bt):
                raise AssertionError("torch_sgd_group_step: new_buffer must return a dense "
                                     "C-contiguous CPU tensor like its param")
            work.items[item].velocity = bt.data
    work.run(threads_for(pass_ns(work.items, work.total)) if work.count else 1)
    return stepped, others, no_grad
