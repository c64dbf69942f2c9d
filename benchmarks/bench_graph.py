"""Course training loop, node by node: fastedf nodes against the plain NumPy EDF baseline.

Runs both on the study's logistic regression (1050 training samples, 2
features) in one process, alternating, and prints microseconds per update and
the ratio: the batched script (Linear) at each batch size, then the per-sample
script (Multiply and Addition on (1, 1) arrays).  Usage:  python benchmarks/bench_graph.py [--repeats 5] [--batch-sizes 1,32,1024]
"""
import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import course_loop  # noqa: E402
from fastedf import numpy_edf  # noqa: E402

import fastedf  # noqa: E402
from fastedf.study.data import study_data  # noqa: E402


def batched_loop(edf, X, Y, batch_size, epochs, lr=0.1):
    """The course's loop (docs/conventions.md), written against module `edf`; returns seconds per update."""
    x, y = edf.Input(), edf.Input()
    A, b = edf.Parameter(np.zeros((X.shape[1], 1))), edf.Parameter(np.zeros(1))
    linear = edf.Linear(x, A, b)
    sigmoid = edf.Sigmoid(linear)
    loss = edf.BCE(y, sigmoid)
    graph = [x, y, A, b, linear, sigmoid, loss]
    seconds = course_loop.train(graph, [A, b], x, y, X, Y, batch_size, epochs, lr)
    return seconds / (epochs * -(-len(X) // batch_size))


def per_sample_loop(edf, X, Y, epochs, lr=0.1):
    """The course's per-sample script: z = x1 * w1 + x2 * w2 + b on (1, 1) arrays; returns seconds per update."""
    x1, x2, y = edf.Input(), edf.Input(), edf.Input()
    w1, w2, b = (edf.Parameter(np.zeros((1, 1))) for _ in range(3))
    m1, m2 = edf.Multiply(x1, w1), edf.Multiply(x2, w2)
    z = edf.Addition(edf.Addition(m1, m2), b)
    p = edf.Sigmoid(z)
    loss = edf.BCE(y, p)
    graph = [x1, x2, y, w1, w2, b, m1, m2, z.inputs[0], z, p, loss]
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(len(X)):
            x1.value, x2.value, y.value = X[i:i + 1, 0:1], X[i:i + 1, 1:2], Y[i:i + 1]
            for n in graph:
                n.forward()
            for n in reversed(graph):
                n.backward()
            for t in (w1, w2, b):
                t.value -= lr * t.gradients[t]
    return (time.perf_counter() - start) / (epochs * len(X))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,32,1024")
    args = parser.parse_args()
    data = study_data(seed=0)
    X, Y = data.X_train, data.y_train.reshape(-1, 1)
    print(f"{'batch':>6} {'numpy_edf us/upd':>17} {'fastedf us/upd':>15} {'speed-up':>9}")
    for batch_size in map(int, args.batch_sizes.split(",")):
        epochs = max(1, min(20, batch_size // 8))
        for edf in (numpy_edf, fastedf):  # warm-up: compilation, caches
            batched_loop(edf, X, Y, batch_size, 1)
        times = {numpy_edf: [], fastedf: []}
        for _ in range(args.repeats):
            for edf in times:
                times[edf].append(batched_loop(edf, X, Y, batch_size, epochs))
        ref, ours = statistics.median(times[numpy_edf]), statistics.median(times[fastedf])
        print(f"{batch_size:>6} {ref * 1e6:>17.2f} {ours * 1e6:>15.2f} {ref / ours:>8.2f}x")
    for edf in (numpy_edf, fastedf):
        per_sample_loop(edf, X, Y, 1)
    ref, ours = (statistics.median(per_sample_loop(edf, X, Y, 1) for _ in range(args.repeats))
                 for edf in (numpy_edf, fastedf))
    print(f"per-sample script (Multiply/Addition on (1, 1) arrays): numpy_edf {ref * 1e6:.2f} us/upd, "
          f"fastedf {ours * 1e6:.2f} us/upd, {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
