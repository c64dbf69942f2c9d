"""fastedf's implementations of each operation under every convention it knows: the candidates.

A candidate computes a node's value from its inputs' values, `forward(vals)`,
and the gradients for the inputs the user's code writes, `backward(vals,
value, g, want)` -> {input index: gradient}; g is the upstream gradient (None
for a loss, which reads none).  It never writes to a node or to an input's
array.  Its `conventions` name what it assumed; `describe()` says it in the
words --explain uses.  fastedf's kernels compute where the arrays fit them
(float64, the kernel's layout); NumPy does the transposes and reshapes around
them, and the forms no kernel covers.

A candidate computes with NumPy while the conventions are being searched
(loading a kernel from Numba's cache costs ~0.06 s, and most candidates are
dropped at their first call); the one that matched switches to fastedf's
kernels (`use_kernels`), and that path is verified again on real calls and
probes before any call is accelerated.

Each family also makes the edge probes for a node (`probes(vals)`): input
values that tell its conventions apart where the script's own values may not
(saturation, exact 0 and 1 around a clip, zeros into ReLU, ties in a window,
a batch of one).  Empty batches are not probed: they always run the user's
code (fastedf.runner.nodes).
"""
import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..node import F64, _sum_to
from ..numpy_edf import _rows
from ..ops import activations as act
from ..ops import conv
from . import kernels as loss

# The clipping constants course code uses, tried in this order; None is no clip.
CLIPS = (1e-12, 1e-15, 1e-7, 1e-8, 1e-9, 1e-10, 1e-6, 1e-5, None)


def _f64(v):
    return v if type(v) is np.ndarray and v.dtype is F64 else np.asarray(v, dtype=F64)


def _fits(a, b):
    """Both float64 arrays of one shape: a kernel's elementwise arguments."""
    return type(a) is np.ndarray and type(b) is np.ndarray and a.dtype is F64 and b.dtype is F64 and a.shape == b.shape


class Candidate:
    op = ""
    loss = False  # a loss reads no upstream gradient
    names = ()  # words in a class's name that suggest this operation (to choose between equivalent candidates)
    use_kernels = False  # set on the matched candidate: its verified calls from then on are the kernels'
    kernels = ()  # the fastedf kernels its accelerated path calls, loaded when it is matched (none: NumPy only)

    def __init__(self, **conventions):
        self.conventions = conventions

    def describe(self):
        return self.op

    def weight_inputs(self):
        """The input indices this candidate reads as weights (none for most operations)."""
        return ()

    @staticmethod
    def probes(vals):
        """[(name, input values)]: the family's edge probes of a node (most families: a batch of one)."""
        return _batch_of_one(vals)

    def __repr__(self):
        return f"{type(self).__name__}({self.describe()})"


def _edge_fills(value, edges):
    """Arrays of value's shape cycling through `edges`, enough of them that every edge value appears."""
    v = np.asarray(value, dtype=F64)
    size = max(v.size, 1)
    edges = np.asarray(edges, dtype=F64)
    return [np.resize(np.roll(edges, -k), v.shape) for k in range(0, len(edges), size)] if v.size else []


def _edge_probes(vals, edges):
    """A one-input node's probes: its input filled with the edge values, then a batch of one."""
    return [("edge values", [e]) for e in _edge_fills(vals[0], edges)] + _batch_of_one(vals)


def _batch_of_one(vals):
    """The first sample of every input whose first axis is the batch (the longest first axis, if > 1)."""
    arrays = [v for v in vals if type(v) is np.ndarray and v.ndim]
    if not arrays:
        return []
    batch = max(v.shape[0] for v in arrays)
    out = [v[:1].copy() if type(v) is np.ndarray and v.ndim and v.shape[0] == batch else v for v in vals]
    return [("a batch of one", out)] if batch > 1 else []


# ---- Linear-like -------------------------------------------------------------------------------------------

