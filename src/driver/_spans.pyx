# WrittenSpans: the memory a multi-tensor pass writes, kept from one call to the next, and
# the check that lets its items run on threads in any order (order_free).
from libc.stdlib cimport free, qsort

from fastmomentum._threads cimport threads_for
from fm_core_table cimport OP_EMA, WorkItem, grad_bytes, param_bytes, velocity_bytes
from fm_memory cimport grow


cdef int _span_order(const void* a, const void* b) noexcept nogil:
    cdef char* x = (<const Span*>a).start
    cdef char* y = (<const Span*>b).start
    return -1 if x < y else (1 if x > y else 0)


cdef class WrittenSpans:
    """The memory a multi-tensor pass writes, by slot, kept from one call to the next.

    Threads run the items in any order; one after the other they match a loop over the
    buffers. Both agree only when no two written spans overlap and no item reads a written
    span (a param listed twice, shared storage, a grad that is another param's view):
    _order_free checks that. The sorted spans are rebuilt only after a slot changed, and
    the inputs searched in them only after one moved: steady-state steps pay a comparison
    per slot (a binary search per input when the inputs are new arrays every step)."""
    def __dealloc__(self):
        free(self.written)
        free(self.spans)
        free(self.read)

    def __reduce__(self):
        return WrittenSpans, ()   # a cache: copies and unpickled objects start empty

    cdef int reserve(self, Py_ssize_t size) except -1:
        if size <= self.size:
            return 0
        cdef Py_ssize_t i
        grow(<void**>&self.written, size, sizeof(Span))
        grow(<void**>&self.spans, size, sizeof(Span))
        grow(<void**>&self.read, size, sizeof(Span))
        self.read_count = 0
        for i in range(self.size, size):
            self.written[i].start = NULL
            self.written[i].nbytes = 0
        self.size = size
        self.spans_valid = False
        return 0

    cdef void write(self, Py_ssize_t slot, char* start, Py_ssize_t nbytes) noexcept:
        """Record what this call writes in ``slot`` (nbytes 0: nothing)."""
        if self.written[slot].start != start or self.written[slot].nbytes != nbytes:
            self.written[slot].start = start
            self.written[slot].nbytes = nbytes
            self.spans_valid = self.reads_clear = False

    cdef bint writes_disjoint(self, Py_ssize_t slots) noexcept:
        """No two written spans of slots [0, slots) overlap."""
        cdef Py_ssize_t i
        if not self.spans_valid or slots != self.span_slots:
            self.span_slots = slots
            self.reads_clear = False
            self.span_count = 0
            for i in range(slots):
                if self.written[i].nbytes:
                    self.spans[self.span_count] = self.written[i]
                    self.span_count += 1
            qsort(self.spans, self.span_count, sizeof(Span), _span_order)
            self.disjoint = True
            for i in range(1, self.span_count):
                if self.spans[i - 1].start + self.spans[i - 1].nbytes > self.spans[i].start:
                    self.disjoint = False
                    break
            self.spans_valid = True
        return self.disjoint

    cdef bint overlaps_written(self, const char* start, Py_ssize_t nbytes) noexcept:
        """Whether [start, start+nbytes) overlaps a written span (after writes_disjoint)."""
        cdef Py_ssize_t lo = 0, hi = self.span_count, mid
        while lo < hi:  # first span starting at or after the end of ours
            mid = (lo + hi) // 2
            if self.spans[mid].start < start + nbytes:
                lo = mid + 1
            else:
                hi = mid
        # spans are disjoint and sorted: only the one before can reach into ours
        return nbytes > 0 and lo > 0 and self.spans[lo - 1].start + self.spans[lo - 1].nbytes > start


cdef inline Py_ssize_t _item_bytes(const WorkItem* w) noexcept:
    return w.size * w.itemsize


cdef int order_free(const WorkItem* items, Py_ssize_t count, WrittenSpans written) except -1:
    """1 when the items may run in any order (on threads), else 0: each item writes its
    ``param``, ``velocity`` and ``average`` (those not NULL) and reads its ``grad`` (or
    its ``value``, for an EMA). ``written`` (None: a new one) remembers them: when
    nothing moved since the last check found them clear, that answer stands (no sort, no
    binary search)."""
    cdef Py_ssize_t item, nbytes
    cdef const WorkItem* w
    cdef Span span
    if written is None:
        written = WrittenSpans()
    written.reserve(3 * count)
    for item in range(count):
        w = &items[item]
        nbytes = _item_bytes(w)
        written.write(3 * item, w.param, param_bytes(w) if w.param != NULL else 0)
        written.write(3 * item + 1, w.velocity, velocity_bytes(w) if w.velocity != NULL else 0)
        written.write(3 * item + 2, w.average, nbytes if w.average != NULL else 0)
    if not written.writes_disjoint(3 * count):
        return 0
    cdef bint same = written.reads_clear and written.read_count == count
    for item in range(count):
        w = &items[item]
        span.start = <char*>(w.value if w.op == OP_EMA else w.grad)
        span.nbytes = grad_bytes(w) if w.op != OP_EMA else _item_bytes(w)
        if same and (written.read[item].start != span.start
                     or written.read[item].nbytes != span.nbytes):
            same = False
        written.read[item] = span
    written.read_count = count
    if same:
        return 1
    written.reads_clear = False
    for item in range(count):
        if written.overlaps_written(written.read[item].start, written.read[item].nbytes):
            return 0
    written.reads_clear = True
    return 1


cdef Py_ssize_t record_grads(const WorkItem* items, Py_ssize_t count, WrittenSpans spans,
                             Py_ssize_t slot) except -1:
    """write-back (a step that stores its grads): record the items' grads in ``spans``'
    slots ``slot``.. and return the next slot; ``spans.writes_disjoint(next)`` then says
    whether no two grads share memory (two steps storing into one grad would scale it
    twice, and race on threads). ``spans`` kept across steps: a comparison per slot."""
    cdef Py_ssize_t i
    spans.reserve(slot + count)
    for i in range(count):
        spans.write(slot + i, <char*>items[i].grad, grad_bytes(&items[i]))
    return slot + count


cdef int safe_threads(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                      WrittenSpans written) except -1:
    """Threads for a pass over ``items`` (``total`` elements): threads_for its estimated
    time, or 1 (in order, torch's result) when its memory overlaps in a way threads could
    race on."""
    cdef int nthreads = threads_for(pass_ns(items, total)) if count else 1
    if nthreads > 1 and not order_free(items, count, written):
        return 1
    return nthreads
