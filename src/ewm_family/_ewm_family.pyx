# cython: language_level=3
"""The exponentially weighted family (mean, sum, var, std, cov, corr) as one sequential
recurrence: pandas' loops (aggregations.pyx ``ewm``, ``ewmcov``) with their state kept in an
array between calls, so that a series processed in chunks of any sizes runs exactly the
operations of one pass (bit-identical), and a stream can be saved and resumed.

Compiled once (not per CPU target; the value arithmetic lives in fm_ewm_moments.pxd, whose
row step across series is also built per target as a core): no ``fma`` (without ``-mfma``
it is a libm call, 25 ns a value measured) and ``-ffp-contract=off`` forbids the
compiler's own, so every result is the same sequence of IEEE multiplies and adds in every
build, as pandas' loops.

A step, for a started series (one that has seen a value), where ``f`` is the step's decay
(``1 - alpha``, or ``(1 - alpha)**delta`` with ``times``), ``ow`` the old weight, ``nw`` the
new one (1 with adjust=True, alpha with adjust=False, ``1 - ow`` for pandas' mean with
adjust=False and com == 1):

    decay (an observation, or a missing value with ignore_na=False):
        ow *= f; sw2 *= f*f
    observation:
        a = ow/(ow + nw), c = nw/(ow + nw)    (one division, both by the reciprocal)
        mean' = a*mean + c*x                  (kept when mean == x: pandas' constant-series rule)
        cov'  = a*cov + (a*(mean - mean')(mean_y - mean_y') + c*(x - mean')(y - mean_y'))
        sw2 += nw*nw; ow += nw; adjust=False: sw2 /= ow*ow, ow = 1

pandas divides ``ow*mean + nw*x`` by ``ow + nw`` where this multiplies by ``a``, ``c``, and
groups cov' so that its dependency chain is one multiply and one add: within a few ulps
per step. Once an observed step leaves the weights as they were (their fixed point), the
loop stops recomputing them (no division; same bits). The state also carries what
combining two chunks needs (``fastmomentum._ewm_api.merge``): the product of all decays,
the seed's share, the decay up to the first observation and the first observation.

Series side by side (rows of a C-ordered block) whose weight states are all equal and whose
row has no missing value take one weight computation per row and a loop over the series the
compiler vectorises; it computes every value by the same operations as the per-value step.
Large calls split their series into blocks over threads, each block on a copy of its
state (see _chunk).
"""
cimport numpy as cnp
from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_INCREF
from libc.math cimport NAN, log2, pow
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastmomentum._threads cimport run_chunks, threads_for
from fm_core_table cimport CoreTable, EwmCores, load_core_table
from fm_ewm_moments cimport (DECAY, KIND_CORR, KIND_COV, KIND_MEAN, KIND_SUM, KIND_VAR,
                             NFIELDS, NOBS, OLD_WT, OUT_STD, SEED, SUM_WT2, Moments, _finish,
                             _value_step)

from fastmomentum import _target

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # (not in numpy's .pxd) a new array of a descriptor it steals a reference to: a
    # stream's results from the Stepper's own descriptor, without PyArray_EMPTY's lookup
    # and checks (130 instructions of ~3300 a 16-value update, callgrind)
    PyTypeObject PyArray_Type
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, void* obj)

# times' decay factors and the row step of series side by side are the numeric cores' (built
# per CPU target: the vectorised 2**y, src/cores/fm_time_factors.h; family_row,
# src/cores/fm_ewm_moments.pxd); the rest of the recurrence is compiled here, once
cdef CoreTable cores


def _use_core_table(capsule):
    load_core_table(&cores, capsule)


_target.attach(_use_core_table)

cdef enum:
    TIME_BLOCK = 1024    # steps per block with times: their factors on the stack, in L1

ctypedef fused real:
    float
    double

STATE_FIELDS = ("mean_x", "mean_y", "cov", "old_wt", "sum_wt2", "nobs", "decay", "seed",
                "lead_decay", "x1", "y1", "var_x", "var_y")


ctypedef struct Series:
    double mean_x, mean_y, cov, old_wt, sum_wt2, nobs, decay, seed, lead_decay, x1, y1
    double var_x, var_y


ctypedef struct Params:
    int kind, out_kind
    double b, new_wt, f0
    const double* factors     # times: each step's decay b**delta (time_factors), or
                              # NULL: by b (the first by f0)
    bint adjust, ignore_na, bias, fills, same
    double minp


ctypedef struct Chunk:
    # one call: n steps of m series, element (t, j) at t*ts + j*js
    const void* x
    const void* y
    void* out
    double* state
    Py_ssize_t n, m, ts, js
    bint f32
    Params p


# Decay products (and a weight decayed by missing values) below this are flushed to zero:
# a product of decays rounds to a fixed subnormal (0.9 * 2.5e-323 == 2.5e-323) and every
# later step would run at subnormal speed (measured: 120 ns a value instead of 2).
cdef double TINY = 1e-300


cdef inline double _flush(double v) noexcept nogil:
    return v if v >= TINY else 0.0


cdef inline void _load(Series* s, const double* st, Py_ssize_t m, Py_ssize_t j) noexcept nogil:
    cdef double* d = <double*>s
    cdef int f
    for f in range(NFIELDS):
        d[f] = st[f * m + j]


cdef inline void _store(const Series* s, double* st, Py_ssize_t m, Py_ssize_t j) noexcept nogil:
    cdef const double* d = <const double*>s
    cdef int f
    for f in range(NFIELDS):
        st[f * m + j] = d[f]


