"""Numba kernels of the hot path: Linear, Sigmoid, BCE and the SGD update.

Each kernel is a pure function of float64 arrays and scalars that writes into
preallocated outputs and allocates nothing.  Kernels trust their arguments:
shapes, dtypes and contiguity are checked by the Python callers (fastedf.nodes,
fastedf.trainer) before a kernel runs.  Elementwise kernels take C-contiguous
arrays of any rank and work on flat views.  Slow, obvious NumPy versions of
every kernel live in tests/naive.py.
"""
import math

import numpy as np

from .config import kernel

# Predictions are clipped to [BCE_EPS, 1 - BCE_EPS] inside BCE so that the loss
# and its gradient stay finite when a sigmoid saturates to exactly 0 or 1.
BCE_EPS = 1e-12


@kernel
def linear_forward(x, A, b, out):
    """out = x @ A + b.  x (B, n), A (n, m), b (m,), out (B, m)."""
    batch, n = x.shape
    m = A.shape[1]
    for i in range(batch):
        for j in range(m):
            out[i, j] = b[j]
        for k in range(n):
            xik = x[i, k]
            for j in range(m):
                out[i, j] += xik * A[k, j]


@kernel
def linear_backward(x, g, dA, db):
    """dA = x.T @ g and db = g summed over rows.  x (B, n), g (B, m), dA (n, m), db (m,)."""
    batch, n = x.shape
    m = g.shape[1]
    dA[:, :] = 0.0
    db[:] = 0.0
    for i in range(batch):
        for j in range(m):
            db[j] += g[i, j]
        for k in range(n):
            xik = x[i, k]
            for j in range(m):
                dA[k, j] += xik * g[i, j]


@kernel
def linear_input_grad(g, A, dx):
    """dx = g @ A.T.  g (B, m), A (n, m), dx (B, n)."""
    batch, m = g.shape
    n = A.shape[0]
    for i in range(batch):
        for k in range(n):
            acc = 0.0
            for j in range(m):
                acc += g[i, j] * A[k, j]
            dx[i, k] = acc


@kernel
def sigmoid_forward(z, out):
    """out = 1 / (1 + exp(-z)), evaluated so that exp never overflows."""
    zf = z.ravel()
    of = out.ravel()
    for i in range(zf.size):
        v = zf[i]
        if v >= 0.0:
            of[i] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            of[i] = e / (1.0 + e)


@kernel
def sigmoid_backward(p, g, out):
    """out = g * p * (1 - p), the chain rule through p = sigmoid(z)."""
    pf = p.ravel()
    gf = g.ravel()
    of = out.ravel()
    for i in range(pf.size):
        of[i] = gf[i] * pf[i] * (1.0 - pf[i])


@kernel
def bce_forward(y, p):
    """Mean binary cross-entropy -(y log p + (1 - y) log(1 - p)), p clipped to [eps, 1 - eps].

    Returns (loss, bad): bad is -1, or the first flat index whose label is
    outside [0, 1] or whose prediction is outside [0, 1] (NaN included); the
    loss is then NaN and the caller raises.
    """
    yf = y.ravel()
    pf = p.ravel()
    total = 0.0
    for i in range(pf.size):
        yi = yf[i]
        pi = pf[i]
        if not (0.0 <= yi <= 1.0 and 0.0 <= pi <= 1.0):
            return math.nan, i
        pc = min(max(pi, BCE_EPS), 1.0 - BCE_EPS)
        # 0 * log(.) adds an exact zero, so the common 0/1 labels skip one log.
        if yi == 1.0:
            total -= math.log(pc)
        elif yi == 0.0:
            total -= math.log(1.0 - pc)
        else:
            total -= yi * math.log(pc) + (1.0 - yi) * math.log(1.0 - pc)
    return total / pf.size, -1


@kernel
def bce_backward(y, p, upstream, out):
    """out = upstream * (p - y) / (p (1 - p)) / N, the gradient of the mean BCE w.r.t. p (clipped)."""
    yf = y.ravel()
    pf = p.ravel()
    of = out.ravel()
    scale = upstream / pf.size
    for i in range(pf.size):
        pc = min(max(pf[i], BCE_EPS), 1.0 - BCE_EPS)
        of[i] = (pc - yf[i]) / (pc * (1.0 - pc)) * scale


@kernel
def bce_label_grad(p, upstream, out):
    """out = upstream * (log(1 - p) - log(p)) / N, the gradient of the mean BCE w.r.t. the labels."""
    pf = p.ravel()
    of = out.ravel()
    scale = upstream / pf.size
    for i in range(pf.size):
        pc = min(max(pf[i], BCE_EPS), 1.0 - BCE_EPS)
        of[i] = (math.log(1.0 - pc) - math.log(pc)) * scale


@kernel
def sgd_update(param, grad, lr):
    """param -= lr * grad, in place; both C-contiguous with the same number of elements."""
    pf = param.ravel()
    gf = grad.ravel()
    for i in range(pf.size):
        pf[i] -= lr * gf[i]


@kernel
def take_rows(src, order, dst):
    """dst[i] = src[order[i]] for every row i: one epoch's shuffled copy of the data."""
    for i in range(order.size):
        dst[i, :] = src[order[i], :]


@kernel
def shuffle_order(order, state):
    """Fisher-Yates shuffle of the int64 array `order` in place; returns the next uint64 state.

    Draws from a splitmix64 stream, so the graph and compiled trainers, which
    both call this kernel, visit the rows in the same order for the same seed.
    """
    for i in range(order.size - 1, 0, -1):
        state += np.uint64(0x9E3779B97F4A7C15)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        j = np.int64(z % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]
    return state
