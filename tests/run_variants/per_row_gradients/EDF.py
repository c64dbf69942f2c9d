# EDF with per-example gradients: every gradient keeps one row per sample,
# the training script averages them (so the nodes don't have to know the batch size).
import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = inputs if inputs is not None else []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for node in self.inputs:
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
        self.gradients[self] = sum(n.gradients[self] for n in self.outputs)


class Parameter(Node):
    def __init__(self, value):
        Node.__init__(self)
        self.value = value

    def forward(self):
        pass

    def backward(self):
        self.gradients[self] = sum(n.gradients[self] for n in self.outputs)


class Linear(Node):
    """x (B, n) @ w (n,) + b (1,)  ->  (B,)   gradients per row: w -> (B, n), b -> (B,)"""

    def __init__(self, x, w, b):
        Node.__init__(self, [x, w, b])

    def forward(self):
        x, w, b = self.inputs
        self.value = x.value @ w.value + b.value

    def backward(self):
        x, w, b = self.inputs
        g = self.outputs[0].gradients[self]
        self.gradients[x] = g[:, None] * w.value[None, :]
        self.gradients[w] = g[:, None] * x.value
        self.gradients[b] = g


class Sigmoid(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = 1 / (1 + np.exp(-self.inputs[0].value))

    def backward(self):
        s = self.value
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * s * (1 - s)


class BCE(Node):
    """average loss over the batch, per-sample gradient"""

    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))

    def backward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p))
        self.gradients[self.inputs[0]] = np.log(1 - p) - np.log(p)