cdef inline Moments _moments(const Series* s) noexcept nogil:
    cdef Moments v
    v.mean_x, v.mean_y, v.cov, v.var_x, v.var_y = s.mean_x, s.mean_y, s.cov, s.var_x, s.var_y
    return v


cdef inline void _set_moments(Series* s, Moments v) noexcept nogil:
    s.mean_x, s.mean_y, s.cov, s.var_x, s.var_y = v.mean_x, v.mean_y, v.cov, v.var_x, v.var_y


cdef inline double _bias_factor(const Series* s) noexcept nogil:
    """bias=False: (sum w)^2/((sum w)^2 - sum w^2), 0 where pandas gives NaN."""
    cdef double num = s.old_wt * s.old_wt    # pandas' sum_wt equals old_wt at every step
    cdef double den = num - s.sum_wt2
    return num / den if den > 0 else 0.0


cdef inline double _output(const Series* s, const Params* p) noexcept nogil:
    """pandas' result after a step (NaN before min_periods)."""
    if s.nobs < p.minp:
        return NAN
    if p.kind < KIND_COV:
        return s.mean_x
    return _finish(_moments(s), 0.0 if p.bias else _bias_factor(s), p.kind, p.bias,
                   p.out_kind == OUT_STD)


ctypedef struct Weights:
    double a, c          # the old mean's and the new value's shares of the new mean


cdef inline Weights _observe(Series* s, double f, const Params* p, bint live) noexcept nogil:
    """The weights' part of an observed step of a started series (decay ``f`` first);
    returns the shares the values' part uses. ``live``: False where sum_wt2 and seed are
    0 and stay so (see _timed_run), not updated."""
    cdef Weights w
    # not flushed (as pandas): the step leaves old_wt = ow + nw >= 1 (adjust; 1 otherwise),
    # so a tiny ow (the first observation after a long gap, or a times gap of ~1000
    # halflives) does not persist; its share gives pandas' values there (e.g. an ewm_corr
    # of -inf where flushing gave NaN); 2 of the timed mean's 40 instructions a value
    cdef double ow = s.old_wt * f, nw, inv
    if live:
        s.sum_wt2 = _flush(s.sum_wt2 * (f * f))
    if p.adjust and live:
        s.seed = _flush(s.seed * f)
    nw = 1.0 - ow if p.fills else p.new_wt
    inv = 1.0 / (ow + nw)
    w.a = ow * inv
    w.c = nw * inv
    if p.kind >= KIND_COV:
        s.sum_wt2 = s.sum_wt2 + nw * nw
    if p.adjust:
        s.old_wt = ow + nw
    else:
        s.old_wt = 1.0
        if live:
            s.sum_wt2 = s.sum_wt2 / ((ow + nw) * (ow + nw))   # as pandas: ill-conditioned after gaps
            s.seed = _flush(s.seed * w.a)
    return w


cdef inline void _step(Series* s, double x, double y, double f, const Params* p) noexcept nogil:
    """One value of one series: pandas' step (see the module docstring)."""
    cdef bint obs = (x - x == 0.0) and (y - y == 0.0)   # finite: pandas makes inf missing
    cdef Weights w
    if not (obs or not p.ignore_na):
        return
    s.decay = _flush(s.decay * f)
    if s.nobs == 0:
        if obs:
            s.nobs = 1
            s.mean_x = x
            s.mean_y = y
            s.lead_decay = s.decay
            s.x1 = x
            s.y1 = y
        return
    if p.kind == KIND_SUM:
        s.mean_x = f * s.mean_x
        if obs:
            s.mean_x = s.mean_x + x
            s.nobs = s.nobs + 1
        return
    if not obs:
        s.old_wt = _flush(s.old_wt * f)
        s.sum_wt2 = _flush(s.sum_wt2 * (f * f))
        if p.adjust:
            s.seed = _flush(s.seed * f)
        return
    s.nobs = s.nobs + 1
    w = _observe(s, f, p, True)
    _set_moments(s, _value_step(_moments(s), x, y, w.a, w.c, p.kind))


cdef inline double _factor(const Params* p, Py_ssize_t t) noexcept nogil:
    if p.factors != NULL:
        return p.factors[t]
    return p.f0 if t == 0 else p.b


cdef inline Py_ssize_t _steady_run(const real* x, const real* y, real* out, Py_ssize_t t,
                                   Py_ssize_t n, Py_ssize_t ts, Series* s, double a, double c,
                                   double k, double b, Py_ssize_t t_ok, int kind, bint bias,
                                   bint std) noexcept nogil:
    """_steady for one kind (a constant once inlined, so the loop keeps only its own
    moments in registers). Its ten copies must stay inlined: with the times step in it,
    or _timed_run inlined into _steady, gcc 12 left it a function of a runtime kind, and
    10M ewm_var measured 1.6x slower (nm lists no _steady_run when they are inlined)."""
    cdef Moments v = _moments(s)
    cdef double xt, yt, r
    while t < n:
        xt = x[t * ts]
        yt = y[t * ts]
        if not ((xt - xt == 0.0) and (yt - yt == 0.0)):
            break
        if kind == KIND_SUM:
            v.mean_x = b * v.mean_x + xt
            r = v.mean_x
        else:
            v = _value_step(v, xt, yt, a, c, kind)
            r = _finish(v, k, kind, bias, std) if kind >= KIND_COV else v.mean_x
        out[t * ts] = <real>(r if t >= t_ok else NAN)
        t += 1
    _set_moments(s, v)
    return t


