# Two Gaussians, mini-batch SGD with per-sample gradients averaged in sgd_update.
import time

import numpy as np
from EDF import BCE, Input, Linear, Parameter, Sigmoid

rng = np.random.default_rng(2024)
n = 700
X = np.concatenate([rng.multivariate_normal([3, -2], [[6, 0], [0, 3]], n),
                    rng.multivariate_normal([-1, 3], [[2, 0], [0, 8]], n)])
Y = np.concatenate([np.zeros(n), np.ones(n)])
order = rng.permutation(2 * n)
X, Y = X[order], Y[order]
n_test = 350
X_train, Y_train, X_test, Y_test = X[n_test:], Y[n_test:], X[:n_test], Y[:n_test]


def topological_sort(output):
    seen, order = set(), []

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.inputs:
            visit(parent)
        order.append(node)

    visit(output)
    return order


def sgd_update(params, lr):
    for p in params:
        p.value -= lr * np.mean(p.gradients[p], axis=0)


x_node, y_node = Input(), Input()
w = Parameter(rng.normal(0, 0.1, 2))
b = Parameter(np.zeros(1))
prob = Sigmoid(Linear(x_node, w, b))
loss = BCE(y_node, prob)
graph = topological_sort(loss)
params = [node for node in graph if isinstance(node, Parameter)]

batch_size = 8
lr = 0.1
start = time.time()
for epoch in range(1, 121):
    perm = rng.permutation(len(X_train))
    epoch_loss = []
    for i in range(0, len(X_train), batch_size):
        rows = perm[i:i + batch_size]
        x_node.value, y_node.value = X_train[rows], Y_train[rows]
        for node in graph:
            node.forward()
        for node in reversed(graph):
            node.backward()
        sgd_update(params, lr)
        epoch_loss.append(loss.value)
    if epoch % 20 == 0:
        print(f"epoch {epoch:3d}  loss {np.mean(epoch_loss):.15g}")
print(f"train time {time.time() - start:.2f}s")

x_node.value = X_test
for node in graph[:-1]:
    node.forward()
print(f"test accuracy {np.mean((prob.value > 0.5) == Y_test):.4f}")
print(f"w = {w.value[0]:.15g}, {w.value[1]:.15g}   b = {b.value[0]:.15g}")
