"""What recording the loss at checkpoints costs the sweep (docs/science.md): checkpointed run against one fit.

The study's logistic regression (1050 rows) at batch size 1 for 100 epochs
(105,000 updates), compiled engine, single thread: one `fit` call, against
`study.training.train_with_checkpoints` measuring the whole training set's loss
at update counts 2^(k/8) (118 checkpoints).  Both must end at the same
weights (1e-12).  Prints seconds and the cost per checkpoint; best of --repeats.
Usage:  python benchmarks/bench_checkpoints.py [--epochs 100] [--repeats 3]
"""
import os

os.environ["OPENBLAS_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastedf  # noqa: E402
from fastedf.models import logistic_regression  # noqa: E402
from fastedf.study.data import study_data  # noqa: E402
from fastedf.study.training import checkpoint_schedule, train_with_checkpoints  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = study_data(0)
    X, Y = data.X_train, data.y_train.reshape(-1, 1)
    schedule = checkpoint_schedule(args.epochs * len(X))
    one, checked = np.inf, np.inf
    for _ in range(args.repeats + 1):  # the first round compiles
        plain = logistic_regression(2)
        start = time.perf_counter()
        fastedf.fit(plain.loss, {plain.x: X, plain.y: Y}, batch_size=1, epochs=args.epochs, lr=0.1, engine="compiled")
        one = min(one, time.perf_counter() - start)
        model = logistic_regression(2)
        start = time.perf_counter()
        train_with_checkpoints(model, X, Y, 1, args.epochs, 0.1, False, 0, "compiled", schedule,
                               lambda m, _: m.mean_loss(X, data.y_train))
        checked = min(checked, time.perf_counter() - start)
    worst = max(float(np.max(np.abs(a.value - b.value))) for a, b in zip(plain.parameters, model.parameters))
    assert worst <= 1e-12, f"checkpointed run differs from fit by {worst:.3g}"
    print(f"{args.epochs * len(X)} updates, {len(schedule)} checkpoints: one fit {one:.3f} s, "
          f"checkpointed {checked:.3f} s, {(checked - one) / len(schedule) * 1e3:.3f} ms per checkpoint")


if __name__ == "__main__":
    main()