cdef inline Py_ssize_t _timed_mean(const real* x, real* out, Py_ssize_t t, Py_ssize_t n,
                                   Py_ssize_t ts, Series* s, Py_ssize_t t_ok,
                                   const Params* p, bint adjust, bint fills,
                                   bint live) noexcept nogil:
    """_timed_any for the mean of x (y is x: not read), its kind, adjust and fills
    constants (no branches on them in the loop), on a local copy of the parameters
    (``out`` may alias ``p``: gcc reloaded every field after each store); ``live``: whether
    the products (decay, seed, sum_wt2) are updated (False: they are 0, see _timed_run).
    The same operations as _step's (one count added at the end: exact)."""
    cdef Moments v = _moments(s)
    cdef Series ws = s[0]
    cdef Params q = p[0]
    cdef Weights w
    cdef double xt, f
    cdef Py_ssize_t t0 = t
    q.adjust = adjust
    q.fills = fills
    if adjust:
        q.new_wt = 1.0           # as _set_params: a constant, 1.0 * inv folded away
    while t < n:
        xt = x[t * ts]
        if not (xt - xt == 0.0):
            break
        f = q.factors[t]
        if live:
            ws.decay = _flush(ws.decay * f)
        w = _observe(&ws, f, &q, live)
        v = _value_step(v, xt, xt, w.a, w.c, KIND_MEAN)
        out[t * ts] = <real>(NAN if t < t_ok else v.mean_x)
        t += 1
    ws.nobs = ws.nobs + <double>(t - t0)
    s[0] = ws
    _set_moments(s, v)
    return t


cdef Py_ssize_t _timed_run(const real* x, const real* y, real* out, Py_ssize_t t,
                           Py_ssize_t n, Py_ssize_t ts, Series* s, Py_ssize_t t_ok,
                           const Params* p) noexcept nogil:
    """Values t.. of a started series with times (not sum: pandas has none): the mean's
    own copies of the loop (_timed_mean: 63 instructions a value before, callgrind), or
    _timed_any. The mean's products of decays, once flushed to 0 (after about 1000
    halflives: most of a long series), stay 0 (0 * f is 0, or NaN for an infinite f,
    flushed again): its copies without them run 20 instructions a value instead of 32
    (1M-value times mean, callgrind), and the products stay 0 (the same bits)."""
    cdef bint dead = s.decay == 0.0 and s.seed == 0.0 and s.sum_wt2 == 0.0
    if p.kind == KIND_MEAN and x == y and p.adjust and not p.fills:
        if dead:
            return _timed_mean(x, out, t, n, ts, s, t_ok, p, True, False, False)
        return _timed_mean(x, out, t, n, ts, s, t_ok, p, True, False, True)
    if p.kind == KIND_MEAN and x == y and not p.adjust and p.fills:
        if dead:
            return _timed_mean(x, out, t, n, ts, s, t_ok, p, False, True, False)
        return _timed_mean(x, out, t, n, ts, s, t_ok, p, False, True, True)
    return _timed_any(x, y, out, t, n, ts, s, t_ok, p)


cdef Py_ssize_t _timed_any(const real* x, const real* y, real* out, Py_ssize_t t,
                           Py_ssize_t n, Py_ssize_t ts, Series* s, Py_ssize_t t_ok,
                           const Params* p) noexcept nogil:
    """_steady's counterpart with times for any kind: values t.. of a started series,
    each step decaying by its own factor, the weights recomputed as _step does but in a
    local copy of the state (_step on the state in memory chains every weight through a
    store and a load: 9 ns a value for the mean measured, 3.7 here). On the parameters in
    memory: as _timed_mean's loop with a runtime kind on a local copy, gcc 12 packed pairs
    of its chains into one register (1M-value ewm_var and ewm_cov with times measured 2x
    slower)."""
    cdef Moments v = _moments(s)
    cdef Series ws = s[0]
    cdef Weights w
    cdef double xt, yt, f, k = 0.0
    while t < n:
        xt = x[t * ts]
        yt = y[t * ts]
        if not ((xt - xt == 0.0) and (yt - yt == 0.0)):
            break
        f = p.factors[t]
        ws.decay = _flush(ws.decay * f)
        ws.nobs = ws.nobs + 1
        w = _observe(&ws, f, p, True)
        if p.kind >= KIND_COV and not p.bias:
            k = _bias_factor(&ws)
        v = _value_step(v, xt, yt, w.a, w.c, p.kind)
        out[t * ts] = <real>(NAN if t < t_ok else _finish(v, k, p.kind, p.bias,
                                                           p.out_kind == OUT_STD)
                             if p.kind >= KIND_COV else v.mean_x)
        t += 1
    s[0] = ws
    _set_moments(s, v)
    return t


cdef inline Py_ssize_t _first_ok(Py_ssize_t t, const Series* s,
                                 const Params* p) noexcept nogil:
    """Where a run from step t on (nobs growing by one a value) reaches min_periods."""
    return t + max(<Py_ssize_t>0, <Py_ssize_t>(p.minp - s.nobs) - 1)


