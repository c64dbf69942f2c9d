"""Multiply and Addition with NumPy broadcasting, their kernels and compile rules."""

import numpy as np

from ..config import kernel, numpy_twin
from ..node import Node, _reusable, _sum_to


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


@numpy_twin(broadcast_binary)
def broadcast_binary_numpy(a, b, multiply, out):
    (np.multiply if multiply else np.add)(a, b, out=out)


@kernel
def sum_to(g, out):
    """out = g summed over the axes where out has size 1: the gradient of a broadcast input.  2-D."""
    out[:, :] = 0.0
    rows, cols = g.shape
    for i in range(rows):
        io = i if out.shape[0] > 1 else 0
        for j in range(cols):
            out[io, j if out.shape[1] > 1 else 0] += g[i, j]


@numpy_twin(sum_to)
def sum_to_numpy(g, out):
    out[...] = _sum_to(g, out.shape)


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


@numpy_twin(product_sum_to)
def product_sum_to_numpy(g, other, out):
    out[...] = _sum_to(g * other, out.shape)



class _Broadcasting(Node):
    """x (op) y with NumPy broadcasting.  Subclasses set `ufunc` and `input_gradients`."""

    ufunc = None

    def __init__(self, x, y):
        super().__init__([x, y])
        self._shapes = None

    def forward(self):
        x, y = self._values()
        shapes = (x.shape, y.shape)
        if shapes != self._shapes:
            try:
                self._out_shape = np.broadcast_shapes(*shapes)
            except ValueError:
                raise ValueError(f"{self}: shapes {x.shape} and {y.shape} do not broadcast") from None
            self._shapes = shapes
        out = self.value if _reusable(self.value, self._out_shape) else np.empty(self._out_shape)
        self.ufunc(x, y, out=out)
        self.value = out

    def backward(self):
        x, y = self.inputs
        g = self._upstream(self._out_shape)
        gx, gy = self.input_gradients(g, *self._values())
        self.gradients[x] = _sum_to(gx, np.shape(x.value))
        self.gradients[y] = _sum_to(gy, np.shape(y.value))

    def lower(self, low):
        """Compile rule: the broadcast kernel forward; each input's gradient summed over its broadcast axes."""
        multiply = self.ufunc is np.multiply
        a, b = self.inputs
        values = [low.value2d(a), low.value2d(b)]
        backward = []
        for k, inp in enumerate((a, b)):
            if low.wants_grad[inp]:
                if multiply:  # d(a*b)/da = b, summed over broadcast axes
                    backward.append(f"product_sum_to({low.grad(self)}, {values[1 - k]}, {low.grad2d(inp)})")
                else:
                    backward.append(f"sum_to({low.grad(self)}, {low.grad2d(inp)})")
        return [f"broadcast_binary({values[0]}, {values[1]}, {multiply}, {low.value(self)})"], backward


class Multiply(_Broadcasting):
    """x * y, elementwise with broadcasting."""

    ufunc = np.multiply

    @staticmethod
    def input_gradients(g, x, y):
        return g * y, g * x


class Addition(_Broadcasting):
    """x + y, elementwise with broadcasting."""

    ufunc = np.add

    @staticmethod
    def input_gradients(g, x, y):
        return g, g


# What fastedf.ops collects from this module (its docstring says what each is)
NODES = (Multiply, Addition)
ALIASES = {}
ORDER = 0
