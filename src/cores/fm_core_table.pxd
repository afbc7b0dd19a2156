# The numeric cores' table: what a CPU target's build (fastmomentum._cores_portable or
# _cores_avx2) hands to the modules compiled once, and the structs its functions take.
#
# Only the loops whose instructions differ per target are built per target: the
# element-wise steps (fastmomentum/kernels.pxd), ewm_mean's inner loops (pandas' loop,
# the series scan and the columns scan) and the ewm family's row step. Everything that
# decides (checks, work lists, threads, the ewm plan) is compiled once and calls them
# through this table.
#
# Why a struct of function pointers in a PyCapsule (and not `cdef api` or Cython's
# cross-module cimport): the compiled-once modules copy the whole struct into a static
# variable once at import, and then a call is one indirect call through a field of it (no
# per-function import table, no pointer chase at call time). Measured with callgrind
# (instructions per call, deterministic on this shared machine) against eb8d50c, where
# every entry point was compiled per target and called its loop directly: 16-element
# momentum_step 909 vs 956, ema_update 369 vs 385, fm.SGD's step on 20 arrays 56.5k vs
# 58.1k. Keeping every core behind one struct also makes the target a single choice, made
# once (fastmomentum/_target.py) after the CPU check, before any target's module loads.
from cpython.pycapsule cimport PyCapsule_GetPointer

from fastmomentum.kernels cimport SgdParams

cdef extern from "fm_scan.h" nogil:
    ctypedef struct fm_scan_coef:
        double b, b2, b3, b4, b8, scale, f1, f2, f3, norm

# ---------------------------------------------------------------------------------------
# Element-wise steps: one call's scalars, and one work item per buffer

ctypedef struct StepScalars:
    SgdParams sgd     # the step (first_step is per item: WorkItem.first_step)
    double decay      # the EMA's (EMA items, and fused averages)
    # clip-amp: every grad is read as grad * grad_coef (rounded to its dtype): global-norm
    # clipping, AMP unscaling; 1 runs the unscaled loops
    double grad_coef
    # write-back: the grads are left holding grad * grad_coef (stored in the step's pass;
    # the grads are then writable), as torch's clip_grad_norm_ leaves them
    bint stores_grad
    # mp-dtypes: how bfloat16/float16 steps round (fm_half_steps.pxd; float32/float64 ignore)
    int rounding            # ROUND_TORCH, ROUND_ONCE or ROUND_STOCHASTIC
    int torch_threads       # ROUND_TORCH: torch.get_num_threads() whose bits to give
    int torch_lanes         # ROUND_TORCH: elements per step of torch's vector loop (0: none)
    unsigned long long stochastic_key   # ROUND_STOCHASTIC: hash of seed and step

# mp-dtypes: StepScalars.rounding
cdef enum:
    ROUND_TORCH, ROUND_ONCE, ROUND_STOCHASTIC

cdef enum StepOp:
    OP_SGD_STEP        # param (and velocity, when sgd.momentum != 0) from grad
    OP_EMA             # average from value

# the element-wise cores, by step and dtype: CoreTable.elementwise[WorkItem.kernel]
cdef enum:
    SGD_F32, SGD_F64                # OP_SGD_STEP, momentum 0
    MOMENTUM_F32, MOMENTUM_F64      # OP_SGD_STEP with velocity
    FUSED_F32, FUSED_F64            # OP_SGD_STEP with the EMA of the new weights (average)
    EMA_F32, EMA_F64                # OP_EMA
    # mp-state (fm_state_steps.pxd): OP_SGD_STEP, float32 params with bfloat16/float16
    # velocity; split-bfloat16 master weights (WorkItem.low_bits) by grad and velocity dtype
    MOMENTUM_F32_BF16_STATE, MOMENTUM_F32_F16_STATE
    SPLIT_GRAD_F32_STATE_F32, SPLIT_GRAD_F32_STATE_BF16
    SPLIT_GRAD_BF16_STATE_F32, SPLIT_GRAD_BF16_STATE_BF16
    # mp-dtypes: bfloat16 / float16 buffers (src/cores/fm_half_steps.pxd)
    SGD_BF16, SGD_F16, MOMENTUM_BF16, MOMENTUM_F16, FUSED_BF16, FUSED_F16, EMA_BF16, EMA_F16
    ELEMENTWISE_KERNELS

ctypedef struct WorkItem:
    StepOp op
    int kernel            # which element-wise core: SGD_F32...
    bint is_f32           # float32 buffers (else float64)
    bint first_step       # OP_SGD_STEP: torch's first step for this buffer
    char* param           # written (OP_SGD_STEP)
    const char* grad      # read (OP_SGD_STEP)
    char* velocity        # written (OP_SGD_STEP with momentum), else NULL
    char* average         # written: OP_EMA, or the fused EMA of the new param, else NULL
    const char* value     # read (OP_EMA)
    Py_ssize_t size       # elements
    Py_ssize_t offset     # first element's index in the concatenation of all items
    # mp-state: the split kernels' bottom halves of the float32 master weights (uint16,
    # written; ``param`` holds the top halves as bfloat16), else NULL
    char* low_bits
    # mp-dtypes
    int itemsize          # bytes per element: 8, 4 or 2 (bfloat16/float16 kernels)

