# Threads for large work (fastmomentum._threads, src/driver/_threads.pyx). Every threaded
# loop of fastmomentum is a chunk function run by run_chunks: fn(ctx, chunk, worker) for
# chunk in [0, nchunks), ``worker`` in [0, nthreads) naming the thread (for its scratch).
# Chunks are fixed by the caller, so no result depends on which thread runs which chunk,
# nor on how many threads there are.

cdef enum:
    # Element-wise loops run in chunks of PARALLEL_CHUNK elements (a multiple of 64: no two
    # threads write one cache line); 16k float32 momentum elements are 2-3 us of work, so a
    # thread that wakes late holds the caller up by at most that.
    PARALLEL_CHUNK = 1 << 14
    # Releasing the GIL costs ~0.1 us: worth it only when the loop itself takes several us.
    NOGIL_MIN_SIZE = 1 << 14

ctypedef void (*chunk_fn)(void* ctx, Py_ssize_t chunk, int worker) noexcept nogil

cdef void run_chunks(chunk_fn fn, void* ctx, Py_ssize_t nchunks, int nthreads) noexcept nogil

cdef int pool_threads_for(double work_ns) noexcept nogil


cdef inline int threads_for(double work_ns) noexcept nogil:
    """Threads for ``work_ns`` of work (its time on one thread), see _threads.pyx. Under
    1 us none can pay (a parallel loop costs its caller more than 1/6 of that: the wake-up
    call alone takes microseconds), so small calls do not ask the pool."""
    return 1 if work_ns < 1000.0 else pool_threads_for(work_ns)


cdef inline double streaming_ns(double nbytes) noexcept nogil:
    """The time one thread takes to stream ``nbytes`` (read plus written): 150 GB/s from L3
    here (momentum_step, float32, 256k elements: 5.2 MB in 35 us), where threads start to
    matter; from memory it is slower, so the estimate errs towards fewer threads."""
    return nbytes / 150.0
