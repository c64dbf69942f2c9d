"""A plain-NumPy EDF: the reference for the course's conventions, and the baseline fastedf is timed against.

Shipped in the package so `fastedf sweep --with-edf` can time the course loop on
it; `benchmarks/numpy_edf.py` re-exports it for the benchmarks and tests.

One class per operation, as the course writes them: a fresh array from every
forward and backward, the upstream gradient summed over the node's consumers
(a node nobody consumes is the loss: its upstream is ones).  It implements
the course's conventions (docs/conventions.md) exactly, in the most obvious NumPy:

- Multiply, Addition, BCE and CE broadcast under NumPy rules; every gradient
  has its input's shape (summed over the axes broadcasting added or stretched).
- BCE(y_true, y_pred): the value is the SUM over all elements of
  -(y log p + (1 - y) log(1 - p)), p clipped to [1e-12, 1 - 1e-12]; the
  gradients are those of the mean over rows, (p - y) / (p (1 - p)) / rows and
  (log(1 - p) - log p) / rows, evaluated at the clipped p.
- CE(y_true, y_pred): the MEAN over rows of -sum_k y_k log p_k, p clipped below
  at 1e-12; gradients -y / p / rows and -log(p) / rows at the clipped p.
- rows is y_pred's first dimension (1 for a scalar).  An empty batch (0 rows)
  gives a loss of 0.0 and zero gradients.
- Sigmoid never warns (exp overflows to inf, and 1 / (1 + inf) = 0 is right).
- Softmax is row-wise over the last axis, with the row maximum subtracted.
- Conv: channels last, x (B, H, W, C_in), K (kh, kw, C_in, C_out) with odd kh,
  kw, b (C_out,); stride 1, zero "same" padding, cross-correlation.
- MaxPooling(x, size): non-overlapping size x size windows over axes 1 and 2;
  the gradient goes to the first maximum of each window in row-major order.
- Flatten: (B, ...) to (B, -1).
"""
import numpy as np

EPS = 1e-12


class Node:
    def __init__(self, inputs=None):
        self.inputs = inputs or []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for n in self.inputs:
            n.outputs.append(self)

    def upstream(self):
        if not self.outputs:
            return np.ones(np.shape(self.value))
        return sum(n.gradients[self] for n in self.outputs)


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients = {self: self.upstream()}


class Parameter(Node):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self):
        pass

    def backward(self):
        self.gradients = {self: self.upstream()}


def topological_sort(loss):
    """The graph behind `loss`, every node after its inputs: the course's helper, for any EDF module's nodes."""
    order, seen = [], set()

    def visit(node):
        if id(node) not in seen:
            seen.add(id(node))
            for n in node.inputs:
                visit(n)
            order.append(node)
    visit(loss)
    return order


def course_step(graph, trainable, lr):
    """One update as the course's scripts write it: forward in order, backward in reverse, t.value -= lr * grad.

    Works on any EDF module's nodes (this one's, fastedf's, a student's): the loop the study times on the
    NumPy EDF and the benchmarks time on both.
    """
    for node in graph:
        node.forward()
    for node in reversed(graph):
        node.backward()
    for t in trainable:
        t.value -= lr * t.gradients[t]


