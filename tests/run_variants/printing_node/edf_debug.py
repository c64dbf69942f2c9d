import numpy as np


class Node:
    def __init__(self, inputs=[]):
        self.inputs = list(inputs)
        self.outputs = []
        self.value = None
        self.gradients = {}
        for i in self.inputs:
            i.outputs.append(self)

    def from_above(self):
        return sum(o.gradients[self] for o in self.outputs)


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients[self] = self.from_above()


class Parameter(Input):
    def __init__(self, value):
        Input.__init__(self)
        self.value = value


class Linear(Node):
    def __init__(self, x, A, b):
        Node.__init__(self, [x, A, b])

    def forward(self):
        x, A, b = (n.value for n in self.inputs)
        self.value = x @ A + b
        # debugging aid left in: shows what goes through the layer
        print(f"  Linear: {x.shape} @ {A.shape} -> {self.value.shape}, mean {self.value.mean():.15g}")

    def backward(self):
        x, A, b = self.inputs
        g = self.from_above()
        self.gradients[x] = g @ A.value.T
        self.gradients[A] = x.value.T @ g
        self.gradients[b] = g.sum(axis=0)


class Sigmoid(Node):
    def forward(self):
        self.value = 1 / (1 + np.exp(-self.inputs[0].value))

    def backward(self):
        self.gradients[self.inputs[0]] = self.from_above() * self.value * (1 - self.value)


class BCE(Node):
    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / y.shape[0]
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / y.shape[0]
