"""Computational graph nodes (HW3). Batches are rows: x has shape (batch_size, features)."""
import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = [] if inputs is None else inputs
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
    def __init__(self):
        Node.__init__(self)

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients = {self: 0}
        for n in self.outputs:
            self.gradients[self] += n.gradients[self]


class Parameter(Node):
    def __init__(self, value):
        Node.__init__(self)
        self.value = value

    def forward(self):
        pass

    def backward(self):
        self.gradients = {self: 0}
        for n in self.outputs:
            self.gradients[self] += n.gradients[self]


class Linear(Node):
    """Linear(x, n_out, n_in): a layer with its own weights W (n_in, n_out) and bias b (1, n_out)."""

    def __init__(self, x, n_out, n_in):
        limit = np.sqrt(6.0 / (n_in + n_out))
        self.W = Parameter(np.random.uniform(-limit, limit, (n_in, n_out)))
        self.b = Parameter(np.zeros((1, n_out)))
        Node.__init__(self, [x, self.W, self.b])

    def forward(self):
        x = self.inputs[0].value
        self.value = x.dot(self.W.value) + self.b.value

    def backward(self):
        g = self.outputs[0].gradients[self]
        x = self.inputs[0]
        self.gradients[x] = g.dot(self.W.value.T)
        self.gradients[self.W] = x.value.T.dot(g)
        self.gradients[self.b] = g.sum(axis=0, keepdims=True)


class ReLU(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = np.maximum(0, self.inputs[0].value)

    def backward(self):
        g = self.outputs[0].gradients[self]
        self.gradients[self.inputs[0]] = g * (self.inputs[0].value > 0)


class Softmax(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        z = self.inputs[0].value
        z = z - np.max(z, axis=1, keepdims=True)
        e = np.exp(z)
        self.value = e / np.sum(e, axis=1, keepdims=True)

    def backward(self):
        g = self.outputs[0].gradients[self]
        dz = np.zeros_like(g)
        for i in range(g.shape[0]):
            s = self.value[i]
            jacobian = np.diag(s) - np.outer(s, s)
            dz[i] = jacobian.T @ g[i]
        self.gradients[self.inputs[0]] = dz


class CrossEntropy(Node):
    """Total cross-entropy of the batch (the script divides by the number of samples)."""

    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1.0)
        self.value = -np.sum(y * np.log(p))

    def backward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1.0)
        self.gradients[self.inputs[1]] = -y / p
        self.gradients[self.inputs[0]] = -np.log(p)


def topological_sort(output_node):
    result, seen = [], set()

    def go(n):
        if n not in seen:
            seen.add(n)
            for m in n.inputs:
                go(m)
            result.append(n)

    go(output_node)
    return result


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in reversed(graph):
        n.backward()


def sgd_update(trainables, learning_rate=1e-2):
    for t in trainables:
        t.value -= learning_rate * t.gradients[t]
