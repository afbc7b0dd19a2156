# Threads for large work (fastmomentum._threads, src/driver/_threads.pyx). Every threaded
# loop of fastmomentum is a chunk function run by run_chunks: fn(ctx, chunk, worker) for
# chunk in [0, nchunks), ``worker`` in [0, nthreads) naming the thread (for its scratch).
# Chunks are fixed by the caller, so no result depends on which thread runs which chunk.

cdef extern from "fm_openmp.h" nogil:
    int omp_get_max_threads()

cdef enum:
    # Threads pay only once a buffer is much larger than the cost of waking them (a few
    # us): each thread gets at least PARALLEL_MIN_SIZE elements, so a second thread starts
    # at 2 * PARALLEL_MIN_SIZE.
    PARALLEL_MIN_SIZE = 1 << 16
    # Chunks start on 64-element boundaries so no two threads write the same cache line.
    CHUNK_ALIGN = 64
    # Releasing the GIL costs ~0.1 us: worth it only when the loop itself takes several us.
    NOGIL_MIN_SIZE = 1 << 14

ctypedef void (*chunk_fn)(void* ctx, Py_ssize_t chunk, int worker) noexcept nogil

cdef void run_chunks(chunk_fn fn, void* ctx, Py_ssize_t nchunks, int nthreads) noexcept nogil


cdef inline int threads_for(Py_ssize_t n) noexcept nogil:
    """Threads for ``n`` elements of streaming work: at least PARALLEL_MIN_SIZE each."""
    if n < 2 * PARALLEL_MIN_SIZE:
        return 1
    return <int>min(<Py_ssize_t>omp_get_max_threads(), n // PARALLEL_MIN_SIZE)
