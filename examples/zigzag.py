"""Plain SGD, momentum and Nesterov in an elongated valley (condition number 100).

Run: python examples/zigzag.py   (writes zigzag.png; try condition=400 or momentum=0.95)
"""
from fastmomentum.demos import zigzag

result = zigzag.compute(condition=100, momentum=0.9, start=(-9.0, 1.5))
print(zigzag.summary(result))
zigzag.plot(result, "zigzag.png")
