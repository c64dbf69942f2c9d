"""The EDF graph protocol: nodes with forward() and backward(), gradients keyed by node.

Every node keeps `inputs`, `outputs`, `value` and `gradients`.  An operation
reads its upstream gradient from its consumers (`n.gradients[self]`, summed over
all of them) and writes `self.gradients[inp]` for each input, shaped like that
input's value.  Linear, Sigmoid and BCE run Numba kernels (fastedf.kernels)
after checking shapes here; Multiply and Addition use NumPy broadcasting.

Buffers: a node's value array is reused by its next forward unless someone
else still holds it (kept in a list, say), so kept values are never
overwritten.  Gradient arrays are reused by the next backward: copy one to keep
it past that.
"""
import itertools
import sys

import numpy as np

from . import kernels as K

F64 = np.dtype(np.float64)
_ids = itertools.count(1)


def as_float64(value):
    """`value` as a float64 array; no copy when it already is one (kernels read strided arrays)."""
    if type(value) is np.ndarray and value.dtype is F64:
        return value
    return np.asarray(value, dtype=F64)


def _refcount(current, shape):
    return sys.getrefcount(current)


class _Probe:
    pass


_probe = _Probe()
_probe.value = np.empty(0)
# References to an array held only by one node attribute, seen from a call like
# the one in _reusable (the count differs between Python versions).
_PRIVATE_REFS = _refcount(_probe.value, None)


def _reusable(current, shape):
    """True when `current` is a float64 array of `shape` that only its node holds."""
    return (type(current) is np.ndarray and current.shape == shape
            and current.dtype is F64 and sys.getrefcount(current) <= _PRIVATE_REFS)


def _sum_to(grad, shape):
    """`grad` summed over the axes that broadcasting added or stretched, so it has `shape`."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=tuple(range(lead)) + stretched, keepdims=True).reshape(shape)


class Gradients(dict):
    """A node's `gradients` dict, where an entry may be computed when it is read.

    fastedf computes the gradients of data Inputs, which training never reads,
    only when read, so no step pays for them; a read gives the array eager
    code would have stored at the last backward.
    """

    def __init__(self):
        super().__init__()
        self._deferred = {}

    def defer(self, node, compute):
        """Make `self[node]` call `compute()` whenever it is read and no value is stored.

        compute raises KeyError while there is nothing to compute from (no backward yet).
        """
        self._deferred[node] = compute

    def __missing__(self, node):
        compute = self._deferred.get(node)
        if compute is None:
            raise KeyError(node)
        return compute()

    def __contains__(self, node):
        if dict.__contains__(self, node):
            return True
        try:
            self[node]
        except KeyError:
            return False
        return True

    def get(self, node, default=None):
        return self[node] if node in self else default


class Node:
    """Base class: subclasses implement forward() and backward()."""

    def __init__(self, inputs=None):
        inputs = [] if inputs is None else list(inputs)
        for i, node in enumerate(inputs):
            if not isinstance(node, Node):
                raise TypeError(f"{type(self).__name__}: input {i} is a {type(node).__name__}, not a Node")
        self.inputs = inputs
        self.outputs = []
        self.value = None
        self.gradients = Gradients()
        self._id = next(_ids)
        for node in inputs:
            node.outputs.append(self)

    def __repr__(self):
        return f"{type(self).__name__}#{self._id}"

    def forward(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def upstream_gradient(self):
        """dLoss/dself: the sum of `n.gradients[self]` over every consumer n that has one.

        A node nobody consumes is the loss: its gradient is ones.  Consumers that
        did not run backward (outside the graph being trained) add nothing.
        """
        outputs = self.outputs
        if len(outputs) == 1:
            try:
                return outputs[0].gradients[self]
            except KeyError:
                pass
        elif not outputs:
            return np.ones(np.shape(self.value))
        parts = [n.gradients[self] for n in outputs if self in n.gradients]
        if not parts:
            raise ValueError(f"{self}: none of its consumers {outputs} computed a gradient for it; "
                             "run backward() on the nodes in reverse topological order")
        total = parts[0]
        for part in parts[1:]:
            total = total + part  # a new array: consumers' own arrays stay untouched
        return total

    def _values(self):
        """The inputs' values as float64 arrays, with a clear error for a missing one."""
        values = [n.value for n in self.inputs]
        for value in values:
            if type(value) is not np.ndarray or value.dtype is not F64:
                return self._converted(values)
        return values

    def _converted(self, values):
        for node, value in zip(self.inputs, values):
            if value is None:
                raise ValueError(f"{self}: input {node} has no value; feed it or run its forward() first")
        return [np.asarray(value, dtype=F64) for value in values]

    def _upstream(self, shape):
        """upstream_gradient() as a float64 array, checked to have `shape` before a kernel reads it."""
        g = self.upstream_gradient()
        if type(g) is not np.ndarray or g.dtype is not F64:
            g = np.asarray(g, dtype=F64)
        if g.shape != shape:
            raise ValueError(f"{self}: upstream gradient has shape {g.shape}, value has {shape}")
        return g


class Input(Node):
    """A leaf whose value the script assigns (`x.value = X_batch`).

    Its gradient, the sum of what its consumers wrote for it, is computed when
    `x.gradients[x]` is read: training never reads it, so no step pays for it.
    """

    def __init__(self):
        super().__init__()
        self.gradients.defer(self, self.upstream_gradient)

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        pass  # x.gradients[x] is computed on read


class Parameter(Node):
    """A trainable leaf, kept as a float64 array (the caller's array when it already is one)."""

    def __init__(self, value):
        super().__init__()
        self.value = as_float64(value)
        if not np.all(np.isfinite(self.value)):
            raise ValueError(f"{self}: initial value contains NaN or inf")

    def forward(self):
        pass

    def backward(self):
        self.gradients[self] = self.upstream_gradient()


