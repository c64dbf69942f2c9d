"""The course's later models, per epoch: NumPy course-style nodes against fastedf's course loop and fit.

Models: the digits MLP (64 -> 64 ReLU -> 10 Softmax, CE) on scikit-learn's
8x8 digits, and the small conv net (8x8x1 -> Conv 3x3x4 -> ReLU ->
MaxPooling 2 -> Flatten -> Linear 64 -> 10 -> Softmax, CE).  Each side trains
the same initial parameters on the same rows in order with lr 0.1; the final
parameters must agree with the NumPy course nodes (fastedf/numpy_edf.py)
to 1e-8 before any time is printed.  Single thread (BLAS, OpenMP and Numba
pinned to 1 before NumPy is imported); the minimum of --repeats runs.
B = 1 runs of the Python loops are timed on --slow-rows rows and scaled to
the epoch (their cost per update is constant).

Usage:  python benchmarks/bench_course.py [--models mlp,conv] [--batch-sizes 1,32,256] [--repeats 3]
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "FASTEDF_BLAS_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import course_loop  # noqa: E402
from fastedf import numpy_edf  # noqa: E402

import fastedf  # noqa: E402
from fastedf.datasets import load_digits  # noqa: E402

LR = 0.1


def init_params(model, seed=0):
    rng = np.random.default_rng(seed)
    if model == "mlp":
        return [rng.normal(0, 0.1, (64, 64)), np.zeros(64), rng.normal(0, 0.1, (64, 10)), np.zeros(10)]
    return [rng.normal(0, 0.3, (3, 3, 1, 4)), np.zeros(4), rng.normal(0, 0.1, (64, 10)), np.zeros(10)]


def build(edf, model, init):
    """(x, y, loss, graph, parameters) of the model written with module `edf`'s nodes."""
    x, y = edf.Input(), edf.Input()
    params = [edf.Parameter(v.copy()) for v in init]
    if model == "mlp":
        hidden = edf.ReLU(edf.Linear(x, params[0], params[1]))
    else:
        conv = edf.ReLU(edf.Conv(x, params[0], params[1]))
        hidden = edf.Flatten(edf.MaxPooling(conv, 2))
    loss = edf.CE(y, edf.Softmax(edf.Linear(hidden, params[2], params[3])))
    graph = edf.topological_sort(loss)
    return x, y, loss, graph, params


def run_course_loop(edf, model, init, X, Y, batch, epochs):
    """The course's training loop (benchmarks/course_loop.py) over `edf`'s nodes; returns (seconds, parameters)."""
    x, y, loss, graph, params = build(edf, model, init)
    seconds = course_loop.train(graph, params, x, y, X, Y, batch, epochs, LR)
    return seconds, [p.value.copy() for p in params]


def fit(engine):
    def run(model, init, X, Y, batch, epochs):
        x, y, loss, graph, params = build(fastedf, model, init)
        history = fastedf.fit(loss, {x: X, y: Y}, batch_size=batch, epochs=epochs, lr=LR, engine=engine)
        assert history.engine == engine, history.note
        return history.train_time_s, [p.value.copy() for p in params]
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,conv")
    parser.add_argument("--batch-sizes", default="1,32,256")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-rows", type=int, default=300)
    args = parser.parse_args()
    X, labels = load_digits()
    Y = np.eye(10)[labels.astype(int)]
    sides = {"numpy course nodes": lambda *a: run_course_loop(numpy_edf, *a),
             "fastedf course loop": lambda *a: run_course_loop(fastedf, *a),
             "fit graph": fit("graph"), "fit compiled": fit("compiled")}
    python_loops = {"numpy course nodes", "fastedf course loop", "fit graph"}
    print("single thread; ms per epoch of", len(X), "rows (* = timed on", args.slow_rows, "rows, scaled)")
    for model in args.models.split(","):
        data = X if model == "mlp" else X.reshape(-1, 8, 8, 1)
        init = init_params(model)
        fastest = "fit compiled"
        print(f"{'model':>5} {'B':>4} " + " ".join(f"{name:>20}" for name in sides) + f" {'numpy/' + fastest:>22}")
        for batch in map(int, args.batch_sizes.split(",")):
            rows = args.slow_rows if batch == 1 else len(X)
            epochs = 1 if batch == 1 else args.epochs
            reference = None
            times = {}
            for name, run in sides.items():
                n, e = rows, epochs  # at B = 1 every side trains the same first rows, so all are checked
                run(model, init, data[:n], Y[:n], batch, e)  # warm-up (compiles)
                best, params = min((run(model, init, data[:n], Y[:n], batch, e) for _ in range(args.repeats)),
                                   key=lambda r: r[0])
                if reference is None:
                    reference = params
                worst = max(float(np.max(np.abs(a - b))) for a, b in zip(params, reference))
                if worst > 1e-8:
                    print(f"FAIL: {model} B={batch} {name}: max |param - numpy| = {worst:.3e}")
                    sys.exit(1)
                times[name] = best / e * len(X) / n * 1e3
            compiled = times[fastest]
            print(f"{model:>5} {batch:>4} " + " ".join(
                f"{times[name]:>19.2f}{'*' if batch == 1 and name in python_loops else ' '}" for name in sides)
                + f" {times['numpy course nodes'] / compiled:>21.1f}x")


if __name__ == "__main__":
    main()
