"""Losses: BCE (a sum over the batch) and CE (a mean over rows), their kernels and compile rules.

The course's conventions (docs/conventions.md): BCE's value is the sum over all
elements, CE's the mean over rows of -sum_k y_k log p_k; both gradients are
divided by the rows, so `t.value -= lr * t.gradients[t]` is mean-gradient SGD
at every batch size.  An empty batch has loss 0.0 and zero gradients.
Labels with other rows that broadcast (stale labels during evaluation)
take a plain NumPy path with NumPy's answer; labels with other columns
(class indices against one-hot predictions) are refused.

In a compiled program a Sigmoid feeding only BCE, or a Softmax feeding only
CE, is computed by the loss itself from the logits in one pass
(sigmoid_bce, softmax_ce): the same formulas as the node-by-node chain rule,
(p - y) / rows where nothing is clipped.
"""
import math

import numpy as np

from ..config import helper, kernel, numpy_twin
from ..kernels import common_size, common_size3
from .. import fused
from ..node import Input, Node, _kept_copy, _sum_to
from ..vexp import exp, log
from .activations import Sigmoid, Softmax, row_max, sigmoid
from .linear import KEEP_YOURS


# Predictions are clipped to [BCE_EPS, 1 - BCE_EPS] inside BCE so that the loss
# and its gradient stay finite when a sigmoid saturates to exactly 0 or 1.
BCE_EPS = 1e-12


@helper
def bce_term(y, pc):
    """-(y log pc + (1 - y) log(1 - pc)) for a clipped prediction pc.

    0 * log(.) adds an exact zero, so the common 0/1 labels skip one log.
    libm's log: fastedf.vexp's is faster per element in a vector loop but
    longer in latency, which at batch size 1 lies on each step's critical
    path (with an ad hoc variant that used it, not kept, the study's fit at
    B = 1 took 4.5-5.7x the hand-written loop's time in bench_fit.py, 3.6-3.8x
    without, a few runs each).
    """
    if y == 1.0:
        return -math.log(pc)
    if y == 0.0:
        return -math.log(1.0 - pc)
    return -(y * math.log(pc) + (1.0 - y) * math.log(1.0 - pc))


@helper
def sigmoid_bce_grad(p, y, scale):
    """dBCE/dz for p = sigmoid(z): scale * (p - y), or the chain rule through BCE's clip where it is active."""
    pc = min(max(p, BCE_EPS), 1.0 - BCE_EPS)
    if pc == p:  # a branch, not a select: one step's division would lie on the batch-of-one critical path
        return (p - y) * scale
    return (pc - y) / (pc * (1.0 - pc)) * scale * p * (1.0 - p)


@helper
def first_bad(y, p, size):
    """-1, or the first flat index below `size` whose label or prediction is outside [0, 1] (NaN included).

    One vectorisable pass that looks at everything, then a scalar search only when something is wrong:
    an early return inside the loop kept LLVM from vectorising it.
    """
    ok = True
    for i in range(size):
        yi, pi = y.flat[i], p.flat[i]
        ok &= (0.0 <= yi) & (yi <= 1.0) & (0.0 <= pi) & (pi <= 1.0)
    if ok:
        return -1
    for i in range(size):
        if not (0.0 <= y.flat[i] <= 1.0 and 0.0 <= p.flat[i] <= 1.0):
            return i
    return -1


def checked_pairs(y, p):
    """(labels, predictions) as lists of floats, or (None, bad) where first_bad finds a bad element: for the
    twins' Python loops over at most SCALAR_SIZE elements."""
    if p.size != y.size:
        raise ValueError("fastedf kernel: arrays of different sizes")
    ys, ps = y.ravel().tolist(), p.ravel().tolist()
    for i, (yi, pi) in enumerate(zip(ys, ps)):
        if not (0.0 <= yi <= 1.0 and 0.0 <= pi <= 1.0):
            return None, i
    return ys, ps


