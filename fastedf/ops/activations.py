"""Activations: Sigmoid, its kernels and compile rule."""
import math

import numpy as np

from ..config import kernel
from ..kernels import common_size
from ..node import F64, Node, _reusable


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



class Sigmoid(Node):
    """1 / (1 + exp(-x)), elementwise; never overflows."""

    def __init__(self, x):
        super().__init__([x])
        self._dz = None

    def forward(self):
        (z,) = self._values()
        out = self.value if _reusable(self.value, z.shape) else np.empty(z.shape)
        sigmoid_forward(z, out)
        self.value = out

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
        sigmoid_backward(p, g, dz)
        self.gradients[self.inputs[0]] = dz



def _sigmoid(node, low):
    (z,) = node.inputs
    backward = []
    if low.wants_grad[z] and node not in low.fused:  # a fused sigmoid's backward is the loss's
        backward = [f"sigmoid_backward({low.value(node)}, {low.grad(node)}, {low.grad(z)})"]
    return ([f"sigmoid_forward({low.value(z)}, {low.value(node)})"], backward), None