_LINEAR = {
    # formula: (forward of x and A, dx from g, dA from g)
    "x @ A + b": (lambda x, A: x @ A, lambda x, A, g: _outer_or_mm(g, A.T), lambda x, A, g: x.T @ g),
    "x @ A.T + b": (lambda x, A: x @ A.T, lambda x, A, g: g @ A, lambda x, A, g: g.T @ x),
    "A @ x + b": (lambda x, A: A @ x, lambda x, A, g: A.T @ g, lambda x, A, g: g @ x.T),
    "A.T @ x + b": (lambda x, A: A.T @ x, lambda x, A, g: A @ g, lambda x, A, g: x @ g.T),
    "a * x + b": (lambda x, A: A * x, lambda x, A, g: _sum_to(g * A, np.shape(x)),
                  lambda x, A, g: _sum_to(g * x, np.shape(A))),
}
_ROLES = ("x", "A", "b")


def _outer_or_mm(g, At):
    """g @ A.T, where a 1-D A (n,) with g (B,) gives the (B, n) outer product."""
    return np.multiply.outer(g, At) if np.ndim(At) == 1 else g @ At


class Linear(Candidate):
    """A linear map of x by a weight, plus a bias; the formula and the inputs' order as conventions."""

    op = "linear"
    names = ("lin", "dense", "fc", "affine", "layer")

    def __init__(self, formula, order, per_row=False):
        """order[i] is the role of input i: 0 for x, 1 for the weight A, 2 for the bias b."""
        super().__init__(formula=formula, order=order, per_row=per_row)
        self.formula, self.order, self.per_row = formula, order, per_row
        self._f, self._dx, self._dA = _LINEAR[formula]

    def weight_inputs(self):
        return tuple(i for i, role in enumerate(self.order) if role)

    def describe(self):
        args = ", ".join(_ROLES[i] for i in self.order)
        text = self.formula if len(self.order) == 3 else self.formula.replace(" + b", "")
        return f"Linear {text}, inputs ({args})" + (", gradient per row" if self.per_row else "")

    def _xab(self, vals):
        o = self.order
        return vals[o.index(0)], vals[o.index(1)], (vals[o.index(2)] if len(o) == 3 else None)

    def forward(self, vals):
        x, A, b = self._xab(vals)
        z = self._f(x, A)
        return z if b is None else z + b

    def backward(self, vals, value, g, want):
        x, A, b = self._xab(vals)
        out = {}
        for i in want:
            role = self.order[i]
            if role == 0:
                out[i] = self._dx(x, A, g)
            elif role == 1:
                out[i] = (g[:, None] * x if np.ndim(A) == 1 else x[:, :, None] * g[:, None, :]) if self.per_row \
                    else self._dA(x, A, g)
            else:
                out[i] = g.copy() if self.per_row else _sum_to(g, np.shape(b))
        return out

    @staticmethod
    def family(n):
        if n not in (2, 3):
            return []
        found = []
        for formula in _LINEAR:
            for order in itertools.permutations(range(n)):
                found.append(Linear(formula, order))
                if formula == "x @ A + b" and n == 3:
                    found.append(Linear(formula, order, per_row=True))
        return found


# ---- Elementwise activations -------------------------------------------------------------------------------

class _Activation(Candidate):
    """p = f(z) from fastedf's kernels; the gradient from p."""

    # kernels: the names of its forward and backward kernels in fastedf.ops.activations
    edges = (-800.0, -40.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 40.0, 800.0, -1.0, 1.0)

    def describe(self):
        return type(self).__name__

    def forward(self, vals):
        z = _f64(vals[0])
        if not self.use_kernels:
            return self.numpy_forward(z)
        out = np.empty(z.shape)
        getattr(act, self.kernels[0])(z, out)
        return out

    def backward(self, vals, value, g, want):
        p = _f64(value)
        if not (self.use_kernels and _fits(p, g)):
            return {0: self.numpy_grad(p, g)}
        out = np.empty(p.shape)
        getattr(act, self.kernels[1])(p, g, out)
        return {0: out}

    @classmethod
    def family(cls, n):
        return [cls()] if n == 1 else []

    @classmethod
    def probes(cls, vals):
        return _edge_probes(vals, cls.edges)


