# What a multi-tensor pass writes and reads, and whether its items may run on threads
# (fastmomentum._spans, src/driver/_spans.pyx).
from fm_core_table cimport WorkItem

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
cdef int safe_threads(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                      WrittenSpans written) except -1