cdef Py_ssize_t _steady(const real* x, const real* y, real* out, Py_ssize_t t, Py_ssize_t n,
                        Py_ssize_t ts, Series* s, double a, double c, double k,
                        const Params* p) noexcept nogil:
    """Values t.. of a series whose weights are at their fixed point (an observed step
    leaves them as they were): _step's operations on the values without recomputing the
    weights (same bits, no division), until a missing value or the end; returns where it
    stopped. The decay products (used only to combine states, not by any result) are
    brought up to date once, by pow."""
    cdef Py_ssize_t t0 = t
    cdef Py_ssize_t t_ok = _first_ok(t, s, p)
    cdef double b = p.b, decays
    if p.kind == KIND_SUM:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_SUM, False, False)
    elif p.kind == KIND_MEAN:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_MEAN, False, False)
    elif p.kind == KIND_CORR:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_CORR, True, False)
    elif p.kind == KIND_VAR and p.bias:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_VAR, True,
                        p.out_kind == OUT_STD)
    elif p.kind == KIND_VAR and p.out_kind == OUT_STD:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_VAR, False, True)
    elif p.kind == KIND_VAR:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_VAR, False, False)
    elif p.bias and p.out_kind == OUT_STD:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_COV, True, True)
    elif p.bias:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_COV, True, False)
    elif p.out_kind == OUT_STD:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_COV, False, True)
    else:
        t = _steady_run(x, y, out, t, n, ts, s, a, c, k, b, t_ok, KIND_COV, False, False)
    s.nobs = s.nobs + (t - t0)
    # (one or two pows a chunk of a stream, ~30 ns each: none once both products have
    # flushed to zero, 0.9**6600 < TINY, which they then stay: they never go negative)
    if s.decay != 0.0 or s.seed != 0.0:
        decays = pow(b, <double>(t - t0))
        s.decay = _flush(s.decay * decays)
        s.seed = _flush(s.seed * (decays if p.adjust else pow(a, <double>(t - t0))))
    return t


cdef void _series(const real* x, const real* y, real* out, double* st, Py_ssize_t n,
                  Py_ssize_t m, Py_ssize_t j, Py_ssize_t ts, const Params* p) noexcept nogil:
    """Series ``j``: its n values at stride ``ts``."""
    cdef Series s
    cdef Py_ssize_t t = 0
    cdef double xt, yt, ow, sw2, a = 0.0, c = 0.0, b = p.b
    cdef Series probe
    cdef Weights shares
    cdef bint started
    _load(&s, st, m, j)
    while t < n:
        xt = x[t * ts]
        yt = y[t * ts]
        ow = s.old_wt
        sw2 = s.sum_wt2
        started = s.nobs > 0
        _step(&s, xt, yt, _factor(p, t), p)
        out[t * ts] = <real>_output(&s, p)
        t += 1
        # steady once an observed step (decaying by b) leaves the weights as they were;
        # with times (not sum), the run of a started series
        if (started and (xt - xt == 0.0) and (yt - yt == 0.0)
                and ((p.factors != NULL and p.kind != KIND_SUM)
                     or (p.factors == NULL and (t > 1 or p.f0 == b)
                         and s.old_wt == ow and s.sum_wt2 == sw2))):
            if p.kind != KIND_SUM and p.factors == NULL:
                probe = s            # the next step's shares, from a copy of the state
                shares = _observe(&probe, b, p, True)
                a, c = shares.a, shares.c
            if p.factors != NULL:
                t = _timed_run(x, y, out, t, n, ts, &s, _first_ok(t, &s, p), p)
            else:
                t = _steady(x, y, out, t, n, ts, &s, a, c,
                            0.0 if p.bias or p.kind < KIND_COV else _bias_factor(&s), p)
    _store(&s, st, m, j)


cdef inline bint _uniform(const double* st, Py_ssize_t m, Py_ssize_t j0,
                          Py_ssize_t j1) noexcept nogil:
    """Series j0..j1 have started and share one weight state."""
    cdef Py_ssize_t j
    cdef bint differ = st[NOBS * m + j0] == 0
    for j in range(j0, j1):
        differ = differ | (st[OLD_WT * m + j] != st[OLD_WT * m + j0]) \
            | (st[SUM_WT2 * m + j] != st[SUM_WT2 * m + j0]) \
            | (st[NOBS * m + j] != st[NOBS * m + j0]) \
            | (st[SEED * m + j] != st[SEED * m + j0]) \
            | (st[DECAY * m + j] != st[DECAY * m + j0])
    return not differ


cdef void _uniform_row(const real* x, const real* y, real* out, double* st, Py_ssize_t m,
                       Py_ssize_t j0, Py_ssize_t j1, Series* w, double f,
                       const Params* p) noexcept nogil:
    """One row of started series sharing the weight state ``w``, without missing values:
    the weights of _step once (into ``w``), then its value operations across the series."""
    cdef double a = f, c = 0.0, k = 0.0     # sum: a is the decay
    cdef Weights shares
    cdef bint nan_out
    w.decay = _flush(w.decay * f)
    w.nobs = w.nobs + 1
    nan_out = w.nobs < p.minp
    if p.kind != KIND_SUM:
        shares = _observe(w, f, p, True)
        a, c = shares.a, shares.c
        k = 0.0 if p.bias or p.kind < KIND_COV else _bias_factor(w)
    # the row's value operations: the target's (vectorised across the series)
    (cores.ewm_f32 if real is float else cores.ewm_f64).family_row(
        x, y, out, st, m, j0, j1, a, c, k, nan_out, p.kind, p.bias, p.out_kind == OUT_STD)


