"""The whole study's training (one seed, batch sizes 1, 2, 4, ... 1024, 1050, 100 epochs) four ways.

1. the course loop on the plain NumPy EDF, 2. the same loop on fastedf nodes,
3. fastedf.fit(engine="graph"), 4. fastedf.fit(engine="compiled").  Training
time only (no compilation, no evaluation), one process, one run each.
Usage:  python benchmarks/bench_study.py [--epochs 100]
"""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bench_graph  # noqa: E402
from fastedf import numpy_edf  # noqa: E402
from bench_fit import time_fit  # noqa: E402

import fastedf  # noqa: E402
from fastedf.study.data import study_data  # noqa: E402

BATCH_SIZES = [2**k for k in range(11)] + [1050]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    data = study_data(seed=0)
    X, Y = data.X_train, data.y_train.reshape(-1, 1)
    ways = {
        "NumPy EDF, course loop": lambda b: bench_graph.batched_loop(numpy_edf, X, Y, b, args.epochs)
        * args.epochs * -(-len(X) // b),
        "fastedf nodes, course loop": lambda b: bench_graph.batched_loop(fastedf, X, Y, b, args.epochs)
        * args.epochs * -(-len(X) // b),
        "fastedf.fit, graph engine": lambda b: time_fit(X, Y, b, args.epochs, 0, "graph")[0],
        "fastedf.fit, compiled engine": lambda b: time_fit(X, Y, b, args.epochs, 0, "compiled")[0],
    }
    for way in ways.values():  # warm-up: compilation and caches
        way(1050)
    totals = {name: sum(way(b) for b in BATCH_SIZES) for name, way in ways.items()}
    reference = totals["NumPy EDF, course loop"]
    for name, seconds in totals.items():
        print(f"{name:30s} {seconds:9.3f} s   {reference / seconds:8.1f}x faster than NumPy EDF")


if __name__ == "__main__":
    main()
