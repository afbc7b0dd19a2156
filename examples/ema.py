"""The exponentially weighted average of 0..9, bias correction, and beta on a noisy series.

Run: python examples/ema.py   (writes ema.png; change the numbers below and run again)
"""
from fastmomentum.demos import ema

result = ema.compute(values=range(10), beta=0.9, betas=(0.5, 0.9, 0.98), noise_std=0.3)
print(ema.summary(result))
ema.plot(result, "ema.png")