class Sigmoid(_Activation):
    op = "sigmoid"
    names = ("sigm", "logistic")
    kernels = ("sigmoid_forward", "sigmoid_backward")

    @staticmethod
    def numpy_forward(z):
        return 1 / (1 + np.exp(-z))

    @staticmethod
    def numpy_grad(p, g):
        return g * p * (1 - p)


class Tanh(_Activation):
    op = "tanh"
    names = ("tanh",)
    kernels = ("tanh_forward", "tanh_backward")
    numpy_forward = staticmethod(np.tanh)

    @staticmethod
    def numpy_grad(p, g):
        return g * (1 - p * p)


class ReLU(_Activation):
    """max(x, 0); the gradient at exactly 0 is a convention (0 or 1)."""

    op = "relu"
    names = ("relu",)
    kernels = ("relu_forward", "relu_backward")

    @staticmethod
    def numpy_forward(z):
        return np.maximum(z, 0.0)
    edges = (-2.0, -1e-300, -0.0, 0.0, 1e-300, 2.0, 0.0, -0.5)

    def __init__(self, at_zero=0):
        super().__init__(at_zero=at_zero)
        self.at_zero = at_zero

    def describe(self):
        return f"ReLU gradient at 0: {self.at_zero}"

    def backward(self, vals, value, g, want):
        if self.at_zero == 0:
            return super().backward(vals, value, g, want)
        return {0: g * (_f64(vals[0]) >= 0)}

    @staticmethod
    def numpy_grad(p, g):
        return g * (p > 0)

    @classmethod
    def family(cls, n):
        return [cls(0), cls(1)] if n == 1 else []


class Softmax(Candidate):
    """exp(z) / sum(exp(z)) over each sample (rows: the last axis; columns: axis 0), with the sample's maximum
    subtracted first (stable) or not (exp overflows to inf, as the user's code then does).

    Backward: the chain rule, or the gradient passed through unchanged (when
    the loss after it already gave the logits' gradient).
    """

    op = "softmax"
    kernels = ("softmax_forward", "softmax_backward")
    names = ("softmax",)
    edges = (1000.0, -1000.0, 0.0, 0.0, 700.0, -5.0)

    def __init__(self, axis, through, stable=True):
        super().__init__(axis=axis, through=through, stable=stable)
        self.axis, self.through, self.stable = axis, through, stable

    def describe(self):
        text = f"Softmax over {self.axis}" + ("" if self.stable else ", no max subtracted")
        return text + (", Softmax passes the gradient through" if self.through else "")

    def _as_rows(self, a):
        return a if self.axis == "rows" else a.T

    def forward(self, vals):
        z = _f64(vals[0])
        if z.ndim != 2:
            raise ValueError("a 2-D input")
        axis = 1 if self.axis == "rows" else 0
        if not self.stable:
            e = np.exp(z)
            return e / e.sum(axis=axis, keepdims=True)
        if not self.use_kernels:
            e = np.exp(z - z.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)
        zr = np.ascontiguousarray(self._as_rows(z))
        out = np.empty(zr.shape)
        act.softmax_forward(zr, out)
        return self._as_rows(out)

    def backward(self, vals, value, g, want):
        if self.through:
            return {0: g}
        p, g = np.ascontiguousarray(self._as_rows(_f64(value))), np.ascontiguousarray(self._as_rows(_f64(g)))
        if p.shape != g.shape:
            raise ValueError("upstream gradient of another shape")
        if not self.use_kernels:
            return {0: self._as_rows(p * (g - np.sum(g * p, axis=1, keepdims=True)))}
        out = np.empty(p.shape)
        act.softmax_backward(p, g, out)
        return {0: self._as_rows(out)}

    @staticmethod
    def family(n):
        return [Softmax(axis, through, stable) for stable in (True, False) for axis in ("rows", "columns")
                for through in (False, True)] if n == 1 else []

    @classmethod
    def probes(cls, vals):
        return _edge_probes(vals, cls.edges)


