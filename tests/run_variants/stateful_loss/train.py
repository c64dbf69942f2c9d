"""The loss node records its own history; the script reads it instead of collecting losses itself."""
import numpy as np

from EDF import BCE, Input, Linear, Parameter, Sigmoid

np.random.seed(4)
X = np.random.randn(400, 2) + np.repeat([[1.5, 1.5], [-1.5, -1.5]], 200, axis=0)
Y = np.repeat([1.0, 0.0], 200).reshape(-1, 1)
perm = np.random.permutation(400)
X, Y = X[perm], Y[perm]

x, y = Input(), Input()
A, b = Parameter(np.random.randn(2, 1) * 0.1), Parameter(np.zeros(1))
prob = Sigmoid(Linear(x, A, b))
loss = BCE(y, prob)
graph = [x, y, A, b, prob.inputs[0], prob, loss]
for epoch in range(10):
    for i in range(0, 400, 20):
        x.value, y.value = X[i:i + 20], Y[i:i + 20]
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        A.value -= 0.3 * A.gradients[A]
        b.value -= 0.3 * b.gradients[b]
    print(f"epoch {epoch} mean loss {np.mean(loss.history[-20:]):.15g} after {loss.calls} calls")
print(f"first loss {loss.history[0]:.15g} last loss {loss.history[-1]:.15g}")
print("A", " ".join(f"{v:.15g}" for v in A.value.ravel()))