class _Broadcasting(Node):
    """x (op) y with NumPy broadcasting.  Subclasses set `ufunc` and `input_gradients`."""

    ufunc = None

    def __init__(self, x, y):
        super().__init__([x, y])
        self._shapes = None

    def forward(self):
        x, y = self._values()
        shapes = (x.shape, y.shape)
        if shapes != self._shapes:
            try:
                self._out_shape = np.broadcast_shapes(*shapes)
            except ValueError:
                raise ValueError(f"{self}: shapes {x.shape} and {y.shape} do not broadcast") from None
            self._shapes = shapes
        out = self.value if _reusable(self.value, self._out_shape) else np.empty(self._out_shape)
        self.ufunc(x, y, out=out)
        self.value = out

    def backward(self):
        x, y = self.inputs
        g = self._upstream(self._out_shape)
        gx, gy = self.input_gradients(g, *self._values())
        self.gradients[x] = _sum_to(gx, np.shape(x.value))
        self.gradients[y] = _sum_to(gy, np.shape(y.value))


class Multiply(_Broadcasting):
    """x * y, elementwise with broadcasting."""

    ufunc = np.multiply

    @staticmethod
    def input_gradients(g, x, y):
        return g * y, g * x


class Addition(_Broadcasting):
    """x + y, elementwise with broadcasting."""

    ufunc = np.add

    @staticmethod
    def input_gradients(g, x, y):
        return g, g


class Sigmoid(Node):
    """1 / (1 + exp(-x)), elementwise; never overflows."""

    def __init__(self, x):
        super().__init__([x])
        self._dz = None

    def forward(self):
        (z,) = self._values()
        out = self.value if _reusable(self.value, z.shape) else np.empty(z.shape)
        K.sigmoid_forward(z, out)
        self.value = out

    def backward(self):
        p = self.value
        if type(p) is not np.ndarray or p.dtype is not F64:
            if p is None:
                raise ValueError(f"{self}: backward() before forward()")
            p = np.asarray(p, dtype=F64)
        g = self._upstream(p.shape)
        dz = self._dz
        if dz is None or dz.shape != p.shape:
            dz = self._dz = np.empty(p.shape)
        K.sigmoid_backward(p, g, dz)
        self.gradients[self.inputs[0]] = dz


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
        loss, bad = K.bce_forward(y, p)
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
        K.bce_backward(y, p, upstream, dp)
        self.gradients[p_node] = dp
        self._upstream_kept = upstream
        if not isinstance(y_node, Input):
            self.gradients[y_node] = self._label_gradient()

    def _label_gradient(self):
        if self._upstream_kept is None:
            raise KeyError(self.inputs[0])  # no backward yet
        y, p = self._values()  # read now, not kept: holding p would stop its reuse
        dy = np.empty(y.shape)
        K.bce_label_grad(p, self._upstream_kept, dy)
        return dy


class Linear(Node):
    """x @ A + b for a batch x (B, n_in), A (n_in, n_out) and b (n_out,) or (1, n_out)."""

    def __init__(self, x, A, b):
        super().__init__([x, A, b])
        self._dA = self._db = self._A_kept = self._g_kept = self._checked = None
        if isinstance(x, Input):  # data: its gradient is computed only when read
            self.gradients.defer(x, self._data_gradient)

    def forward(self):
        x, A, b = self._values()
        self._check_shapes(x, A, b)
        shape = (x.shape[0], A.shape[1])
        out = self.value if _reusable(self.value, shape) else np.empty(shape)
        K.linear_forward(x, A, b, out)
        self.value = out

    def _check_shapes(self, x, A, b):
        """Raise unless x (B, n), A (n, m) and b (m,) or (1, m) fit; remembers shapes that did."""
        shapes = (x.shape, A.shape, b.shape)
        if shapes == self._checked:
            return
        if x.ndim != 2 or A.ndim != 2 or x.shape[1] != A.shape[0]:
            raise ValueError(f"{self}: x has shape {x.shape} and A has shape {A.shape}; "
                             "need x (batch, n_in) and A (n_in, n_out)")
        if b.shape != (A.shape[1],) and b.shape != (1, A.shape[1]):
            raise ValueError(f"{self}: b has shape {b.shape} but A has shape {A.shape}; "
                             f"need b ({A.shape[1]},) or (1, {A.shape[1]})")
        self._checked = shapes

    def backward(self):
        x_node, A_node, b_node = self.inputs
        x, A, b = self._values()
        self._check_shapes(x, A, b)  # values may have changed since forward
        g = self._upstream((x.shape[0], A.shape[1]))
        dA, db, kept = self._dA, self._db, self._A_kept
        if dA is None or dA.shape != A.shape or db.shape != b.shape:
            dA, db, kept = self._dA, self._db, self._A_kept = np.empty(A.shape), np.empty(b.shape), np.empty(A.shape)
        K.linear_backward(x, g, dA, db)
        self.gradients[A_node] = dA
        self.gradients[b_node] = db
        if isinstance(x_node, Input):
            # Keep A as it is now: the script may update it before reading the gradient.
            kept[...] = A
            self._g_kept = g
        else:
            self.gradients[x_node] = self._input_gradient(g, A)

    def _data_gradient(self):
        if self._g_kept is None:
            raise KeyError(self.inputs[0])  # no backward yet
        return self._input_gradient(self._g_kept, self._A_kept)

    @staticmethod
    def _input_gradient(g, A):
        dx = np.empty((g.shape[0], A.shape[0]))
        K.linear_input_grad(g, A, dx)
        return dx
