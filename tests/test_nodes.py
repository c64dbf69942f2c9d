"""The graph protocol: gradients against central finite differences, shapes, fan-out, user nodes, errors.

Finite differences: step h = 1e-6 on float64, compared with rtol 1e-6 and
atol 1e-8 (truncation error ~h^2, rounding ~1e-16/h).
"""
import warnings

import naive
import numpy as np
import pytest
from numpy.testing import assert_allclose

from fastedf import (BCE, Addition, Input, Linear, Multiply, Node, Parameter, Sigmoid, backward_pass,
                     forward_pass, sgd_update, topological_sort)

FD = dict(rtol=1e-6, atol=1e-8)


class WeightedSum(Node):
    """A user's plain NumPy node: sum(x * w) for fixed weights w; makes any output a scalar loss."""

    def __init__(self, x, weights):
        super().__init__([x])
        self.weights = weights

    def forward(self):
        self.value = np.sum(self.inputs[0].value * self.weights)

    def backward(self):
        self.gradients[self.inputs[0]] = self.weights * 1.0


def numeric_gradient(graph, array, h=1e-6):
    """Central differences of the graph's final value with respect to every element of `array` (in place)."""
    grad = np.zeros(array.shape)
    for index in np.ndindex(array.shape):
        old = array[index]
        array[index] = old + h
        up = float(forward_pass(graph))
        array[index] = old - h
        down = float(forward_pass(graph))
        array[index] = old
        grad[index] = (up - down) / (2 * h)
    return grad


def per_row(loss):
    """What the course's gradients differentiate: a BCE's value (a sum) divided by the rows, else the value."""
    if isinstance(loss, BCE):
        shape = np.shape(loss.inputs[1].value)
        return 1.0 / (shape[0] if shape else 1)
    return 1.0


def check_gradients(loss, leaves):
    """backward() gradients of every leaf equal central differences and have the leaf's shape."""
    graph = topological_sort(loss)
    forward_pass(graph)
    backward_pass(graph)
    analytic = {leaf: np.array(leaf.gradients[leaf], copy=True) for leaf in leaves}
    for leaf in leaves:
        assert analytic[leaf].shape == np.shape(leaf.value), leaf
        numeric = numeric_gradient(graph, leaf.value) * per_row(loss)
        assert_allclose(analytic[leaf], numeric, **FD, err_msg=str(leaf))


def projection(node, shape, rng):
    return WeightedSum(node, rng.normal(size=shape))


def test_linear_gradients(rng):
    x = Parameter(rng.normal(size=(5, 3)))  # a trainable x, so dx is computed eagerly
    A, b = Parameter(rng.normal(size=(3, 2))), Parameter(rng.normal(size=(2,)))
    check_gradients(projection(Linear(x, A, b), (5, 2), rng), [x, A, b])


def test_linear_with_row_bias_and_data_input(rng):
    x = Input()
    x.value = rng.normal(size=(4, 3))
    A, b = Parameter(rng.normal(size=(3, 2))), Parameter(rng.normal(size=(1, 2)))
    check_gradients(projection(Linear(x, A, b), (4, 2), rng), [x, A, b])


def logistic_graph(rng, rows, labels):
    """sigmoid(x @ A + b) under BCE, x (rows, 2) fed with normal data and y with `labels`; returns x, y, A, b, graph."""
    x, y = Input(), Input()
    x.value, y.value = rng.normal(size=(rows, 2)), labels
    A, b = Parameter(rng.normal(size=(2, 1))), Parameter(np.zeros(1))
    return x, y, A, b, topological_sort(BCE(y, Sigmoid(Linear(x, A, b))))


def test_sigmoid_bce_chain(rng):
    x, y, A, b, graph = logistic_graph(rng, 6, (rng.random((6, 1)) > 0.5) * 1.0)
    check_gradients(graph[-1], [A, b, x])


def test_bce_gradients_for_predictions_and_labels(rng):
    y, p = Input(), Parameter(rng.uniform(0.05, 0.95, size=(5, 1)))
    y.value = rng.uniform(0.1, 0.9, size=(5, 1))
    check_gradients(BCE(y, p), [p, y])


def test_bce_accepts_flat_labels(rng):
    p = Parameter(rng.uniform(0.05, 0.95, size=(5, 1)))
    flat, column = Input(), Input()
    flat.value = (rng.random(5) > 0.5) * 1.0
    column.value = flat.value.reshape(5, 1)
    losses = [forward_pass(topological_sort(BCE(y, p))) for y in (flat, column)]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("a_shape,b_shape", [((4, 3), (3,)), ((4, 1), (1, 1)), ((), (4, 2)), ((4, 3), (1, 3)),
                                             ((1, 1), (1, 1)), ((2, 1, 3), (4, 1))])
