"""A classmate's EDF (rows, x @ A + b) that my_edf.py builds on."""
import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = inputs or []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for n in self.inputs:
            n.outputs.append(self)

    def forward(self):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError

    def grad_in(self):
        return sum(o.gradients[self] for o in self.outputs)


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients[self] = self.grad_in()


class Parameter(Input):
    def __init__(self, value):
        super().__init__()
        self.value = value


class Linear(Node):
    def __init__(self, x, A, b):
        super().__init__([x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value + b.value

    def backward(self):
        x, A, b = self.inputs
        g = self.grad_in()
        self.gradients[x] = g @ A.value.T
        self.gradients[A] = x.value.T @ g
        self.gradients[b] = g.sum(axis=0)


class Sigmoid(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = 1.0 / (1.0 + np.exp(-self.inputs[0].value))

    def backward(self):
        self.gradients[self.inputs[0]] = self.grad_in() * self.value * (1.0 - self.value)


class BCE(Node):
    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = np.sum(-y * np.log(p) - (1 - y) * np.log(1 - p))

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / y.shape[0]
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / y.shape[0]
