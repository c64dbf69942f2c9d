"""Two Gaussians in centimetres and kilograms: a learned per-feature scale before logistic regression."""
import numpy as np

import mini_edf as edf

rng = np.random.default_rng(11)
n = 700
class0 = rng.multivariate_normal([3, -2], np.diag([6, 3]), n)
class1 = rng.multivariate_normal([-1, 3], np.diag([2, 8]), n)
X = np.vstack([class0, class1]) * np.array([10.0, 0.1]) + np.array([20.0, 0.0])  # badly scaled features
Y = np.hstack([np.zeros(n), np.ones(n)])[:, None]
perm = rng.permutation(2 * n)
X, Y = X[perm], Y[perm]
train, test = slice(350, None), slice(0, 350)

x, y = edf.Input(), edf.Input()
a = edf.Parameter(np.array([0.1, 10.0]))  # a first guess at the units
b = edf.Parameter(np.zeros(2))
W = edf.Parameter(rng.normal(0, 0.1, (2, 1)))
c = edf.Parameter(np.zeros(1))
scaled = edf.Scale(x, a, b)
p = edf.Sigmoid(edf.Dense(W, scaled, c))
loss = edf.BCE(y, p)
graph = edf.topological_sort(loss)
params = [a, b, W, c]

lrs = {id(a): 1e-4, id(b): 0.05, id(W): 0.05, id(c): 0.05}
B = 32
Xtr, Ytr = X[train], Y[train]
for epoch in range(150):
    running = 0.0
    for i in range(0, len(Xtr), B):
        x.forward(Xtr[i:i + B])
        y.forward(Ytr[i:i + B])
        for node in graph:
            node.forward()
        for node in graph[::-1]:
            node.backward()
        for prm in params:
            prm.value -= lrs[id(prm)] * prm.gradients[prm]
        running += loss.value
    if epoch % 25 == 0 or epoch == 149:
        print("epoch {:2d} mean loss {:.15g}".format(epoch, running / len(Xtr)))

x.forward(X[test])
for node in graph:
    if node is not loss:
        node.forward()
print("accuracy {:.4f}".format(np.mean((p.value > 0.5) == Y[test])))
print("a", " ".join("{:.15g}".format(v) for v in a.value), "b", " ".join("{:.15g}".format(v) for v in b.value))
print("W", " ".join("{:.15g}".format(v) for v in W.value[:, 0]), "c {:.15g}".format(c.value[0]))
