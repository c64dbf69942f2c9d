"""Reads its settings from sys.argv, its data relative to the working directory, and prints where it ran."""
import os
import sys

import numpy as np

from EDF import build_xor_net, train

print("argv", sys.argv)
print("__name__", __name__)
print("script", os.path.basename(__file__), "cwd", os.path.basename(os.getcwd()))
epochs, lr = int(sys.argv[1]), float(sys.argv[2])
data = np.loadtxt(os.path.join(".", "xor.csv"), delimiter=",")
rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
X, Y = data[:, :2], data[:, 2:]
x, y, out, loss, graph, params = build_xor_net(6, rng)


def main():
    train(X, Y, x, y, loss, graph, params, epochs=epochs, lr=lr)
    x.value = X
    for n in graph[:-1]:
        n.forward()
    print("accuracy", np.mean((out.value > 0.5) == Y))


if __name__ == "__main__":
    main()
else:
    print("imported, not run")
