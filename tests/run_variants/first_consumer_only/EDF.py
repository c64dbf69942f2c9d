# Every node takes its upstream gradient from its first consumer only, as in the lecture code.
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


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients[self] = self.outputs[0].gradients[self]


class Parameter(Input):
    def __init__(self, value):
        Input.__init__(self)
        self.value = value


class Linear(Node):
    def __init__(self, x, A, b):
        Node.__init__(self, [x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value + b.value

    def backward(self):
        x, A, b = self.inputs
        up = self.outputs[0].gradients[self]
        self.gradients[x] = up @ A.value.T
        self.gradients[A] = x.value.T @ up
        self.gradients[b] = up.sum(axis=0)


class Addition(Node):
    def __init__(self, x, y):
        Node.__init__(self, [x, y])

    def forward(self):
        self.value = self.inputs[0].value + self.inputs[1].value

    def backward(self):
        up = self.outputs[0].gradients[self]
        self.gradients[self.inputs[0]] = up
        self.gradients[self.inputs[1]] = up


class Tanh(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = np.tanh(self.inputs[0].value)

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * (1 - np.square(self.value))


class Sigmoid(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = 1 / (1 + np.exp(-self.inputs[0].value))

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * self.value * (1 - self.value)


class BCE(Node):
    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = np.sum(-y * np.log(p) - (1 - y) * np.log(1 - p))

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / y.shape[0]
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / y.shape[0]
