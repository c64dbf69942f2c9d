"""A single-output Linear's input gradient, g @ A.T with g (B, 1): fastedf's loop against a gemm.

The product is an outer product (nothing to sum), so linear_input_grad always
takes its vectorised loop for one output; this checks both give the same
bits and prints microseconds per call, single thread.
Usage:  OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_outer_product.py
"""
import os

for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[name] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from fastedf.config import FLAGS  # noqa: E402
from fastedf.ops.linear import linear_input_grad  # noqa: E402


@njit(**FLAGS)
def fastedf_loop(g, A, dx, reps):
    for _ in range(reps):
        linear_input_grad(g, A, dx)


@njit(**FLAGS)
def gemm(g, A, dx, reps):
    for _ in range(reps):
        np.dot(g, A.T, dx)


def best_us(run, g, A, dx, reps):
    run(g, A, dx, 1)
    best = np.inf
    for _ in range(7):
        start = time.perf_counter()
        run(g, A, dx, reps)
        best = min(best, (time.perf_counter() - start) / reps * 1e6)
    return best


def main():
    rng = np.random.default_rng(0)
    print(f"{'batch':>6} {'n':>5} {'loop us':>9} {'gemm us':>9} {'loop/gemm':>10}")
    for batch, n in [(32, 64), (256, 64), (256, 128), (32, 784), (256, 784)]:
        g, A = rng.normal(size=(batch, 1)), rng.normal(size=(n, 1))
        mine, theirs = np.empty((batch, n)), np.empty((batch, n))
        reps = max(1, 2_000_000 // (batch * n))
        times = best_us(fastedf_loop, g, A, mine, reps), best_us(gemm, g, A, theirs, reps)
        if not np.array_equal(mine, theirs):
            raise SystemExit(f"FAIL: the loop and the gemm differ at ({batch}, {n})")
        print(f"{batch:>6} {n:>5} {times[0]:>9.2f} {times[1]:>9.2f} {times[0] / times[1]:>9.2f}x")


if __name__ == "__main__":
    main()