# ``first``: the item's first written buffer (param, or average for OP_EMA), float* or
# double* as the kernel's dtype
ctypedef void (*elementwise_fn)(void* first, const StepScalars* s, const WorkItem* w,
                                Py_ssize_t start, Py_ssize_t stop) noexcept nogil


cdef inline void* first_written(const WorkItem* w) noexcept nogil:
    return w.average if w.op == OP_EMA else w.param


# mp-state: the bytes of an item's buffers (fastmomentum._spans: which items may share
# threads). The state kernels keep some as 16-bit words; counting them at 4 bytes an
# element made neighbouring allocations look overlapped (and steps run on one thread).
# Their ``low_bits`` are the optimizer's own fresh tensors and are not tracked.

cdef inline Py_ssize_t _float_bytes(const WorkItem* w) noexcept nogil:
    return w.size * w.itemsize


cdef inline bint _split_kernel(int kernel) noexcept nogil:
    return SPLIT_GRAD_F32_STATE_F32 <= kernel <= SPLIT_GRAD_BF16_STATE_BF16


cdef inline Py_ssize_t param_bytes(const WorkItem* w) noexcept nogil:
    return 2 * w.size if _split_kernel(w.kernel) else _float_bytes(w)


cdef inline Py_ssize_t grad_bytes(const WorkItem* w) noexcept nogil:
    return (2 * w.size if w.kernel == SPLIT_GRAD_BF16_STATE_F32
            or w.kernel == SPLIT_GRAD_BF16_STATE_BF16 else _float_bytes(w))


cdef inline Py_ssize_t velocity_bytes(const WorkItem* w) noexcept nogil:
    return (2 * w.size if w.kernel == MOMENTUM_F32_BF16_STATE
            or w.kernel == MOMENTUM_F32_F16_STATE or w.kernel == SPLIT_GRAD_F32_STATE_BF16
            or w.kernel == SPLIT_GRAD_BF16_STATE_BF16 else _float_bytes(w))


# state-clip: how an item's grad is stored, for the norm pass (fastmomentum._multi's
# items_norm): the split kernels may read bfloat16 grads of float32-computed steps, the
# 16-bit kernels their dtype's; every other item float32 or float64 as ``is_f32``.
cdef enum:   # (anonymous: C arrays take its values as indices)
    GRAD_F32, GRAD_F64, GRAD_BF16, GRAD_F16
    GRAD_FORMATS


cdef inline int grad_format(const WorkItem* w) noexcept nogil:
    if (w.kernel == SPLIT_GRAD_BF16_STATE_F32 or w.kernel == SPLIT_GRAD_BF16_STATE_BF16
            or w.kernel == SGD_BF16 or w.kernel == MOMENTUM_BF16 or w.kernel == FUSED_BF16):
        return GRAD_BF16
    if w.kernel == SGD_F16 or w.kernel == MOMENTUM_F16 or w.kernel == FUSED_F16:
        return GRAD_F16
    return GRAD_F32 if w.is_f32 else GRAD_F64


cdef inline int grad_itemsize(int f) noexcept nogil:
    return 4 if f == GRAD_F32 else 8 if f == GRAD_F64 else 2

# ---------------------------------------------------------------------------------------
# ewm_mean: its parameters and tables (filled by the plan, fastmomentum._ewm)

cdef enum:
    EWM_CHUNK = 136                        # weight-sum table length (adjust=True near t = 0)
    EWM_POWERS = 68                        # EWM_CHUNK / 2: the b^(j+1) it is built from
    EWM_BLOCK = 8 * EWM_CHUNK              # 1088: a scan buffer in L1
    EWM_COLS = 256                         # series side by side in pandas' loop
    # fewer series side by side than this are scanned one by one (few columns): across
    # 2 to 7, the row step runs at 2-9 ns a value (latency and loop overhead), one by one
    # at 1.1-1.4 (measured; from 8 on, 0.5-1.8 across)
    EWM_NARROW = 8
    # The series scan's superblock: 240 scan blocks (261120 values, 2 MB of float64). The
    # superblocks are what threads share (a series of 2 superblocks or more uses 2
    # threads) and each ends in a carry that the serial middle step chains; 240 blocks
    # keep that chain short (a 10M series: 39 carries) while a 600k series already splits.
    EWM_SUPERBLOCK = 240 * EWM_BLOCK

