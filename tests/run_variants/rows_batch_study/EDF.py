"""EDF: a tiny computational-graph library (assignment 2: batches and Linear)."""
import numpy as np
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


class Node:
    def __init__(self, inputs=[]):
        self.inputs = list(inputs)
        self.outputs = []
        self.value = None
        self.gradients = {}
        for inp in self.inputs:
            inp.outputs.append(self)

    def grad_sum(self):
        # sum what every consumer sent back
        total = 0
        for out in self.outputs:
            total = total + out.gradients[self]
        return total

    def forward(self):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError


class Input(Node):
    def __init__(self):
        super().__init__()

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients = {self: self.grad_sum()}


class Parameter(Node):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self):
        pass

    def backward(self):
        self.gradients = {self: self.grad_sum()}


class Linear(Node):
    """x (batch, n_in) @ A (n_in, n_out) + b (n_out,)"""

    def __init__(self, x, A, b):
        super().__init__([x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value + b.value

    def backward(self):
        x, A, b = self.inputs
        g = self.grad_sum()
        self.gradients[x] = g @ A.value.T
        self.gradients[A] = x.value.T @ g
        self.gradients[b] = np.sum(g, axis=0)


class Sigmoid(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        z = self.inputs[0].value
        self.value = 1.0 / (1.0 + np.exp(-z))

    def backward(self):
        s = self.value
        self.gradients[self.inputs[0]] = self.grad_sum() * s * (1.0 - s)


class BCE(Node):
    """Binary cross-entropy summed over the batch; its gradient is the mean's."""

    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        p = np.clip(p, 1e-12, 1 - 1e-12)
        self.value = np.sum(-y * np.log(p) - (1 - y) * np.log(1 - p))

    def backward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        p = np.clip(p, 1e-12, 1 - 1e-12)
        rows = y.shape[0]
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / rows
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / rows


def topological_sort(entry):
    order, seen = [], set()

    def dfs(node):
        if node in seen:
            return
        seen.add(node)
        for n in node.inputs:
            dfs(n)
        order.append(node)

    dfs(entry)
    return order


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in reversed(graph):
        n.backward()


def sgd_update(trainables, learning_rate):
    for t in trainables:
        t.value -= learning_rate * t.gradients[t]
