# cython: language_level=3
"""The exponentially weighted family (mean, sum, var, std, cov, corr) as one sequential
recurrence: pandas' loops (aggregations.pyx ``ewm``, ``ewmcov``) with their state kept in an
array between calls, so that a series processed in chunks of any sizes runs exactly the
operations of one pass (bit-identical), and a stream can be saved and resumed.

Compiled once (not per CPU target): no ``fma`` (without ``-mfma`` it is a libm call, 25 ns a
value measured) and ``-ffp-contract=off`` forbids the compiler's own, so every result is
the same sequence of IEEE multiplies and adds in every build, as pandas' loops.

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
from libc.math cimport NAN, log2, pow, sqrt
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastmomentum._threads cimport run_chunks, threads_for
from fm_core_table cimport CoreTable, load_core_table

from fastmomentum import _target

cnp.import_array()

# times' decay factors are the numeric cores' (built per CPU target: the vectorised 2**y,
# src/cores/fm_time_factors.h); the recurrence itself is compiled here, once
cdef CoreTable cores


def _use_core_table(capsule):
    load_core_table(&cores, capsule)


_target.attach(_use_core_table)

cdef enum:
    TIME_BLOCK = 1024    # steps per block with times: their factors on the stack, in L1

ctypedef fused real:
    float
    double

# state fields (rows of the (NFIELDS, m) float64 state array)
cdef enum:
    MEAN_X, MEAN_Y, COV, OLD_WT, SUM_WT2, NOBS, DECAY, SEED, LEAD_DECAY, X1, Y1, VAR_X, VAR_Y,
    NFIELDS

cdef enum:
    # which recurrence; corr: pandas' three (cov(x, y), var(x), var(y): one weight state,
    # as pandas masks x and y jointly first) in one pass
    # (var: cov of x with itself, computing one mean: the same bits as KIND_COV with y = x)
    KIND_MEAN = 0, KIND_SUM = 1, KIND_COV = 2, KIND_CORR = 3, KIND_VAR = 4
    OUT_VALUE = 0, OUT_STD = 1                          # cov kind: the value, or zsqrt of it

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


# Weights and decay products below this are flushed to zero: a product of decays rounds to a
# fixed subnormal (0.9 * 2.5e-323 == 2.5e-323) and every later step would run at subnormal
# speed (measured: 120 ns a value instead of 2).
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


ctypedef struct Moments:
    double mean_x, mean_y, cov, var_x, var_y


cdef inline double _comoment(double m, double mu, double mv, double nu, double nv, double xu,
                             double xv, double a, double c) noexcept nogil:
    """pandas' co-moment step, with the old and new means of both sides: one multiply and
    one add on its dependency chain."""
    return a * m + (a * ((mu - nu) * (mv - nv)) + c * ((xu - nu) * (xv - nv)))


cdef inline Moments _value_step(Moments v, double x, double y, double a, double c,
                                int kind) noexcept nogil:
    """The values' part of a step (weights ``a``, ``c`` given)."""
    cdef Moments r = v
    cdef double mn = a * v.mean_x + c * x, mny
    r.mean_x = mn if v.mean_x != x else v.mean_x
    if kind == KIND_VAR:
        r.mean_y = r.mean_x
        r.cov = _comoment(v.cov, v.mean_x, v.mean_x, r.mean_x, r.mean_x, x, x, a, c)
    elif kind >= KIND_COV:
        mny = a * v.mean_y + c * y
        r.mean_y = mny if v.mean_y != y else v.mean_y
        r.cov = _comoment(v.cov, v.mean_x, v.mean_y, r.mean_x, r.mean_y, x, y, a, c)
    if kind == KIND_CORR:
        r.var_x = _comoment(v.var_x, v.mean_x, v.mean_x, r.mean_x, r.mean_x, x, x, a, c)
        r.var_y = _comoment(v.var_y, v.mean_y, v.mean_y, r.mean_y, r.mean_y, y, y, a, c)
    return r


cdef inline Moments _moments(const Series* s) noexcept nogil:
    cdef Moments v
    v.mean_x, v.mean_y, v.cov, v.var_x, v.var_y = s.mean_x, s.mean_y, s.cov, s.var_x, s.var_y
    return v


cdef inline void _set_moments(Series* s, Moments v) noexcept nogil:
    s.mean_x, s.mean_y, s.cov, s.var_x, s.var_y = v.mean_x, v.mean_y, v.cov, v.var_x, v.var_y


cdef inline double _zsqrt(double v) noexcept nogil:
    return sqrt(v) if not v < 0 else 0.0      # pandas' zsqrt (NaN stays NaN)


cdef inline double _bias_factor(const Series* s) noexcept nogil:
    """bias=False: (sum w)^2/((sum w)^2 - sum w^2), 0 where pandas gives NaN."""
    cdef double num = s.old_wt * s.old_wt    # pandas' sum_wt equals old_wt at every step
    cdef double den = num - s.sum_wt2
    return num / den if den > 0 else 0.0


