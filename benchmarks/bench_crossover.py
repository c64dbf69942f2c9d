"""Where a BLAS call starts to beat fastedf's register loops for Linear's three matmuls.

Times linear_forward + linear_backward + linear_input_grad with BLAS forced
off (threshold above every shape) and forced on (threshold 1), single thread,
over shapes (batch, n, m); prints both and the work batch*n*m.  The crossover
chosen for fastedf.ops.linear.BLAS_MIN_WORK is the work from which BLAS wins.
Usage:  python benchmarks/bench_crossover.py
"""
import os

for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[name] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from fastedf.config import FLAGS  # noqa: E402
from fastedf.ops import linear  # noqa: E402


def step_kernel(threshold):
    """One Linear forward and backward with BLAS_MIN_WORK = threshold, as a fresh Numba function."""
    source = linear.linear_forward.py_func, linear.linear_backward.py_func, linear.linear_input_grad.py_func

    @njit(**FLAGS)
    def pays(batch, n, m):
        return batch > 0 and n > 0 and m > 0 and batch * n * m >= threshold

    glb = dict(linear.__dict__, blas_pays=pays)
    fwd, bwd, inp = (njit(**FLAGS)(type(f)(f.__code__, glb, f.__name__)) for f in source)

    @njit(**FLAGS)
    def run(x, A, b, out, g, dA, db, dx, reps):
        for _ in range(reps):
            fwd(x, A, b, out)
            bwd(x, g, dA, db)
            inp(g, A, dx)
    return run


def main():
    rng = np.random.default_rng(0)
    loops, blas = step_kernel(2**62), step_kernel(1)
    print(f"{'batch':>6} {'n':>5} {'m':>5} {'work':>9} {'loops us':>10} {'blas us':>10} {'loops/blas':>11}")
    for batch, n, m in [(1, 2, 1), (32, 2, 1), (256, 2, 1), (1024, 2, 1), (256, 2, 8), (1, 2, 64), (8, 2, 64),
                        (32, 2, 64), (256, 2, 64), (8, 64, 1), (32, 64, 1), (256, 64, 1), (32, 128, 1), (4, 8, 16), (1, 8, 64), (1, 10, 64), (1, 8, 8), (1, 16, 16), (1, 32, 32), (1, 64, 64), (1, 64, 10),
                        (4, 16, 16), (8, 16, 16), (16, 16, 16), (32, 16, 16), (4, 32, 32), (8, 32, 32),
                        (32, 64, 10), (32, 64, 64), (256, 64, 64), (1, 784, 128), (32, 784, 128)]:
        args = [rng.normal(size=s) for s in [(batch, n), (n, m), (m,), (batch, m), (batch, m), (n, m), (m,), (batch, n)]]
        reps = max(1, 200000 // (batch * n * m))
        times = []
        for run in (loops, blas):
            run(*args, 1)
            best = min(_timed(run, args, reps) for _ in range(5))
            times.append(best / reps * 1e6)
        print(f"{batch:>6} {n:>5} {m:>5} {batch * n * m:>9} {times[0]:>10.3f} {times[1]:>10.3f} {times[0] / times[1]:>10.2f}x")


def _timed(run, args, reps):
    start = time.perf_counter()
    run(*args, reps)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
