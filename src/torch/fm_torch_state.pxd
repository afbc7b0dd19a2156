# A torch.optim optimizer's state (a dict keyed by param) read and written from C: the
# momentum buffers, without calling Tensor.__hash__ (a Python function returning id(t))
# nor running any Python code between the kernels and the bookkeeping.
from cpython.object cimport PyObject
from libc.stdint cimport uintptr_t

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
    #if PY_VERSION_HEX < 0x030D0000
    #define fm_dict_set_known_hash(d, k, v, h) _PyDict_SetItem_KnownHash(d, k, v, h)
    #else
    #define fm_dict_set_known_hash(d, k, v, h) PyDict_SetItem(d, k, v)
    #endif
    """
    PyObject* fm_dict_get_known_hash(object mp, object key, Py_hash_t hash)
    int fm_dict_set_known_hash(object mp, object key, object value, Py_hash_t hash) except -1


cdef inline int raise_error_set() except -1:
    """Propagate the Python error a C-API call left set."""
    return -1


cdef inline Py_hash_t _tensor_hash(object t) noexcept:
    # Tensor.__hash__ is a Python function returning id(t): the object's address
    return <Py_hash_t><uintptr_t><PyObject*>t


cdef inline object momentum_buffer(object state, object param):
    """``state[param]['momentum_buffer']`` or None, without calling Tensor.__hash__."""
    cdef PyObject* entry = fm_dict_get_known_hash(state, param, _tensor_hash(param))
    if entry == NULL and PyErr_Occurred():
        raise_error_set()
    if entry == NULL or not PyDict_Check(<object>entry):
        return None
    cdef PyObject* buf = PyDict_GetItem(<object>entry, "momentum_buffer")
    return None if buf == NULL else <object>buf


cdef inline int store_momentum_buffer(object state, object param, object buf) except -1:
    """``state[param]['momentum_buffer'] = buf`` without running Python code (no
    Tensor.__hash__, no defaultdict factory): part of torch_sgd_run's bookkeeping."""
    cdef PyObject* entry = fm_dict_get_known_hash(state, param, _tensor_hash(param))
    if entry == NULL:
        if PyErr_Occurred():
            raise_error_set()
        fm_dict_set_known_hash(state, param, {"momentum_buffer": buf}, _tensor_hash(param))
    elif PyDict_Check(<object>entry):
        (<dict>entry)["momentum_buffer"] = buf
    else:
        from fastmomentum._validation import describe
        raise TypeError(f"SGD.step: `state[param]` must be a dict; got "
                        f"{describe(<object>entry)}")
    return 0
