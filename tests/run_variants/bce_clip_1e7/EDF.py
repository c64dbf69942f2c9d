import numpy as np

EPSILON = 1e-7  # same as Keras' default epsilon


class Node:
    def __init__(self, inputs=None):
        if inputs is None:
            inputs = []
        self.inputs = inputs
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
    def __init__(self, x, A, b):
        Node.__init__(self, [x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value + b.value

    def backward(self):
        x, A, b = self.inputs
        grad = self.outputs[0].gradients[self]
        self.gradients[x] = grad @ A.value.T
        self.gradients[A] = x.value.T @ grad
        self.gradients[b] = np.sum(grad, axis=0, keepdims=True)


class Sigmoid(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = 1.0 / (1.0 + np.exp(-self.inputs[0].value))

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * self.value * (1.0 - self.value)


class BCE(Node):
    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y_true, y_pred = self.inputs
        p = np.clip(y_pred.value, EPSILON, 1 - EPSILON)
        self.value = np.mean(-y_true.value * np.log(p) - (1 - y_true.value) * np.log(1 - p))

    def backward(self):
        y_true, y_pred = self.inputs
        p = np.clip(y_pred.value, EPSILON, 1 - EPSILON)
        n = y_true.value.shape[0]
        self.gradients[y_pred] = (p - y_true.value) / (p * (1 - p)) / n
        self.gradients[y_true] = (np.log(1 - p) - np.log(p)) / n
