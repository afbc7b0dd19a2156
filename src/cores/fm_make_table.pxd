# A CPU target's core table: every numeric core compiled with this module's flags, in one
# CoreTable handed over in a PyCapsule. cimported by _cores_portable.pyx and
# _cores_avx2.pyx only (setup.py builds them from this one source with different flags).
from cpython.pycapsule cimport PyCapsule_New

from fm_core_table cimport (EMA_F32, EMA_F64, FM_CORE_TABLE_CAPSULE, FUSED_F32, FUSED_F64,
                            MOMENTUM_F32, MOMENTUM_F64, SGD_F32, SGD_F64, CoreTable,
                            MOMENTUM_F32_BF16_STATE, MOMENTUM_F32_F16_STATE,
                            SPLIT_GRAD_BF16_STATE_BF16, SPLIT_GRAD_BF16_STATE_F32,
                            SPLIT_GRAD_F32_STATE_BF16, SPLIT_GRAD_F32_STATE_F32,
                            elementwise_fn, ewm_loop_fn, norm_fn, time_factors_fn,
                            GRAD_BF16, GRAD_F16, GRAD_F32, GRAD_F64,
                            ewm_family_row_fn, ewm_row_finite_fn, ewm_rows_superblock_fn,
                            ewm_series_fn, ewm_superblock_fn)
from fm_elementwise cimport ema_range, fused_range, momentum_range, sgd_range
from fm_core_table cimport (EMA_BF16, EMA_F16, FUSED_BF16, FUSED_F16, MOMENTUM_BF16,
                            MOMENTUM_F16, SGD_BF16, SGD_F16)
from fm_half cimport fm_bf16, fm_f16
from fm_half_steps cimport half_ema_range, half_step_range
from fm_ewm_coefficients cimport scan_coefficients
from fm_ewm_loop cimport pandas_loop, pandas_series
from fm_ewm_moments cimport family_row, row_finite
from fm_ewm_rows cimport rows_superblock
from fm_ewm_scan cimport series_superblock
from fm_norms cimport max_magnitude, sum_squares
from fm_state_steps cimport (momentum_f32_bf16_state, momentum_f32_f16_state,
                             split_grad_bf16_state_bf16, split_grad_bf16_state_f32,
                             split_grad_f32_state_bf16, split_grad_f32_state_f32)

from libc.stdint cimport int64_t

cdef extern from "fm_time_factors.h" nogil:
    void fm_time_factors_i64(const int64_t* times, double previous, Py_ssize_t n,
                             double halflife, double log2_b, double* out)
    void fm_time_factors_f64(const double* times, double previous, Py_ssize_t n,
                             double halflife, double log2_b, double* out)

cdef extern from "fm_cpu.h" nogil:
    const char* FM_BUILD_TARGET


cdef inline object core_table_capsule(CoreTable* table):
    """Fill ``table`` (the stub's static storage) and wrap it in a capsule."""
    table.target = FM_BUILD_TARGET
    table.elementwise[SGD_F32] = <elementwise_fn>sgd_range[float]
    table.elementwise[SGD_F64] = <elementwise_fn>sgd_range[double]
    table.elementwise[MOMENTUM_F32] = <elementwise_fn>momentum_range[float]
    table.elementwise[MOMENTUM_F64] = <elementwise_fn>momentum_range[double]
    table.elementwise[FUSED_F32] = <elementwise_fn>fused_range[float]
    table.elementwise[FUSED_F64] = <elementwise_fn>fused_range[double]
    table.elementwise[EMA_F32] = <elementwise_fn>ema_range[float]
    table.elementwise[EMA_F64] = <elementwise_fn>ema_range[double]
    # mp-state: fewer-byte momentum, split-bfloat16 master weights
    table.elementwise[MOMENTUM_F32_BF16_STATE] = <elementwise_fn>momentum_f32_bf16_state
    table.elementwise[MOMENTUM_F32_F16_STATE] = <elementwise_fn>momentum_f32_f16_state
    table.elementwise[SPLIT_GRAD_F32_STATE_F32] = <elementwise_fn>split_grad_f32_state_f32
    table.elementwise[SPLIT_GRAD_F32_STATE_BF16] = <elementwise_fn>split_grad_f32_state_bf16
    table.elementwise[SPLIT_GRAD_BF16_STATE_F32] = <elementwise_fn>split_grad_bf16_state_f32
    table.elementwise[SPLIT_GRAD_BF16_STATE_BF16] = <elementwise_fn>split_grad_bf16_state_bf16
    # mp-dtypes: bfloat16 / float16 (one step function: momentum and the fused EMA are
    # the item's velocity and average)
    for kernel in (SGD_BF16, MOMENTUM_BF16, FUSED_BF16):
        table.elementwise[kernel] = <elementwise_fn>half_step_range[fm_bf16]
    for kernel in (SGD_F16, MOMENTUM_F16, FUSED_F16):
        table.elementwise[kernel] = <elementwise_fn>half_step_range[fm_f16]
    table.elementwise[EMA_BF16] = <elementwise_fn>half_ema_range[fm_bf16]
    table.elementwise[EMA_F16] = <elementwise_fn>half_ema_range[fm_f16]
    table.ewm_coefficients = scan_coefficients
    table.ewm_f32.pandas_loop = <ewm_loop_fn>pandas_loop[float]
    table.ewm_f64.pandas_loop = <ewm_loop_fn>pandas_loop[double]
    table.ewm_f32.pandas_series = <ewm_series_fn>pandas_series[float]
    table.ewm_f64.pandas_series = <ewm_series_fn>pandas_series[double]
    table.ewm_f32.series_superblock = <ewm_superblock_fn>series_superblock[float]
    table.ewm_f64.series_superblock = <ewm_superblock_fn>series_superblock[double]
    table.ewm_f32.rows_superblock = <ewm_rows_superblock_fn>rows_superblock[float]
    table.ewm_f64.rows_superblock = <ewm_rows_superblock_fn>rows_superblock[double]
    table.ewm_f32.family_row = <ewm_family_row_fn>family_row[float]
    table.ewm_f64.family_row = <ewm_family_row_fn>family_row[double]
    table.ewm_f32.row_finite = <ewm_row_finite_fn>row_finite[float]
    table.ewm_f64.row_finite = <ewm_row_finite_fn>row_finite[double]
    table.time_factors_i64 = <time_factors_fn>fm_time_factors_i64
    table.time_factors_f64 = <time_factors_fn>fm_time_factors_f64
    table.sum_squares[GRAD_F32] = <norm_fn>sum_squares[float]
    table.sum_squares[GRAD_F64] = <norm_fn>sum_squares[double]
    table.sum_squares[GRAD_BF16] = <norm_fn>sum_squares[fm_bf16]
    table.sum_squares[GRAD_F16] = <norm_fn>sum_squares[fm_f16]
    table.max_magnitude[GRAD_F32] = <norm_fn>max_magnitude[float]
    table.max_magnitude[GRAD_F64] = <norm_fn>max_magnitude[double]
    table.max_magnitude[GRAD_BF16] = <norm_fn>max_magnitude[fm_bf16]
    table.max_magnitude[GRAD_F16] = <norm_fn>max_magnitude[fm_f16]
    return PyCapsule_New(table, FM_CORE_TABLE_CAPSULE, NULL)
