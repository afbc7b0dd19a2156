"""The directional derivative over every unit direction: smallest along -grad/|grad|.

Run: python examples/steepest.py   (writes steepest.png; try another point)
"""
from fastmomentum.demos import steepest

result = steepest.compute(point=(-0.6, 0.9))
print(steepest.summary(result))
steepest.plot(result, "steepest.png")
