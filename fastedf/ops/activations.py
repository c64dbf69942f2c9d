"""Activations: Sigmoid, Tanh, ReLU and the row-wise Softmax, their kernels and one compile rule.

Every activation here is differentiated from its output p alone, so each is
two kernels, forward(z, out) and backward(p, g, out) = dL/dz, and one class
pattern.  Elementwise kernels index through .flat and take arrays of any
rank; Softmax works on the rows of its last axis.
"""
import math

import numpy as np

from ..config import helper, kernel, numpy_twin
from ..kernels import common_size, common_size3
from ..node import F64, Node, _reusable
from ..vexp import exp, tanh


@helper
def sigmoid(v):
    """1 / (1 + exp(-v)) from e = exp(-|v|), which never overflows: 1 / (1 + e) or e / (1 + e); branch-free."""
    e = exp(-abs(v))
    d = 1.0 / (1.0 + e)
    return d if v >= 0.0 else e * d


@kernel
def sigmoid_forward(z, out):
    """out = sigmoid(z), vectorised by LLVM (fastedf.vexp)."""
    for i in range(common_size(z, out)):
        out.flat[i] = sigmoid(z.flat[i])


@numpy_twin(sigmoid_forward)
def sigmoid_forward_numpy(z, out):
    if z.size == 1:  # one sample: Python's float arithmetic, a fifth of the seven NumPy calls' time
        v = z.item()
        e = math.exp(-abs(v))
        d = 1.0 / (1.0 + e)
        out.flat[0] = d if v >= 0.0 else e * d
        return
    if not z.size or z.min() >= -709.0:  # exp(-z) cannot overflow: 1 / (1 + exp(-z)), within 2 ulp of the helper, in 4 passes
        np.negative(z, out=out)
        np.exp(out, out=out)
        out += 1.0
        np.divide(1.0, out, out=out)
        return
    # else (NaN too) the helper's form, e = exp(-|z|): capping exp(-z) gave 1.2e-308 for every z < -709, where the
    # kernel gives exp(z) or 0, and x.T @ g then multiplied it back to a gradient of 1e3 for x ~ 1e300
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)
    np.add(e, 1.0, out=out)
    np.divide(1.0, out, out=out)
    np.multiply(out, e, out=out, where=z < 0.0)


@kernel
def sigmoid_backward(p, g, out):
    """out = g * p * (1 - p), the chain rule through p = sigmoid(z)."""
    for i in range(common_size3(p, g, out)):
        pi = p.flat[i]
        out.flat[i] = g.flat[i] * pi * (1.0 - pi)


@numpy_twin(sigmoid_backward)
def sigmoid_backward_numpy(p, g, out):
    if out.size == 1:  # one sample: Python's float arithmetic
        pi = p.item()
        out.flat[0] = g.item() * pi * (1.0 - pi)
        return
    np.multiply(g, p, out=out)
    out *= 1.0 - p


@kernel
def tanh_forward(z, out):
    """out = tanh(z), vectorised by LLVM (fastedf.vexp)."""
    for i in range(common_size(z, out)):
        out.flat[i] = tanh(z.flat[i])


@numpy_twin(tanh_forward)
def tanh_forward_numpy(z, out):
    np.tanh(z, out=out)


@kernel
def tanh_backward(p, g, out):
    """out = g * (1 - p^2), the chain rule through p = tanh(z)."""
    for i in range(common_size3(p, g, out)):
        pi = p.flat[i]
        out.flat[i] = g.flat[i] * (1.0 - pi * pi)


@numpy_twin(tanh_backward)
def tanh_backward_numpy(p, g, out):
    np.multiply(p, p, out=out)
    np.subtract(1.0, out, out=out)
    out *= g


@kernel
def relu_forward(z, out):
    """out = max(z, 0); NaN stays NaN."""
    for i in range(common_size(z, out)):
        v = z.flat[i]
        out.flat[i] = 0.0 if v <= 0.0 else v


@numpy_twin(relu_forward)
def relu_forward_numpy(z, out):
    np.maximum(z, 0.0, out=out)  # NaN stays NaN


@kernel
def relu_backward(p, g, out):
    """out = g where p > 0 (z > 0), else 0: the gradient is 0 at z <= 0."""
    for i in range(common_size3(p, g, out)):
        out.flat[i] = g.flat[i] if p.flat[i] > 0.0 else 0.0


@numpy_twin(relu_backward)
def relu_backward_numpy(p, g, out):
    np.copyto(out, np.where(p > 0.0, g, 0.0))  # a select, not g * (p > 0): an inf or NaN g stays out where p <= 0


@helper
def row_max(z, r):
    """The largest entry of row r of z (2-D); NaN if the first entry is NaN."""
    top = z[r, 0]
    for j in range(1, z.shape[1]):
        top = max(top, z[r, j])
    return top


