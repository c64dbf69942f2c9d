"""fastedf/numpy_edf.py, the plain-NumPy reference of the course's conventions (docs/conventions.md), on its own.

Gradients against central finite differences (h = 1e-6, rtol 1e-6): every
node is tested inside the probe f = sum(R * node(...)), R fixed random, whose
gradient the reference computes by its own backward (the Multiply by R seeds
the upstream gradient with R).  Losses are probed directly: CE's gradient is
that of its value, BCE's that of its value / rows.
"""
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastedf.numpy_edf as edf

H = 1e-6
RTOL, ATOL = 1e-6, 1e-8


def run(graph):
    """Forward then backward over `graph` (topological order), raising on any NumPy warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()


def finite_difference(f, arrays):
    """Central differences of the scalar f() with respect to each array, perturbed in place."""
    grads = []
    for a in arrays:
        g = np.zeros(a.shape)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + H
            up = f()
            a[i] = old - H
            down = f()
            a[i] = old
            g[i] = (up - down) / (2 * H)
        grads.append(g)
    return grads


def check_node_gradients(make, *values, seed=0):
    """make(*parameters) builds a node; its parameters' gradients must match those of sum(R * node)."""
    params = [edf.Parameter(np.array(v, dtype=float)) for v in values]
    node = make(*params)
    graph = params + [node]
    for n in graph:
        n.forward()
    R = edf.Parameter(np.random.default_rng(seed).normal(size=np.shape(node.value)))
    probe = edf.Multiply(node, R)
    graph += [R, probe]
    run(graph)

    def f():
        for n in graph:
            n.forward()
        return float(np.sum(probe.value))

    want = finite_difference(f, [p.value for p in params])
    for p, w in zip(params, want):
        assert p.gradients[p].shape == p.value.shape
        assert_allclose(p.gradients[p], w, rtol=RTOL, atol=ATOL)


def test_relu_gradient_is_zero_at_and_below_zero():
    x = np.array([[-1.5, -0.3, 0.4], [2.0, -2.0, 0.7]])
    check_node_gradients(edf.ReLU, x)
    xn = edf.Parameter(np.array([[-1.0, 0.0, 1.0]]))
    relu = edf.ReLU(xn)
    run([xn, relu])
    assert_array_equal(relu.value, [[0.0, 0.0, 1.0]])
    assert_array_equal(xn.gradients[xn], [[0.0, 0.0, 1.0]])


def test_tanh_gradient(rng):
    check_node_gradients(edf.Tanh, rng.normal(size=(3, 4)))


def test_sigmoid_gradient_and_no_overflow_warning(rng):
    check_node_gradients(edf.Sigmoid, rng.normal(size=(3, 2)))
    z = edf.Parameter(np.array([[-1000.0, 0.0, 1000.0]]))
    p = edf.Sigmoid(z)
    run([z, p])
    assert_array_equal(p.value, [[0.0, 0.5, 1.0]])


def test_softmax_gradient_rows_sum_to_one_and_large_inputs(rng):
    check_node_gradients(edf.Softmax, rng.normal(size=(4, 5)))
    z = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    zn = edf.Parameter(z)
    s = edf.Softmax(zn)
    run([zn, s])
    assert np.all(np.isfinite(s.value))
    assert_allclose(s.value.sum(axis=-1), 1.0, rtol=1e-15)
    e = np.exp(np.array([1.0, 2.0, 0.0]))
    assert_allclose(s.value, [e / e.sum(), [1 / 3] * 3], rtol=1e-15)


def test_linear_multiply_addition_gradients_sum_over_broadcast_axes(rng):
    check_node_gradients(edf.Linear, rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=2))
    check_node_gradients(edf.Linear, rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=(1, 2)))
    check_node_gradients(edf.Multiply, rng.normal(size=(4, 3)), rng.normal(size=(1, 1)))  # scalar weight
    check_node_gradients(edf.Multiply, rng.normal(size=(4, 3)), 0.7)  # 0-d
    check_node_gradients(edf.Addition, rng.normal(size=(4, 3)), rng.normal(size=3))  # bias on every row


def test_flatten_gradient(rng):
    check_node_gradients(edf.Flatten, rng.normal(size=(2, 3, 2, 2)))
    xn = edf.Parameter(np.zeros((0, 4, 4, 2)))
    flat = edf.Flatten(xn)
    run([xn, flat])
    assert flat.value.shape == (0, 32)
    assert xn.gradients[xn].shape == (0, 4, 4, 2)