cdef inline void _spread(const Series* w, double* st, Py_ssize_t m, Py_ssize_t j0,
                         Py_ssize_t j1) noexcept nogil:
    """The shared weight state into every series' fields."""
    cdef Py_ssize_t j
    for j in range(j0, j1):
        st[OLD_WT * m + j] = w.old_wt
        st[SUM_WT2 * m + j] = w.sum_wt2
        st[NOBS * m + j] = w.nobs
        st[DECAY * m + j] = w.decay
        st[SEED * m + j] = w.seed


cdef void _rows(const real* x, const real* y, real* out, double* st, Py_ssize_t n,
                Py_ssize_t m, Py_ssize_t ts, Py_ssize_t j0, Py_ssize_t j1,
                const Params* p) noexcept nogil:
    """Series j0..j1 side by side (row stride ``ts``, state of ``m`` series), row after row;
    while they share one weight state it is kept in ``w`` and written to them when that
    ends."""
    cdef Py_ssize_t t, j
    cdef bint uniform = _uniform(st, m, j0, j1)
    cdef double f
    cdef Series s, w
    cdef const EwmCores* ewm = &cores.ewm_f32 if real is float else &cores.ewm_f64
    if uniform:
        _load(&w, st, m, j0)
    for t in range(n):
        f = _factor(p, t)
        if (uniform and ewm.row_finite(x + t * ts, j0, j1)
                and (y == x or ewm.row_finite(y + t * ts, j0, j1))):
            _uniform_row(x + t * ts, y + t * ts, out + t * ts, st, m, j0, j1, &w, f, p)
        else:
            if uniform:
                _spread(&w, st, m, j0, j1)
            for j in range(j0, j1):
                _load(&s, st, m, j)
                _step(&s, x[t * ts + j], y[t * ts + j], f, p)
                out[t * ts + j] = <real>_output(&s, p)
                _store(&s, st, m, j)
            uniform = _uniform(st, m, j0, j1)
            if uniform:
                _load(&w, st, m, j0)
    if uniform:
        _spread(&w, st, m, j0, j1)


cdef enum:
    # Fewer series side by side than this run one by one (the same bits): a row's weights,
    # finite checks and call into the cores cost ~20 ns, the per-value recurrence ~3 ns a
    # value (1M x 2 ewm_cov took 32 ms by rows, 16 ms before the row step was a core)
    ROWS_MIN = 8