# ---- Losses ------------------------------------------------------------------------------------------------

def _clip(p, eps, mode, upper):
    """p as the user's loss clips it: below at eps (and above at 1 - eps, upper), eps added, or as it is."""
    if mode == "clip":
        return np.minimum(np.maximum(p, eps), 1 - eps) if upper else np.maximum(p, eps)
    return p + eps if mode == "add" else p


_CLIP_CODES = {None: 0, "clip": 1, "add": 2}


def _clip_text(eps, mode):
    number = f"{eps:g}".replace("e-0", "e-")  # 1e-7, as course code writes it
    return "no clip" if mode is None else f"clip {number}" if mode == "clip" else f"log(p + {number})"


class _Loss(Candidate):
    """A loss of labels y and probabilities p, its inputs in `order`: each gradient times the scale the
    convention divides by, from fastedf's kernels where y and p fit them (_gradient: dp when of_p, else dy)."""

    loss = True

    def backward(self, vals, value, g, want):
        y, p = vals[self.order[0]], vals[self.order[1]]
        s, fits = self._scale(p), self.use_kernels and _fits(y, p)
        return {i: self._gradient(y, p, s, self.order[i] == 1, fits) for i in want}


class BCE(_Loss):
    """Binary cross-entropy of labels y and probabilities p (its inputs in `order`).

    value: the sum (or mean) of -(y log p + (1 - y) log(1 - p)) with p clipped
    to [clip, 1 - clip] or not; dp = (p - y) / (p (1 - p)) times scale (1 /
    rows, 1 / elements: the mean's own gradient, as `/ y.size` or samples as
    columns write it, or 1); dy = (log(1 - p) - log p) times the same scale.
    """

    op = "bce"
    kernels = ("bce_total", "bce_gradient")
    names = ("bce", "binary")

    def __init__(self, order, reduce, scale, clip):
        super().__init__(order=order, reduce=reduce, scale=scale, clip=clip)
        self.order, self.reduce, self.scale = order, reduce, scale
        self.mode = None if clip is None else "clip"
        self.eps, self.code = clip or 0.0, _CLIP_CODES[self.mode]

    def describe(self):
        scale = {"rows": "gradient / rows", "size": "gradient / elements"}.get(self.scale, "gradient not divided")
        order = "inputs (y, p)" if self.order == (0, 1) else "inputs (p, y)"
        return f"BCE {self.reduce}, {scale}, {_clip_text(self.eps, self.mode)}, {order}"

    def forward(self, vals):
        y, p = vals[self.order[0]], vals[self.order[1]]
        if self.use_kernels and _fits(y, p):
            total = loss.bce_total(y, p, self.eps, self.code)
            return np.float64(total if self.reduce == "sum" else total / max(p.size, 1))
        pc = _clip(p, self.eps, self.mode, True)
        terms = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
        return np.sum(terms) if self.reduce == "sum" else np.mean(terms)

    def _scale(self, p):
        if self.scale == "size":
            return 1.0 / max(np.size(p), 1)
        return 1.0 / _rows(np.asarray(p)) if self.scale == "rows" else 1.0

    def _gradient(self, y, p, s, of_p, fits):
        if fits:
            out = np.empty(p.shape)
            if of_p:
                loss.bce_gradient(y, p, self.eps, self.code, s, out)
            else:
                loss.bce_label_gradient(p, self.eps, self.code, s, out)
            return out
        pc = _clip(p, self.eps, self.mode, True)
        return (pc - y) / (pc * (1 - pc)) * s if of_p else (np.log(1 - pc) - np.log(pc)) * s

    @staticmethod
    def family(n):
        if n != 2:
            return []
        return [BCE(order, reduce, scale, clip) for clip in CLIPS for order in ((0, 1), (1, 0))
                for reduce in ("sum", "mean") for scale in ("rows", "size", "none")]

    @staticmethod
    def probes(vals):
        edges = (0.0, 1.0, 1e-16, 1e-13, 1e-11, 5e-10, 5e-9, 5e-8, 1e-7, 5e-7, 5e-6, 1 - 1e-13, 1 - 1e-8, 0.5)
        found = []
        for at in (0, 1):  # which input holds the probabilities: probes for both orders
            other = 1 - at
            for p in _edge_fills(vals[at], edges):
                for label in (1.0, 0.0):
                    v = [None, None]
                    v[at], v[other] = p, np.full(np.shape(vals[other]), label)
                    if np.shape(vals[other]) == np.shape(vals[at]):
                        found.append((f"probabilities at the clip, labels {label:g}", v))
        return found + _batch_of_one(vals)


