"""What measuring the loss after every update costs the sweep (docs/science.md): a measured run against one fit.

The study's logistic regression (1050 rows) at batch size 1 for --epochs
epochs (1050 updates each), single thread: one compiled `fit` call, against
`study.training.loss_records`, which trains node by node and measures the whole
training set's loss after every update.  Both must end at the same weights
(1e-12).  Prints wall and CPU seconds and the cost per update; best of --repeats.
Usage:  python benchmarks/bench_checkpoints.py [--epochs 10] [--repeats 3]
"""
import os

os.environ["OPENBLAS_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastedf  # noqa: E402
from fastedf.models import logistic_regression  # noqa: E402
from fastedf.study.data import study_data  # noqa: E402
from fastedf.study.training import loss_records  # noqa: E402


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = study_data(0)
    X, Y = data.X_train, data.y_train.reshape(-1, 1)
    one, measured = (np.inf, np.inf), (np.inf, np.inf)
    for _ in range(args.repeats + 1):  # the first round compiles
        plain, model = logistic_regression(2), logistic_regression(2)
        one = min(one, timed(lambda: fastedf.fit(plain.loss, {plain.x: X, plain.y: Y}, batch_size=1,
                                                 epochs=args.epochs, lr=0.1, engine="compiled")))
        measured = min(measured, timed(lambda: loss_records(model, X, Y, 1, args.epochs, 0.1, "fixed", 0)))
    worst = max(float(np.max(np.abs(a.value - b.value))) for a, b in zip(plain.parameters, model.parameters))
    assert worst <= 1e-12, f"the measured run differs from fit by {worst:.3g}"
    updates = args.epochs * len(X)
    print(f"{updates} updates: one fit {one[0]:.3f} s wall ({one[1]:.3f} s CPU); measured after every update "
          f"{measured[0]:.3f} s wall ({measured[1]:.3f} s CPU), {measured[1] / updates * 1e6:.1f} us CPU per update")


if __name__ == "__main__":
    main()
