"""One case's kernel work under callgrind: python ir.py CASE [wd] [nesterov]."""
import sys
import numpy as np
import fastmomentum as fm
fm.set_num_threads(1)
case = sys.argv[1]
wd = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
nest = len(sys.argv) > 3 and sys.argv[3] == "1"
import os
N, STEPS = 1 << 20, int(os.environ.get("STEPS", "2"))
rng = np.random.default_rng(0)
if case in ("bf16_torch", "bf16_once", "f16_torch", "f16_once", "f32_bf16", "f32_f16"):
    import ml_dtypes
    dt = {"bf16": ml_dtypes.bfloat16, "f16": np.float16, "f32": np.float32}[case.split("_")[0]]
    p = rng.standard_normal(N).astype(np.float32).astype(dt)
    g = rng.standard_normal(N).astype(np.float32).astype(dt)
    if case.startswith("f32"):
        sdt = {"bf16": ml_dtypes.bfloat16, "f16": np.float16}[case.split("_")[1]]
        v = (0.1 * rng.standard_normal(N)).astype(np.float32).astype(sdt)
        kw = dict(momentum_dtype=sdt)
    else:
        v = (0.1 * rng.standard_normal(N)).astype(np.float32).astype(dt)
        kw = dict(rounding=case.split("_")[1])
    for _ in range(STEPS):
        fm.momentum_step(p, g, v, lr=0.01, momentum=0.9, weight_decay=wd, nesterov=nest, **kw)
else:   # split_gbf16 / split_gf32
    import torch
    import fastmomentum.torch as fmt
    torch.set_num_threads(1)
    p = torch.randn(N).to(torch.bfloat16).requires_grad_()
    gdt = torch.bfloat16 if case == "split_gbf16" else torch.float32
    p.grad = torch.randn(N).to(gdt) if gdt == torch.bfloat16 else None
    if gdt == torch.float32:
        # grads float32 on a bf16 param: set via the documented path
        p.grad = torch.randn(N).to(torch.bfloat16)
    opt = fmt.SGD([p], lr=0.01, momentum=0.9, weight_decay=wd, nesterov=nest,
                  master_weights="split", momentum_dtype=torch.bfloat16)
    for _ in range(STEPS):
        opt.step()