class CE(_Loss):
    """Cross-entropy of one-hot labels y and probabilities p over rows or columns (samples).

    value: -sum(y log pc), divided by the samples (mean) or not (sum), pc
    clipped below at eps, eps added, or p itself; dp = -y / pc, or (p - y)
    when the Softmax before passes it through, times scale (1 / samples, or
    1); dy = -log pc times the same scale.
    """

    op = "ce"
    kernels = ("ce_total", "ce_gradient")
    names = ("ce", "cross", "entropy", "nll")

    def __init__(self, order, axis, reduce, scale, clip, logits):
        eps, mode = clip
        super().__init__(order=order, axis=axis, reduce=reduce, scale=scale, clip=eps, clip_form=mode, logits=logits)
        self.order, self.axis, self.reduce, self.scale, self.logits = order, axis, reduce, scale, logits
        self.eps, self.mode, self.code = eps or 0.0, mode, _CLIP_CODES[mode]

    def describe(self):
        scale = "gradient / samples" if self.scale == "samples" else "gradient not divided"
        grad = ", gradient (p - y) for the logits: Softmax passes the gradient through" if self.logits else ""
        order = "inputs (y, p)" if self.order == (0, 1) else "inputs (p, y)"
        return f"CE {self.reduce} over {self.axis}, {scale}, {_clip_text(self.eps, self.mode)}{grad}, {order}"

    def _samples(self, p):
        shape = np.shape(p)
        return max(shape[0] if self.axis == "rows" else shape[-1], 1)

    def forward(self, vals):
        y, p = vals[self.order[0]], vals[self.order[1]]
        if self.use_kernels and _fits(y, p):
            total = loss.ce_total(y, p, self.eps, self.code)
        else:
            total = -np.sum(y * np.log(_clip(p, self.eps, self.mode, False)))
        return np.float64(total / self._samples(p) if self.reduce == "mean" else total)

    def _scale(self, p):
        return 1.0 / self._samples(p) if self.scale == "samples" else 1.0

    def _gradient(self, y, p, s, of_p, fits):
        if fits:
            out = np.empty(p.shape)
            if of_p:
                loss.ce_gradient(y, p, self.eps, self.code, self.logits, s, out)
            else:
                loss.ce_label_gradient(p, self.eps, self.code, s, out)
            return out
        if of_p:
            return (p - y) * s if self.logits else -y / _clip(p, self.eps, self.mode, False) * s
        return -np.log(_clip(p, self.eps, self.mode, False)) * s

    @staticmethod
    def family(n):
        if n != 2:
            return []
        clips = [(eps, mode) for eps in CLIPS if eps is not None for mode in ("clip", "add")] + [(None, None)]
        return [CE(order, axis, reduce, scale, clip, logits) for clip in clips for order in ((0, 1), (1, 0))
                for axis in ("rows", "columns") for reduce in ("mean", "sum") for scale in ("samples", "none")
                for logits in (False, True)]

    @staticmethod
    def probes(vals):
        edges = (0.0, 1.0, 1e-300, 1e-13, 5e-10, 5e-8, 5e-6, 0.5)
        found = []
        for at in (0, 1):
            other = 1 - at
            if np.shape(vals[other]) != np.shape(vals[at]):
                continue
            for p in _edge_fills(vals[at], edges):
                v = [None, None]
                v[at], v[other] = p, np.resize(np.array([1.0, 0.0, 0.0]), np.shape(vals[other]))
                found.append(("probabilities at 0, 1 and the clip", v))
        return found + _batch_of_one(vals)


