# Nodes for the XOR MLP. Weights are stored (n_out, n_in) like in the lecture slides.
import numpy as np


class Node(object):
    def __init__(self, inputs=None):
        self.inputs = inputs or []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for node in self.inputs:
            node.outputs.append(self)

    def grad_from_outputs(self):
        g = None
        for out in self.outputs:
            if self in out.gradients:
                g = out.gradients[self] if g is None else g + out.gradients[self]
        return g

    def forward(self):
        raise NotImplementedError("forward")

    def backward(self):
        raise NotImplementedError("backward")


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients[self] = self.grad_from_outputs()


class Parameter(Node):
    def __init__(self, value):
        Node.__init__(self)
        self.value = value

    def forward(self):
        pass

    def backward(self):
        self.gradients[self] = self.grad_from_outputs()


class Linear(Node):
    """Fully connected layer: y = x @ W.T + b, W (n_out, n_in), makes its own parameters."""

    def __init__(self, x, n_in, n_out):
        self.W = Parameter(np.random.randn(n_out, n_in) * np.sqrt(2.0 / n_in))
        self.b = Parameter(np.zeros(n_out))
        Node.__init__(self, [x, self.W, self.b])

    def forward(self):
        x = self.inputs[0].value
        self.value = x @ self.W.value.T + self.b.value

    def backward(self):
        g = self.grad_from_outputs()
        x = self.inputs[0].value
        self.gradients[self.inputs[0]] = g @ self.W.value
        self.gradients[self.W] = g.T @ x
        self.gradients[self.b] = g.sum(axis=0)


class ReLU(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = np.maximum(self.inputs[0].value, 0)

    def backward(self):
        mask = (self.inputs[0].value > 0).astype(float)
        self.gradients[self.inputs[0]] = self.grad_from_outputs() * mask


class Sigmoid(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = 1 / (1 + np.exp(-self.inputs[0].value))

    def backward(self):
        self.gradients[self.inputs[0]] = self.grad_from_outputs() * self.value * (1 - self.value)


class BCE(Node):
    """Mean binary cross-entropy over the batch."""
    EPS = 1e-12

    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, self.EPS, 1 - self.EPS)
        self.value = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    def backward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, self.EPS, 1 - self.EPS)
        n = y.shape[0]
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / n
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / n


class Layer:
    """A Linear node followed by an activation node."""

    def __init__(self, x, n_in, n_out, activation=ReLU):
        self.linear = Linear(x, n_in, n_out)
        self.out = activation(self.linear) if activation else self.linear

    def parameters(self):
        return [self.linear.W, self.linear.b]


class MLP:
    def __init__(self, x, sizes):
        self.layers = []
        node = x
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            layer = Layer(node, sizes[i], sizes[i + 1], Sigmoid if last else ReLU)
            self.layers.append(layer)
            node = layer.out
        self.out = node

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]


def build_graph(loss):
    nodes, seen = [], set()
    stack = [(loss, False)]
    while stack:
        node, done = stack.pop()
        if done:
            nodes.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            for i in reversed(node.inputs):
                stack.append((i, False))
    return nodes
