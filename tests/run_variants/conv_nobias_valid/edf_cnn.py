"""Nodes for assignment 4 (channels last: (batch, rows, cols, channels)).
Conv has no bias and no padding ('valid'), stride 1."""
import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = inputs or []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for inp in self.inputs:
            inp.outputs.append(self)

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
            self.gradients[self] = self.gradients[self] + n.gradients[self]


class Parameter(Input):
    def __init__(self, value):
        Input.__init__(self)
        self.value = value


class Conv(Node):
    def __init__(self, x, K):
        Node.__init__(self, [x, K])

    def forward(self):
        x, K = self.inputs[0].value, self.inputs[1].value
        kh, kw, _, c_out = K.shape
        n, h, w, _ = x.shape
        oh, ow = h - kh + 1, w - kw + 1
        self.value = np.zeros((n, oh, ow, c_out))
        for r in range(kh):
            for c in range(kw):
                self.value += np.tensordot(x[:, r:r + oh, c:c + ow, :], K[r, c], axes=([3], [0]))

    def backward(self):
        x, K = self.inputs
        grad = self.outputs[0].gradients[self]
        kh, kw = K.value.shape[:2]
        oh, ow = grad.shape[1:3]
        dx = np.zeros(x.value.shape)
        dK = np.zeros(K.value.shape)
        for r in range(kh):
            for c in range(kw):
                dK[r, c] = np.tensordot(x.value[:, r:r + oh, c:c + ow, :], grad, axes=([0, 1, 2], [0, 1, 2]))
                dx[:, r:r + oh, c:c + ow, :] += np.tensordot(grad, K.value[r, c], axes=([3], [1]))
        self.gradients[x] = dx
        self.gradients[K] = dK


class ReLU(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = np.maximum(self.inputs[0].value, 0)

    def backward(self):
        # slope 1 at exactly 0, otherwise zero-initialised kernels never start learning
        slope = (self.inputs[0].value >= 0).astype(float)
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * slope


class MaxPooling(Node):
    def __init__(self, x, size=2):
        Node.__init__(self, [x])
        self.size = size

    def forward(self):
        x = self.inputs[0].value
        n, h, w, ch = x.shape
        k = self.size
        self.value = np.zeros((n, h // k, w // k, ch))
        self.pick = np.zeros((n, h // k, w // k, ch), dtype=int)
        for i in range(h // k):
            for j in range(w // k):
                block = x[:, i * k:(i + 1) * k, j * k:(j + 1) * k, :].reshape(n, k * k, ch)
                self.pick[:, i, j, :] = np.argmax(block, axis=1)
                self.value[:, i, j, :] = np.max(block, axis=1)

    def backward(self):
        x = self.inputs[0].value
        grad = self.outputs[0].gradients[self]
        k = self.size
        dx = np.zeros(x.shape)
        n, oh, ow, ch = grad.shape
        rows, chans = np.arange(n)[:, None], np.arange(ch)[None, :]
        for i in range(oh):
            for j in range(ow):
                pick = self.pick[:, i, j, :]
                dx[rows, i * k + pick // k, j * k + pick % k, chans] = grad[:, i, j, :]
        self.gradients[self.inputs[0]] = dx


class Flatten(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        self.value = self.inputs[0].value.reshape(self.inputs[0].value.shape[0], -1)

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self].reshape(self.inputs[0].value.shape)


class Linear(Node):
    def __init__(self, x, A, b):
        Node.__init__(self, [x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = np.dot(x.value, A.value) + b.value

    def backward(self):
        x, A, b = self.inputs
        grad = self.outputs[0].gradients[self]
        self.gradients[x] = np.dot(grad, A.value.T)
        self.gradients[A] = np.dot(x.value.T, grad)
        self.gradients[b] = np.sum(grad, axis=0)


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
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    def backward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / y.shape[0]
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / y.shape[0]
