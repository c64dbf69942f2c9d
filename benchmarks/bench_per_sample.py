"""Per-sample cost of fit against the batch size, on the study's logistic regression and a digits MLP.

Compiled engine, single thread, fixed row order: for B = 1, 2, 4, ..., 64 the
training loop's wall and CPU (thread) time per training row per epoch, the
best of --repeats fits of --epochs epochs, B alternating within each repeat.
Before timing, the compiled engine's weights after one epoch are checked
against the graph engine's (node by node) at every B: equal within 1e-12, the
largest difference printed (bit-identical is the project's rule; a nonzero
difference is printed so that it is seen).  A cost per sample that rises from one B to
the next is the implementation's, not the batch size's: a larger batch does the
same arithmetic per sample.
Usage:  python benchmarks/bench_per_sample.py [--epochs 10] [--repeats 5] [--hidden 32]
"""
import os

os.environ["OPENBLAS_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastedf  # noqa: E402
from fastedf.models import mlp  # noqa: E402
from fastedf.study.data import load_digits_dataset, study_data  # noqa: E402

SIZES = (1, 2, 4, 8, 16, 32, 64)


def problems(hidden):
    study = study_data(0)
    digits = load_digits_dataset().split(0)
    return {"study, logistic regression": (study.X_train, study.y_train, (), 1, 10),
            f"digits, MLP 64-{hidden}-10 sigmoid": (digits.X_train, digits.y_train, (hidden,), 10, 1)}


def fit_once(X, y, hidden, classes, batch_size, epochs, engine):
    model = mlp(X.shape[1], hidden, 0, 0.1, "sigmoid", classes)
    cpu = time.thread_time()
    history = fastedf.fit(model.loss, {model.x: X, model.y: model.labels(y)}, batch_size=batch_size, epochs=epochs,
                          lr=0.1, engine=engine)
    return history.train_time_s, time.thread_time() - cpu, model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args()
    for name, (X, y, hidden, classes, scale) in problems(args.hidden).items():
        epochs = scale * args.epochs
        differences = []
        for b in SIZES:  # same numbers on both engines, and every program compiled before timing
            compiled = fit_once(X, y, hidden, classes, b, 1, "compiled")[2]
            graph = fit_once(X, y, hidden, classes, b, 1, "graph")[2]
            worst = max(float(np.max(np.abs(p.value - q.value))) for p, q in zip(compiled.parameters,
                                                                                   graph.parameters))
            assert worst <= 1e-12, f"{name}, B = {b}: compiled and graph weights differ by {worst:.3g}"
            differences.append(worst)
        wall = {b: np.inf for b in SIZES}
        cpu = dict(wall)
        for _ in range(args.repeats):
            for b in SIZES:
                w, c, _ = fit_once(X, y, hidden, classes, b, epochs, "compiled")
                wall[b], cpu[b] = min(wall[b], w), min(cpu[b], c)
        rows = epochs * len(X)
        print(f"\n{name}: {len(X)} rows, {epochs} epochs, best of {args.repeats} (us per sample); compiled "
              f"against graph weights after one epoch: largest difference {max(differences):.3g}")
        print(f"{'B':>4} {'wall':>8} {'CPU':>8} {'CPU / B=1':>10} {'CPU / previous B':>17}")
        for i, b in enumerate(SIZES):
            previous = cpu[SIZES[i - 1]] if i else cpu[b]
            print(f"{b:>4} {wall[b] / rows * 1e6:>8.3f} {cpu[b] / rows * 1e6:>8.3f} {cpu[b] / cpu[1]:>10.2f} "
                  f"{cpu[b] / previous:>17.2f}")


if __name__ == "__main__":
    main()
