import numpy as np


class Node:
    def __init__(self, inputs=[]):
        self.inputs = inputs
        self.outputs = []
        self.value = None
        self.gradients = {}
        for n in inputs:
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
    # params = [W, b], W (n_in, n_out), b (n_out,)
    def __init__(self, x, params):
        Node.__init__(self, [x] + list(params))

    def forward(self):
        x, W, b = self.inputs
        self.value = np.matmul(x.value, W.value) + b.value

    def backward(self):
        x, W, b = self.inputs
        grad = self.outputs[0].gradients[self]
        self.gradients[x] = np.matmul(grad, W.value.T)
        self.gradients[W] = np.matmul(x.value.T, grad)
        self.gradients[b] = np.sum(grad, axis=0)


class LeakyReLU(Node):
    def __init__(self, x, alpha=0.01):
        Node.__init__(self, [x])
        self.alpha = alpha

    def forward(self):
        x = self.inputs[0].value
        self.value = np.where(x > 0, x, self.alpha * x)

    def backward(self):
        x = self.inputs[0].value
        grad = self.outputs[0].gradients[self]
        self.gradients[self.inputs[0]] = grad * np.where(x > 0, 1.0, self.alpha)


class Softmax(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        e = np.exp(self.inputs[0].value)
        self.value = e / np.sum(e, axis=1, keepdims=True)

    def backward(self):
        # CE already gave the gradient w.r.t. the logits, just pass it on
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self]


class CE(Node):
    def __init__(self, y_true, y_pred):
        Node.__init__(self, [y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        self.value = -np.sum(y * np.log(p)) / y.shape[0]

    def backward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        # softmax + cross-entropy together: dL/dz = (p - y) / batch
        self.gradients[self.inputs[1]] = (p - y) / y.shape[0]
        self.gradients[self.inputs[0]] = -np.log(p) / y.shape[0]
