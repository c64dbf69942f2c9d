"""fastedf.fit's compiled engine against its limit (one hand-written Numba loop) and the NumPy EDF.

All three train the study's logistic regression (1050 samples, 2 features) in
one process; each configuration is repeated and the fastest repeat is kept
(the machine is shared: the minimum is the least disturbed).  Prints
nanoseconds per sample and the ratios.
Usage:  python benchmarks/bench_fit.py [--repeats 7] [--epochs 20] [--batch-sizes 1,2,32,1024]
"""
import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bench_graph  # noqa: E402
from fastedf import numpy_edf  # noqa: E402
from handwritten import train_logistic  # noqa: E402

import fastedf  # noqa: E402
from fastedf import compiler  # noqa: E402
from fastedf.models import logistic_regression  # noqa: E402
from fastedf.study.data import study_data  # noqa: E402


def time_handwritten(X, y, batch_size, epochs, repeats):
    import time
    loss = np.zeros(epochs)
    train_logistic(X, y, np.zeros(X.shape[1]), np.zeros(1), batch_size, 1, 0.1, loss)  # compile
    best = np.inf
    for _ in range(repeats):
        A, b = np.zeros(X.shape[1]), np.zeros(1)
        start = time.perf_counter()
        train_logistic(X, y, A, b, batch_size, epochs, 0.1, loss)
        best = min(best, time.perf_counter() - start)
    return best


def time_fit(X, y, batch_size, epochs, repeats, engine="compiled"):
    """fit's training time on logistic regression, fastest of 1 + repeats runs; returns (seconds, last model)."""
    best = np.inf
    for _ in range(repeats + 1):  # the first run may compile
        model = logistic_regression(X.shape[1])
        history = fastedf.fit(model.loss, {model.x: X, model.y: y.reshape(-1, 1)}, batch_size=batch_size,
                              epochs=epochs, lr=0.1, engine=engine)
        best = min(best, history.train_time_s)
    return best, model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-sizes", default="1,2,32,1024")
    parser.add_argument("--max-inlined", type=int, default=compiler.MAX_INLINED_OPERATIONS,
                        help="programs of at most this many operations inline their kernels (0: none)")
    args = parser.parse_args()
    compiler.MAX_INLINED_OPERATIONS = args.max_inlined
    data = study_data(seed=0)
    X, y = data.X_train, data.y_train
    samples = args.epochs * len(X)
    print(f"{'batch':>6} {'hand ns/sample':>15} {'fastedf ns/sample':>18} {'fastedf/hand':>13} "
          f"{'numpy_edf ns/sample':>20} {'numpy_edf/fastedf':>18}")
    for batch_size in map(int, args.batch_sizes.split(",")):
        hand = time_handwritten(X, y, batch_size, args.epochs, args.repeats)
        ours, _ = time_fit(X, y, batch_size, args.epochs, args.repeats)
        edf_epochs = 1 if batch_size < 32 else args.epochs
        edf = min(bench_graph.batched_loop(numpy_edf, X, y.reshape(-1, 1), batch_size, edf_epochs)
                  for _ in range(3)) * -(-len(X) // batch_size) / len(X)
        print(f"{batch_size:>6} {hand / samples * 1e9:>15.1f} {ours / samples * 1e9:>18.1f} "
              f"{ours / hand:>12.2f}x {edf * 1e9:>20.1f} {edf / (ours / samples):>17.0f}x")


if __name__ == "__main__":
    main()
