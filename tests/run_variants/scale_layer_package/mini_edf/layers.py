import numpy as np

from .core import Node


class Scale(Node):
    """Learned per-feature scale and shift: a * x + b, with a and b of shape (features,)."""

    def __init__(self, x, a, b):
        super().__init__(x, a, b)

    def forward(self):
        x, a, b = (n.value for n in self.inputs)
        self.value = a * x + b

    def backward(self):
        x, a, b = self.inputs
        g = self.incoming_gradient()
        self.gradients[x] = g * a.value
        self.gradients[a] = np.sum(g * x.value, axis=0)
        self.gradients[b] = np.sum(g, axis=0)


class Dense(Node):
    """Dense(W, x, c) = x @ W + c, the weight given first like in Keras' kernel."""

    def __init__(self, W, x, c):
        super().__init__(W, x, c)

    def forward(self):
        W, x, c = (n.value for n in self.inputs)
        self.value = x @ W + c

    def backward(self):
        W, x, c = self.inputs
        g = self.incoming_gradient()
        self.gradients[W] = x.value.T @ g
        self.gradients[x] = g @ W.value.T
        self.gradients[c] = np.sum(g, axis=0)


class Sigmoid(Node):
    def forward(self):
        z = self.inputs[0].value
        self.value = 1.0 / (1.0 + np.exp(-z))

    def backward(self):
        s = self.value
        self.gradients[self.inputs[0]] = self.incoming_gradient() * s * (1.0 - s)


class BCE(Node):
    def __init__(self, y_true, y_pred):
        super().__init__(y_true, y_pred)

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        m = len(y)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / m
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / m
