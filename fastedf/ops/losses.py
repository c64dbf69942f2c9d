"""Losses: BCE, its kernels and compile rule."""
import math

import numpy as np

from ..config import kernel
from ..kernels import common_size
from ..node import Input, Node


# Predictions are clipped to [BCE_EPS, 1 - BCE_EPS] inside BCE so that the loss
# and its gradient stay finite when a sigmoid saturates to exactly 0 or 1.
BCE_EPS = 1e-12


@kernel
def bce_forward(y, p):
    """Mean binary cross-entropy -(y log p + (1 - y) log(1 - p)), p clipped to [eps, 1 - eps].

    Returns (loss, bad): bad is -1, or the first flat index whose label is
    outside [0, 1] or whose prediction is outside [0, 1] (NaN included); the
    loss is then NaN and the caller raises.
    """
    total = 0.0
    for i in range(common_size(p, y)):
        yi = y.flat[i]
        pi = p.flat[i]
        if not (0.0 <= yi <= 1.0 and 0.0 <= pi <= 1.0):
            return math.nan, i
        pc = min(max(pi, BCE_EPS), 1.0 - BCE_EPS)
        # 0 * log(.) adds an exact zero, so the common 0/1 labels skip one log.
        if yi == 1.0:
            total -= math.log(pc)
        elif yi == 0.0:
            total -= math.log(1.0 - pc)
        else:
            total -= yi * math.log(pc) + (1.0 - yi) * math.log(1.0 - pc)
    return total / p.size, -1


@kernel
def bce_backward(y, p, upstream, out):
    """out = upstream * (p - y) / (p (1 - p)) / N, the gradient of the mean BCE w.r.t. p (clipped)."""
    scale = upstream / p.size
    for i in range(min(common_size(p, y), common_size(p, out))):
        pc = min(max(p.flat[i], BCE_EPS), 1.0 - BCE_EPS)
        out.flat[i] = (pc - y.flat[i]) / (pc * (1.0 - pc)) * scale


@kernel
def sigmoid_bce_backward(y, p, upstream, out):
    """out = dBCE/dz for p = sigmoid(z): upstream * (p - y) / N, one step instead of two.

    Where the clip of BCE is active (p outside [eps, 1 - eps]) it is the chain
    rule through the clip, as bce_backward followed by sigmoid_backward gives.
    """
    scale = upstream / p.size
    for i in range(min(common_size(p, y), common_size(p, out))):
        pi = p.flat[i]
        if BCE_EPS <= pi <= 1.0 - BCE_EPS:
            out.flat[i] = (pi - y.flat[i]) * scale
        else:
            pc = min(max(pi, BCE_EPS), 1.0 - BCE_EPS)
            out.flat[i] = (pc - y.flat[i]) / (pc * (1.0 - pc)) * scale * pi * (1.0 - pi)


@kernel
def bce_label_grad(p, upstream, out):
    """out = upstream * (log(1 - p) - log(p)) / N, the gradient of the mean BCE w.r.t. the labels."""
    scale = upstream / p.size
    for i in range(common_size(p, out)):
        pc = min(max(p.flat[i], BCE_EPS), 1.0 - BCE_EPS)
        out.flat[i] = (math.log(1.0 - pc) - math.log(pc)) * scale



def _labels_fit(y_shape, p_shape):
    """Labels match predictions elementwise: equal shapes, or (B,) against (B, 1)."""
    return (y_shape == p_shape or (len(y_shape) == 1 and p_shape == (y_shape[0], 1))
            or (len(p_shape) == 1 and y_shape == (p_shape[0], 1)))


class BCE(Node):
    """Binary cross-entropy, the mean over all elements; finite when y_pred reaches 0 or 1."""

    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])
        self._dp = None
        self._upstream_kept = None
        if isinstance(y_true, Input):  # labels: their gradient is computed only when read
            self.gradients.defer(y_true, self._label_gradient)

    def forward(self):
        y, p = self._values()
        if not _labels_fit(y.shape, p.shape):
            raise ValueError(f"{self}: labels have shape {y.shape} but predictions have shape {p.shape}")
        loss, bad = bce_forward(y, p)
        if bad >= 0:
            yb, pb = y.ravel()[bad], p.ravel()[bad]
            what = f"label {yb} is outside [0, 1]" if not 0 <= yb <= 1 else f"prediction {pb} is outside [0, 1]"
            raise ValueError(f"{self}: at element {bad}, {what}")
        self.value = np.float64(loss)

    def backward(self):
        y_node, p_node = self.inputs
        y, p = self._values()
        if not _labels_fit(y.shape, p.shape):  # the values may have changed since forward
            raise ValueError(f"{self}: labels have shape {y.shape} but predictions have shape {p.shape}")
        upstream = 1.0 if not self.outputs else float(self.upstream_gradient())
        dp = self._dp
        if dp is None or dp.shape != p.shape:
            dp = self._dp = np.empty(p.shape)
        bce_backward(y, p, upstream, dp)
        self.gradients[p_node] = dp
        self._upstream_kept = upstream
        if not isinstance(y_node, Input):
            self.gradients[y_node] = self._label_gradient()

    def _label_gradient(self):
        if self._upstream_kept is None:
            raise KeyError(self.inputs[0])  # no backward yet
        y, p = self._values()  # read now, not kept: holding p would stop its reuse
        dy = np.empty(y.shape)
        bce_label_grad(p, self._upstream_kept, dy)
        return dy



def _bce(node, low):
    y, p = node.inputs
    if node is not low.graph[-1] or not isinstance(y, Input):
        return None, f"{node}: BCE compiles as the loss, with an Input as labels"
    forward = [f"loss, bad = bce_forward({low.value(y)}, {low.value(p)})",
               "if bad >= 0:",
               "    return epoch, start + bad, state"]
    backward = []
    if p in low.fused:
        (z,) = p.inputs
        if low.wants_grad[z]:
            backward = [f"sigmoid_bce_backward({low.value(y)}, {low.value(p)}, 1.0, {low.grad(z)})"]
    elif low.wants_grad[p]:
        backward = [f"bce_backward({low.value(y)}, {low.value(p)}, 1.0, {low.grad(p)})"]
    return (forward, backward), None