def _sum_to(g, shape):
    """g summed over the axes that broadcasting added or stretched, so it has `shape`."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def _rows(p):
    """The rows a loss gradient is divided by: p's first dimension, 1 for a scalar or an empty batch.

    An empty batch has nothing to divide: its sums are 0 and stay 0.
    """
    return p.shape[0] if p.ndim >= 1 and p.shape[0] > 0 else 1


class Multiply(Node):
    def __init__(self, x, y):
        super().__init__([x, y])

    def forward(self):
        self.value = self.inputs[0].value * self.inputs[1].value

    def backward(self):
        x, y = self.inputs
        g = self.upstream()
        self.gradients = {x: _sum_to(g * y.value, np.shape(x.value)),
                          y: _sum_to(g * x.value, np.shape(y.value))}


class Addition(Node):
    def __init__(self, x, y):
        super().__init__([x, y])

    def forward(self):
        self.value = self.inputs[0].value + self.inputs[1].value

    def backward(self):
        x, y = self.inputs
        g = self.upstream()
        self.gradients = {x: _sum_to(g, np.shape(x.value)), y: _sum_to(g, np.shape(y.value))}


class Linear(Node):
    """x @ A + b: x (B, n_in), A (n_in, n_out), b (n_out,) or (1, n_out)."""

    def __init__(self, x, A, b):
        super().__init__([x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value + b.value

    def backward(self):
        x, A, b = self.inputs
        g = self.upstream()
        self.gradients = {x: g @ A.value.T, A: x.value.T @ g,
                          b: g.sum(axis=0).reshape(np.shape(b.value))}


class Sigmoid(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        with np.errstate(over="ignore"):  # exp(-x) = inf for x < -709: the value 0 is right
            self.value = 1.0 / (1.0 + np.exp(-self.inputs[0].value))

    def backward(self):
        p = self.value
        self.gradients = {self.inputs[0]: self.upstream() * p * (1.0 - p)}


class ReLU(Node):
    """max(x, 0); the gradient is 0 where x <= 0."""

    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.maximum(self.inputs[0].value, 0.0)

    def backward(self):
        x = self.inputs[0]
        self.gradients = {x: self.upstream() * (x.value > 0)}


class Tanh(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.tanh(self.inputs[0].value)

    def backward(self):
        t = self.value
        self.gradients = {self.inputs[0]: self.upstream() * (1.0 - t * t)}


class Softmax(Node):
    """Row-wise softmax over the last axis: s = exp(x - max) / sum(exp(x - max))."""

    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        z = self.inputs[0].value
        e = np.exp(z - np.max(z, axis=-1, keepdims=True))
        self.value = e / np.sum(e, axis=-1, keepdims=True)

    def backward(self):
        s, g = self.value, self.upstream()
        # Jacobian-vector product of softmax: s * (g - <g, s>) per row
        self.gradients = {self.inputs[0]: s * (g - np.sum(g * s, axis=-1, keepdims=True))}


class BCE(Node):
    """Binary cross-entropy: the SUM over elements; the gradients are those of the mean over rows."""

    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, EPS, 1 - EPS)
        self.value = np.sum(-(y * np.log(p) + (1 - y) * np.log(1 - p)))

    def backward(self):
        y_node, p_node = self.inputs
        y, p = y_node.value, np.clip(p_node.value, EPS, 1 - EPS)
        shape = np.broadcast_shapes(np.shape(y), p.shape)
        scale = self.upstream() / _rows(p)
        dp = scale * (p - y) / (p * (1 - p))
        dy = scale * np.broadcast_to(np.log(1 - p) - np.log(p), shape)
        self.gradients = {p_node: _sum_to(dp, p.shape), y_node: _sum_to(dy, np.shape(y))}


class CE(Node):
    """Cross-entropy against one-hot labels (B, k): the MEAN over rows of -sum_k y_k log p_k."""

    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, np.maximum(self.inputs[1].value, EPS)
        self.value = np.sum(-y * np.log(p)) / _rows(p)

    def backward(self):
        y_node, p_node = self.inputs
        y, p = y_node.value, np.maximum(p_node.value, EPS)
        shape = np.broadcast_shapes(np.shape(y), p.shape)
        scale = self.upstream() / _rows(p)
        dp = scale * -y / p
        dy = scale * np.broadcast_to(-np.log(p), shape)
        self.gradients = {p_node: _sum_to(dp, p.shape), y_node: _sum_to(dy, np.shape(y))}


class Conv(Node):
    """out[n, i, j, o] = b[o] + sum_{u, v, c} xpad[n, i + u, j + v, c] * K[u, v, c, o].

    x (B, H, W, C_in), K (kh, kw, C_in, C_out) with kh, kw odd, b (C_out,);
    xpad is x with kh // 2 and kw // 2 zeros around H and W, so out is (B, H, W, C_out).
    """

    def __init__(self, x, K, b):
        super().__init__([x, K, b])

    def _padded(self):
        x, K = self.inputs[0].value, self.inputs[1].value
        if x.ndim != 4 or K.ndim != 4 or K.shape[0] % 2 == 0 or K.shape[1] % 2 == 0 or x.shape[3] != K.shape[2]:
            raise ValueError(f"Conv: x {x.shape} must be (B, H, W, C_in) and K {K.shape} (kh, kw, C_in, C_out) "
                             "with odd kh and kw")
        ph, pw = K.shape[0] // 2, K.shape[1] // 2
        return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))

    def forward(self):
        x, K, b = (n.value for n in self.inputs)
        xpad = self._padded()
        B, H, W, _ = x.shape
        out = np.zeros((B, H, W, K.shape[3])) + b
        for u in range(K.shape[0]):
            for v in range(K.shape[1]):
                out += xpad[:, u:u + H, v:v + W, :] @ K[u, v]
        self.value = out

    def backward(self):
        x_node, K_node, b_node = self.inputs
        x, K = x_node.value, K_node.value
        xpad = self._padded()
        B, H, W, _ = x.shape
        g = self.upstream()
        dxpad, dK = np.zeros(xpad.shape), np.zeros(K.shape)
        for u in range(K.shape[0]):
            for v in range(K.shape[1]):
                dK[u, v] = np.tensordot(xpad[:, u:u + H, v:v + W, :], g, axes=([0, 1, 2], [0, 1, 2]))
                dxpad[:, u:u + H, v:v + W, :] += g @ K[u, v].T
        ph, pw = K.shape[0] // 2, K.shape[1] // 2
        self.gradients = {x_node: dxpad[:, ph:ph + H, pw:pw + W, :], K_node: dK,
                          b_node: g.sum(axis=(0, 1, 2)).reshape(np.shape(b_node.value))}


class MaxPooling(Node):
    """Max over non-overlapping size x size windows of axes 1 and 2: (B, H, W, ...) to (B, H/size, W/size, ...).

    The gradient goes to the maximum of each window, the first one in row-major
    order within the window when several are equal.
    """

    def __init__(self, x, size=2):
        super().__init__([x])
        self.size = size

    def _windows(self, x):
        """x viewed as (B, H/size, size, W/size, size, ...): window (i, j) is [:, i, :, j]."""
        s = self.size
        if x.ndim < 3 or x.shape[1] % s or x.shape[2] % s:
            raise ValueError(f"MaxPooling: x {x.shape} must be (B, H, W, ...) with H and W divisible by {s}")
        B, H, W = x.shape[:3]
        return x.reshape(B, H // s, s, W // s, s, *x.shape[3:])

    def forward(self):
        self.value = self._windows(self.inputs[0].value).max(axis=(2, 4))

    def backward(self):
        x = self.inputs[0].value
        w = self._windows(x)
        m, g = w.max(axis=(2, 4)), self.upstream()
        dw = np.zeros(w.shape)
        taken = np.zeros(m.shape, dtype=bool)
        for u in range(self.size):  # row-major within the window: the first maximum wins
            for v in range(self.size):
                first = (w[:, :, u, :, v] == m) & ~taken
                dw[:, :, u, :, v] = np.where(first, g, 0.0)
                taken |= first
        self.gradients = {self.inputs[0]: dw.reshape(x.shape)}


class Flatten(Node):
    """(B, ...) to (B, -1)."""

    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        x = self.inputs[0].value
        # the width from the shape, not -1: reshape(0, -1) fails on an empty batch
        self.value = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))

    def backward(self):
        x = self.inputs[0]
        self.gradients = {x: self.upstream().reshape(x.value.shape)}
