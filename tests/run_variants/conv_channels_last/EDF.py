"""EDF with convolution: images are (batch, height, width, channels)."""
import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = inputs or []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for n in self.inputs:
            n.outputs.append(self)

    def forward(self):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError

    def upstream(self):
        g = 0
        for consumer in self.outputs:
            g = g + consumer.gradients[self]
        return g


class Input(Node):
    """placeholder for data: x.forward(batch) or x.value = batch"""

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients[self] = self.upstream()


class Parameter(Input):
    """trainable array; forward() keeps the current value"""

    def __init__(self, value):
        Input.__init__(self)
        self.value = value


class Linear(Node):
    def __init__(self, x, A, b):
        super().__init__([x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value + b.value

    def backward(self):
        x, A, b = self.inputs
        g = self.upstream()
        self.gradients[x] = g @ A.value.T
        self.gradients[A] = x.value.T @ g
        self.gradients[b] = g.sum(axis=0)


class ReLU(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.maximum(self.inputs[0].value, 0.0)

    def backward(self):
        self.gradients[self.inputs[0]] = self.upstream() * (self.inputs[0].value > 0)


class Conv(Node):
    """'same' convolution, stride 1: x (B, H, W, C_in), K (kh, kw, C_in, C_out), b (C_out,)"""

    def __init__(self, x, K, b):
        super().__init__([x, K, b])

    def forward(self):
        x, K, b = (n.value for n in self.inputs)
        kh, kw = K.shape[:2]
        B, H, W, _ = x.shape
        xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        out = np.zeros((B, H, W, K.shape[3]))
        for i in range(kh):
            for j in range(kw):
                out += xp[:, i:i + H, j:j + W, :] @ K[i, j]
        self.value = out + b

    def backward(self):
        x, K, b = self.inputs
        g = self.upstream()
        kh, kw = K.value.shape[:2]
        B, H, W, C = x.value.shape
        ph, pw = kh // 2, kw // 2
        xp = np.pad(x.value, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        dxp = np.zeros_like(xp)
        dK = np.zeros_like(K.value)
        g2 = g.reshape(-1, g.shape[3])
        for i in range(kh):
            for j in range(kw):
                dK[i, j] = xp[:, i:i + H, j:j + W, :].reshape(-1, C).T @ g2
                dxp[:, i:i + H, j:j + W, :] += g @ K.value[i, j].T
        self.gradients[x] = dxp[:, ph:ph + H, pw:pw + W, :]
        self.gradients[K] = dK
        self.gradients[b] = g.sum(axis=(0, 1, 2))


class MaxPooling(Node):
    """non-overlapping size x size max pooling over height and width"""

    def __init__(self, x, size=2):
        super().__init__([x])
        self.size = size

    def _windows(self, x):
        B, H, W, C = x.shape
        s = self.size
        w = x.reshape(B, H // s, s, W // s, s, C).transpose(0, 1, 3, 5, 2, 4)
        return w.reshape(B, H // s, W // s, C, s * s)

    def forward(self):
        win = self._windows(self.inputs[0].value)
        self.arg = win.argmax(axis=-1)  # first maximum on ties
        self.value = win.max(axis=-1)

    def backward(self):
        x = self.inputs[0].value
        B, H, W, C = x.shape
        s = self.size
        g = self.upstream()
        dwin = np.zeros(self.arg.shape + (s * s,))
        np.put_along_axis(dwin, self.arg[..., None], g[..., None], axis=-1)
        dx = dwin.reshape(B, H // s, W // s, C, s, s).transpose(0, 1, 4, 2, 5, 3).reshape(B, H, W, C)
        self.gradients[self.inputs[0]] = dx


class Flatten(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        x = self.inputs[0].value
        self.value = x.reshape(x.shape[0], -1)

    def backward(self):
        self.gradients[self.inputs[0]] = self.upstream().reshape(self.inputs[0].value.shape)


class Softmax(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        z = self.inputs[0].value
        e = np.exp(z - z.max(axis=1, keepdims=True))
        self.value = e / e.sum(axis=1, keepdims=True)

    def backward(self):
        g = self.upstream()
        s = self.value
        self.gradients[self.inputs[0]] = s * (g - np.sum(g * s, axis=1, keepdims=True))


class CE(Node):
    """mean over the batch of -sum(y log p)"""

    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])

    def forward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, None)
        self.value = -np.sum(y * np.log(p)) / y.shape[0]

    def backward(self):
        y = self.inputs[0].value
        p = np.clip(self.inputs[1].value, 1e-12, None)
        self.gradients[self.inputs[1]] = -y / p / y.shape[0]
        self.gradients[self.inputs[0]] = -np.log(p) / y.shape[0]


def topological_sort(end):
    order, done = [], set()

    def visit(n):
        if n in done:
            return
        done.add(n)
        for i in n.inputs:
            visit(i)
        order.append(n)

    visit(end)
    return order


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in graph[::-1]:
        n.backward()


def sgd_update(trainables, learning_rate=0.01):
    for t in trainables:
        t.value -= learning_rate * t.gradients[t]
