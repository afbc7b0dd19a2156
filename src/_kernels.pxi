# The compiled entry points. Included by _kernels_portable.pyx and _kernels_avx2.pyx, which
# setup.py builds with different target flags from this one source.
#
# Every entry point checks its arguments in C through the NumPy C-API macros (a few ns) and
# only on failure calls fastmomentum._validation, which raises the same error the NumPy
# baseline raises. Nothing is written before every check has passed.
cimport numpy as cnp
from libc.math cimport INFINITY
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uint64_t

from fastmomentum.kernels cimport ema_kernel, momentum_kernel, sgd_kernel

from fastmomentum import _validation

cnp.import_array()

cdef extern from "fm_openmp.h" nogil:
    int omp_get_max_threads()
    void omp_set_num_threads(int)
    int FM_HAVE_OPENMP

cdef extern from "threads/fm_pool.h" nogil:
    ctypedef void (*fm_task_fn)(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil
    void fm_parallel_for(fm_task_fn task, void* ctx, ptrdiff_t nchunks, int max_workers)
    int fm_pool_cpus()
    double fm_pool_overhead_ns()
    void fm_pool_set_schedule(int schedule)
    void fm_pool_set_overhead_ns(double ns)
    int fm_pool_threads()
    void fm_pool_stats(uint64_t* out)

cdef extern from "fm_cpu.h" nogil:
    const char* FM_BUILD_TARGET
    int fm_cpu_has_avx2_fma()

#: "avx2" or "portable": the target this module was compiled for.
BUILD_TARGET = FM_BUILD_TARGET.decode()
#: Whether this build splits large buffers across threads. The threads are fastmomentum's
#: own (src/threads/fm_pool.c); their count is OpenMP's setting (OMP_NUM_THREADS,
#: threadpoolctl, set_num_threads), so a build without OpenMP runs on one thread.
HAS_OPENMP = bool(FM_HAVE_OPENMP)


def _pool_set_schedule(int schedule):
    """Tests only: 0 normal, 1 the caller runs every chunk, 2 pool threads run them all."""
    fm_pool_set_schedule(schedule)


def _pool_set_overhead(double ns):
    """Tests and benchmarks: set the pool's overhead estimate (see _threads_for)."""
    fm_pool_set_overhead_ns(ns)


def _pool_threads():
    """Tests only: the pool threads started so far, and the CPUs a loop may use."""
    return fm_pool_threads(), fm_pool_cpus()


def _pool_stats():
    """Benchmarks: (parallel loops run on the pool, chunks pool threads ran, times a
    caller slept waiting for a pool thread's chunk) since the process started, and the
    pool's current overhead estimate in ns."""
    cdef uint64_t out[3]
    fm_pool_stats(out)
    return out[0], out[1], out[2], fm_pool_overhead_ns()


def cpu_has_avx2_fma():
    """True when this CPU (and OS) can run the AVX2+FMA build."""
    return bool(fm_cpu_has_avx2_fma())


# When a second thread pays follows from the measured cost of waking one: the pool keeps a
# running estimate of what a parallel loop costs its caller beyond its share of the work
# (fm_pool_overhead_ns: the wake-up call and the wait for chunks a woken thread claimed;
# 5 us to start with, measured by benchmarks/wake_cost.c). If no other thread gets to run
# (every other core busy) the caller does all the work and loses that overhead: a loop
# takes threads only when its work is at least PARALLEL_MIN_OVERHEADS times the overhead,
# so that it is never more than 1/6 slower than on one thread, and one thread per that
# much work. On a quiet machine two threads pay from about twice the overhead on.
cdef double PARALLEL_MIN_OVERHEADS = 6.0
# Work is estimated from the bytes a loop moves at NS_PER_BYTE: one thread streams 150 GB/s
# from L3 here (momentum_step, float32, 256k elements: 5.2 MB in 35 us), where threads
# start to matter; from memory it is slower, so the estimate errs towards fewer threads.
cdef double NS_PER_BYTE = 1.0 / 150.0
# Chunks of PARALLEL_CHUNK elements (fixed boundaries, multiples of 64 elements: no two
# threads write one cache line); 16k float32 momentum elements are 2-3 us of work, so a
# thread that wakes late holds the caller up by at most that.
cdef Py_ssize_t PARALLEL_CHUNK = 1 << 14
# Releasing the GIL costs ~0.1 us: worth it only when the loop itself takes several us.
cdef Py_ssize_t NOGIL_MIN_SIZE = 1 << 14


def set_num_threads(n):
    """Use ``n`` threads (>= 1) for large buffers, from the calling thread on.

    This sets OpenMP's thread count, as ``OMP_NUM_THREADS`` and
    ``threadpoolctl.threadpool_limits`` do; results do not depend on it. A loop never
    uses more threads than the CPUs this process may run on, nor than it has chunks."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: `n` must be an integer >= 1; got {n!r}")
    omp_set_num_threads(min(n, 1 << 16))   # OpenMP's limit on its setting


def get_num_threads():
    """The number of threads large steps use (default: the cores this process may use)."""
    return omp_get_max_threads()


# ---------------------------------------------------------------------------------------
# Parallel driver: one for every kernel. A kernel call is described by KernelCall and run
# over [start, stop) by _run_range; _run splits [0, n) across threads. All kernels are
# element-wise, so the split cannot change a single bit of the result.

cdef enum Kernel:
    SGD_F32, SGD_F64, MOMENTUM_F32, MOMENTUM_F64, EMA_F32, EMA_F64

ctypedef struct KernelCall:
    Kernel kernel
    char* out          # param (SGD/momentum) or average (EMA)
    const char* inp    # grad or value
    char* state        # velocity (momentum only)
    double a, b, c, d  # scalars, see _run_range
    bint has_weight_decay, nesterov, maximize, first_step


cdef void _run_range(const KernelCall* k, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t n = stop - start
    # Scalars are rounded to the buffer's type here, as torch rounds them.
    if k.kernel == SGD_F32:
        sgd_kernel(<float*>k.out + start, <const float*>k.inp + start, n,
                   <float>k.a, <float>k.d, k.has_weight_decay, k.maximize)
    elif k.kernel == SGD_F64:
        sgd_kernel(<double*>k.out + start, <const double*>k.inp + start, n,
                   k.a, k.d, k.has_weight_decay, k.maximize)
    elif k.kernel == MOMENTUM_F32:
        momentum_kernel(<float*>k.out + start, <const float*>k.inp + start,
                        <float*>k.state + start, n, <float>k.a, <float>k.b, <float>k.c,
                        <float>k.d, k.has_weight_decay, k.nesterov, k.maximize, k.first_step)
    elif k.kernel == MOMENTUM_F64:
        momentum_kernel(<double*>k.out + start, <const double*>k.inp + start,
                        <double*>k.state + start, n, k.a, k.b, k.c, k.d,
                        k.has_weight_decay, k.nesterov, k.maximize, k.first_step)
    elif k.kernel == EMA_F32:
        ema_kernel(<float*>k.out + start, <const float*>k.inp + start, n, <float>k.a, <float>k.b)
    elif k.kernel == EMA_F64:
        ema_kernel(<double*>k.out + start, <const double*>k.inp + start, n, k.a, k.b)


cdef inline int _threads_for(double work_ns) noexcept nogil:
    """Threads for ``work_ns`` of work on one thread: one more per PARALLEL_MIN_OVERHEADS
    times the pool's overhead, at most the set thread count (the pool caps that at the
    CPUs and chunks)."""
    cdef double per_thread = PARALLEL_MIN_OVERHEADS * fm_pool_overhead_ns()
    if work_ns < per_thread:
        return 1
    return <int>min(<double>omp_get_max_threads(), 1.0 + work_ns / per_thread)


cdef inline double _call_ns(const KernelCall* k, Py_ssize_t n) noexcept nogil:
    """The estimated time of ``k`` over ``n`` elements on one thread: SGD and EMA read two
    arrays and write one, momentum reads three and writes two."""
    cdef int streams = 5 if k.kernel == MOMENTUM_F32 or k.kernel == MOMENTUM_F64 else 3
    cdef int itemsize = 4 if k.kernel in (SGD_F32, MOMENTUM_F32, EMA_F32) else 8
    return n * streams * itemsize * NS_PER_BYTE


cdef inline Py_ssize_t _chunks(Py_ssize_t n) noexcept nogil:
    return (n + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK


ctypedef struct _RangeJob:
    const KernelCall* call
    Py_ssize_t n


cdef void _range_task(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil:
    cdef const _RangeJob* job = <const _RangeJob*>ctx
    cdef Py_ssize_t start = chunk * PARALLEL_CHUNK
    _run_range(job.call, start, min(job.n, start + PARALLEL_CHUNK))


cdef void _run_parallel(const KernelCall* k, Py_ssize_t n, int nthreads) noexcept nogil:
    cdef _RangeJob job
    job.call = k
    job.n = n
    fm_parallel_for(_range_task, &job, _chunks(n), nthreads)


cdef void _run(const KernelCall* k, Py_ssize_t n) noexcept:
    cdef int nthreads = _threads_for(_call_ns(k, n))
    if n < NOGIL_MIN_SIZE:
        _run_range(k, 0, n)
    elif nthreads == 1:
        with nogil:
            _run_range(k, 0, n)
    else:
        with nogil:
            _run_parallel(k, n, nthreads)


# ---------------------------------------------------------------------------------------
# Argument checks in C. They test exactly what fastmomentum._validation tests.

cdef inline bint _usable(object x, int typenum, bint writeable) noexcept:
    """A native, aligned, C-contiguous array of ``typenum`` (and writeable if asked)."""
    if not cnp.PyArray_Check(x):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and (cnp.PyArray_ISWRITEABLE(a) or not writeable))


cdef inline bint _lead(object x, bint writeable) noexcept:
    """The first array of a call: a usable float32 or float64 array (it fixes the dtype and
    shape the others must match)."""
    if not cnp.PyArray_Check(x):
        return False
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    return ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
            and _usable(x, typenum, writeable))


cdef inline bint _like(object x, cnp.ndarray lead, bint writeable) noexcept:
    return (_usable(x, cnp.PyArray_TYPE(lead), writeable)
            and cnp.PyArray_SAMESHAPE(<cnp.ndarray>x, lead))


cdef inline bint _bytes_overlap(const char* a, Py_ssize_t na, const char* b,
                                Py_ssize_t nb) noexcept nogil:
    """The byte ranges [a, a + na) and [b, b + nb) share a byte."""
    return na > 0 and nb > 0 and a < b + nb and b < a + na


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    return _bytes_overlap(cnp.PyArray_BYTES(a), cnp.PyArray_NBYTES(a),
                          cnp.PyArray_BYTES(b), cnp.PyArray_NBYTES(b))


cdef inline bint _finite_in(double x, double low, double high) noexcept:
    # False for NaN, which fails both comparisons; high=inf still refuses inf through x-x.
    return low <= x <= high and x - x == 0.0


cdef inline bint _sgd_hyper_ok(double lr, double momentum, double dampening,
                               double weight_decay, bint nesterov) noexcept:
    """torch.optim.SGD's hyper-parameter rules (see _validation.check_sgd_hyper)."""
    return (_finite_in(lr, 0.0, INFINITY) and _finite_in(momentum, 0.0, INFINITY)
            and _finite_in(dampening, -INFINITY, INFINITY)
            and _finite_in(weight_decay, 0.0, INFINITY)
            and not (nesterov and (momentum <= 0.0 or dampening != 0.0)))


