"""Slow, obviously correct NumPy versions of every fastedf kernel, for the tests."""
import numpy as np

from fastedf import numpy_edf

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


sum_to = numpy_edf._sum_to  # g summed over the axes broadcasting stretched: the course reference's


def all_kernels():
    """Every fastedf kernel by name: the shared ones and each op family's (fastedf.ops)."""
    import types

    from fastedf import kernels
    from fastedf.ops import MODULES
    return types.SimpleNamespace(**{name: getattr(m, name) for m in (kernels, *MODULES)
                                    for name in dir(m) if not name.startswith("_")})


def conv_forward(x, K, b):
    """Channels-last 'same' cross-correlation, one output element at a time from a zero-padded x."""
    kh, kw, _, cout = K.shape
    xpad = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    B, H, W, _ = x.shape
    out = np.empty((B, H, W, cout))
    for n, i, j in np.ndindex(B, H, W):
        out[n, i, j] = np.einsum("uvc,uvco->o", xpad[n, i:i + kh, j:j + kw], K) + np.ravel(b)
    return out


def conv_backward(x, K, g):
    """(dx, dK, db) of conv_forward for the upstream gradient g (B, H, W, C_out), by scattering each output's gradient."""
    kh, kw = K.shape[:2]
    xpad = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    dxpad, dK = np.zeros(xpad.shape), np.zeros(K.shape)
    B, H, W, _ = x.shape
    for n, i, j in np.ndindex(B, H, W):
        dK += np.einsum("uvc,o->uvco", xpad[n, i:i + kh, j:j + kw], g[n, i, j])
        dxpad[n, i:i + kh, j:j + kw] += np.einsum("uvco,o->uvc", K, g[n, i, j])
    return dxpad[:, kh // 2:kh // 2 + H, kw // 2:kw // 2 + W], dK, g.sum(axis=(0, 1, 2))


def conv_columns(x, kh, kw):
    """im2col, transposed: row (u, v, c), column (n, i, j) holds xpad[n, i + u, j + v, c]."""
    xpad = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    B, H, W, cin = x.shape
    return np.stack([xpad[:, u:u + H, v:v + W, c].ravel() for u in range(kh) for v in range(kw) for c in range(cin)]
                    ).reshape(kh * kw * cin, B * H * W)


def maxpool_forward(x, size):
    """(out, arg): each window's maximum and the row-major offset u * size + v of its first maximum."""
    B, H, W, C = x.shape
    out = np.empty((B, H // size, W // size, C))
    arg = np.empty(out.shape, dtype=np.int64)
    for n, i, j, c in np.ndindex(out.shape):
        window = x[n, i * size:(i + 1) * size, j * size:(j + 1) * size, c].ravel()
        arg[n, i, j, c] = np.argmax(window)  # argmax returns the first maximum
        out[n, i, j, c] = window[arg[n, i, j, c]]
    return out, arg


def maxpool_backward(x, g, size):
    """dx: each window's upstream gradient at its first maximum, 0 elsewhere."""
    _, arg = maxpool_forward(x, size)
    dx = np.zeros(x.shape)
    for n, i, j, c in np.ndindex(g.shape):
        u, v = divmod(arg[n, i, j, c], size)
        dx[n, i * size + u, j * size + v, c] = g[n, i, j, c]
    return dx
