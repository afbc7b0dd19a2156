# fm_half.h for Cython: the bfloat16/float16 <-> float32 conversions and the two storage
# types, cimported by the 16-bit loops (fm_half_steps.pxd, fm_state_steps.pxd).
from libc.stdint cimport uint16_t, uint32_t

cdef extern from "fm_half.h" nogil:
    ctypedef struct fm_bf16:
        uint16_t bits
    ctypedef struct fm_f16:
        uint16_t bits
    float fm_bf16_to_float(uint16_t h)
    uint16_t fm_float_to_bf16(float f)
    float fm_bf16_rounded(float f)
    float fm_f16_to_float(uint16_t h)
    uint16_t fm_float_to_f16(float f)
    uint32_t fm_float_bits(float f)
    float fm_bits_float(uint32_t u)