# ---- Broadcasting binary operations ------------------------------------------------------------------------

class Multiply(Candidate):
    """x * y; each gradient summed back to its input's shape, or left at the product's shape."""

    op = "multiply"
    names = ("mul", "prod", "times")

    def __init__(self, reduce):
        super().__init__(reduce=reduce)
        self.reduce = reduce

    def describe(self):
        return "Multiply" + ("" if self.reduce else ", gradients at the product's shape")

    def forward(self, vals):
        return vals[0] * vals[1]

    def backward(self, vals, value, g, want):
        out = {}
        for i in want:
            d = g * vals[1 - i]
            out[i] = _sum_to(d, np.shape(vals[i])) if self.reduce else d
        return out

    @classmethod
    def family(cls, n):
        return [cls(True), cls(False)] if n == 2 else []


class Addition(Multiply):
    """x + y; each gradient summed back to its input's shape, or the upstream gradient itself."""

    op = "addition"
    names = ("add", "sum", "plus")

    def describe(self):
        return "Addition" + ("" if self.reduce else ", gradients at the sum's shape")

    def forward(self, vals):
        return vals[0] + vals[1]

    def backward(self, vals, value, g, want):
        return {i: _sum_to(g, np.shape(vals[i])) if self.reduce else g for i in want}


# ---- Images ------------------------------------------------------------------------------------------------

def _last(a, layout):
    """An image batch (B, C, H, W) as channels last (B, H, W, C); channels-last batches as they are."""
    return a if layout == "last" else a.transpose(0, 2, 3, 1)


def _back(a, layout):
    return a if layout == "last" else a.transpose(0, 3, 1, 2)


