# EE569 HW2 - my own little EDF
# every array is (features, samples): a batch of B samples is a (n, B) matrix
import numpy as np


class Node:
    def __init__(self, inputs=[]):
        self.inputs = inputs
        self.outputs = []
        for n in inputs:
            n.outputs.append(self)
        self.value = None
        self.gradients = {}

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
        self.gradients = {self: 0}
        for n in self.outputs:
            self.gradients[self] = self.gradients[self] + n.gradients[self]


class Parameter(Input):
    def __init__(self, value):
        Input.__init__(self)
        self.value = value


class Linear(Node):
    # A is (n_in, n_out) so the layer is  A^T x + b
    def __init__(self, x, A, b):
        Node.__init__(self, [x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = np.dot(A.value.T, x.value) + b.value

    def backward(self):
        x, A, b = self.inputs
        delta = self.outputs[0].gradients[self]
        self.gradients[x] = np.dot(A.value, delta)
        self.gradients[A] = np.dot(x.value, delta.T)
        self.gradients[b] = np.sum(delta, axis=1, keepdims=True)


class Sigmoid(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = 1.0 / (1.0 + np.exp(-self.inputs[0].value))

    def backward(self):
        delta = self.outputs[0].gradients[self]
        self.gradients[self.inputs[0]] = delta * self.value * (1.0 - self.value)


class BCE(Node):
    # total loss of the batch; the gradient is not averaged (the learning rate takes care of it)
    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1.0 - 1e-12)
        self.value = -np.sum(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))

    def backward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1.0 - 1e-12)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1.0 - p))
        self.gradients[self.inputs[0]] = np.log(1.0 - p) - np.log(p)


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in graph[::-1]:
        n.backward()
