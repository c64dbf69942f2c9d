"""Trains, prints, then reports failure to a grading harness through its exit status."""
import sys

import numpy as np

from EDF import build_xor_net, train

rng = np.random.default_rng(3)
data = np.loadtxt("xor.csv", delimiter=",")
X, Y = data[:, :2], data[:, 2:]
x, y, out, loss, graph, params = build_xor_net(4, rng)
train(X, Y, x, y, loss, graph, params, epochs=3, lr=0.5)
accuracy = np.mean((out.value > 0.5) == Y[-16:])
print("accuracy on the last batch", accuracy)
if accuracy < 0.99:
    print("not converged: exit status 3")
    sys.exit(3)
print("converged")