@pytest.mark.parametrize("op", [Multiply, Addition])
def test_broadcasting_gradients_are_summed(rng, op, a_shape, b_shape):
    a, b = Parameter(rng.normal(size=a_shape)), Parameter(rng.normal(size=b_shape))
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    check_gradients(projection(op(a, b), out_shape, rng), [a, b])


def test_fan_out_of_a_parameter_is_summed(rng):
    w = Parameter(rng.normal(size=(1, 3)))
    x = Input()
    x.value = rng.normal(size=(4, 3))
    both = Addition(Multiply(x, w), Multiply(w, w))  # w feeds three edges
    check_gradients(projection(both, (4, 3), rng), [w])


def test_fan_out_of_an_operation_is_summed(rng):
    z = Parameter(rng.normal(size=(3, 2)))
    s = Sigmoid(z)
    check_gradients(projection(Multiply(s, Addition(s, z)), (3, 2), rng), [z])


class Tanh(Node):
    """A user's NumPy node in the middle of a fastedf graph."""

    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.tanh(self.inputs[0].value)

    def backward(self):
        g = self.outputs[0].gradients[self]
        self.gradients[self.inputs[0]] = g * (1 - self.value ** 2)


def test_user_node_between_fastedf_nodes(rng):
    x, y = Input(), Input()
    x.value, y.value = rng.normal(size=(6, 2)), (rng.random((6, 1)) > 0.5) * 1.0
    A1, b1 = Parameter(rng.normal(size=(2, 3))), Parameter(np.zeros(3))
    A2, b2 = Parameter(rng.normal(size=(3, 1))), Parameter(np.zeros(1))
    loss = BCE(y, Sigmoid(Linear(Tanh(Linear(x, A1, b1)), A2, b2)))
    check_gradients(loss, [A1, b1, A2, b2])


def test_data_gradient_is_deferred_but_correct_after_an_update(rng):
    x, y, A, b, graph = logistic_graph(rng, 4, np.ones((4, 1)))
    forward_pass(graph)
    backward_pass(graph)
    want = numeric_gradient(graph, x.value) * per_row(graph[-1])
    sgd_update([A, b], lr=0.5)  # changes A in place before the data gradient is read
    assert x in x.gradients
    assert_allclose(x.gradients[x], want, **FD)
    assert y.gradients[y].shape == (4, 1)


def test_iterating_gradients_sees_the_deferred_data_gradients_as_eager_code_stores_them(rng):
    x, y, A, b, graph = logistic_graph(rng, 4, np.ones((4, 1)))
    assert x not in x.gradients and x.gradients.get(x) is None and len(x.gradients) == 0  # no backward yet
    forward_pass(graph)
    backward_pass(graph)
    linear = next(n for n in graph if x in n.inputs)
    assert set(linear.gradients) == {x, A, b} and len(linear.gradients) == 3
    assert list(x.gradients) == [x] and x.gradients.keys() == [x]
    held = dict(linear.gradients)  # a script's copy, as eager code's dict would give it
    for key, value in linear.gradients.items():
        assert_allclose(value, held[key], rtol=0, atol=0)
    assert_allclose(dict(x.gradients.items())[x], x.gradients[x], rtol=0, atol=0)
    assert "Input" in repr(x.gradients)


def test_backward_overwrites_instead_of_accumulating(rng):
    _, _, A, _, graph = logistic_graph(rng, 3, np.zeros((3, 1)))
    forward_pass(graph)
    backward_pass(graph)
    first = A.gradients[A].copy()
    backward_pass(graph)
    assert_allclose(A.gradients[A], first, rtol=0, atol=0)


def test_values_are_reused_unless_kept(rng):
    x = Input()
    s = Sigmoid(x)
    x.value = rng.normal(size=(3, 1))
    s.forward()
    buffer = id(s.value)
    s.forward()
    assert id(s.value) == buffer  # nobody else held it: reused
    kept = s.value
    x.value = rng.normal(size=(3, 1))
    s.forward()
    assert s.value is not kept and not np.array_equal(s.value, kept)  # a kept value is never overwritten