def first_bad_numpy(y, p):
    """first_bad's answer for y and p of one size, flattened, in NumPy calls: y and p, one after the other, in
    [0, 1] (NaN is in neither bound), and only then a search for the element that is not."""
    if p.size != y.size:
        raise ValueError("fastedf kernel: arrays of different sizes")
    y, p = y.reshape(-1), p.reshape(-1)
    both = np.concatenate((y, p))
    if 0.0 <= np.minimum.reduce(both, initial=0.0) and np.maximum.reduce(both, initial=1.0) <= 1.0:
        return -1
    ok = (0.0 <= y) & (y <= 1.0) & (0.0 <= p) & (p <= 1.0)
    return int(ok.argmin())


@helper
def hard_labels(y, size):
    """True when the first `size` labels are all exactly 0 or 1 (one vectorisable pass)."""
    hard = True
    for i in range(size):
        hard &= (y.flat[i] == 0.0) | (y.flat[i] == 1.0)
    return hard


@kernel
def bce_forward(y, p):
    """Summed binary cross-entropy -(y log p + (1 - y) log(1 - p)), p clipped to [eps, 1 - eps].

    Returns (loss, bad): bad is -1, or the first flat index whose label is
    outside [0, 1] or whose prediction is outside [0, 1] (NaN included); the
    loss is then NaN and the caller raises.
    """
    size = common_size(p, y)
    bad = first_bad(y, p, size)
    if bad >= 0:
        return math.nan, bad
    total = 0.0
    for i in range(size):
        total += bce_term(y.flat[i], min(max(p.flat[i], BCE_EPS), 1.0 - BCE_EPS))
    return total, -1


# Twins loop over at most this many elements in Python: a NumPy call costs 0.4-1 us even on one element, Python's
# float arithmetic ~0.05 us an operation (BCE's forward on 8 elements: 2.6 us in the loop, 8.6 in NumPy calls)
SCALAR_SIZE = 8


@numpy_twin(bce_forward)
def bce_forward_numpy(y, p):
    if p.size <= SCALAR_SIZE:  # the kernel's own loop, bce_term and all
        ys, ps = checked_pairs(y, p)
        if ys is None:
            return math.nan, ps
        total = 0.0
        for yi, pi in zip(ys, ps):
            total += bce_term.py_func(yi, min(max(pi, BCE_EPS), 1.0 - BCE_EPS))
        return total, -1
    bad = first_bad_numpy(y, p)
    if bad >= 0:
        return math.nan, bad
    y, pc = y.reshape(-1), np.minimum(np.maximum(p.reshape(-1), BCE_EPS), 1.0 - BCE_EPS)
    # y log pc + (1 - y) log(1 - pc) is bce_term's one log, exactly, for a label of 0 or 1
    return -float(np.dot(y, np.log(pc)) + np.dot(1.0 - y, np.log(1.0 - pc))), -1


@kernel
def bce_backward(y, p, scale, out):
    """out = scale * (p - y) / (p (1 - p)), p clipped; scale = upstream / rows."""
    for i in range(common_size3(p, y, out)):
        pc = min(max(p.flat[i], BCE_EPS), 1.0 - BCE_EPS)
        out.flat[i] = (pc - y.flat[i]) / (pc * (1.0 - pc)) * scale


@numpy_twin(bce_backward)
def bce_backward_numpy(y, p, scale, out):
    if out.size == 1 and p.size == y.size == 1:  # one sample: Python's float arithmetic
        pc = min(max(p.item(), BCE_EPS), 1.0 - BCE_EPS)
        out.flat[0] = (pc - y.item()) / (pc * (1.0 - pc)) * scale
        return
    pc = np.minimum(np.maximum(p.reshape(out.shape), BCE_EPS), 1.0 - BCE_EPS)
    np.subtract(pc, y.reshape(out.shape), out=out)
    out /= pc * (1.0 - pc)
    out *= scale


@kernel
def sigmoid_bce_backward(y, p, scale, out):
    """out = dBCE/dz for p = sigmoid(z): scale * (p - y), one step instead of two.

    Where the clip of BCE is active (p outside [eps, 1 - eps]) it is the chain
    rule through the clip, as bce_backward followed by sigmoid_backward gives.
    """
    for i in range(common_size3(p, y, out)):
        out.flat[i] = sigmoid_bce_grad(p.flat[i], y.flat[i], scale)


