# What the CPU running us can do: asked before any target-specific module is loaded, so
# this module is built for the default target only.
cdef extern from "fm_cpu.h" nogil:
    int fm_cpu_has_avx2_fma()


def cpu_has_avx2_fma():
    """True when this CPU (and OS) can run the AVX2+FMA cores."""
    return bool(fm_cpu_has_avx2_fma())