def test_extreme_inputs_give_no_warnings():
    x, y = Input(), Input()
    x.value, y.value = np.array([[-1e6], [1e6], [0.0]]), np.array([[1.0], [0.0], [1.0]])
    loss = BCE(y, Sigmoid(x))
    graph = topological_sort(loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward_pass(graph)
        backward_pass(graph)
    assert np.isfinite(loss.value) and np.all(np.isfinite(x.gradients[x]))


def test_float32_int_and_strided_values_compute_in_float64(rng):
    data = rng.normal(size=(5, 4))
    results = []
    for value in (data[:, :2].copy(), data[:, :2].astype(np.float32).astype(np.float64), data[:, :2]):
        x = Input()
        x.value = value
        lin = Linear(x, Parameter(np.ones((2, 1), dtype=np.int64)), Parameter(np.zeros(1, dtype=np.float32)))
        lin.forward()
        assert lin.value.dtype == np.float64
        results.append(lin.value.copy())
    assert_allclose(results[0], results[2], rtol=0, atol=0)
    assert_allclose(results[0], results[1], rtol=1e-6)


def test_parameter_keeps_the_callers_float64_array():
    A = np.zeros((2, 1))
    assert Parameter(A).value is A
    assert Parameter(np.zeros((2, 1), dtype=np.float32)).value.dtype == np.float64


@pytest.mark.parametrize("build,words", [
    (lambda: Linear(_fed((4, 3)), Parameter(np.zeros((2, 1))), Parameter(np.zeros(1))), ["(4, 3)", "(2, 1)"]),
    (lambda: Linear(_fed((4, 2)), Parameter(np.zeros((2, 1))), Parameter(np.zeros(3))), ["b", "(3,)", "(2, 1)"]),
    (lambda: Linear(_fed((4,)), Parameter(np.zeros((4, 1))), Parameter(np.zeros(1))), ["(4,)"]),
    (lambda: BCE(_fed((5, 1)), _fed((4, 1), 0.5)), ["labels", "(5, 1)", "(4, 1)"]),
    (lambda: BCE(_fed((4,)), _fed((4, 2), 0.5)), ["(4,)", "(4, 2)"]),
    (lambda: Multiply(_fed((3, 2)), _fed((4,))), ["(3, 2)", "(4,)"]),
    (lambda: BCE(_fed((2, 1), 2.0), _fed((2, 1), 0.5)), ["label 2.0"]),
    (lambda: BCE(_fed((2, 1), 1.0), _fed((2, 1), np.nan)), ["prediction nan"]),
    (lambda: Sigmoid(Input()), ["no value"]),
])
def test_bad_shapes_and_values_raise_naming_the_node(build, words):
    node = build()
    with pytest.raises(ValueError) as error:
        node.forward()
    message = str(error.value)
    assert type(node).__name__ + "#" in message
    for word in words:
        assert word in message


def _fed(shape, fill=0.0):
    node = Input()
    node.value = np.full(shape, fill)
    return node


def test_bad_parameter_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="NaN or inf"):
        Parameter(np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="not a Node"):
        Sigmoid(np.zeros(3))


def test_topological_sort_forms(rng):
    x, y = Input(), Input()
    A, b = Parameter(np.zeros((2, 1))), Parameter(np.zeros(1))
    s = Sigmoid(Linear(x, A, b))
    loss = BCE(y, s)
    from_loss = topological_sort(loss)
    from_feed = topological_sort({x: rng.normal(size=(3, 2)), y: np.ones((3, 1)), A: A.value, b: b.value})
    for order in (from_loss, from_feed):
        assert set(order) == {x, y, A, b, s.inputs[0], s, loss}
        for node in order:
            assert all(order.index(i) < order.index(node) for i in node.inputs)
    assert x.value.shape == (3, 2)  # the feed dict form assigns values
    want = naive.bce(np.ones((3, 1)), naive.sigmoid(naive.linear_forward(x.value, A.value, b.value)))
    assert forward_pass(loss, from_feed) == pytest.approx(want, rel=1e-12) == loss.value


def test_backward_checks_values_changed_since_forward(rng):
    x, y, _, _, graph = logistic_graph(rng, 4, np.ones((4, 1)))
    loss = graph[-1]
    forward_pass(graph)
    y.value = np.ones((2, 1))  # a new batch of labels without a forward pass
    with pytest.raises(ValueError, match=r"labels have shape \(2, 1\) but predictions have shape \(4, 1\)"):
        loss.backward()
    with pytest.raises(ValueError, match="backward\\(\\) before forward\\(\\)"):
        Sigmoid(x).backward()