class Conv(Candidate):
    """2-D cross-correlation; channels first (x (B, C, H, W), K (C_out, C_in, kh, kw)) or last
    (x (B, H, W, C), K (kh, kw, C_in, C_out)); padding same (k // 2) or valid; a stride; a bias or none."""

    op = "conv"
    kernels = ("conv_forward", "conv_backward")
    names = ("conv",)

    def __init__(self, layout, padding, stride, bias):
        super().__init__(layout=layout, padding=padding, stride=stride, bias=bias)
        self.layout, self.padding, self.stride, self.bias = layout, padding, stride, bias

    def describe(self):
        return (f"Conv channels {self.layout}, padding {self.padding}, stride {self.stride}"
                + ("" if self.bias else ", no bias"))

    def weight_inputs(self):
        return (1, 2) if self.bias else (1,)

    def _K(self, K):
        return K if self.layout == "last" else K.transpose(2, 3, 1, 0)  # as (kh, kw, C_in, C_out)

    def _prepare(self, vals):
        """x channels last, K as (kh, kw, C_in, C_out), both contiguous, the bias as (C_out,), the padding."""
        x = np.ascontiguousarray(_last(_f64(vals[0]), self.layout))
        K = np.ascontiguousarray(self._K(_f64(vals[1])))
        if x.ndim != 4 or K.ndim != 4 or x.shape[3] != K.shape[2] or K.shape[0] % 2 == 0 or K.shape[1] % 2 == 0:
            raise ValueError("shapes of another layout")
        b = _f64(vals[2]).reshape(K.shape[3]) if self.bias else np.zeros(K.shape[3])
        return x, K, b, (K.shape[0] // 2, K.shape[1] // 2)

    def _same(self, g, x, pad):
        """A valid convolution's upstream gradient inside zeros: the same-padded one's, which fastedf's kernels take."""
        if self.padding == "same":
            return np.ascontiguousarray(g)
        full = np.zeros(x.shape[:3] + g.shape[3:])
        full[:, pad[0]:x.shape[1] - pad[0], pad[1]:x.shape[2] - pad[1]] = g
        return full

    def forward(self, vals):
        if self.stride != 1 or not self.use_kernels:
            return self._strided(vals)
        x, K, b, pad = self._prepare(vals)
        B, H, W, _ = x.shape
        taps = K.shape[0] * K.shape[1] * K.shape[2]
        out = np.empty((B, H, W, K.shape[3]))
        conv.conv_forward(x, K, b, np.empty((taps + 1, B * H * W)), np.empty((taps + 1, K.shape[3])), out)
        if self.padding == "valid":
            out = out[:, pad[0]:H - pad[0], pad[1]:W - pad[1]]
        return np.ascontiguousarray(_back(out, self.layout))

    def backward(self, vals, value, g, want):
        if self.stride != 1 or not self.use_kernels:
            return self._strided_backward(vals, g, want)
        x, K, b, pad = self._prepare(vals)
        g = self._same(_last(_f64(g), self.layout), x, pad)
        B, H, W, cin = x.shape
        kh, kw, _, cout = K.shape
        taps = kh * kw * cin
        out = {}
        if 1 in want or 2 in want:
            cols = np.empty((taps + 1, B * H * W))
            conv.conv_columns(x, kh, kw, cols[:taps])
            cols[taps] = 1.0
            dKb, dK, db = np.empty((taps + 1, cout)), np.empty(K.shape), np.empty(cout)
            conv.conv_backward(cols, g, dKb)
            conv.split_bias_row(dKb, dK, db)
            if 1 in want:
                out[1] = dK if self.layout == "last" else np.ascontiguousarray(dK.transpose(3, 2, 0, 1))
            if 2 in want:
                out[2] = db.reshape(np.shape(vals[2]))
        if 0 in want:
            dx = np.empty(x.shape)
            conv.conv_input_grad(g, K, np.empty((taps, B * H * W)), dx)
            out[0] = np.ascontiguousarray(_back(dx, self.layout))
        return out

    def _windows(self, vals):
        """For strides other than 1, and the search (NumPy): x padded, the windows (B, Ho, Wo, C_in, kh, kw), the padding."""
        x, K, b, pad = self._prepare(vals)
        if self.padding == "valid":
            pad = (0, 0)
        xp = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0))) if any(pad) else x
        s = self.stride
        return x, K, b, xp, pad, sliding_window_view(xp, K.shape[:2], axis=(1, 2))[:, ::s, ::s]

    def _strided(self, vals):
        x, K, b, xp, pad, win = self._windows(vals)
        out = np.tensordot(win, K, axes=([3, 4, 5], [2, 0, 1])) + b  # (B, Ho, Wo, C_out)
        return np.ascontiguousarray(_back(out, self.layout))

    def _strided_backward(self, vals, g, want):
        x, K, b, xp, pad, win = self._windows(vals)
        g = _last(_f64(g), self.layout)
        out = {}
        if 1 in want:
            dK = np.tensordot(win, g, axes=([0, 1, 2], [0, 1, 2])).transpose(1, 2, 0, 3)  # (kh, kw, C_in, C_out)
            out[1] = np.ascontiguousarray(dK if self.layout == "last" else dK.transpose(3, 2, 0, 1))
        if 2 in want:
            out[2] = g.sum(axis=(0, 1, 2)).reshape(np.shape(vals[2]))
        if 0 in want:
            s, (_, Ho, Wo, _) = self.stride, g.shape
            dxp = np.zeros(xp.shape)
            for u in range(K.shape[0]):
                for v in range(K.shape[1]):
                    dxp[:, u:u + s * Ho:s, v:v + s * Wo:s, :] += g @ K[u, v].T
            dx = dxp[:, pad[0]:pad[0] + x.shape[1], pad[1]:pad[1] + x.shape[2], :]
            out[0] = np.ascontiguousarray(_back(dx, self.layout))
        return out

    @staticmethod
    def family(n):
        if n not in (2, 3):
            return []
        return [Conv(layout, padding, stride, n == 3) for layout in ("last", "first")
                for padding in ("same", "valid") for stride in (1, 2)]


