"""Numba kernels of the hot path: Linear, Sigmoid, BCE and the SGD update.

Each kernel is a pure function of float64 arrays and scalars that writes into
preallocated outputs and allocates nothing.  Kernels trust their arguments:
shapes and dtypes are checked by the Python callers (fastedf.nodes,
fastedf.compiler) before a kernel runs.  Elementwise kernels take arrays of
any rank and index them through `.flat` (no ravel: it costs a view per call
and would copy a strided output).  Slow, obvious NumPy versions of
every kernel live in tests/naive.py.
"""
import math

import numpy as np

from .config import kernel

# Predictions are clipped to [BCE_EPS, 1 - BCE_EPS] inside BCE so that the loss
# and its gradient stay finite when a sigmoid saturates to exactly 0 or 1.
BCE_EPS = 1e-12


@kernel
def common_size(a, b):
    """a.size, after checking that b has as many elements.

    Elementwise kernels index through .flat, which Numba never bounds-checks, so
    each checks its sizes here: a mismatch the Python checks missed raises
    instead of reading or writing past an array.
    """
    if a.size != b.size:
        raise ValueError("fastedf kernel: arrays of different sizes")
    return a.size


@kernel
def linear_forward(x, A, b, out):
    """out = x @ A + b.  x (B, n), A (n, m), b (m,) or (1, m), out (B, m)."""
    batch, n = x.shape
    m = A.shape[1]
    for i in range(batch):
        for j in range(m):
            acc = b.flat[j]  # sum in a register: the compiler cannot rule out that out aliases x or A
            for k in range(n):
                acc += x[i, k] * A[k, j]
            out[i, j] = acc


@kernel
def linear_backward(x, g, dA, db):
    """dA = x.T @ g and db = g summed over rows.  x (B, n), g (B, m), dA (n, m), db (m,) or (1, m)."""
    batch, n = x.shape
    m = g.shape[1]
    if batch == 0:
        dA[:, :] = 0.0
        for j in range(m):
            db.flat[j] = 0.0
        return
    for j in range(m):  # the first row assigns, so no pass of zeros is needed (0 + a == a exactly)
        db.flat[j] = g[0, j]
        for k in range(n):
            dA[k, j] = x[0, k] * g[0, j]
    for i in range(1, batch):
        for j in range(m):
            db.flat[j] += g[i, j]
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
    for i in range(common_size(z, out)):
        v = z.flat[i]
        if v >= 0.0:
            out.flat[i] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            out.flat[i] = e / (1.0 + e)


@kernel
def sigmoid_backward(p, g, out):
    """out = g * p * (1 - p), the chain rule through p = sigmoid(z)."""
    for i in range(min(common_size(p, g), common_size(p, out))):
        pi = p.flat[i]
        out.flat[i] = g.flat[i] * pi * (1.0 - pi)


@kernel
def bce_forward(y, p):
    """Mean binary cross-entropy -(y log p + (1 - y) log(1 - p)), p clipped to [eps, 1 - eps].

    Returns (loss, bad): bad is -1, or the first flat index whose label is
    outside [0, 1] or whose prediction is outside [0, 1] (NaN included); the
    loss is then NaN and the caller raises.
    """
    total = 0.0
    for i in range(common_size(p, y)):
        yi = y.flat[i]
        pi = p.flat[i]
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
    return total / p.size, -1


@kernel
def bce_backward(y, p, upstream, out):
    """out = upstream * (p - y) / (p (1 - p)) / N, the gradient of the mean BCE w.r.t. p (clipped)."""
    scale = upstream / p.size
    for i in range(min(common_size(p, y), common_size(p, out))):
        pc = min(max(p.flat[i], BCE_EPS), 1.0 - BCE_EPS)
        out.flat[i] = (pc - y.flat[i]) / (pc * (1.0 - pc)) * scale


