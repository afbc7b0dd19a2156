"""Bits of every case over special values, saved to argv[1] (run under each build)."""
import sys, itertools, numpy as np, ml_dtypes, fastmomentum as fm
sp = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80,
               0x7FC0, 0xFFC0, 0x7F81, 0xFF81, 0x7FFF, 0x3F80, 0xBF80, 0x3F81, 0x4000, 0x0100,
               0x1234, 0x9234, 0x7F00, 0xFF00], np.uint16)
a, b, c = (x.ravel() for x in np.meshgrid(sp, sp, sp, indexing="ij"))
sp16 = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                 0x7E00, 0xFE00, 0x7C01, 0xFD01, 0x3C00, 0xBC00, 0x3C01, 0x1234, 0x9234], np.uint16)
a6, b6, c6 = (x.ravel() for x in np.meshgrid(sp16, sp16, sp16, indexing="ij"))
out = {}
for (dt, (pa, ga, va)), rnd, lr, mom, wd, nest, mx, first in itertools.product(
        [(ml_dtypes.bfloat16, (a, b, c)), (np.float16, (a6, b6, c6))], ["torch", "once", "stochastic"],
        [0.1, 3.0], [0.0, 0.9], [0.0, 0.01], [False, True], [False, True], [False, True]):
    if nest and mom == 0:
        continue
    p, g, v = pa.copy().view(dt), ga.copy().view(dt), va.copy().view(dt)
    kw = dict(seed=3, step=1) if rnd == "stochastic" else {}
    fm.momentum_step(p, g, v, lr=lr, momentum=mom, weight_decay=wd, nesterov=nest, maximize=mx,
                     first_step=first, rounding=rnd, **kw)
    key = f"{dt.__name__}_{rnd}_{lr}_{mom}_{wd}_{nest}_{mx}_{first}"
    out[key + "_p"], out[key + "_v"] = p.view(np.uint16), v.view(np.uint16)
for sdt in (ml_dtypes.bfloat16, np.float16):
    for wd, nest, mx, first in itertools.product([0.0, 0.01], [False, True], [False, True], [False, True]):
        p = np.concatenate([a.view(ml_dtypes.bfloat16).astype(np.float32), [np.nan, -np.inf, 1e-45, -0.0]]).astype(np.float32)
        g = np.concatenate([b.view(ml_dtypes.bfloat16).astype(np.float32), [1.0, np.nan, 3e38, 1e-40]]).astype(np.float32)
        v = np.concatenate([c.view(ml_dtypes.bfloat16).astype(np.float32), [np.inf, 0.0, -1e-40, np.nan]]).astype(sdt)
        fm.momentum_step(p, g, v, lr=0.1, momentum=0.9, weight_decay=wd, nesterov=nest, maximize=mx,
                         first_step=first, momentum_dtype=sdt)
        key = f"state_{sdt.__name__}_{wd}_{nest}_{mx}_{first}"
        out[key + "_p"], out[key + "_v"] = p.view(np.uint32), v.view(np.uint16)
np.savez(sys.argv[1], **out)
print(len(out), "arrays", sum(x.size for x in out.values()), "values")
