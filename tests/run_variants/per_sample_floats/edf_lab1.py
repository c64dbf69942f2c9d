"""Lab 1: a computational graph on plain numbers (one sample at a time, no batches yet)."""
import math

import numpy as np


class Node:
    def __init__(self, inputs=[]):
        self.inputs = inputs
        self.outputs = []
        self.value = None
        self.gradients = {}
        for node in inputs:
            node.outputs.append(self)

    def forward(self):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError


class Input(Node):
    def __init__(self):
        Node.__init__(self)

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients[self] = 0.0
        for n in self.outputs:
            self.gradients[self] += n.gradients[self]


class Parameter(Input):
    def __init__(self, value):
        Input.__init__(self)
        self.value = value


class Multiply(Node):
    def __init__(self, a, b):
        Node.__init__(self, [a, b])

    def forward(self):
        self.value = self.inputs[0].value * self.inputs[1].value

    def backward(self):
        a, b = self.inputs
        g = self.outputs[0].gradients[self]
        self.gradients[a] = g * b.value
        self.gradients[b] = g * a.value


class Addition(Node):
    def __init__(self, a, b):
        Node.__init__(self, [a, b])

    def forward(self):
        self.value = self.inputs[0].value + self.inputs[1].value

    def backward(self):
        g = self.outputs[0].gradients[self]
        self.gradients[self.inputs[0]] = g
        self.gradients[self.inputs[1]] = g


class Sigmoid(Node):
    def __init__(self, z):
        Node.__init__(self, [z])

    def forward(self):
        self.value = 1.0 / (1.0 + np.exp(-self.inputs[0].value))

    def backward(self):
        s = self.value
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * s * (1 - s)


class BCE(Node):
    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        self.value = -(y * math.log(p) + (1 - y) * math.log(1 - p))

    def backward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p))
        self.gradients[self.inputs[0]] = math.log(1 - p) - math.log(p)
