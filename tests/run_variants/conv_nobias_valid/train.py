# Is the digit 5 or more?  Conv (no bias, valid) -> ReLU -> MaxPooling -> Linear -> Sigmoid -> BCE.
import numpy as np
from sklearn.datasets import load_digits

from edf_cnn import *

rng = np.random.RandomState(21)
d = load_digits()
X = d.images[:700][..., np.newaxis] / 16.0
y_all = (d.target[:700] >= 5).astype(float).reshape(-1, 1)
Xtr, ytr, Xte, yte = X[:500], y_all[:500], X[500:], y_all[500:]

x = Input()
y = Input()
K = Parameter(np.zeros((3, 3, 1, 6)))  # kernels start at zero like the biases
A = Parameter(rng.randn(3 * 3 * 6, 1) * 0.1)
b = Parameter(np.zeros(1))
out = Sigmoid(Linear(Flatten(MaxPooling(ReLU(Conv(x, K)))), A, b))
loss = BCE(y, out)


def topological_sort(node):
    order = []
    seen = set()

    def visit(n):
        if n not in seen:
            seen.add(n)
            for i in n.inputs:
                visit(i)
            order.append(n)

    visit(node)
    return order


graph = topological_sort(loss)
params = [K, A, b]
lr = 0.5
history = []
for epoch in range(15):
    perm = rng.permutation(500)
    batch_losses = []
    for s in range(0, 500, 25):
        rows = perm[s:s + 25]
        x.value, y.value = Xtr[rows], ytr[rows]
        for node in graph:
            node.forward()
        for node in reversed(graph):
            node.backward()
        for prm in params:
            prm.value -= lr * prm.gradients[prm]
        batch_losses.append(loss.value)
    history.append(np.mean(batch_losses))
    print("epoch", epoch, "loss", "%.15g" % history[-1])

x.value, y.value = Xte, yte
for node in graph:
    node.forward()
print("test loss %.15g" % loss.value)
print("test accuracy %.4f" % np.mean((out.value > 0.5) == yte))
print("K[..., 0, 0]:", " ".join("%.15g" % v for v in K.value[:, :, 0, 0].ravel()))
