import numpy as np


class Node(object):
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
        total = 0
        for n in self.outputs:
            total = total + n.gradients[self]
        self.gradients[self] = total


class Parameter(Input):
    def __init__(self, value):
        Input.__init__(self)
        self.value = value


class Linear(Node):
    def __init__(self, x, A, b):
        Node.__init__(self, [x, A, b])

    def forward(self):
        self.value = np.dot(self.inputs[0].value, self.inputs[1].value) + self.inputs[2].value

    def backward(self):
        x, A, b = self.inputs
        d = self.outputs[0].gradients[self]
        self.gradients[x] = np.dot(d, A.value.T)
        self.gradients[A] = np.dot(x.value.T, d)
        self.gradients[b] = np.sum(d, axis=0)


class Tanh(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = np.tanh(self.inputs[0].value)

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * (1 - self.value ** 2)


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


def build_xor_net(hidden, rng):
    """(x, y, output, loss, graph, parameters) of a 2 -> hidden (tanh) -> 1 (sigmoid) network."""
    x, y = Input(), Input()
    A1, b1 = Parameter(rng.normal(0, 1, (2, hidden))), Parameter(np.zeros(hidden))
    A2, b2 = Parameter(rng.normal(0, 1, (hidden, 1))), Parameter(np.zeros(1))
    h = Tanh(Linear(x, A1, b1))
    out = Sigmoid(Linear(h, A2, b2))
    loss = BCE(y, out)
    graph = [x, y, A1, b1, h.inputs[0], h, A2, b2, out.inputs[0], out, loss]
    return x, y, out, loss, graph, [A1, b1, A2, b2]


def train(X, Y, x, y, loss, graph, params, epochs, lr, batch=16):
    """Mini-batch SGD; prints the mean loss of every epoch."""
    for epoch in range(epochs):
        total = 0.0
        for i in range(0, len(X), batch):
            x.value, y.value = X[i:i + batch], Y[i:i + batch]
            for n in graph:
                n.forward()
            for n in reversed(graph):
                n.backward()
            for p in params:
                p.value -= lr * p.gradients[p]
            total += loss.value
        print("epoch %d loss %.15g" % (epoch, total / len(X)))