def naive_conv(x, K, b):
    """The formula, one output element at a time."""
    B, H, W, _ = x.shape
    kh, kw, c_in, c_out = K.shape
    out = np.zeros((B, H, W, c_out))
    for n in range(B):
        for i in range(H):
            for j in range(W):
                for o in range(c_out):
                    s = b[o]
                    for u in range(kh):
                        for v in range(kw):
                            r, c = i + u - kh // 2, j + v - kw // 2
                            if 0 <= r < H and 0 <= c < W:
                                s += x[n, r, c, :] @ K[u, v, :, o]
                    out[n, i, j, o] = s
    return out


@pytest.mark.parametrize("kernel", [(3, 3), (1, 3), (5, 3)])
def test_conv_matches_the_naive_loop(rng, kernel):
    x = rng.normal(size=(2, 5, 4, 3))
    K = rng.normal(size=(*kernel, 3, 2))
    b = rng.normal(size=2)
    nodes = [edf.Parameter(v) for v in (x, K, b)]
    conv = edf.Conv(*nodes)
    conv.forward()
    assert_allclose(conv.value, naive_conv(x, K, b), rtol=1e-12, atol=1e-12)


def test_conv_gradients(rng):
    check_node_gradients(edf.Conv, rng.normal(size=(2, 4, 5, 2)), rng.normal(size=(3, 3, 2, 3)), rng.normal(size=3))


def test_conv_rejects_even_kernels_and_channel_mismatch(rng):
    for K in (np.zeros((2, 3, 1, 1)), np.zeros((3, 3, 2, 1))):
        conv = edf.Conv(edf.Parameter(np.zeros((1, 4, 4, 1))), edf.Parameter(K), edf.Parameter(np.zeros(1)))
        with pytest.raises(ValueError):
            conv.forward()


def test_max_pooling_gradient(rng):
    check_node_gradients(edf.MaxPooling, rng.normal(size=(2, 4, 6, 3)))
    check_node_gradients(lambda x: edf.MaxPooling(x, size=3), rng.normal(size=(1, 6, 3, 2)))


def test_max_pooling_ties_go_to_the_first_in_row_major_order():
    x = np.array([[[0.0, 5.0, 1.0, 1.0],
                   [5.0, 2.0, 1.0, 1.0],
                   [3.0, 3.0, 7.0, 0.0],
                   [3.0, 3.0, 0.0, 0.0]]]).reshape(1, 4, 4, 1)
    xn = edf.Parameter(x)
    pool = edf.MaxPooling(xn)
    run([xn, pool])
    assert_array_equal(pool.value[0, :, :, 0], [[5.0, 1.0], [3.0, 7.0]])
    want = np.array([[0, 1, 1, 0],
                     [0, 0, 0, 0],
                     [1, 0, 1, 0],
                     [0, 0, 0, 0]], dtype=float)
    assert_array_equal(xn.gradients[xn][0, :, :, 0], want)


def test_max_pooling_rejects_sizes_that_do_not_divide():
    pool = edf.MaxPooling(edf.Parameter(np.zeros((1, 5, 4, 1))))
    with pytest.raises(ValueError):
        pool.forward()


def loss_graph(loss_class, y, p):
    y_node, p_node = edf.Parameter(np.array(y, dtype=float)), edf.Parameter(np.array(p, dtype=float))
    loss = loss_class(y_node, p_node)
    return [y_node, p_node, loss], loss


def check_loss_gradients(loss_class, y, p, rows_in_value):
    """The loss's gradients must be those of value / rows_in_value (BCE: rows; CE: 1, it is a mean)."""
    graph, loss = loss_graph(loss_class, y, p)
    run(graph)
    y_node, p_node = graph[:2]

    def f():
        for n in graph:
            n.forward()
        return float(loss.value) / rows_in_value

    want_y, want_p = finite_difference(f, [y_node.value, p_node.value])
    assert_allclose(p_node.gradients[p_node], want_p, rtol=RTOL, atol=ATOL)
    assert_allclose(y_node.gradients[y_node], want_y, rtol=RTOL, atol=ATOL)
    assert p_node.gradients[p_node].shape == np.shape(p)
    assert y_node.gradients[y_node].shape == np.shape(y)