# ---------------------------------------------------------------------------------------
# Entry points

def momentum_step(param, grad, velocity, *, lr, momentum=0.0, dampening=0.0,
                  weight_decay=0.0, nesterov=False, maximize=False, first_step=False):
    """One in-place SGD step on one buffer, bit for bit as ``torch.optim.SGD``.

    ``param`` (writeable), ``grad`` and ``velocity`` (writeable; may be None when
    ``momentum == 0``) are C-contiguous arrays of one dtype, float32 or float64, and one
    shape. In torch's order and rounding (scalars rounded to the dtype, every multiply-add
    fused)::

        g = -grad if maximize else grad
        g = g + weight_decay * param                   # coupled weight decay
        velocity = g if first_step else momentum * velocity + (1 - dampening) * g
        g = g + momentum * velocity if nesterov else velocity
        param -= lr * g

    Without momentum (``momentum == 0``) ``velocity`` is neither read nor written.
    ``first_step=True`` is torch's first step, where the momentum buffer does not exist yet:
    ``velocity`` is set to ``g`` whatever it held, with no dampening. The textbook EMA form
    ``v = beta*v + (1-beta)*g`` is ``momentum=beta, dampening=beta``.

    Raises TypeError/ValueError (and writes nothing) for non-float or mismatched arrays,
    read-only, non-contiguous or overlapping in-place buffers, negative or non-finite
    ``lr``/``momentum``/``weight_decay``, and ``nesterov`` without momentum or with
    dampening. Empty buffers are a no-op; NaN in ``grad`` propagates as in torch.
    Returns None."""
    cdef double lr_, momentum_, dampening_, weight_decay_
    cdef bint nesterov_ = nesterov, maximize_ = maximize, first_step_ = first_step
    cdef KernelCall k
    cdef cnp.ndarray p, g, v
    cdef bint ok = False
    try:
        lr_, momentum_ = lr, momentum
        dampening_, weight_decay_ = dampening, weight_decay
        ok = (_sgd_hyper_ok(lr_, momentum_, dampening_, weight_decay_, nesterov_)
              and _lead(param, True)
              and _like(grad, <cnp.ndarray>param, False)
              and not _overlap(<cnp.ndarray>grad, <cnp.ndarray>param)
              and (momentum_ == 0.0
                   or (_like(velocity, <cnp.ndarray>param, True)
                       and not _overlap(<cnp.ndarray>velocity, <cnp.ndarray>param)
                       and not _overlap(<cnp.ndarray>velocity, <cnp.ndarray>grad))))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        _validation.check_momentum_step(param, grad, velocity, lr, momentum, dampening,
                                        weight_decay, nesterov, maximize, first_step)
        raise AssertionError("momentum_step: internal error, arguments refused in C "
                             "but accepted by the validator")
    p = <cnp.ndarray>param
    g = <cnp.ndarray>grad
    k.out = cnp.PyArray_BYTES(p)
    k.inp = cnp.PyArray_BYTES(g)
    k.a = -lr_
    k.d = weight_decay_
    k.has_weight_decay = weight_decay_ != 0.0
    k.maximize = maximize_
    if momentum_ == 0.0:
        k.kernel = SGD_F32 if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT else SGD_F64
    else:
        v = <cnp.ndarray>velocity
        k.kernel = MOMENTUM_F32 if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT else MOMENTUM_F64
        k.state = cnp.PyArray_BYTES(v)
        k.b = momentum_
        k.c = 1.0 - dampening_
        k.nesterov = nesterov_
        k.first_step = first_step_
    _run(&k, cnp.PyArray_SIZE(p))


