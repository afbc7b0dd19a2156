"""Linear regression four ways: lstsq, gradient descent, momentum, mini-batch SGD.

Run: python examples/least_squares.py   (writes least-squares.png; try batch_size=256)
"""
from fastmomentum.demos import least_squares

result = least_squares.compute(samples=2000, momentum=0.9, batch_size=32, sgd_epochs=30)
print(least_squares.summary(result))
least_squares.plot(result, "least-squares.png")
