"""The speed limit: logistic-regression mini-batch SGD written by hand as one Numba loop.

Same algorithm as fastedf.fit on the study's model (mean BCE with p clipped
to [1e-12, 1 - 1e-12], batches in row order, the last one averaged over its
own size), with the sigmoid and BCE gradients fused into p - y.
"""
import math

import numpy as np
from numba import njit

EPS = 1e-12


@njit(cache=True)
def train_logistic(X, y, A, b, batch, epochs, lr, epoch_loss):
    """X (n, d), y (n,), A (d,), b scalar in a (1,) array; trains A and b in place."""
    n, d = X.shape
    gA = np.zeros(d)
    for epoch in range(epochs):
        total = 0.0
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            gA[:] = 0.0
            gb = 0.0
            for i in range(start, stop):
                z = b[0]
                for k in range(d):
                    z += X[i, k] * A[k]
                p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
                pc = min(max(p, EPS), 1.0 - EPS)
                total -= math.log(pc) if y[i] == 1.0 else math.log(1.0 - pc)
                r = p - y[i]
                gb += r
                for k in range(d):
                    gA[k] += r * X[i, k]
            scale = lr / (stop - start)
            for k in range(d):
                A[k] -= scale * gA[k]
            b[0] -= scale * gb
        epoch_loss[epoch] = total / n
