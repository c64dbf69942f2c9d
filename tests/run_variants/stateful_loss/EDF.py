import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = [] if inputs is None else inputs
        self.outputs = []
        self.value = None
        self.gradients = {}
        for n in self.inputs:
            n.outputs.append(self)


class Input(Node):
    def __init__(self):
        super().__init__()

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients = {self: 0}
        for n in self.outputs:
            self.gradients[self] = self.gradients[self] + n.gradients[self]


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
        g = self.outputs[0].gradients[self]
        self.gradients = {x: g @ A.value.T, A: x.value.T @ g, b: g.sum(axis=0)}


class Sigmoid(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = 1 / (1 + np.exp(-self.inputs[0].value))

    def backward(self):
        self.gradients = {self.inputs[0]: self.outputs[0].gradients[self] * self.value * (1 - self.value)}


class BCE(Node):
    """Mean BCE that also remembers every value it computed (for plotting the curve later)."""

    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])
        self.history = []
        self.calls = 0

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
        self.history.append(self.value)
        self.calls += 1

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        n = len(y)
        self.gradients = {self.inputs[1]: (p - y) / (p * (1 - p)) / n,
                          self.inputs[0]: (np.log(1 - p) - np.log(p)) / n}