cdef void _chunk_part(const Chunk* c, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Series j0..j1 of one call (what a thread runs)."""
    cdef Py_ssize_t j
    if c.js == 1 and j1 - j0 >= ROWS_MIN:
        if c.f32:
            _rows(<const float*>c.x, <const float*>c.y, <float*>c.out, c.state, c.n, c.m,
                  c.ts, j0, j1, &c.p)
        else:
            _rows(<const double*>c.x, <const double*>c.y, <double*>c.out, c.state, c.n, c.m,
                  c.ts, j0, j1, &c.p)
        return
    for j in range(j0, j1):
        if c.f32:
            _series(<const float*>c.x + j * c.js, <const float*>c.y + j * c.js,
                    <float*>c.out + j * c.js, c.state, c.n, c.m, j, c.ts, &c.p)
        else:
            _series(<const double*>c.x + j * c.js, <const double*>c.y + j * c.js,
                    <double*>c.out + j * c.js, c.state, c.n, c.m, j, c.ts, &c.p)


ctypedef struct ColumnSplit:
    # run_chunks' context: block k is series k*width.. of ``c``, its state copied into
    # scratch + k*(width*NFIELDS + COLUMN_ALIGN) (NFIELDS rows of its own width; the gap:
    # no two blocks' states in one cache line)
    const Chunk* c
    double* scratch
    Py_ssize_t width


cdef void _column_block(void* ctx, Py_ssize_t block, int worker) noexcept nogil:
    """One block of series of a split call, on a state of its own (see _chunk)."""
    cdef const ColumnSplit* sp = <const ColumnSplit*>ctx
    cdef const Chunk* c = sp.c
    cdef Py_ssize_t j0 = block * sp.width, w = min(sp.width, c.m - j0), f, j
    cdef Py_ssize_t skip = j0 * c.js * (4 if c.f32 else 8)
    cdef double* own = sp.scratch + block * (sp.width * NFIELDS + COLUMN_ALIGN)
    cdef Chunk part = c[0]
    for f in range(NFIELDS):
        for j in range(w):
            own[f * w + j] = c.state[f * c.m + j0 + j]
    part.m = w
    part.state = own
    part.x = <const char*>c.x + skip
    part.y = <const char*>c.y + skip
    part.out = <char*>c.out + skip
    _chunk_part(&part, 0, w)
    for f in range(NFIELDS):
        for j in range(w):
            c.state[f * c.m + j0 + j] = own[f * w + j]


cdef enum:
    # a split's blocks are whole multiples of this many series (a cache line of float64)
    COLUMN_ALIGN = 8
    # Series side by side (rows, js == 1) split into blocks of at least this many: each
    # thread then sweeps part of every row. With the row step vectorised (a core) that
    # lost up to 400 series a row and paid from 1024, where one thread's state outgrows
    # L1 (10M values into out=, medians of 5, quiet: ewm_var 1 -> 2 threads 5.9 -> 10.1 ms
    # at 100 series, 5.7 -> 9.9 at 400, 14.0 -> 9.7 at 1024, 11.9 -> 8.3 at 4096;
    # ewm_corr 15.8 -> 16.7, 15.9 -> 16.6, 20.3 -> 17.3, 19.3 -> 13.4).
    ROW_SPLIT_MIN = 512


cdef void _chunk(const Chunk* c) noexcept nogil:
    """One call: its series in one block a thread, when threads pay. Each block runs on a
    copy of its series' state: on the shared state array (two threads writing the means
    and co-moments of neighbouring series, in one cache line, every row) 100k x 100
    ewm_var into out= measured 25 ms on one thread, 60-134 ms on two. Every series takes
    the same operations in any block (the row loop's are the per-value step's), so the
    results do not depend on the split."""
    cdef ColumnSplit sp
    cdef int threads = 1
    cdef Py_ssize_t blocks
    if c.m >= 2 * (ROW_SPLIT_MIN if c.js == 1 else COLUMN_ALIGN):
        # about 1 ns a value (ewm_var of 100k x 100 on one thread: 2.5 ns with its page
        # faults; by rows, vectorised, 0.6-1.4 ns); rows: no block under ROW_SPLIT_MIN
        threads = threads_for(<double>c.n * <double>c.m)
        if c.js == 1:
            threads = min(threads, <int>(c.m // ROW_SPLIT_MIN))
    if threads > 1:
        sp.width = ((c.m + threads - 1) // threads + COLUMN_ALIGN - 1) \
            // COLUMN_ALIGN * COLUMN_ALIGN
        blocks = (c.m + sp.width - 1) // sp.width
        sp.scratch = <double*>malloc(blocks * (sp.width * NFIELDS + COLUMN_ALIGN)
                                     * sizeof(double))
        if sp.scratch != NULL:
            sp.c = c
            run_chunks(_column_block, &sp, blocks, threads)
            free(sp.scratch)
            return
    _chunk_part(c, 0, c.m)


# Values of a call from which it releases the GIL: releasing and taking it back costs about
# 0.1 us (a tenth of a 1k-value stream update, measured), worth it only for work that
# another thread could overlap.
cdef Py_ssize_t NOGIL_MIN = 1 << 14


ctypedef struct Times:
    # a call's times (int64 or float64, n of them) and what turns them into decay factors
    const void* values
    bint i64
    double previous, halflife, log2_b


cdef void _factors(const Times* tm, Py_ssize_t t0, Py_ssize_t n, double* out) noexcept nogil:
    """The decay factors of steps t0..t0+n (from the time before t0: the same values as
    one pass over all the times)."""
    cdef double before
    if tm.i64:
        before = tm.previous if t0 == 0 else <double>(<const int64_t*>tm.values)[t0 - 1]
        cores.time_factors_i64(<const int64_t*>tm.values + t0, before, n, tm.halflife,
                               tm.log2_b, out)
    else:
        before = tm.previous if t0 == 0 else (<const double*>tm.values)[t0 - 1]
        cores.time_factors_f64(<const double*>tm.values + t0, before, n, tm.halflife,
                               tm.log2_b, out)


cdef void _call(const Chunk* c, const Times* tm) noexcept nogil:
    """A call; with times (``tm``), TIME_BLOCK steps at a time, their factors in a
    buffer on the stack (no array of n factors: its page faults and traffic): the state
    carries over between blocks as between a stream's chunks, so the results are one
    pass's bits. (One call of _chunk: with two, gcc's inlining budget ran out before the
    steady loops', which then measured 25-40% slower.)"""
    cdef double factors[TIME_BLOCK]
    cdef Chunk b = c[0]
    cdef Py_ssize_t t0 = 0, item = 4 if c.f32 else 8
    while t0 < c.n:
        b.n = c.n - t0
        if tm != NULL:
            b.n = min(<Py_ssize_t>TIME_BLOCK, b.n)
            _factors(tm, t0, b.n, factors)
            b.p.factors = factors
        b.x = <const char*>c.x + t0 * c.ts * item
        b.y = <const char*>c.y + t0 * c.ts * item
        b.out = <char*>c.out + t0 * c.ts * item
        _chunk(&b)
        t0 += b.n


cdef inline void _run(const Chunk* c, const Times* tm) noexcept:
    """One call (``tm``: its times, or NULL), without the GIL unless it is small."""
    if c.n == 0 or c.m == 0:
        return
    if c.n * c.m < NOGIL_MIN:
        _call(c, tm)
        return
    with nogil:
        _call(c, tm)


cdef bint _same_steps(cnp.ndarray a, cnp.ndarray b, Py_ssize_t n, Py_ssize_t m):
    """Same shape and the same strides along every axis longer than 1."""
    cdef int nd = cnp.PyArray_NDIM(a)
    return (cnp.PyArray_NDIM(b) == nd and cnp.PyArray_DIM(b, 0) == n
            and (nd == 1 or cnp.PyArray_DIM(b, 1) == m)
            and (n < 2 or cnp.PyArray_STRIDE(a, 0) == cnp.PyArray_STRIDE(b, 0))
            and (m < 2 or cnp.PyArray_STRIDE(a, 1) == cnp.PyArray_STRIDE(b, 1)))


cdef void _set_params(Params* p, int kind, double alpha, double f0, bint adjust,
                      bint ignore_na, bint bias, bint fills, Py_ssize_t min_periods,
                      int out_kind) noexcept:
    p.kind = kind
    p.out_kind = out_kind
    p.b = 1.0 - alpha          # pandas' old_wt_factor
    p.f0 = f0
    p.adjust = adjust
    p.ignore_na = ignore_na
    p.bias = bias
    p.fills = fills
    p.new_wt = 1.0 if adjust else alpha
    p.minp = <double>min_periods
    p.factors = NULL


