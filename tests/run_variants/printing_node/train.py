"""A Linear that prints from its forward: every call's line must still appear, in order."""
import numpy as np

from edf_debug import BCE, Input, Linear, Parameter, Sigmoid

rng = np.random.default_rng(8)
X = np.vstack([rng.normal([2, -1], 1.0, (60, 2)), rng.normal([-1, 2], 1.0, (60, 2))])
Y = np.repeat([0.0, 1.0], 60)[:, None]
order = rng.permutation(120)
X, Y = X[order], Y[order]

x, y = Input(), Input()
A, b = Parameter(rng.normal(0, 0.1, (2, 1))), Parameter(np.zeros(1))
lin = Linear(x, A, b)
p = Sigmoid([lin])
loss = BCE([y, p])
graph = [x, y, A, b, lin, p, loss]
for epoch in range(3):
    for i in range(0, 120, 40):
        x.value, y.value = X[i:i + 40], Y[i:i + 40]
        for n in graph:
            n.forward()
        for n in graph[::-1]:
            n.backward()
        for t in (A, b):
            t.value -= 0.5 * t.gradients[t]
    print(f"epoch {epoch} loss {loss.value:.15g}")
print("A", " ".join(f"{v:.15g}" for v in A.value.ravel()), "b", f"{b.value[0]:.15g}")
