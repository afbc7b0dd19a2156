# Growing the C arrays that the drivers' caches own.
from libc.stdlib cimport realloc


cdef inline int grow(void** array, Py_ssize_t count, size_t item_size) except -1:
    """Reallocate ``*array`` to ``count`` items (MemoryError, ``*array`` kept, on failure)."""
    cdef void* grown = realloc(array[0], count * item_size)
    if grown == NULL:
        raise MemoryError()
    array[0] = grown
    return 0
