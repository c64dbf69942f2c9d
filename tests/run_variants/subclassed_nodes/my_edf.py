"""My additions on top of friend_edf: a transposed-weight layer, ReLU and a sigmoid that never overflows."""
import numpy as np

import friend_edf
from friend_edf import BCE, Input, Parameter  # noqa: F401  (re-exported for the script)


class TransposedLinear(friend_edf.Linear):
    """Same node, weights stored (n_out, n_in): x @ A.T + b."""

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value.T + b.value

    def backward(self):
        x, A, b = self.inputs
        g = self.grad_in()
        self.gradients[x] = g @ A.value
        self.gradients[A] = g.T @ x.value
        self.gradients[b] = g.sum(axis=0)


class ReLU(friend_edf.Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.where(self.inputs[0].value > 0, self.inputs[0].value, 0.0)

    def backward(self):
        self.gradients[self.inputs[0]] = np.where(self.inputs[0].value > 0, self.grad_in(), 0.0)


class SafeSigmoid(friend_edf.Sigmoid):
    """friend_edf's sigmoid with its input clipped to [-500, 500]; backward is inherited."""

    def forward(self):
        z = np.clip(self.inputs[0].value, -500, 500)
        self.value = 1.0 / (1.0 + np.exp(-z))


Linear = friend_edf.Linear