def test_bce_is_a_sum_with_the_gradient_of_the_mean_over_rows(rng):
    y = (rng.random((6, 1)) > 0.5) * 1.0
    p = rng.uniform(0.1, 0.9, size=(6, 1))
    graph, loss = loss_graph(edf.BCE, y, p)
    run(graph)
    assert_allclose(loss.value, -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-14)
    check_loss_gradients(edf.BCE, y, p, rows_in_value=6)
    check_loss_gradients(edf.BCE, rng.random((3, 2)), rng.uniform(0.1, 0.9, size=(3, 2)), rows_in_value=3)


def test_bce_broadcast_labels_sum_back_to_their_shape(rng):
    # stale labels (1, 1) against 4 predictions: the value sums 4 elements, rows = 4 (the predictions')
    check_loss_gradients(edf.BCE, [[1.0]], rng.uniform(0.1, 0.9, size=(4, 1)), rows_in_value=4)
    # 3 stale labels against 1 prediction: rows = 1
    check_loss_gradients(edf.BCE, [[1.0], [0.0], [1.0]], [[0.3]], rows_in_value=1)
    check_loss_gradients(edf.BCE, 1.0, 0.3, rows_in_value=1)  # scalars: a batch of one


def test_bce_is_finite_when_predictions_reach_0_or_1():
    graph, loss = loss_graph(edf.BCE, [[1.0], [0.0]], [[0.0], [1.0]])
    run(graph)
    # p = 1 is clipped to 1 - 1e-12, whose 1 - p is 1.00009e-12 in float64
    assert_allclose(loss.value, -np.log(1e-12) - np.log(1 - (1 - 1e-12)), rtol=1e-14)
    assert np.all(np.isfinite(graph[1].gradients[graph[1]]))
    assert np.all(np.isfinite(graph[0].gradients[graph[0]]))


@pytest.mark.parametrize("loss_class,width", [(edf.BCE, 1), (edf.CE, 10)])
def test_empty_batch_gives_zero_loss_and_zero_gradients(loss_class, width):
    x, y = edf.Input(), edf.Input()
    A, b = edf.Parameter(np.ones((3, width))), edf.Parameter(np.ones(width))
    out = (edf.Sigmoid if loss_class is edf.BCE else edf.Softmax)(edf.Linear(x, A, b))
    loss = loss_class(y, out)
    x.value, y.value = np.zeros((0, 3)), np.zeros((0, width))
    run([x, y, A, b, out.inputs[0], out, loss])  # raises on a division-by-zero warning
    assert loss.value == 0.0
    assert_array_equal(A.gradients[A], np.zeros((3, width)))
    assert_array_equal(b.gradients[b], np.zeros(width))


def test_ce_is_the_mean_over_rows(rng):
    k = 4
    y = np.eye(k)[rng.integers(0, k, size=5)]
    p = rng.dirichlet(np.ones(k), size=5)
    graph, loss = loss_graph(edf.CE, y, p)
    run(graph)
    assert_allclose(loss.value, np.mean(-np.log(p[y == 1])), rtol=1e-14)
    assert_allclose(graph[1].gradients[graph[1]], -y / p / 5, rtol=1e-15)
    check_loss_gradients(edf.CE, y, p, rows_in_value=1)
    check_loss_gradients(edf.CE, y[:1], p, rows_in_value=1)  # one stale label row against 5


def test_ce_is_finite_when_a_prediction_reaches_0():
    graph, loss = loss_graph(edf.CE, [[0.0, 1.0]], [[1.0, 0.0]])
    run(graph)
    assert_allclose(loss.value, -np.log(1e-12), rtol=1e-12)
    assert_allclose(graph[1].gradients[graph[1]], [[0.0, -1e12]], rtol=1e-12)


def test_softmax_ce_gradient_is_p_minus_y_over_rows(rng):
    x, y = edf.Parameter(rng.normal(size=(3, 4))), edf.Input()
    y.value = np.eye(4)[[0, 2, 3]]
    s = edf.Softmax(x)
    loss = edf.CE(y, s)
    run([x, y, s, loss])
    assert_allclose(x.gradients[x], (s.value - y.value) / 3, rtol=1e-12, atol=1e-15)


def test_star_import_gives_the_nodes_and_np():
    namespace = {}
    exec("from fastedf.numpy_edf import *", namespace)
    for name in ("Node", "Input", "Parameter", "Multiply", "Addition", "Linear", "Sigmoid", "BCE",
                 "ReLU", "Tanh", "Softmax", "CE", "Conv", "MaxPooling", "Flatten"):
        assert name in namespace
    assert namespace["np"] is np