@kernel
def bce_label_grad(p, scale, out):
    """out = scale * (log(1 - p) - log(p)), the gradient of BCE w.r.t. the labels; scale = upstream / rows."""
    for i in range(common_size(p, out)):
        pc = min(max(p.flat[i], BCE_EPS), 1.0 - BCE_EPS)
        out.flat[i] = (math.log(1.0 - pc) - math.log(pc)) * scale


@numpy_twin(bce_label_grad)
def bce_label_grad_numpy(p, scale, out):
    pc = np.minimum(np.maximum(p.reshape(out.shape), BCE_EPS), 1.0 - BCE_EPS)
    np.log(1.0 - pc, out=out)
    out -= np.log(pc)
    out *= scale


@kernel
def sigmoid_bce(z, y, out, want_grad):
    """BCE of p = sigmoid(z) summed, and out = dBCE/dz (when want_grad) for rows = z.shape[0].

    The same arithmetic as sigmoid_forward, bce_forward and sigmoid_bce_backward
    in turn.  With want_grad, 16 elements or more and labels all 0 or 1: in
    vectorised passes over out (p, the check, each element's loss term with
    fastedf.vexp's log, within 1 ulp of bce_term's, summed in order afterwards,
    then the gradient from p computed again, cheaper than a buffer for it).
    Otherwise one scalar pass.  Without want_grad, out is not touched.
    Returns (loss, bad) as bce_forward does.
    """
    scale = 1.0 / max(z.shape[0], 1)
    size = common_size3(z, y, out)
    if not want_grad or size < 16 or not hard_labels(y, size):  # a row or two, or soft labels
        total = 0.0
        for i in range(size):
            pi, yi = sigmoid(z.flat[i]), y.flat[i]
            if not (0.0 <= yi <= 1.0 and 0.0 <= pi <= 1.0):
                return math.nan, i
            pc = min(max(pi, BCE_EPS), 1.0 - BCE_EPS)
            total += bce_term(yi, pc)
            if want_grad:
                out.flat[i] = sigmoid_bce_grad(pi, yi, scale)
        return total, -1
    for i in range(size):
        out.flat[i] = sigmoid(z.flat[i])
    bad = first_bad(y, out, size)
    if bad >= 0:
        return math.nan, bad
    for i in range(size):  # bce_term for a 0/1 label: one log, of pc or of 1 - pc
        pc = min(max(out.flat[i], BCE_EPS), 1.0 - BCE_EPS)
        out.flat[i] = -log(pc if y.flat[i] == 1.0 else 1.0 - pc)
    total = 0.0
    for i in range(size):
        total += out.flat[i]
    for i in range(size):
        out.flat[i] = sigmoid_bce_grad(sigmoid(z.flat[i]), y.flat[i], scale)
    return total, -1


@kernel
def ce_forward(y, p):
    """CE summed over rows, -sum y log max(p, eps), for (rows, k) arrays; returns (sum, bad).

    bad is -1, or the first flat index whose label is outside [0, 1] or whose
    prediction is outside [0, 1] (NaN included).  The caller divides by rows.
    """
    total = 0.0
    for i in range(common_size(p, y)):
        yi = y.flat[i]
        pi = p.flat[i]
        if not (0.0 <= yi <= 1.0 and 0.0 <= pi <= 1.0):
            return math.nan, i
        if yi != 0.0:  # 0 * log(.) adds an exact zero
            total -= yi * math.log(max(pi, BCE_EPS))
    return total, -1


@numpy_twin(ce_forward)
def ce_forward_numpy(y, p):
    if p.size <= SCALAR_SIZE:  # the kernel's own loop
        ys, ps = checked_pairs(y, p)
        if ys is None:
            return math.nan, ps
        total = 0.0
        for yi, pi in zip(ys, ps):
            if yi != 0.0:
                total -= yi * math.log(max(pi, BCE_EPS))
        return total, -1
    bad = first_bad_numpy(y, p)
    if bad >= 0:
        return math.nan, bad
    return -float(np.dot(y.reshape(-1), np.log(np.maximum(p.reshape(-1), BCE_EPS)))), -1


@kernel
def ce_backward(y, p, scale, out):
    """out = -scale * y / max(p, eps); scale = upstream / rows."""
    for i in range(common_size3(p, y, out)):
        out.flat[i] = -scale * y.flat[i] / max(p.flat[i], BCE_EPS)


