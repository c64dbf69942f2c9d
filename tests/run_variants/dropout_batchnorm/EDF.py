"""EDF extended for the final project: Dropout, BatchNorm and an MLP builder."""
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
        g = self.outputs[0].gradients[self]
        self.gradients[x] = g @ A.value.T
        self.gradients[A] = x.value.T @ g
        self.gradients[b] = np.sum(g, axis=0)


class ReLU(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = np.maximum(0, self.inputs[0].value)

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * (self.inputs[0].value > 0)


class Dropout(Node):
    """Inverted dropout: active only while self.training is True."""

    def __init__(self, x, rate=0.2):
        Node.__init__(self, [x])
        self.rate = rate
        self.training = True

    def forward(self):
        x = self.inputs[0].value
        if self.training:
            self.mask = (np.random.rand(*x.shape) >= self.rate) / (1 - self.rate)
        else:
            self.mask = np.ones_like(x)
        self.value = x * self.mask

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * self.mask


class BatchNorm(Node):
    """Batch normalisation over the batch axis, with running statistics for evaluation."""

    def __init__(self, x, gamma, beta, momentum=0.9, eps=1e-5):
        Node.__init__(self, [x, gamma, beta])
        self.momentum, self.eps = momentum, eps
        self.training = True
        self.running_mean = None
        self.running_var = None

    def forward(self):
        x, gamma, beta = (n.value for n in self.inputs)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1])
            self.running_var = np.ones(x.shape[1])
        if self.training:
            mean, var = x.mean(axis=0), x.var(axis=0)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mean
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            mean, var = self.running_mean, self.running_var
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.x_hat = (x - mean) * self.inv_std
        self.value = gamma * self.x_hat + beta

    def backward(self):
        x, gamma, beta = self.inputs
        g = self.outputs[0].gradients[self]
        n = g.shape[0]
        dx_hat = g * gamma.value
        self.gradients[x] = self.inv_std / n * (n * dx_hat - dx_hat.sum(axis=0)
                                                - self.x_hat * np.sum(dx_hat * self.x_hat, axis=0))
        self.gradients[gamma] = np.sum(g * self.x_hat, axis=0)
        self.gradients[beta] = np.sum(g, axis=0)


class Softmax(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        z = self.inputs[0].value
        e = np.exp(z - np.max(z, axis=1, keepdims=True))
        self.value = e / np.sum(e, axis=1, keepdims=True)

    def backward(self):
        g = self.outputs[0].gradients[self]
        s = self.value
        self.gradients[self.inputs[0]] = s * (g - np.sum(g * s, axis=1, keepdims=True))


class CE(Node):
    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        self.value = -np.mean(np.sum(y * np.log(np.clip(p, 1e-12, None)), axis=1))

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, None)
        self.gradients[self.inputs[1]] = -y / p / y.shape[0]
        self.gradients[self.inputs[0]] = -np.log(p) / y.shape[0]


class MLP:
    """Input -> [Linear -> BatchNorm -> ReLU -> Dropout] * hidden layers -> Linear -> Softmax."""

    def __init__(self, x, sizes, dropout=0.2):
        self.parameters = []
        self.switchable = []
        h = x
        for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
            A = Parameter(np.random.randn(n_in, n_out) * np.sqrt(2.0 / n_in))
            b = Parameter(np.zeros(n_out))
            gamma, beta = Parameter(np.ones(n_out)), Parameter(np.zeros(n_out))
            bn = BatchNorm(Linear(h, A, b), gamma, beta)
            drop = Dropout(ReLU(bn), dropout)
            self.parameters += [A, b, gamma, beta]
            self.switchable += [bn, drop]
            h = drop
        A = Parameter(np.random.randn(sizes[-2], sizes[-1]) * np.sqrt(1.0 / sizes[-2]))
        b = Parameter(np.zeros(sizes[-1]))
        self.parameters += [A, b]
        self.output = Softmax(Linear(h, A, b))

    def train(self, mode=True):
        for node in self.switchable:
            node.training = mode


def topological_sort(node):
    order, seen = [], set()

    def visit(n):
        if n not in seen:
            seen.add(n)
            for m in n.inputs:
                visit(m)
            order.append(n)

    visit(node)
    return order


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in graph[::-1]:
        n.backward()


def sgd_update(trainables, learning_rate=1e-2):
    for t in trainables:
        t.value -= learning_rate * t.gradients[t]
