# ewm_mean's scan of series side by side without missing values (a C-ordered frame along
# axis 0): the recurrence one row at a time, vectorised across the series; fewer than
# EWM_NARROW series ("few columns") each gathered and scanned as a series. The numeric core
# of the columns scan, built once per CPU target; superblocks, threads and carries are the
# driver's (fastmomentum._ewm).
from libc.math cimport expm1, fma, pow

from fastmomentum.kernels cimport real
from fm_core_table cimport EWM_BLOCK, EwmParams
from fm_ewm_coefficients cimport carry_matters
from fm_ewm_scan cimport _ewm_stretch
from fm_ewm_store cimport _emit, _emit_scaled, fm_stream_fence


cdef inline void _narrow_stretch(const real* x, real* out, Py_ssize_t t0, Py_ssize_t end,
                          Py_ssize_t m, double* y, double* buffers, Py_ssize_t store_from,
                          const EwmParams* p) noexcept nogil:
    """_cols_stretch for a few series side by side, too few to vectorise across: each
    series in turn, a block of EWM_BLOCK rows at a time, gathered into ``buffers`` (3
    blocks), scanned as a series (_ewm_stretch, eight steps at a time) and scattered back."""
    cdef Py_ssize_t j, i, k, c, length
    cdef double* xs = buffers
    cdef double* means = buffers + EWM_BLOCK
    cdef double* scan = buffers + 2 * EWM_BLOCK
    cdef EwmParams q = p[0]
    q.stream = False    # into the buffer; the scatter stores plainly
    for k in range((end - t0 + EWM_BLOCK - 1) // EWM_BLOCK):
        # block by block, every series in it: the block's rows stay in cache meanwhile
        c = t0 + k * EWM_BLOCK
        length = min(<Py_ssize_t>EWM_BLOCK, end - c)
        for j in range(m):
            for i in range(length):
                xs[i] = x[(c + i) * m + j]
            y[j] = _ewm_stretch(<const double*>xs, means, c, c + length, y[j], store_from,
                                scan, &q)
            if c >= store_from:
                for i in range(length):
                    out[(c + i) * m + j] = <real>means[i]


cdef inline void _cols_stretch(const real* x, real* out, Py_ssize_t t0, Py_ssize_t end,
                        Py_ssize_t m, double* y, double* row, Py_ssize_t store_from,
                        const EwmParams* p) noexcept nogil:
    """Rows [t0, end) of ``m`` series side by side (row stride ``m``). ``y`` enters with
    every series' y at row t0 - 1 and leaves with it at row end - 1; rows from
    ``store_from`` on are stored. The series scan's recurrence, one step per row,
    vectorised across the series (``row``: m doubles of scratch)."""
    cdef Py_ssize_t t, j
    cdef double b = p.b, scale = p.coef.scale, norm = p.coef.norm, weight
    cdef const real* xr
    for t in range(t0, end):
        xr = x + t * m
        if t == 0 and not p.adjust:
            for j in range(m):
                y[j] = xr[j]
        else:
            for j in range(m):
                y[j] = fma(b, y[j], scale * xr[j])
        if t < store_from:
            continue
        if not p.adjust:
            _emit(out + t * m, y, m, p.stream)
            continue
        if t < p.ones_from:
            weight = -expm1((t + 1) * p.log_b)   # (1 - b^(t+1)), without cancellation
            for j in range(m):
                row[j] = y[j] * norm / weight
            _emit(out + t * m, row, m, p.stream)
        else:
            # the means straight from the sums (a row buffer in between measured up to 2x
            # slower, depending on where the buffers fall relative to ``out``)
            _emit_scaled(out + t * m, y, m, norm, p.stream)


cdef inline void rows_superblock(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                                 Py_ssize_t s, double* y, const double* carry_in,
                                 const EwmParams* p) noexcept nogil:
    """Rows of superblock ``s`` as in series_superblock (``y``: the carries in, then out;
    followed by the scratch of _cols_stretch, or of _narrow_stretch for fewer than
    EWM_NARROW series: few columns). Pass 2 when ``carry_in`` (the carries, also in ``y``) is not NULL:
    fixup_rows, then a block of rows more while a carry matters. (One call of each row
    step: a second one changed how the compiler inlines it, see e9a1493.)"""
    cdef Py_ssize_t t0 = s * p.super_rows, end = min(n, t0 + p.super_rows)
    cdef Py_ssize_t start = t0, stop = end, store_from = t0 + (p.fixup_rows if s > 0 else 0)
    if carry_in != NULL:
        stop = min(end, t0 + p.fixup_rows)
        store_from = t0
    while True:
        if p.few_columns:
            _narrow_stretch(x, out, start, stop, m, y, y + m, store_from, p)
        else:
            _cols_stretch(x, out, start, stop, m, y, y + m, store_from, p)
        if (carry_in == NULL or stop >= end
                or not carry_matters(y, carry_in, m, pow(p.b, <double>(stop - t0)))):
            break
        start = store_from = stop
        stop = min(end, stop + EWM_BLOCK)
    if p.stream:
        fm_stream_fence()