@kernel
def softmax_forward(z, out):
    """out[r] = exp(z[r] - max z[r]) / sum(...) for every row r of the last axis (2-D (rows, k))."""
    rows, k = z.shape
    for r in range(rows):
        top = row_max(z, r)
        for j in range(k):  # apart from the sum, which must stay in order: this loop vectorises
            out[r, j] = exp(z[r, j] - top)
        total = 0.0
        for j in range(k):
            total += out[r, j]
        for j in range(k):
            out[r, j] /= total


@numpy_twin(softmax_forward)
def softmax_forward_numpy(z, out):
    np.subtract(z, z.max(axis=1, keepdims=True), out=out)  # past the float range (-1e308 - 1e308): -inf, exp 0
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)


@kernel
def softmax_backward(p, g, out):
    """out[r] = p[r] * (g[r] - sum_j g[r, j] p[r, j]), the chain rule through a row softmax (2-D)."""
    rows, k = p.shape
    for r in range(rows):
        dot = 0.0
        for j in range(k):
            dot += g[r, j] * p[r, j]
        for j in range(k):
            out[r, j] = p[r, j] * (g[r, j] - dot)


@numpy_twin(softmax_backward)
def softmax_backward_numpy(p, g, out):
    np.multiply(g, p, out=out)
    dot = out.sum(axis=1, keepdims=True)
    np.subtract(g, dot, out=out)
    out *= p


class Activation(Node):
    """p = f(z), differentiated from p.  Subclasses name their two kernels."""

    forward_kernel = backward_kernel = None

    def __init__(self, x):
        super().__init__([x])
        self._dz = None

    def forward(self):
        (z,) = self._values()
        z = self._check(z)
        out = self.value if _reusable(self.value, z.shape) else np.empty(z.shape)
        self.forward_kernel(z, out)
        self.value = out

    def _check(self, z):
        return z

    def backward(self):
        p = self.value
        if type(p) is not np.ndarray or p.dtype is not F64:
            if p is None:
                raise ValueError(f"{self}: backward() before forward()")
            p = np.asarray(p, dtype=F64)
        g = self._upstream(p.shape)
        dz = self._dz
        if dz is None or dz.shape != p.shape:
            dz = self._dz = np.empty(p.shape)
        self.backward_kernel(p, g, dz)
        self.gradients[self.inputs[0]] = dz

    lowers_any_rank = True  # elementwise: an image batch is as good as its (batch, H * W * C) rows

    def lower(self, low):
        """Compile rule: the forward kernel, and the backward one unless the loss differentiates it (fused)."""
        (z,) = self.inputs
        if self in low.fused:  # the loss computes from z and writes dL/dz itself
            return [], []
        backward = []
        if low.wants_grad[z]:
            backward = [f"{_name(self.backward_kernel)}({low.value(self)}, {low.grad(self)}, {low.grad(z)})"]
        return [f"{_name(self.forward_kernel)}({low.value(z)}, {low.value(self)})"], backward


def _name(dispatcher):
    return dispatcher.py_func.__name__


class Sigmoid(Activation):
    """1 / (1 + exp(-x)), elementwise; never overflows."""

    forward_kernel, backward_kernel = staticmethod(sigmoid_forward), staticmethod(sigmoid_backward)


class Tanh(Activation):
    """tanh(x), elementwise."""

    forward_kernel, backward_kernel = staticmethod(tanh_forward), staticmethod(tanh_backward)


class ReLU(Activation):
    """max(x, 0), elementwise; its gradient is 0 at x <= 0."""

    forward_kernel, backward_kernel = staticmethod(relu_forward), staticmethod(relu_backward)


class Softmax(Activation):
    """exp(x) / sum(exp(x)) over the last axis of every row, the row's max subtracted first (no overflow)."""

    forward_kernel, backward_kernel = staticmethod(softmax_forward), staticmethod(softmax_backward)
    lowers_any_rank = False  # row-wise over the last axis

    def _check(self, z):
        if z.ndim != 2:
            if z.ndim == 0:
                raise ValueError(f"{self}: input is a scalar; Softmax needs (batch, classes)")
            z = z.reshape(-1, z.shape[-1])  # rows of the last axis
        if z.shape[1] == 0:
            raise ValueError(f"{self}: input has shape {z.shape}: no classes to normalise over")
        return z

    def forward(self):
        super().forward()
        shape = np.shape(self.inputs[0].value)
        if self.value.shape != shape:
            self.value = self.value.reshape(shape)

    def backward(self):
        shape = np.shape(self.value)
        if len(shape) == 2:
            return super().backward()
        p, g = self.value.reshape(-1, shape[-1]), self._upstream(shape).reshape(-1, shape[-1])
        dz = np.empty(p.shape)
        softmax_backward(p, g, dz)
        self.gradients[self.inputs[0]] = dz.reshape(shape)


# What fastedf.ops collects from this module (its docstring says what each is)
NODES = (Sigmoid, Tanh, ReLU, Softmax)
ALIASES = {"SoftMax": Softmax, "ReLu": ReLU, "Relu": ReLU, "TanH": Tanh}
ORDER = 2