def advance(int kind, cnp.ndarray x, cnp.ndarray y, out, cnp.ndarray state,
            double alpha, double f0, factors, bint adjust, bint ignore_na, bint bias,
            bint fills, Py_ssize_t min_periods, int out_kind):
    """Advance ``state`` ((NFIELDS, m) float64, C-contiguous) over the rows of ``x``, ``y``
    (2-D (n, m), or 1-D: one series; float32 or float64, element strides any multiple of
    the item size; ``y`` may be ``x``), writing the results into ``out`` (same dtype and
    strides as ``x``; None: a new C-ordered array, for a C-contiguous ``x``) and
    returning it.
    ``alpha``: 1/(1 + com) as pandas rounds it. ``factors``: None (each step decays by
    ``1 - alpha``, the first by ``f0``) or a float64 C-contiguous array of each step's
    decay (:func:`time_factors`). Unchecked beyond types and layout: the callers in
    fastmomentum check everything first."""
    cdef Chunk c
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(x)
    cdef cnp.ndarray fac
    cdef TimeSteps steps
    cdef bint series = cnp.PyArray_NDIM(x) == 1, same
    if out is None:
        out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x), 0)
    c.f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT
    c.n = cnp.PyArray_DIM(x, 0)
    c.m = 1 if series else cnp.PyArray_DIM(x, 1)
    c.ts = cnp.PyArray_STRIDE(x, 0) // item if c.n > 1 else 1
    c.js = cnp.PyArray_STRIDE(x, 1) // item if c.m > 1 else 1
    if (not (cnp.PyArray_Check(out) and _same_steps(x, y, c.n, c.m)
             and _same_steps(x, <cnp.ndarray>out, c.n, c.m))
            or cnp.PyArray_TYPE(y) != cnp.PyArray_TYPE(x)
            or cnp.PyArray_TYPE(<cnp.ndarray>out) != cnp.PyArray_TYPE(x)
            or cnp.PyArray_DIM(state, 0) != NFIELDS or cnp.PyArray_DIM(state, 1) != c.m
            or not cnp.PyArray_IS_C_CONTIGUOUS(state)
            or cnp.PyArray_TYPE(state) != cnp.NPY_DOUBLE):
        raise ValueError("advance: x, y and out must share dtype and strides; state must be "
                         "(NFIELDS, m) float64")
    c.x = cnp.PyArray_DATA(x)
    c.y = cnp.PyArray_DATA(y)
    c.out = cnp.PyArray_DATA(<cnp.ndarray>out)
    c.state = <double*>cnp.PyArray_DATA(state)
    # cov of a series with itself: one mean (same bits)
    same = cnp.PyArray_DATA(x) == cnp.PyArray_DATA(y)
    _set_params(&c.p, KIND_VAR if kind == KIND_COV and same else kind, alpha, f0, adjust,
                ignore_na, bias, fills, min_periods, out_kind)
    if isinstance(factors, TimeSteps):
        steps = <TimeSteps>factors
        if cnp.PyArray_DIM(steps.values, 0) != c.n:
            raise ValueError("advance: factors must be the times of n steps")
        _run(&c, &steps.tm)
        return out
    if factors is not None:
        fac = <cnp.ndarray>factors
        if cnp.PyArray_DIM(fac, 0) != c.n or cnp.PyArray_TYPE(fac) != cnp.NPY_DOUBLE \
                or not cnp.PyArray_IS_C_CONTIGUOUS(fac):
            raise ValueError("advance: factors must be n float64 values")
        c.p.factors = <const double*>cnp.PyArray_DATA(fac)
    _run(&c, NULL)
    return out


cdef class TimeSteps:
    """The times of a call (``time_steps``), which ``advance`` turns into decay factors
    block by block (see _chunk_timed)."""
    cdef cnp.ndarray values
    cdef Times tm

    def __init__(self, cnp.ndarray times, double previous, double halflife, double alpha):
        cdef int typ = cnp.PyArray_TYPE(times)
        if (cnp.PyArray_NDIM(times) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(times)
                or typ not in (cnp.NPY_INT64, cnp.NPY_DOUBLE)
                or not cnp.PyArray_ISBEHAVED_RO(times)):
            raise ValueError("time_steps: times must be 1-D C-contiguous int64 or float64")
        self.values = times
        self.tm.values = cnp.PyArray_DATA(times)
        self.tm.i64 = typ == cnp.NPY_INT64
        self.tm.previous = previous
        self.tm.halflife = halflife
        self.tm.log2_b = log2(1.0 - alpha)


def time_steps(times, double previous, double halflife, double alpha):
    """What ``advance`` takes as ``factors`` for steps at ``times`` (1-D C-contiguous int64
    or float64, each counting as its float64 value; ``t_{-1} = previous``, NaN: none):
    the factors of :func:`time_factors`, computed as the steps run."""
    return TimeSteps(times, previous, halflife, alpha)


