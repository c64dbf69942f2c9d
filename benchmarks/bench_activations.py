"""fastedf's Numba kernels for Sigmoid and Tanh against NumPy's SIMD ufuncs; fastedf.vexp's log against libm's.

Both kernels use fastedf.vexp (exp, tanh), which LLVM vectorises; the graph
engine used NumPy's ufuncs for big arrays before they did (Sigmoid as four
in-place passes, Tanh as np.tanh), and this is the comparison that retired
that path.  vexp's log (BCE's vectorised pass) in a Numba loop, against the
same loop calling libm's log and against np.log.  Prints µs per call for
each, single thread.
Usage:  python benchmarks/bench_activations.py
"""
import os

os.environ["OPENBLAS_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = "1"

import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from fastedf import vexp  # noqa: E402
from fastedf.config import FLAGS  # noqa: E402
from fastedf.ops.activations import Sigmoid, Tanh  # noqa: E402


@njit(**FLAGS)
def vexp_log(x, out):
    for i in range(x.size):
        out.flat[i] = vexp.log(x.flat[i])


@njit(**FLAGS)
def libm_log(x, out):
    for i in range(x.size):
        out.flat[i] = math.log(x.flat[i])


def best_us(call, repeats=2000):
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


def numpy_sigmoid(z, out):
    """1 / (1 + exp(-z)) in four in-place ufunc passes."""
    with np.errstate(over="ignore"):
        np.negative(z, out=out)
        np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    np.reciprocal(out, out=out)


def main():
    print(f"{'size':>6} {'sigmoid numba':>14} {'sigmoid numpy':>14} {'tanh numba':>11} {'tanh numpy':>11}"
          f" {'log vexp':>9} {'log libm':>9} {'log numpy':>10}")
    for size in (64, 256, 512, 1024, 2048, 4096, 32768):
        z = np.random.default_rng(0).normal(size=(size // 64, 64))
        out = np.empty_like(z)
        b, a = (best_us(lambda k=k: k(z, out)) for k in (numpy_sigmoid, Sigmoid.forward_kernel))
        np.testing.assert_allclose(out, 1 / (1 + np.exp(-z)), rtol=1e-15)
        c, d = (best_us(lambda k=k: k(z, out)) for k in (Tanh.forward_kernel, lambda z, out: np.tanh(z, out=out)))
        p = np.random.default_rng(1).uniform(1e-12, 1.0, size=z.shape)  # BCE's clipped predictions
        e, f, g = (best_us(lambda k=k: k(p, out)) for k in (vexp_log, libm_log, lambda p, out: np.log(p, out=out)))
        vexp_log(p, out)
        np.testing.assert_allclose(out, np.log(p), rtol=3e-16)  # within 1 ulp
        print(f"{size:>6} {a:>14.2f} {b:>14.2f} {c:>11.2f} {d:>11.2f} {e:>9.2f} {f:>9.2f} {g:>10.2f}")


if __name__ == "__main__":
    main()