ctypedef struct EwmParams:
    double alpha, b, new_wt
    bint adjust, ignore_na
    bint into_out         # the result is the caller's ``out`` (not a fresh array)
    bint stream           # write results with streaming stores (then fence)
    bint new_wt_fills     # pandas 3, adjust=False, com == 1: new_wt = 1 - old_wt
    bint few_columns      # series side by side, fewer than EWM_NARROW (see the plan)
    Py_ssize_t min_periods
    # the scans only (the plan's tables)
    fm_scan_coef coef     # fm_scan.h's coefficients: means stored
    fm_scan_coef raw      # the same with norm 1: sums, for the weighted stores
    double log_b, b_superblock
    Py_ssize_t fixup_len      # leading values of a superblock that need its carry
    Py_ssize_t ones_from      # from this t on, 1 - b^(t+1) rounds to 1
    Py_ssize_t weighted_until # adjust=True: ones_from rounded up to a block (else 0)
    double one_minus_pw[EWM_CHUNK]   # 1 - b^(j+1), without cancellation (adjust=True)
    # series side by side: superblocks of rows, and the rows that need the carry (both
    # multiples of EWM_BLOCK for few columns); doubles of scratch per thread
    Py_ssize_t super_rows, fixup_rows, cols_scratch
    double b_super_rows

# x and out are float* or double* (the dtype of the table entry: ewm_f32 or ewm_f64)
ctypedef void (*ewm_loop_fn)(const void* x, void* out, Py_ssize_t n, Py_ssize_t m,
                             Py_ssize_t row_stride, const EwmParams* p) noexcept nogil
ctypedef void (*ewm_series_fn)(const void* x, void* out, Py_ssize_t n,
                               const EwmParams* p) noexcept nogil
ctypedef double (*ewm_superblock_fn)(const void* x, void* out, Py_ssize_t n, Py_ssize_t s,
                                     double carry, bint fixup, double* scan,
                                     const EwmParams* p) noexcept nogil
# carry_in: NULL in pass 1, the superblock's carries (also in y) in pass 2
ctypedef void (*ewm_rows_superblock_fn)(const void* x, void* out, Py_ssize_t n, Py_ssize_t m,
                                        Py_ssize_t s, double* y, const double* carry_in,
                                        const EwmParams* p) noexcept nogil

# the ewm family's row step (fm_ewm_moments.pxd family_row; x, y, out float* or double*)
ctypedef void (*ewm_family_row_fn)(const void* x, const void* y, void* out, double* st,
                                   Py_ssize_t m, Py_ssize_t j0, Py_ssize_t j1, double a,
                                   double c, double k, bint nan_out, int kind, bint bias,
                                   bint std) noexcept nogil

# no NaN or inf among x[j0:j1] (fm_ewm_moments.pxd row_finite; float* or double*)
ctypedef bint (*ewm_row_finite_fn)(const void* x, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil

ctypedef struct EwmCores:
    ewm_loop_fn pandas_loop             # pandas' loop over m series side by side
    ewm_series_fn pandas_series         # pandas' loop over one series
    ewm_superblock_fn series_superblock # one superblock of a series by the scan
    ewm_rows_superblock_fn rows_superblock  # one superblock of rows of m series side by side
    ewm_family_row_fn family_row        # the ewm family's row step (var, cov, corr, sum...)
    ewm_row_finite_fn row_finite        # whether a row may take it

# times: each step's decay (1 - alpha)**((t_i - t_{i-1})/halflife) from n times (int64 or
# float64 by the entry, each counted as its float64 value; t_{-1} = previous, NaN: none, the
# first factor 1), log2_b = log2(1 - alpha): fm_time_factors.h
ctypedef void (*time_factors_fn)(const void* times, double previous, Py_ssize_t n,
                                 double halflife, double log2_b, double* out) noexcept nogil

# clip-amp: a grad norm's reduction over x[0:n] (of the GradFormat it is stored under in
# the table, fm_norms.pxd)
ctypedef double (*norm_fn)(const void* x, Py_ssize_t n) noexcept nogil

ctypedef struct CoreTable:
    const char* target        # "avx2" or "portable"
    elementwise_fn elementwise[ELEMENTWISE_KERNELS]
    void (*ewm_coefficients)(EwmParams* p) noexcept nogil   # the scans' (by b = 1 - alpha)
    EwmCores ewm_f32, ewm_f64
    time_factors_fn time_factors_i64, time_factors_f64   # the ewm family's times
    # clip-amp: grad norms by GradFormat (sum of squares in double; largest magnitude,
    # NaN-sticky)
    norm_fn sum_squares[GRAD_FORMATS]
    norm_fn max_magnitude[GRAD_FORMATS]

#: the PyCapsule name of a CoreTable
cdef extern from *:
    """
    #define FM_CORE_TABLE_CAPSULE "fastmomentum.CoreTable"
    """
    const char* FM_CORE_TABLE_CAPSULE


cdef inline int load_core_table(CoreTable* dst, object capsule) except -1:
    """Copy a target's table out of its capsule (see fastmomentum._target.attach)."""
    dst[0] = (<CoreTable*>PyCapsule_GetPointer(capsule, FM_CORE_TABLE_CAPSULE))[0]
    return 0
