"""The speed limit for `Linear -> Sigmoid [-> Linear -> Sigmoid] -> BCE`: one Numba loop per model calling BLAS.

Same algorithm as fastedf.fit (batches in row order, the last partial batch
averaged over its own size, plain SGD with the mean-over-rows gradient, BCE
with p clipped to [1e-12, 1 - 1e-12] in the loss).  Each function runs every
epoch in one call, with every buffer allocated once up front:

- the first layer's matmuls go to BLAS gemm through np.dot(a, b, out) (forward
  x @ A1 and weight gradient x.T @ G1; its input gradient is never needed);
- everything elementwise is fused: bias add and sigmoid in one pass, and the
  width-1 output layer, its sigmoid, the BCE loss, its gradient p - y (the
  sigmoid and BCE gradients cancel) and the backward into the hidden layer in
  one pass per row.

The fused gradient p - y is the course's chain rule through the clipped BCE
only where no sigmoid saturates (p rounds to 0 or 1, or is clipped); there the
chain rule gives 0 or a clipped value instead.  bench_scale.py keeps its data
away from saturation and checks the parameters against the NumPy EDF.

np.dot with `out` needs C- or F-contiguous float64 arrays (row slices of a
C array are), SciPy's BLAS, and Numba's runtime (a plain @njit).
Usage: see bench_scale.py, which checks these against the NumPy EDF.
"""
import math

import numpy as np
from numba import njit

EPS = 1e-12


@njit(cache=True, inline="always")
def _bce(z, y):
    """(sigmoid(z), clipped BCE loss of it against y), without overflow."""
    if z >= 0:
        p = 1.0 / (1.0 + math.exp(-z))
    else:
        e = math.exp(z)
        p = e / (1.0 + e)
    pc = min(max(p, EPS), 1.0 - EPS)
    return p, -(y * math.log(pc) + (1.0 - y) * math.log(1.0 - pc))


@njit(cache=True)
def train_logistic(X, Y, A, b, batch, epochs, lr, epoch_loss):
    """X (n, d), Y (n, 1), A (d, 1), b (1,): trained in place; epoch_loss (epochs,) gets the mean loss."""
    n, d = X.shape
    Z = np.empty((batch, 1))
    gA = np.empty((d, 1))
    for epoch in range(epochs):
        total = 0.0
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            m = stop - start
            xb, zb = X[start:stop], Z[:m]
            np.dot(xb, A, zb)
            gb = 0.0
            for i in range(m):
                p, loss = _bce(zb[i, 0] + b[0], Y[start + i, 0])
                total += loss
                g = (p - Y[start + i, 0]) / m
                zb[i, 0] = g  # Z now holds the gradient on the logits
                gb += g
            np.dot(xb.T, zb, gA)
            for k in range(d):
                A[k, 0] -= lr * gA[k, 0]
            b[0] -= lr * gb
        epoch_loss[epoch] = total / n


@njit(cache=True)
def train_mlp(X, Y, A1, b1, A2, b2, batch, epochs, lr, epoch_loss):
    """One hidden layer: X (n, d), Y (n, 1), A1 (d, H), b1 (H,), A2 (H, 1), b2 (1,), trained in place."""
    n, d = X.shape
    H = A1.shape[1]
    S = np.empty((batch, H))   # hidden activations, then their gradient
    S2 = np.empty((batch, H))  # keeps the activations while S becomes the gradient
    gA1 = np.empty((d, H))
    gb1 = np.empty(H)
    gA2 = np.empty(H)
    for epoch in range(epochs):
        total = 0.0
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            m = stop - start
            xb, sb, hb = X[start:stop], S[:m], S2[:m]
            np.dot(xb, A1, sb)
            gA2[:] = 0.0
            gb1[:] = 0.0
            gb2 = 0.0
            for i in range(m):
                z = b2[0]
                for j in range(H):
                    h = sb[i, j] + b1[j]
                    h = 1.0 / (1.0 + math.exp(-h)) if h >= 0 else math.exp(h) / (1.0 + math.exp(h))
                    hb[i, j] = h
                    z += h * A2[j, 0]
                p, loss = _bce(z, Y[start + i, 0])
                total += loss
                g = (p - Y[start + i, 0]) / m
                gb2 += g
                for j in range(H):
                    h = hb[i, j]
                    gA2[j] += g * h
                    gh = g * A2[j, 0] * h * (1.0 - h)
                    sb[i, j] = gh
                    gb1[j] += gh
            np.dot(xb.T, sb, gA1)
            for k in range(d):
                for j in range(H):
                    A1[k, j] -= lr * gA1[k, j]
            for j in range(H):
                b1[j] -= lr * gb1[j]
                A2[j, 0] -= lr * gA2[j]
            b2[0] -= lr * gb2
        epoch_loss[epoch] = total / n
