"""Logistic regression with Linear, mini-batches sliced past the data, and a sloppy evaluation.

`for i in range(0, n + B, B)` ends every epoch with an EMPTY batch (X[n:n+B]
has 0 rows): its loss is 0.0 and it changes nothing.  After training the
label Input still holds that empty batch, and the evaluation runs the whole
graph, loss included, on new inputs:
  1. one test row: predictions (1, 1) against stale labels (0, 1): NumPy
     broadcasts them to (0, 1), so the loss is 0.0;
  2. the script then sets the label of test row 0 alone, (1, 1), and runs the
     whole test set (m, 3) through forward and backward: predictions (m, 1)
     against labels (1, 1) broadcast to (m, 1), every test row compared with
     test row 0's label; the label's gradient is summed back to (1, 1).
"""
from EDF import *
import numpy as np

rng = np.random.default_rng(1)
X = rng.normal(size=(96, 3))
Y = (X @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=96) > 0).astype(float).reshape(-1, 1)
X_train, Y_train, X_test, Y_test = X[:80], Y[:80], X[80:], Y[80:]

x, y = Input(), Input()
A, b = Parameter(rng.normal(scale=0.1, size=(3, 1))), Parameter(np.zeros(1))
linear = Linear(x, A, b)
sigmoid = Sigmoid(linear)
loss = BCE(y, sigmoid)
graph = [x, y, A, b, linear, sigmoid, loss]
trainable = [A, b]


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in reversed(graph):
        n.backward()


def sgd_update(trainable, lr):
    for t in trainable:
        for i in range(len(t.value)):
            t.value[i] -= lr * t.gradients[t][i]


n, B = len(X_train), 16
losses = []
for epoch in range(6):
    total = 0.0
    for i in range(0, n + B, B):  # the last i is n: an empty batch
        x.value, y.value = X_train[i:i + B], Y_train[i:i + B]
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainable, 0.5)
        total += loss.value
    losses.append(total / n)
    print(f"epoch {epoch}: loss {losses[-1]:.6f}")

assert y.value.shape == (0, 1)  # stale: the empty batch
x.value = X_test[:1]
forward_pass(graph)
one_row = {"prediction": sigmoid.value.copy(), "loss": loss.value}
print(f"test row 0: p = {sigmoid.value[0, 0]:.4f}, loss against the stale (0, 1) labels = {loss.value}")

y.value = Y_test[:1]
x.value = X_test
forward_pass(graph)
backward_pass(graph)
accuracy = np.mean((sigmoid.value > 0.5) == (Y_test > 0.5))
whole_test = {"predictions": sigmoid.value.copy(), "loss": loss.value,
              "dA": A.gradients[A].copy(), "db": b.gradients[b].copy(), "dy": y.gradients[y].copy()}
print(f"test accuracy {accuracy:.3f}, loss against test row 0's label {loss.value:.4f}")

result = {"params": [t.value.copy() for t in trainable], "losses": losses,
          "one_row": one_row, "whole_test": whole_test, "accuracy": accuracy}