def ema_update(average, value, decay):
    """In place ``average = decay*average + (1-decay)*value``; returns ``average``.

    ``average`` (writeable) and ``value`` are C-contiguous arrays of one float dtype and
    shape, not sharing memory; ``0 <= decay <= 1``. Computed as
    ``fma(decay, average, (1-decay)*value)`` with the scalars rounded to the dtype.
    Raises TypeError/ValueError (and writes nothing) for bad input."""
    cdef double decay_
    cdef KernelCall k
    cdef bint ok = False
    try:
        decay_ = decay
        ok = (_finite_in(decay_, 0.0, 1.0)
              and _lead(average, True)
              and _like(value, <cnp.ndarray>average, False)
              and not _overlap(<cnp.ndarray>value, <cnp.ndarray>average))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        _validation.check_ema_update(average, value, decay)
        raise AssertionError("ema_update: internal error, arguments refused in C "
                             "but accepted by the validator")
    k.kernel = EMA_F32 if cnp.PyArray_TYPE(<cnp.ndarray>average) == cnp.NPY_FLOAT else EMA_F64
    k.out = cnp.PyArray_BYTES(<cnp.ndarray>average)
    k.inp = cnp.PyArray_BYTES(<cnp.ndarray>value)
    k.a = decay_
    k.b = 1.0 - decay_
    _run(&k, cnp.PyArray_SIZE(<cnp.ndarray>average))
    return average

include "_roofline.pxi"
include "_multi.pxi"
include "_ewm.pxi"
