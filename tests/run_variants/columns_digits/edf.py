"""edf.py - my EDF for the digits assignment.

Convention: samples are COLUMNS everywhere (like the math in the notes):
x is (n_features, batch), W is (n_out, n_in), b is (n_out, 1), labels are one-hot (classes, batch).
"""
import numpy as np


class Node:
    def __init__(self, *inputs):
        self.inputs = list(inputs)
        self.outputs = []
        self.value = None
        self.gradients = {}
        for i in self.inputs:
            i.outputs.append(self)

    def forward(self):
        pass

    def backward(self):
        pass


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients = {self: sum(o.gradients[self] for o in self.outputs)}


class Parameter(Node):
    def __init__(self, value):
        Node.__init__(self)
        self.value = value

    def backward(self):
        self.gradients = {self: sum(o.gradients[self] for o in self.outputs)}


class Linear(Node):
    # weight first, as in  z = W x + b
    def __init__(self, W, x, b):
        Node.__init__(self, W, x, b)

    def forward(self):
        W, x, b = (n.value for n in self.inputs)
        self.value = W @ x + b

    def backward(self):
        W, x, b = self.inputs
        dz = sum(o.gradients[self] for o in self.outputs)
        self.gradients[W] = dz @ x.value.T
        self.gradients[x] = W.value.T @ dz
        self.gradients[b] = dz.sum(axis=1, keepdims=True)


class Tanh(Node):
    def __init__(self, x):
        Node.__init__(self, x)

    def forward(self):
        self.value = np.tanh(self.inputs[0].value)

    def backward(self):
        dz = sum(o.gradients[self] for o in self.outputs)
        self.gradients[self.inputs[0]] = dz * (1 - self.value ** 2)


class Softmax(Node):
    """softmax of each column"""

    def __init__(self, x):
        Node.__init__(self, x)

    def forward(self):
        z = self.inputs[0].value
        e = np.exp(z - z.max(axis=0, keepdims=True))
        self.value = e / e.sum(axis=0, keepdims=True)

    def backward(self):
        g = sum(o.gradients[self] for o in self.outputs)
        s = self.value
        self.gradients[self.inputs[0]] = s * (g - (g * s).sum(axis=0, keepdims=True))


class CrossEntropy(Node):
    """mean over the batch (columns) of -sum_k y_k log p_k"""

    def __init__(self, y, p):
        Node.__init__(self, y, p)

    def forward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        self.value = -np.sum(y * np.log(p)) / y.shape[1]

    def backward(self):
        y, p = self.inputs
        m = y.value.shape[1]
        self.gradients[p] = -y.value / p.value / m
        self.gradients[y] = -np.log(p.value) / m