def time_factors(times, double previous, double halflife, double alpha):
    """Each step's decay ``(1 - alpha)**((t_i - t_{i-1})/halflife)`` (float64, n) from the
    times (as :func:`time_steps`); a NaN ``previous`` (a series' first chunk) makes the
    first 1. See src/cores/fm_time_factors.h."""
    cdef TimeSteps steps = TimeSteps(times, previous, halflife, alpha)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(steps.values),
                                             cnp.NPY_DOUBLE, 0)
    with nogil:
        _factors(&steps.tm, 0, cnp.PyArray_DIM(steps.values, 0),
                 <double*>cnp.PyArray_DATA(out))
    return out


cdef class Stepper:
    """A stream's common update, checked in C: ``stepper(x, y)`` advances the stream's
    state over the chunk ``x`` (and ``y``: cov, corr; None otherwise) and returns a new
    array of its results, as ``advance`` with the options given here; or returns None,
    untouched, when the chunk is not what it takes (an aligned, native, C-contiguous array
    of the dtype and row shape given here, time along axis 0; ``y`` alike), for the
    caller's checked path. Per 1k-value chunk its call costs a fifth of the Python checks
    and the 14-argument ``advance`` call it replaces (0.15 us against 0.8 us measured)."""
    cdef Params p
    cdef cnp.ndarray state
    cdef int typenum, ndim
    cdef Py_ssize_t m
    cdef bint pair
    cdef cnp.dtype descr          # the results' (native byte order)

    def __init__(self, int kind, cnp.ndarray state, cnp.dtype dtype, int ndim, Py_ssize_t m,
                 bint pair, double alpha, double f0, bint adjust, bint ignore_na, bint bias,
                 bint fills, Py_ssize_t min_periods, int out_kind):
        if (cnp.PyArray_NDIM(state) != 2 or cnp.PyArray_DIM(state, 0) != NFIELDS
                or cnp.PyArray_DIM(state, 1) != m or not cnp.PyArray_IS_C_CONTIGUOUS(state)
                or cnp.PyArray_TYPE(state) != cnp.NPY_DOUBLE
                or dtype.type_num not in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE)
                or ndim not in (1, 2) or (ndim == 1 and m != 1)):
            raise ValueError("Stepper: state must be (NFIELDS, m) float64, chunks float32 "
                             "or float64 of 1 or 2 dimensions")
        self.state = state
        self.typenum = dtype.type_num
        self.descr = cnp.PyArray_DescrFromType(dtype.type_num)
        self.ndim = ndim
        self.m = m
        self.pair = pair
        _set_params(&self.p, KIND_VAR if kind == KIND_COV and not pair else kind, alpha, f0,
                    adjust, ignore_na, bias, fills, min_periods, out_kind)

    cdef bint _takes(self, object a):
        cdef cnp.ndarray arr
        if not cnp.PyArray_CheckExact(a):
            return False
        arr = <cnp.ndarray>a
        return (cnp.PyArray_TYPE(arr) == self.typenum and cnp.PyArray_NDIM(arr) == self.ndim
                and cnp.PyArray_ISBEHAVED_RO(arr) and cnp.PyArray_IS_C_CONTIGUOUS(arr)
                and (self.ndim == 1 or cnp.PyArray_DIM(arr, 1) == self.m))

    def __call__(self, x, y=None):
        return self._step(x, y)

    cdef object _step(self, object x, object y):
        cdef Chunk c
        cdef cnp.ndarray xa, ya, out
        if not self._takes(x) or (y is None) == self.pair:
            return None
        xa = <cnp.ndarray>x
        ya = xa
        if self.pair:
            if not self._takes(y):
                return None
            ya = <cnp.ndarray>y
            if cnp.PyArray_DIM(ya, 0) != cnp.PyArray_DIM(xa, 0):
                return None
        Py_INCREF(self.descr)
        out = PyArray_NewFromDescr(&PyArray_Type, self.descr, self.ndim,
                                   cnp.PyArray_DIMS(xa), NULL, NULL, 0, NULL)
        c.f32 = self.typenum == cnp.NPY_FLOAT
        c.n = cnp.PyArray_DIM(xa, 0)
        c.m = self.m
        c.ts = self.m
        c.js = 1
        c.x = cnp.PyArray_DATA(xa)
        c.y = cnp.PyArray_DATA(ya)
        c.out = cnp.PyArray_DATA(out)
        c.state = <double*>cnp.PyArray_DATA(self.state)
        c.p = self.p
        _run(&c, NULL)
        return out


cdef class StreamCore:
    """The compiled part of ``EwmStream`` (its first base; the Python part is
    ``fastmomentum._ewm_api._StreamBase``): the step count, the :class:`Stepper` of the
    common update, and :meth:`update`'s common path in C, which hands every other call to
    the Python ``_checked_update``. (A Python ``update`` before the Stepper cost ~0.3 us a
    call: its frame, keyword-only arguments, attribute lookups and ``self._steps +=``.)"""
    cdef public Stepper _fast
    cdef public Py_ssize_t _steps

    def update(self, x, y=None, *, times=None, out=None):
        """The results of the next chunk (a 1-D series chunk, or a 2-D block with time
        along ``axis``); ``y``: cov and corr; ``times``: its times (streams made with
        ``times=True``)."""
        cdef object result
        # a reference of its own: the step may release the GIL, and another thread's
        # load_state_dict would drop the Stepper (and its state array) meanwhile
        cdef Stepper fast = self._fast
        if fast is not None and out is None and times is None:
            result = fast._step(x, y)
            if result is not None:
                self._steps += cnp.PyArray_DIM(<cnp.ndarray>result, 0)
                return result
        return self._checked_update(x, y, times, out)