@numpy_twin(ce_backward)
def ce_backward_numpy(y, p, scale, out):
    np.multiply(y.reshape(out.shape), -scale, out=out)
    out /= np.maximum(p.reshape(out.shape), BCE_EPS)


@kernel
def ce_label_grad(p, scale, out):
    """out = -scale * log max(p, eps), the gradient of CE w.r.t. the labels."""
    for i in range(common_size(p, out)):
        out.flat[i] = -scale * math.log(max(p.flat[i], BCE_EPS))


@numpy_twin(ce_label_grad)
def ce_label_grad_numpy(p, scale, out):
    np.log(np.maximum(p.reshape(out.shape), BCE_EPS), out=out)
    out *= -scale


@kernel
def softmax_ce(z, y, out, want_grad):
    """CE of p = softmax(z) row-wise, summed over rows, and out = dCE/dz (when want_grad): one pass per row.

    The arithmetic of softmax_forward, ce_forward, ce_backward and
    softmax_backward in turn, so both engines agree to the last bit; without
    the clip it equals (p - y) / rows for one-hot y.  The simplified form
    drifted 3e-11 from the node-by-node path over 5,000 steps, more than the
    engines may differ.
    """
    rows, k = z.shape
    if y.shape[0] != rows or y.shape[1] != k or out.shape[0] != rows or out.shape[1] != k:
        raise ValueError("fastedf kernel: arrays of different shapes")
    total = 0.0
    scale = 1.0 / max(rows, 1)
    for r in range(rows):
        top = row_max(z, r)
        norm = 0.0
        if want_grad:  # the exps into out first, a loop that vectorises, as softmax_forward does
            for j in range(k):
                out[r, j] = exp(z[r, j] - top)
            for j in range(k):
                norm += out[r, j]
        else:
            for j in range(k):
                norm += exp(z[r, j] - top)
        dot = 0.0
        for j in range(k):
            pj = (out[r, j] if want_grad else exp(z[r, j] - top)) / norm
            yj = y[r, j]
            if not (0.0 <= yj <= 1.0 and 0.0 <= pj <= 1.0):
                return math.nan, r * k + j
            if yj != 0.0:
                total -= yj * math.log(max(pj, BCE_EPS))
            if want_grad:
                g = -scale * yj / max(pj, BCE_EPS)
                dot += g * pj
                out[r, j] = pj
        if want_grad:
            for j in range(k):
                pj = out[r, j]
                out[r, j] = pj * (-scale * y[r, j] / max(pj, BCE_EPS) - dot)
    return total, -1


def _labels_fit(y_shape, p_shape):
    """Labels match predictions elementwise: equal shapes, or (B,) against (B, 1)."""
    return (y_shape == p_shape or (len(y_shape) == 1 and p_shape == (y_shape[0], 1))
            or (len(p_shape) == 1 and y_shape == (p_shape[0], 1)))


def _label_columns_problem(y_shape, p_shape):
    """Why labels of y_shape cannot be the labels of predictions p_shape (B, k) column by column, or "".

    Rows may differ and broadcast (stale labels at evaluation); columns may not, as class indices against
    one-hot predictions would broadcast into a silently wrong loss.  1-D labels are a column when k is 1, else
    one sample's one-hot row (k,), which (k, k) predictions make indistinguishable from k class indices.
    """
    if len(p_shape) < 2 or _labels_fit(y_shape, p_shape):
        return ""
    k = p_shape[-1]
    if len(y_shape) >= 2:
        return "" if y_shape[-1] == k else f"label columns {y_shape[-1]} != prediction columns {k}"
    if k == 1:
        return ""
    if len(y_shape) == 0 or y_shape[0] != k:
        return f"one label per row for {k} prediction columns (class indices?)"
    if p_shape[0] == k:
        return f"1-D labels that may be one one-hot row or {k} class indices"
    return ""


def _rows(shape):
    return shape[0] if shape else 1