@kernel
def sigmoid_bce_backward(y, p, upstream, out):
    """out = dBCE/dz for p = sigmoid(z): upstream * (p - y) / N, one step instead of two.

    Where the clip of BCE is active (p outside [eps, 1 - eps]) it is the chain
    rule through the clip, as bce_backward followed by sigmoid_backward gives.
    """
    scale = upstream / p.size
    for i in range(min(common_size(p, y), common_size(p, out))):
        pi = p.flat[i]
        if BCE_EPS <= pi <= 1.0 - BCE_EPS:
            out.flat[i] = (pi - y.flat[i]) * scale
        else:
            pc = min(max(pi, BCE_EPS), 1.0 - BCE_EPS)
            out.flat[i] = (pc - y.flat[i]) / (pc * (1.0 - pc)) * scale * pi * (1.0 - pi)


@kernel
def bce_label_grad(p, upstream, out):
    """out = upstream * (log(1 - p) - log(p)) / N, the gradient of the mean BCE w.r.t. the labels."""
    scale = upstream / p.size
    for i in range(common_size(p, out)):
        pc = min(max(p.flat[i], BCE_EPS), 1.0 - BCE_EPS)
        out.flat[i] = (math.log(1.0 - pc) - math.log(pc)) * scale


@kernel
def sgd_update(param, grad, lr):
    """param -= lr * grad, in place; both with the same number of elements."""
    for i in range(common_size(param, grad)):
        param.flat[i] -= lr * grad.flat[i]


@kernel
def take_rows(src, order, dst):
    """dst[i] = src[order[i]] for every row i: one epoch's shuffled copy of the data."""
    for i in range(order.size):
        row = order[i]
        for k in range(src.shape[1]):  # element by element: a slice assignment may copy its source
            dst[i, k] = src[row, k]


@kernel
def shuffle_order(order, state):
    """Fisher-Yates shuffle of the int64 array `order` in place; returns the next uint64 state.

    Draws from a splitmix64 stream, so the graph and compiled trainers, which
    both call this kernel, visit the rows in the same order for the same seed.
    """
    state = np.uint64(state)  # an int64 state would turn the mixing below into float arithmetic
    for i in range(order.size - 1, 0, -1):
        state += np.uint64(0x9E3779B97F4A7C15)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        j = np.int64(z % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]
    return state


@kernel
def broadcast_binary(a, b, multiply, out):
    """out = a * b (multiply) or a + b for 2-D arrays; a dimension of size 1 repeats (NumPy broadcasting)."""
    rows, cols = out.shape
    for i in range(rows):
        ia = i if a.shape[0] > 1 else 0
        ib = i if b.shape[0] > 1 else 0
        for j in range(cols):
            x = a[ia, j if a.shape[1] > 1 else 0]
            y = b[ib, j if b.shape[1] > 1 else 0]
            out[i, j] = x * y if multiply else x + y


@kernel
def sum_to(g, out):
    """out = g summed over the axes where out has size 1: the gradient of a broadcast input.  2-D."""
    out[:, :] = 0.0
    rows, cols = g.shape
    for i in range(rows):
        io = i if out.shape[0] > 1 else 0
        for j in range(cols):
            out[io, j if out.shape[1] > 1 else 0] += g[i, j]


@kernel
def product_sum_to(g, other, out):
    """out = (g * other) summed to out's shape: the gradient of one factor of a broadcast product.  2-D."""
    out[:, :] = 0.0
    rows, cols = g.shape
    for i in range(rows):
        io = i if out.shape[0] > 1 else 0
        ih = i if other.shape[0] > 1 else 0
        for j in range(cols):
            out[io, j if out.shape[1] > 1 else 0] += g[i, j] * other[ih, j if other.shape[1] > 1 else 0]


@kernel
def first_bad_row(a, low, high):
    """The first row of a (rows, k) holding a value outside [low, high] or NaN, or -1."""
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            if not (low <= a[i, k] <= high):
                return i
    return -1