class MaxPooling(Candidate):
    """Max over non-overlapping size x size windows; the gradient to the first maximum or to every tie."""

    op = "maxpool"
    names = ("pool",)

    def __init__(self, layout, size, ties):
        super().__init__(layout=layout, size=size, ties=ties)
        self.layout, self.size, self.ties = layout, size, ties

    def describe(self):
        ties = "first maximum" if self.ties == "first" else "every tied maximum"
        return f"MaxPooling channels {self.layout}, size {self.size}, gradient to the {ties}"

    def _windows(self, x):
        x = _last(_f64(x), self.layout)
        B, H, W, C = x.shape
        s = self.size
        Ho, Wo = H // s, W // s
        w = x[:, :Ho * s, :Wo * s].reshape(B, Ho, s, Wo, s, C)
        return x, w

    def forward(self, vals):
        x, w = self._windows(vals[0])
        return np.ascontiguousarray(_back(w.max(axis=(2, 4)), self.layout))

    def backward(self, vals, value, g, want):
        x, w = self._windows(vals[0])
        g = _last(_f64(g), self.layout)
        B, Ho, s, Wo, _, C = w.shape
        if self.ties == "first":
            flat = w.transpose(0, 1, 3, 5, 2, 4).reshape(B, Ho, Wo, C, s * s)
            mask = np.zeros(flat.shape)
            np.put_along_axis(mask, flat.argmax(axis=-1)[..., None], 1.0, axis=-1)
            mask = mask.reshape(B, Ho, Wo, C, s, s).transpose(0, 1, 4, 2, 5, 3)
        else:
            mask = (w == w.max(axis=(2, 4), keepdims=True)).astype(F64)
        dx = np.zeros(x.shape)
        dx[:, :Ho * s, :Wo * s] = (mask * g[:, :, None, :, None, :]).reshape(B, Ho * s, Wo * s, C)
        return {0: np.ascontiguousarray(_back(dx, self.layout))}

    @staticmethod
    def family(n):
        return [MaxPooling(layout, size, ties) for layout in ("last", "first") for size in (2, 3)
                for ties in ("first", "all")] if n == 1 else []

    @staticmethod
    def probes(vals):
        x = np.asarray(vals[0], dtype=F64)
        return [("ties", [np.zeros(x.shape)]), ("ties", [np.round(x)]),
                ("ties", [np.resize(np.array([1.0, 1.0, 0.0, 1.0, -1.0]), x.shape)])] + _batch_of_one(vals)


class Flatten(Candidate):
    """(B, ...) to (B, -1); the gradient reshaped back."""

    op = "flatten"
    names = ("flat", "reshape")

    def describe(self):
        return "Flatten"

    def forward(self, vals):
        x = vals[0]
        return x.reshape(x.shape[0], -1)

    def backward(self, vals, value, g, want):
        return {0: g.reshape(np.shape(vals[0]))}

    @staticmethod
    def family(n):
        return [Flatten()] if n == 1 else []


FAMILIES = (Linear, Sigmoid, Tanh, ReLU, Softmax, BCE, CE, Multiply, Addition, Conv, MaxPooling, Flatten)


def candidates_for(n_inputs):
    """Every candidate for a node of n_inputs inputs, the most common conventions of each family first."""
    return [c for family in FAMILIES for c in family.family(n_inputs)]
