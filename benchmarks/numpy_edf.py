"""A faithful plain-NumPy EDF, as the course writes it: the baseline fastedf is measured against.

One class per operation, a fresh array from every forward and backward, the
upstream gradient read from the consumers.  Numerics follow fastedf's
definitions (BCE clipped at 1e-12, gradients summed over broadcast axes) so
that both compute the same numbers.
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


def _sum_to(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


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
        self.value = 1.0 / (1.0 + np.exp(-self.inputs[0].value))

    def backward(self):
        p = self.value
        self.gradients = {self.inputs[0]: self.upstream() * p * (1.0 - p)}


class BCE(Node):
    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, EPS, 1 - EPS)
        self.value = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    def backward(self):
        y_node, p_node = self.inputs
        y, p = y_node.value, np.clip(p_node.value, EPS, 1 - EPS)
        up = self.upstream()
        self.gradients = {p_node: up * (p - y) / (p * (1 - p)) / p.size,
                          y_node: up * (np.log(1 - p) - np.log(p)) / p.size}
