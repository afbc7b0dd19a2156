# Threads: the thread count (OpenMP's setting) and run_chunks, the one place where
# fastmomentum runs work on threads (see fastmomentum/_threads.pxd). The threads are a pool
# of fastmomentum's own (fm_pool.c, compiled into this module only: one pool per process);
# fm_pool.c says why not OpenMP's.

cdef extern from "fm_openmp.h" nogil:
    int omp_get_max_threads()
    void omp_set_num_threads(int)
    int FM_HAVE_OPENMP

cdef extern from "fm_pool.h" nogil:
    ctypedef void (*fm_task_fn)(void* ctx, Py_ssize_t chunk, int worker) noexcept nogil
    void fm_parallel_for(fm_task_fn task, void* ctx, Py_ssize_t nchunks, int max_workers)
    double fm_pool_overhead_ns()
    int fm_pool_cpus()
    int fm_pool_threads()
    void fm_pool_set_schedule(int schedule)
    void fm_pool_set_overhead_ns(double ns)
    void fm_pool_stats(unsigned long long* out)

#: Whether this build runs large work on threads. Their count is OpenMP's setting
#: (OMP_NUM_THREADS, threadpoolctl's "openmp" limits, set_num_threads), so a build without
#: OpenMP runs everything on the calling thread.
HAS_OPENMP = bool(FM_HAVE_OPENMP)

# set_num_threads caps n here: OpenMP takes an int; the pool never starts more threads
# than the CPUs this process may use, nor a loop more than it has chunks.
cdef int MAX_THREADS = 1 << 16
#: For tests that must make threads run or the GIL be released (private: they may change):
#: a third of a float32 momentum pass that takes threads even when the pool's overhead
#: estimate has risen on a loaded machine (~30 MB streamed: 200 us of work), and the size
#: from which the GIL is released.
_PARALLEL_MIN_SIZE = 1 << 19
_NOGIL_MIN_SIZE = NOGIL_MIN_SIZE


def _threads_for_size(Py_ssize_t n):
    """The threads a float32 momentum pass over ``n`` elements (20 bytes each streamed)
    would take now (private, for tests)."""
    return threads_for(streaming_ns(20.0 * n))

# When a second thread pays follows from the measured cost of waking one: the pool keeps a
# running estimate of what a parallel loop costs its caller beyond its share of the work
# (fm_pool_overhead_ns: the wake-up call and the wait for chunks a woken thread claimed;
# 5 us to start with, as benchmarks/wake_cost.c measures here). If no other thread gets to
# run (every other core busy) the caller does all the work and loses that overhead, so a
# loop takes threads only when its work is at least PARALLEL_MIN_OVERHEADS times the
# overhead (then it is at most 1/6 slower than on one thread), and one more thread per
# that much work. Measured with one core busy (benchmarks/contention.py): momentum_step,
# ema_update and ewm_mean from 64k to 4M at 0.90-1.09x of their time on one thread.
cdef double PARALLEL_MIN_OVERHEADS = 6.0


cdef void run_chunks(chunk_fn fn, void* ctx, Py_ssize_t nchunks, int nthreads) noexcept nogil:
    fm_parallel_for(fn, ctx, nchunks, nthreads)


cdef int pool_threads_for(double work_ns) noexcept nogil:
    """Threads for ``work_ns`` of work (its time on one thread): see PARALLEL_MIN_OVERHEADS;
    at most the set thread count."""
    cdef double per_thread = PARALLEL_MIN_OVERHEADS * fm_pool_overhead_ns()
    if work_ns < per_thread:
        return 1
    return <int>min(<double>omp_get_max_threads(), 1.0 + work_ns / per_thread)


def set_num_threads(n):
    """Use ``n`` threads (>= 1) for large buffers, from the calling thread on.

    This sets OpenMP's thread count, as ``OMP_NUM_THREADS`` and
    ``threadpoolctl.threadpool_limits`` do; results do not depend on it. A loop never uses
    more threads than the CPUs this process may run on, nor than it has chunks."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: `n` must be an integer >= 1; got {n!r}")
    omp_set_num_threads(min(n, MAX_THREADS))


def get_num_threads():
    """The number of threads large steps use (default: the cores this process may use)."""
    return omp_get_max_threads()


# Private: for tests and benchmarks

def _pool_set_schedule(int schedule):
    """0 normal, 1 the caller runs every chunk, 2 pool threads run them all."""
    fm_pool_set_schedule(schedule)


def _pool_set_overhead(double ns):
    """Set the pool's overhead estimate (it goes on adapting from there)."""
    fm_pool_set_overhead_ns(ns)


def _pool_threads():
    """(pool threads started so far, CPUs a loop may use)."""
    return fm_pool_threads(), fm_pool_cpus()


def _pool_stats():
    """(parallel loops run on the pool, chunks pool threads ran, times a caller slept
    waiting for a pool thread's chunk) since the process started, and the pool's current
    overhead estimate in ns."""
    cdef unsigned long long out[3]
    fm_pool_stats(out)
    return out[0], out[1], out[2], fm_pool_overhead_ns()
