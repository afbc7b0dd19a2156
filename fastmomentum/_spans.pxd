# What a multi-tensor pass writes and reads, and whether its items may run on threads
# (fastmomentum._spans, src/driver/_spans.pyx).
from fastmomentum._threads cimport streaming_ns
from fm_core_table cimport OP_EMA, WorkItem

ctypedef struct Span:
    char* start
    Py_ssize_t nbytes


cdef class WrittenSpans:
    cdef Span* written       # by slot, this call (nbytes 0: nothing)
    cdef Span* spans         # the written spans, sorted by start
    cdef Span* read          # by work item: what the last order_free check found clear
    cdef Py_ssize_t size, span_count, span_slots, read_count
    cdef bint spans_valid, disjoint, reads_clear
    cdef bint busy           # a pass over these spans runs without the GIL right now

    cdef int reserve(self, Py_ssize_t size) except -1
    cdef void write(self, Py_ssize_t slot, char* start, Py_ssize_t nbytes) noexcept
    cdef bint writes_disjoint(self, Py_ssize_t slots) noexcept
    cdef bint overlaps_written(self, const char* start, Py_ssize_t nbytes) noexcept


cdef int order_free(const WorkItem* items, Py_ssize_t count, WrittenSpans written) except -1
cdef Py_ssize_t record_grads(const WorkItem* items, Py_ssize_t count, WrittenSpans spans,
                             Py_ssize_t slot) except -1
cdef int safe_threads(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                      WrittenSpans written) except -1


cdef inline double pass_ns(const WorkItem* items, Py_ssize_t total) noexcept nogil:
    """The estimated time of a pass of ``total`` elements on one thread, for threads_for,
    from its first item (a list's items share their step): an SGD step reads param and grad
    and writes param, momentum also reads and writes the velocity, an EMA reads two arrays
    and writes one, a fused EMA reads and writes its average too."""
    cdef const WorkItem* w = items
    cdef int streams = 3
    if w.op != OP_EMA:
        streams += 2 * (w.velocity != NULL) + 2 * (w.average != NULL)
    return streaming_ns(<double>total * streams * w.itemsize)
