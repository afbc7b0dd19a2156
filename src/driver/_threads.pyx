# Threads: the thread count (OpenMP's), and run_chunks, the one place where fastmomentum
# starts threads (see fastmomentum/_threads.pxd).
from cython.parallel cimport parallel, prange, threadid

cdef extern from "fm_openmp.h" nogil:
    void omp_set_num_threads(int)
    int FM_HAVE_OPENMP

#: Whether this build splits large buffers across OpenMP threads.
HAS_OPENMP = bool(FM_HAVE_OPENMP)

# set_num_threads caps n here: OpenMP takes an int, and no machine this runs on has more
# hardware threads; threads_for also never gives a call more threads than its work fills.
cdef int MAX_THREADS = 1 << 16
#: PARALLEL_MIN_SIZE and NOGIL_MIN_SIZE, for tests that must make threads run or the GIL
#: be released (private: they may change).
_PARALLEL_MIN_SIZE = PARALLEL_MIN_SIZE
_NOGIL_MIN_SIZE = NOGIL_MIN_SIZE


def _threads_for_size(Py_ssize_t n):
    """The threads a pass over ``n`` elements uses now (private, for tests)."""
    return threads_for(n)


cdef void run_chunks(chunk_fn fn, void* ctx, Py_ssize_t nchunks, int nthreads) noexcept nogil:
    cdef Py_ssize_t chunk
    cdef int worker
    if nthreads <= 1 or nchunks <= 1:
        for chunk in range(nchunks):
            fn(ctx, chunk, 0)
        return
    # dynamic: a thread that starts late takes what is left (chunks are fixed, so which
    # thread runs one never changes a bit)
    with parallel(num_threads=nthreads):
        worker = threadid()
        for chunk in prange(nchunks, schedule="dynamic"):
            fn(ctx, chunk, worker)


def set_num_threads(n):
    """Use ``n`` threads (>= 1) for large buffers, from the calling thread on.

    This sets OpenMP's thread count, as ``OMP_NUM_THREADS`` and
    ``threadpoolctl.threadpool_limits`` do; results do not depend on it."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: `n` must be an integer >= 1; got {n!r}")
    omp_set_num_threads(min(n, MAX_THREADS))


def get_num_threads():
    """The number of threads large steps use (default: the cores this process may use)."""
    return omp_get_max_threads()
