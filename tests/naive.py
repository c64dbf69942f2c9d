"""Slow, obviously correct NumPy versions of every fastedf kernel, for the tests."""
import numpy as np

EPS = 1e-12


def linear_forward(x, A, b):
    return x @ A + b.reshape(1, -1)


def linear_backward(x, g):
    return x.T @ g, g.sum(axis=0)


def linear_input_grad(g, A):
    return g @ A.T


def sigmoid(z):
    # exp of a non-positive number only: no overflow for any z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(p, g):
    return g * p * (1 - p)


def bce(y, p):
    """The summed BCE (the course's value)."""
    p = np.clip(p, EPS, 1 - EPS)
    return -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))


def bce_backward(y, p, scale=1.0):
    """scale * dBCE/dp; the node passes scale = upstream / rows."""
    pc = np.clip(p, EPS, 1 - EPS)
    return scale * (pc - y) / (pc * (1 - pc))


def bce_label_grad(p, scale=1.0):
    pc = np.clip(p, EPS, 1 - EPS)
    return scale * (np.log(1 - pc) - np.log(pc))


def tanh_backward(p, g):
    return g * (1 - p * p)


def relu(z):
    return np.where(z > 0, z, 0.0)


def relu_backward(p, g):
    return np.where(p > 0, g, 0.0)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(p, g):
    return p * (g - (g * p).sum(axis=-1, keepdims=True))


def ce_sum(y, p):
    """CE summed over rows; the node divides by the rows."""
    return -np.sum(y * np.log(np.maximum(p, EPS)))


def ce_backward(y, p, scale=1.0):
    return -scale * y / np.maximum(p, EPS)


def ce_label_grad(p, scale=1.0):
    return -scale * np.log(np.maximum(p, EPS))


def sum_to(g, shape):
    """g summed over the axes broadcasting stretched, so that it has `shape`."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def all_kernels():
    """Every fastedf kernel by name: the shared ones and each op family's (fastedf.ops)."""
    import types

    from fastedf import kernels
    from fastedf.ops import MODULES
    return types.SimpleNamespace(**{name: getattr(m, name) for m in (kernels, *MODULES)
                                    for name in dir(m) if not name.startswith("_")})