cdef inline double _finish(Moments v, double k, int kind, bint bias, bint std) noexcept nogil:
    """A result of the cov or corr kind from the moments and _bias_factor ``k``."""
    cdef double r
    if kind == KIND_CORR:
        return v.cov / _zsqrt(v.var_x * v.var_y)
    r = v.cov
    if not bias:
        r = k * r if k != 0.0 else NAN
    return _zsqrt(r) if std else r


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
    # not flushed: an observed step leaves old_wt >= 1 (adjust; 1 otherwise), so a product
    # below TINY is one step's (only a run of missing values decays old_wt for good, and
    # _step flushes that); 2 of the timed mean's 40 instructions a value
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
    decays = pow(b, <double>(t - t0))          # (one pow a chunk of a stream: ~30 ns each)
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


cdef inline bint _row_finite(const real* x, const real* y, Py_ssize_t j0,
                             Py_ssize_t j1) noexcept nogil:
    """No NaN or inf in the row: integer operations on the exponent bits only, an OR
    reduction the compiler vectorises (a float compare with NaN did not, nor the int flag
    of an integer compare mixed with 64-bit words: gcc 12 left the float64 loop scalar).
    The exponent field plus one at its lowest bit carries into the sign bit exactly when
    the field is all ones (NaN or inf)."""
    cdef Py_ssize_t j
    cdef const unsigned long long* bx
    cdef const unsigned long long* by
    cdef const unsigned int* fx
    cdef const unsigned int* fy
    cdef unsigned long long e64 = 0x7ff0000000000000ULL, one64 = 0x0010000000000000ULL
    cdef unsigned long long bad64 = 0
    cdef unsigned int e32 = 0x7f800000U, one32 = 0x00800000U, bad32 = 0
    if real is double:
        bx = <const unsigned long long*>x
        by = <const unsigned long long*>y
        for j in range(j0, j1):
            bad64 |= ((bx[j] & e64) + one64) | ((by[j] & e64) + one64)
        return (bad64 >> 63) == 0
    else:
        fx = <const unsigned int*>x
        fy = <const unsigned int*>y
        for j in range(j0, j1):
            bad32 |= ((fx[j] & e32) + one32) | ((fy[j] & e32) + one32)
        return (bad32 >> 31) == 0


cdef inline void _row_values(const real* x, const real* y, real* out, double* st,
                             Py_ssize_t m, Py_ssize_t j0, Py_ssize_t j1, double a, double c,
                             double k, bint nan_out, int kind, bint bias,
                             bint std) noexcept nogil:
    """The value operations of one row across series j0..j1 (``kind``, ``bias``, ``std``
    constants once inlined: a plain loop over contiguous arrays)."""
    cdef Py_ssize_t j
    cdef Moments mo
    cdef double v
    cdef double* mean_x = st + MEAN_X * m
    cdef double* mean_y = st + MEAN_Y * m
    cdef double* cov = st + COV * m
    cdef double* var_x = st + VAR_X * m
    cdef double* var_y = st + VAR_Y * m
    for j in range(j0, j1):
        if kind == KIND_SUM:
            v = a * mean_x[j] + x[j]          # a: the decay
            mean_x[j] = v
        else:
            mo.mean_x = mean_x[j]
            if kind >= KIND_COV:
                mo.mean_y, mo.cov = mean_y[j], cov[j]
            if kind == KIND_CORR:
                mo.var_x, mo.var_y = var_x[j], var_y[j]
            mo = _value_step(mo, x[j], y[j], a, c, kind)
            mean_x[j] = mo.mean_x
            if kind >= KIND_COV:
                mean_y[j], cov[j] = mo.mean_y, mo.cov
            if kind == KIND_CORR:
                var_x[j], var_y[j] = mo.var_x, mo.var_y
            v = _finish(mo, k, kind, bias, std) if kind >= KIND_COV else mo.mean_x
        out[j] = <real>(NAN if nan_out else v)


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
    if p.kind == KIND_SUM:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_SUM, False, False)
    elif p.kind == KIND_MEAN:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_MEAN, False, False)
    elif p.kind == KIND_CORR:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_CORR, True, False)
    elif p.kind == KIND_VAR and p.bias:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_VAR, True,
                    p.out_kind == OUT_STD)
    elif p.kind == KIND_VAR and p.out_kind == OUT_STD:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_VAR, False, True)
    elif p.kind == KIND_VAR:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_VAR, False, False)
    elif p.bias:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_COV, True,
                    p.out_kind == OUT_STD)
    elif p.out_kind == OUT_STD:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_COV, False, True)
    else:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_COV, False, False)


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
    if uniform:
        _load(&w, st, m, j0)
    for t in range(n):
        f = _factor(p, t)
        if uniform and _row_finite(x + t * ts, y + t * ts, j0, j1):
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


cdef void _chunk_part(const Chunk* c, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Series j0..j1 of one call (what a thread runs)."""
    cdef Py_ssize_t j
    if c.js == 1 and j1 - j0 > 1:
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
    if c.m >= 2 * COLUMN_ALIGN:
        # about 1 ns a value (ewm_var of 100k x 100 on one thread: 2.5 ns with its page
        # faults), an estimate that errs towards fewer threads
        threads = threads_for(<double>c.n * <double>c.m)
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
        out = cnp.PyArray_EMPTY(self.ndim, cnp.PyArray_DIMS(xa), self.typenum, 0)
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
