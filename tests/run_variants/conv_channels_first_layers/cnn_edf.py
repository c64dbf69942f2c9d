# CNN nodes, PyTorch layout: images are (N, C, H, W), kernels (C_out, C_in, k, k).
import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = inputs if inputs else []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for i in self.inputs:
            i.outputs.append(self)

    def forward(self):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError


class Input(Node):
    def __init__(self):
        super().__init__()

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients[self] = sum(out.gradients[self] for out in self.outputs)


class Parameter(Node):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self):
        pass

    def backward(self):
        self.gradients[self] = sum(out.gradients[self] for out in self.outputs)


class Conv(Node):
    """Conv(x, C_in, C_out, kernel, stride=1, padding=1): a conv layer that makes its own kernels and bias."""

    def __init__(self, x, C_in, C_out, kernel, stride=1, padding=1):
        self.stride, self.padding = stride, padding
        fan_in = C_in * kernel * kernel
        self.kernels = Parameter(np.random.randn(C_out, C_in, kernel, kernel) * np.sqrt(2.0 / fan_in))
        self.bias = Parameter(np.zeros(C_out))
        super().__init__([x, self.kernels, self.bias])

    def _padded(self, x):
        p = self.padding
        return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="constant")

    def forward(self):
        x = self._padded(self.inputs[0].value)
        K = self.kernels.value
        N, C, Hp, Wp = x.shape
        k, s = K.shape[2], self.stride
        Ho, Wo = (Hp - k) // s + 1, (Wp - k) // s + 1
        out = np.zeros((N, K.shape[0], Ho, Wo))
        for i in range(k):
            for j in range(k):
                patch = x[:, :, i:i + s * Ho:s, j:j + s * Wo:s]       # (N, C, Ho, Wo)
                out += np.einsum("nchw,oc->nohw", patch, K[:, :, i, j])
        self.value = out + self.bias.value[None, :, None, None]

    def backward(self):
        x_node = self.inputs[0]
        x = self._padded(x_node.value)
        K = self.kernels.value
        g = sum(out.gradients[self] for out in self.outputs)      # (N, C_out, Ho, Wo)
        k, s, p = K.shape[2], self.stride, self.padding
        Ho, Wo = g.shape[2], g.shape[3]
        dx = np.zeros_like(x)
        dK = np.zeros_like(K)
        for i in range(k):
            for j in range(k):
                patch = x[:, :, i:i + s * Ho:s, j:j + s * Wo:s]
                dK[:, :, i, j] = np.einsum("nohw,nchw->oc", g, patch)
                dx[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += np.einsum("nohw,oc->nchw", g, K[:, :, i, j])
        H, W = x_node.value.shape[2], x_node.value.shape[3]
        self.gradients[x_node] = dx[:, :, p:p + H, p:p + W]
        self.gradients[self.kernels] = dK
        self.gradients[self.bias] = g.sum(axis=(0, 2, 3))


class MaxPooling(Node):
    def __init__(self, x, pool_size=2):
        super().__init__([x])
        self.pool_size = pool_size

    def forward(self):
        x = self.inputs[0].value
        N, C, H, W = x.shape
        s = self.pool_size
        windows = x.reshape(N, C, H // s, s, W // s, s).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H // s, W // s, s * s)
        self.which = np.argmax(windows, axis=4)
        self.value = np.max(windows, axis=4)

    def backward(self):
        N, C, H, W = self.inputs[0].value.shape
        s = self.pool_size
        g = sum(out.gradients[self] for out in self.outputs)
        onehot = (np.arange(s * s) == self.which[..., None]) * g[..., None]
        dx = onehot.reshape(N, C, H // s, W // s, s, s).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H, W)
        self.gradients[self.inputs[0]] = dx


class ReLU(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = self.inputs[0].value * (self.inputs[0].value > 0)

    def backward(self):
        g = sum(out.gradients[self] for out in self.outputs)
        self.gradients[self.inputs[0]] = g * (self.inputs[0].value > 0)


class Flatten(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = self.inputs[0].value.reshape(len(self.inputs[0].value), -1)

    def backward(self):
        g = sum(out.gradients[self] for out in self.outputs)
        self.gradients[self.inputs[0]] = g.reshape(self.inputs[0].value.shape)


class Linear(Node):
    def __init__(self, x, A, b):
        super().__init__([x, A, b])

    def forward(self):
        self.value = self.inputs[0].value @ self.inputs[1].value + self.inputs[2].value

    def backward(self):
        x, A, b = self.inputs
        g = sum(out.gradients[self] for out in self.outputs)
        self.gradients[x] = g @ A.value.T
        self.gradients[A] = x.value.T @ g
        self.gradients[b] = g.sum(axis=0)


class Softmax(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        z = self.inputs[0].value
        z = np.exp(z - np.max(z, axis=-1, keepdims=True))
        self.value = z / np.sum(z, axis=-1, keepdims=True)

    def backward(self):
        g = sum(out.gradients[self] for out in self.outputs)
        dot = np.sum(g * self.value, axis=-1, keepdims=True)
        self.gradients[self.inputs[0]] = self.value * (g - dot)


class CrossEntropy(Node):
    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])

    def forward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        self.value = np.mean(-np.sum(y * np.log(p), axis=1))

    def backward(self):
        y, p = self.inputs[0].value, self.inputs[1].value
        n = y.shape[0]
        self.gradients[self.inputs[1]] = -(y / p) / n
        self.gradients[self.inputs[0]] = -np.log(p) / n
