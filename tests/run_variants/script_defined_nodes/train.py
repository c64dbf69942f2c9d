"""XOR with every node written in this file (no separate EDF module)."""
import numpy as np


class Node:
    def __init__(self, inputs=()):
        self.inputs = list(inputs)
        self.outputs = []
        self.value = None
        self.gradients = {}
        for n in self.inputs:
            n.outputs.append(self)

    def grad_out(self):
        return sum(n.gradients[self] for n in self.outputs)


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients = {self: self.grad_out()}


class Parameter(Input):
    def __init__(self, value):
        super().__init__()
        self.value = value


class MatMul(Node):
    """x @ W, no bias (the bias is its own Addition node)"""

    def __init__(self, x, W):
        super().__init__([x, W])

    def forward(self):
        self.value = self.inputs[0].value @ self.inputs[1].value

    def backward(self):
        x, W = self.inputs
        g = self.grad_out()
        self.gradients = {x: g @ W.value.T, W: x.value.T @ g}


class Addition(Node):
    """z + b with b broadcast over the rows"""

    def __init__(self, z, b):
        super().__init__([z, b])

    def forward(self):
        self.value = self.inputs[0].value + self.inputs[1].value

    def backward(self):
        z, b = self.inputs
        g = self.grad_out()
        self.gradients = {z: g, b: g.sum(axis=0)}


class Tanh(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.tanh(self.inputs[0].value)

    def backward(self):
        self.gradients = {self.inputs[0]: self.grad_out() * (1 - self.value * self.value)}


class Sigmoid(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = 1 / (1 + np.exp(-self.inputs[0].value))

    def backward(self):
        self.gradients = {self.inputs[0]: self.grad_out() * self.value * (1 - self.value)}


class BCE(Node):
    def __init__(self, y, p):
        super().__init__([y, p])

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = np.sum(-y * np.log(p) - (1 - y) * np.log(1 - p))

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.gradients = {self.inputs[1]: (p - y) / (p * (1 - p)) / len(y),
                          self.inputs[0]: (np.log(1 - p) - np.log(p)) / len(y)}


def make_xor(n, rng):
    X = rng.uniform(-1, 1, (n, 2))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(float)[:, None]
    return X, y


def main():
    rng = np.random.default_rng(99)
    X, y = make_xor(300, rng)
    x_in, y_in = Input(), Input()
    W1, b1 = Parameter(rng.normal(0, 1, (2, 8))), Parameter(np.zeros(8))
    W2, b2 = Parameter(rng.normal(0, 1, (8, 1))), Parameter(np.zeros(1))
    h = Tanh(Addition(MatMul(x_in, W1), b1))
    p = Sigmoid(Addition(MatMul(h, W2), b2))
    loss = BCE(y_in, p)
    graph = [x_in, y_in, W1, b1, W2, b2]
    graph += [h.inputs[0].inputs[0], h.inputs[0], h, p.inputs[0].inputs[0], p.inputs[0], p, loss]
    params = [W1, b1, W2, b2]

    for epoch in range(300):
        total = 0.0
        for i in range(0, 300, 30):
            x_in.value, y_in.value = X[i:i + 30], y[i:i + 30]
            for n in graph:
                n.forward()
            for n in reversed(graph):
                n.backward()
            for prm in params:
                prm.value -= 1.0 * prm.gradients[prm]
            total += loss.value
        if epoch % 50 == 49:
            print(f"epoch {epoch + 1} loss {total / 300:.15g}")
    x_in.value = X
    for n in graph[:-1]:
        n.forward()
    print("accuracy", np.mean((p.value > 0.5) == y))
    print("b1", " ".join(f"{v:.15g}" for v in b1.value[:4]))


if __name__ == "__main__":
    main()
