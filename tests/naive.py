"""Slow, obviously correct NumPy versions of every fastedf kernel, for the tests."""
import numpy as np
from numpy.testing import assert_allclose

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


# ---------------------------------------------------------------- training, as the course's loop writes it

MASK64 = 2**64 - 1


def shuffle_order(order, state):
    """fastedf.kernels.shuffle_order's documented rule, in Python integers: shuffles the list `order` in place,
    returns the next state."""
    for i in range(len(order) - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        j = z % (i + 1)
        order[i], order[j] = order[j], order[i]
    return state


def epoch_orders(rows, epochs, seed=None):
    """Each epoch's row order under fit's documented rule: 0..rows-1 without a seed; with one, the previous epoch's
    order (0..rows-1 before the first) shuffled again, the state starting at the seed and carried across epochs."""
    order, state, orders = list(range(rows)), seed, []
    for _ in range(epochs):
        if seed is not None:
            state = shuffle_order(order, state)
        orders.append(np.array(order))
    return orders


def sgd(step, params, feeds, batch_size, epochs, lr, seed=None):
    """Mini-batch SGD as the course writes it: returns (per-sample mean loss of each epoch, trained params).

    step(params, *batch) -> (the batch's loss summed over its rows, the gradient of its mean per-sample loss for
    each parameter); batches are consecutive rows of each epoch's order (epoch_orders), the last one short.
    """
    params = [np.array(p, dtype=np.float64) for p in params]
    rows = len(feeds[0])
    losses = []
    for order in epoch_orders(rows, epochs, seed):
        data = [np.asarray(f, dtype=np.float64)[order] for f in feeds]
        total = 0.0
        for start in range(0, rows, batch_size):
            loss, grads = step(params, *[d[start:start + batch_size] for d in data])
            total += loss
            for p, g in zip(params, grads):
                p -= lr * g.reshape(p.shape)
        losses.append(total / rows)
    return np.array(losses), params


# activation: (h(z), dh/dz from z and h)
ACTIVATIONS = {"sigmoid": (sigmoid, lambda z, h: h * (1 - h)),
               "tanh": (np.tanh, lambda z, h: 1 - h * h),
               "relu": (relu, lambda z, h: (z > 0) * 1.0)}


def head_loss(y, z):
    """(summed loss, d mean loss / dz) of the logits z (n, k): sigmoid and BCE for k = 1, softmax and CE above."""
    p = sigmoid(z) if z.shape[1] == 1 else softmax(z)
    loss = bce(y, p) if z.shape[1] == 1 else ce_sum(y, p)
    return loss, (p - y) / max(len(z), 1)


def mlp_step(params, x, y, activation="sigmoid"):
    """An sgd step of fastedf.models.mlp's network: params [A1, b1, A2, b2, ...]; Linear + activation layers, then
    the head (head_loss).  `activation`: a name of ACTIVATIONS or an (h, dh) pair."""
    h_of, dh_of = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    layers = [(params[i], params[i + 1]) for i in range(0, len(params), 2)]
    hs, zs = [x], []
    for i, (A, b) in enumerate(layers):
        zs.append(linear_forward(hs[-1], A, b))
        if i < len(layers) - 1:
            hs.append(h_of(zs[-1]))
    loss, g = head_loss(y, zs[-1])
    grads = []
    for i in range(len(layers) - 1, -1, -1):
        dA, db = linear_backward(hs[i], g)
        grads = [dA, db] + grads
        if i:
            g = linear_input_grad(g, layers[i][0]) * dh_of(zs[i - 1], hs[i])
    return loss, grads


def conv_net_step(params, x, y):
    """An sgd step of Conv, ReLU, MaxPooling(2), [Conv, Tanh,] Flatten, Linear, Softmax, CE: params
    [K, c, (K2, c2,) A, b], the second Conv when given."""
    K, c, *rest = params
    z1 = conv_forward(x, K, c)
    r1 = relu(z1)
    m1, _ = maxpool_forward(r1, 2)
    h = m1
    if len(rest) == 4:
        K2, c2, A, b = rest
        h = np.tanh(conv_forward(m1, K2, c2))
    else:
        A, b = rest
    loss, g = head_loss(y, linear_forward(h.reshape(len(h), -1), A, b))
    dA, db = linear_backward(h.reshape(len(h), -1), g)
    g = linear_input_grad(g, A).reshape(h.shape)
    grads = [dA, db]
    if len(rest) == 4:
        g = tanh_backward(h, g)
        g, dK2, dc2 = conv_backward(m1, K2, g)
        grads = [dK2, dc2] + grads
    g = relu_backward(r1, maxpool_backward(r1, g, 2))
    _, dK, dc = conv_backward(x, K, g)
    return loss, [dK, dc] + grads


def mlp_sgd(params, X, Y, batch_size, epochs, lr, seed=None, activation="sigmoid"):
    """sgd of mlp_step: (epoch losses, trained params) of fastedf.models.mlp's network from `params`."""
    return sgd(lambda p, x, y: mlp_step(p, x, y, activation), params, [X, Y], batch_size, epochs, lr, seed)


# fit against sgd: another summation order (BLAS blocks, NumPy's pairwise sums) and fastedf.vexp's exp within
# 1 ulp of np.exp, compounded over a few hundred steps; seen within 2e-14 on every case the tests run.
TRAINED = dict(rtol=1e-11, atol=1e-12)


def flat(arrays):
    """Parameter arrays as one vector, in order."""
    return np.concatenate([np.ravel(a) for a in arrays])


def assert_trained_as(epoch_loss, params, reference):
    """A fit's epoch losses and trained parameters (arrays, or flat() of them) equal sgd's `reference`
    (losses, params) to TRAINED."""
    want_loss, want_params = reference
    assert_allclose(epoch_loss, want_loss, **TRAINED)
    assert_allclose(flat(params), flat(want_params), **TRAINED)