class Loss(Node):
    """loss(y_true, y_pred): labels first, as in the course.  Subclasses name their kernels.

    `reduction` says how the value relates to the per-sample losses: "sum"
    (BCE) or "mean" over rows (CE); fit uses it to report per-sample means.
    """

    reduction = None
    forward_kernel = backward_kernel = label_kernel = None
    fused_kernel = fused_with = None  # a kernel computing loss and dL/dz from the logits of a fused_with node

    def __init__(self, y_true, y_pred):
        super().__init__([y_true, y_pred])
        self._dp = self._p_kept = self._y_kept = self._upstream_kept = None
        if isinstance(y_true, Input):  # labels: their gradient is computed only when read
            self.gradients.defer(y_true, self._label_gradient)

    def _checked_values(self):
        """(y, p, elementwise): elementwise False when the shapes differ but broadcast (the NumPy path).

        Rows may differ (stale labels at evaluation); columns may not: labels of another width that broadcast
        (class indices against one-hot predictions) would be a silently wrong loss.
        """
        y, p = self._values()
        if _labels_fit(y.shape, p.shape) or y.size == p.size == 1:  # or a number, the label of one prediction
            return y, p, True
        problem = _label_columns_problem(y.shape, p.shape)
        if problem:
            raise ValueError(self._labels_error(y.shape, p.shape, problem))
        try:
            np.broadcast_shapes(y.shape, p.shape)
        except ValueError:
            raise ValueError(self._labels_error(y.shape, p.shape, "shapes that do not broadcast")) from None
        return y, p, False

    def _labels_error(self, y_shape, p_shape, problem):
        return (f"{self}: labels have shape {y_shape} but predictions have shape {p_shape}, {problem}; "
                f"{self.labels_rule}; {KEEP_YOURS}")

    def forward(self):
        fused.watch(self)  # the course loop's steps: fused once they repay a program
        y, p, elementwise = self._checked_values()
        if elementwise:
            total, bad = self.forward_kernel(y, p)
            if bad >= 0:
                self._refuse(y.ravel()[bad], p.ravel()[bad], bad)
        else:
            yb, pb = np.broadcast_arrays(y, p)
            bad = np.flatnonzero(~((0 <= yb) & (yb <= 1) & (0 <= pb) & (pb <= 1)))
            if len(bad):
                self._refuse(yb.flat[bad[0]], pb.flat[bad[0]], bad[0])
            total = float(np.sum(self.numpy_terms(yb, pb)))
        self.value = np.float64(total if self.reduction == "sum" else total / max(_rows(p.shape), 1))

    def _refuse(self, label, prediction, at):
        what = (f"label {label} is outside [0, 1]" if not 0 <= label <= 1
                else f"prediction {prediction} is outside [0, 1]")
        raise ValueError(f"{self}: at element {at}, {what}")

    def backward(self):
        y_node, p_node = self.inputs
        y, p, elementwise = self._checked_values()  # the values may have changed since forward
        upstream = 1.0 if not self.outputs else float(self.upstream_gradient())
        scale = upstream / max(_rows(p.shape), 1)
        if elementwise:
            dp = self._dp
            if dp is None or dp.shape != p.shape:
                dp = self._dp = np.empty(p.shape)
            self.backward_kernel(y, p, scale, dp)
        else:
            dp = _sum_to_shape(self.numpy_grad(*np.broadcast_arrays(y, p)) * scale, p.shape)
        self.gradients[p_node] = dp
        if not isinstance(y_node, Input):
            self._keep(y, p, elementwise, scale)
            self.gradients[y_node] = self._label_gradient()
        elif self.keeps_deferred:
            self._keep(y, p, elementwise, scale)
        else:
            self._upstream_kept = None  # nothing kept: no stale label gradient can be read

    def _keep(self, y, p, elementwise, scale):
        """What the labels' gradient needs, as of this step: a read after later forwards still gets it.

        p is copied (holding it would stop its node reusing the buffer); y is the script's own array.
        """
        self._p_kept = _kept_copy(self._p_kept, p)
        self._y_kept, self._elementwise_kept, self._upstream_kept = y, elementwise, scale

    def _label_gradient(self):
        if self._upstream_kept is None:
            raise KeyError(self.inputs[0])  # no backward yet, or one that kept nothing (fit)
        y, p, elementwise = self._y_kept, self._p_kept, self._elementwise_kept
        if not elementwise:
            return _sum_to_shape(self.numpy_label_grad(np.broadcast_to(p, np.broadcast_shapes(y.shape, p.shape)))
                                 * self._upstream_kept, y.shape)
        dy = np.empty(y.shape)
        self.label_kernel(p, self._upstream_kept, dy)
        return dy

    def lower(self, low):
        """Compile rule: as the graph's loss with Input labels; `loss_sum` is the batch's summed loss."""
        y, p = self.inputs
        if self is not low.graph[-1] or not isinstance(y, Input):
            raise low.Unsupported(f"{self}: {type(self).__name__} compiles as the loss, with an Input as labels")
        if p in low.fused:
            (z,) = p.inputs
            grad = low.grad(z) if low.wants_grad[z] else low.value(z)  # untouched when want_grad is False
            call = f"{_name(self.fused_kernel)}({low.value(z)}, {low.value(y)}, {grad}, {low.wants_grad[z]})"
            forward, backward = [f"loss_sum, bad = {call}"], []
        else:
            forward = [f"loss_sum, bad = {_name(self.forward_kernel)}({low.value(y)}, {low.value(p)})"]
            backward = []
            if low.wants_grad[p]:
                backward = [f"{_name(self.backward_kernel)}({low.value(y)}, {low.value(p)}, 1.0 / n, {low.grad(p)})"]
        forward += ["if bad >= 0:", f"    return epoch, start, state, lo + bad // max(1, {low.value(y)}.shape[1])"]
        return forward, backward


