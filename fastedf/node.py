"""The EDF graph protocol: Node, Input and Parameter; gradients keyed by node.

Every node keeps `inputs`, `outputs`, `value` and `gradients`.  An operation
reads its upstream gradient from its consumers (`n.gradients[self]`, summed over
all of them) and writes `self.gradients[inp]` for each input, shaped like that
input's value.  The operations live in fastedf.ops, one module per family,
each node beside its Numba kernels and its compile rule.

Buffers: a node's value array is reused by its next forward unless someone
else still holds it (kept in a list, say), so kept values are never
overwritten.  Gradient arrays are reused by the next backward: copy one to keep
it past that.
"""
import itertools
import sys

import numpy as np

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


def _kept_copy(buffer, array):
    """`array` copied into `buffer`, or into a new array when `buffer` is None or of another shape; returns it.

    For what a node keeps at backward for a gradient computed later (a weight a
    script may update before it reads a data Input's gradient).
    """
    if buffer is None or buffer.shape != array.shape:
        buffer = np.empty(array.shape)
    buffer[...] = array
    return buffer


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

    # Iterating sees the deferred entries too, as a script looping over eager code's gradients would
    def keys(self):
        return list(dict.keys(self)) + [n for n in self._deferred if not dict.__contains__(self, n) and n in self]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def items(self):
        return [(n, self[n]) for n in self.keys()]

    def values(self):
        return [self[n] for n in self.keys()]

    def copy(self):
        return dict(self.items())

    def __repr__(self):
        return repr(self.copy())


class Node:
    """Base class: subclasses implement forward() and backward()."""

    _consumers = None  # the consumers inside the graph being run, when one is known (fastedf.graph.graph_run)
    # Nodes whose input gradients are computed when read (data Inputs) keep what that needs at each
    # backward (a copy of a weight, of the predictions).  fit sets this False: training never reads them.
    keeps_deferred = True
    # True while fit or a model runs the node (fastedf.graph.rows_as_samples): the data's rows are samples, so
    # shapes that could also read as samples as columns (Linear's x (n, 1) with A (1, n)) are not ambiguous.
    rows_are_samples = False
    # Attributes by which a node's backward finds what its own forward left (a buffer holding this x's columns);
    # a fused step's program runs the forward instead, and sets them to None: the backward works it out again.
    forward_state = ()

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
        did not run backward add nothing; while a known graph runs (fit,
        backward_pass), consumers outside it add nothing either.
        """
        outputs = self.outputs if self._consumers is None else self._consumers
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
                             "run backward() on the nodes in reverse topological order, or backward_pass(graph) "
                             "when it also feeds nodes outside the graph")
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
        self.gradients.defer(self, self._gradient)

    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        pass  # x.gradients[x] is computed on read

    def _gradient(self):
        try:
            return self.upstream_gradient()
        except ValueError as error:  # no consumer has run backward: no entry yet, as in eager code (`in` is False)
            raise KeyError(str(error)) from None


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




def missing_rule(node):
    """Why `node` has no compile rule (a `lower` method, fastedf.compiler), or '' when it has one or needs none."""
    if type(node) in (Input, Parameter) or hasattr(type(node), "lower"):
        return ""
    return f"{node} is a {type(node).__name__}, which has no compiled rule"