def _name(dispatcher):
    return dispatcher.py_func.__name__


def _sum_to_shape(grad, shape):
    return np.array(_sum_to(grad, shape), order="C")  # not ascontiguousarray: it makes a 0-d label 1-d


class BCE(Loss):
    """Binary cross-entropy, summed over all elements (the course's module); finite when y_pred reaches 0 or 1.

    value = -sum(y log p + (1 - y) log(1 - p)), p clipped to [1e-12, 1 - 1e-12];
    dvalue/dp = (p - y) / (p (1 - p)) / rows: the gradient of the mean over rows.
    """

    reduction = "sum"
    labels_rule = ("BCE(y, p) takes labels of the predictions' shape, rows as samples: (B, 1) or (B,) for one "
                   "output, (B, k) for k outputs")
    forward_kernel, backward_kernel = staticmethod(bce_forward), staticmethod(bce_backward)
    label_kernel = staticmethod(bce_label_grad)
    fused_kernel, fused_with = staticmethod(sigmoid_bce), Sigmoid

    @staticmethod
    def numpy_terms(y, p):
        pc = np.clip(p, BCE_EPS, 1 - BCE_EPS)
        return -(y * np.log(pc) + (1 - y) * np.log(1 - pc))

    @staticmethod
    def numpy_grad(y, p):
        pc = np.clip(p, BCE_EPS, 1 - BCE_EPS)
        return (pc - y) / (pc * (1 - pc))

    @staticmethod
    def numpy_label_grad(p):
        pc = np.clip(p, BCE_EPS, 1 - BCE_EPS)
        return np.log(1 - pc) - np.log(pc)


class CE(Loss):
    """Cross-entropy of one-hot labels y (B, k) and probabilities p (B, k), the mean over rows.

    value = -sum(y log p) / rows, p clipped below at 1e-12; dvalue/dp = -y / p / rows.
    """

    reduction = "mean"
    labels_rule = ("CE(y, p) takes one-hot labels of the predictions' shape (B, classes), rows as samples; "
                   "make them from class indices with model.labels(y) (a fastedf.models model) or "
                   "np.eye(classes)[y.astype(int).ravel()]")
    forward_kernel, backward_kernel = staticmethod(ce_forward), staticmethod(ce_backward)
    label_kernel = staticmethod(ce_label_grad)
    fused_kernel, fused_with = staticmethod(softmax_ce), Softmax

    @staticmethod
    def numpy_terms(y, p):
        return -y * np.log(np.maximum(p, BCE_EPS))

    @staticmethod
    def numpy_grad(y, p):
        return -y / np.maximum(p, BCE_EPS)

    @staticmethod
    def numpy_label_grad(p):
        return -np.log(np.maximum(p, BCE_EPS))


# What fastedf.ops collects from this module (its docstring says what each is)
NODES = (BCE, CE)
ALIASES = {"CrossEntropy": CE, "Cross_Entropy": CE, "CrossEntropyLoss": CE}
ORDER = 3
