"""Conv, MaxPooling and Flatten: kernels against tests/naive.py, gradients against finite differences,
nodes against the plain-NumPy reference (fastedf/numpy_edf.py), refusals, buffer reuse.

Tolerances: kernels and reference rtol 1e-12 (summation order only), atol 1e-13;
finite differences as in test_nodes (h = 1e-6, rtol 1e-6, atol 1e-8).
"""
import tracemalloc
import types
import weakref

import naive
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_nodes import check_gradients, projection

import fastedf
from fastedf import (CE, Addition, Input, Linear, Parameter, ReLU, Softmax, Tanh, backward_pass, forward_pass,
                     numpy_edf, topological_sort)
from fastedf.ops.conv import (Conv, Flatten, MaxPooling, conv_backward, conv_columns, conv_forward, conv_input_grad,
                              maxpool_backward, maxpool_forward)

TOL = {"rtol": 1e-12, "atol": 1e-13}

# (B, H, W, C_in, kh, kw, C_out): 1x1, 3x3 and 5x3 kernels, one and several channels,
# empty and single batches, a kernel wider than the image.
CONV_SHAPES = [(1, 4, 4, 1, 1, 1, 1), (3, 4, 5, 2, 1, 1, 3), (0, 5, 5, 2, 3, 3, 3), (1, 8, 8, 1, 3, 3, 4),
               (3, 8, 8, 1, 3, 3, 4), (3, 5, 7, 2, 5, 3, 3), (2, 3, 2, 3, 5, 3, 1), (1, 1, 1, 1, 3, 3, 2)]


def sink(node, g):
    """A stand-in consumer whose gradient for `node` is g: node.backward() reads it as its upstream gradient."""
    return types.SimpleNamespace(gradients={node: g})


def conv_buffers(B, H, W, cin, kh, kw, cout):
    """Kernel outputs filled with NaN, so an element a kernel forgets to write shows."""
    taps = kh * kw * cin
    return (np.full((taps + 1, B * H * W), np.nan), np.full((taps + 1, cout), np.nan),
            np.full((B, H, W, cout), np.nan), np.full((taps + 1, cout), np.nan), np.full((B, H, W, cin), np.nan))


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("bias_2d", [False, True])
def test_conv_kernels(rng, shape, bias_2d):
    B, H, W, cin, kh, kw, cout = shape
    x, K, g = rng.normal(size=(B, H, W, cin)), rng.normal(size=(kh, kw, cin, cout)), rng.normal(size=(B, H, W, cout))
    b = rng.normal(size=(1, cout) if bias_2d else (cout,))
    cols, Kb, out, dKb, dx = conv_buffers(*shape)
    conv_forward(x, K, b, cols, Kb, out)
    assert_array_equal(cols[:-1], naive.conv_columns(x, kh, kw))
    assert_array_equal(cols[-1], 1.0)
    assert_allclose(out, naive.conv_forward(x, K, b), **TOL)
    conv_backward(cols, g, dKb)
    want_dx, want_dK, want_db = naive.conv_backward(x, K, g)
    assert_allclose(dKb[:-1].reshape(K.shape), want_dK, **TOL)
    assert_allclose(dKb[-1], want_db, **TOL)
    conv_input_grad(g, K, np.full(cols[:-1].shape, np.nan), dx)
    assert_allclose(dx, want_dx, **TOL)


def test_conv_columns_alone(rng):
    x = rng.normal(size=(2, 5, 4, 3))
    cols = np.full((5 * 3 * 3, 40), np.nan)
    conv_columns(x, 5, 3, cols)
    assert_array_equal(cols, naive.conv_columns(x, 5, 3))


# (B, H, W, C, size)
POOL_SHAPES = [(0, 4, 4, 2, 2), (1, 2, 2, 1, 2), (3, 6, 4, 3, 2), (2, 6, 6, 2, 3), (2, 3, 3, 2, 1)]


@pytest.mark.parametrize("B,H,W,C,size", POOL_SHAPES)
def test_maxpool_kernels(rng, B, H, W, C, size):
    x = rng.normal(size=(B, H, W, C))
    g = rng.normal(size=(B, H // size, W // size, C))
    out, arg, dx = np.full(g.shape, np.nan), np.full(g.shape, -7, dtype=np.int64), np.full(x.shape, np.nan)
    maxpool_forward(x, size, out, arg)
    want_out, want_arg = naive.maxpool_forward(x, size)
    assert_array_equal(out, want_out)
    assert_array_equal(arg, want_arg)
    maxpool_backward(g, arg, size, dx)
    assert_array_equal(dx, naive.maxpool_backward(x, g, size))


def test_maxpool_ties_go_to_the_first_maximum_in_row_major_order():
    x = np.array([[[[1.0], [1.0]], [[1.0], [1.0]]],    # all equal: (0, 0)
                  [[[0.0], [3.0]], [[3.0], [-1.0]]],   # (0, 1) before (1, 0)
                  [[[-2.0], [-5.0]], [[7.0], [7.0]]]])  # (1, 0) before (1, 1)
    out, arg = np.empty((3, 1, 1, 1)), np.empty((3, 1, 1, 1), dtype=np.int64)
    maxpool_forward(x, 2, out, arg)
    assert arg.ravel().tolist() == [0, 1, 2]
    dx = np.empty(x.shape)
    maxpool_backward(np.full((3, 1, 1, 1), 5.0), arg, 2, dx)
    assert_array_equal(dx.reshape(3, 4), [[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0]])
    # the node and the reference agree on the same ties
    xin, rin = Input(), numpy_edf.Input()
    xin.value = rin.value = x
    node, ref = MaxPooling(xin, 2), numpy_edf.MaxPooling(rin, 2)
    for n in (node, ref):
        n.forward()
        n.backward()
    assert_array_equal(node.gradients[xin], ref.gradients[rin])


def test_maxpool_nan_window_gives_nan_and_no_gradient():
    x = np.array([[[[1.0], [np.nan]], [[4.0], [2.0]]]])
    out, arg, dx = np.empty((1, 1, 1, 1)), np.empty((1, 1, 1, 1), dtype=np.int64), np.empty(x.shape)
    maxpool_forward(x, 2, out, arg)
    assert np.isnan(out[0, 0, 0, 0]) and arg[0, 0, 0, 0] == -1
    maxpool_backward(np.ones((1, 1, 1, 1)), arg, 2, dx)
    assert_array_equal(dx, 0.0)  # as the reference: no element equals a NaN maximum


# --- gradients against finite differences ---------------------------------


@pytest.mark.parametrize("kh,kw", [(1, 1), (3, 3), (5, 3)])
def test_conv_gradients(rng, kh, kw):
    x = Parameter(rng.normal(size=(2, 4, 5, 2)))  # a trainable x, so dx is computed at backward
    K, b = Parameter(rng.normal(size=(kh, kw, 2, 3))), Parameter(rng.normal(size=(3,)))
    check_gradients(projection(Conv(x, K, b), (2, 4, 5, 3), rng), [x, K, b])


def test_conv_gradients_with_data_input(rng):
    x = Input()
    x.value = rng.normal(size=(3, 4, 4, 1))
    K, b = Parameter(rng.normal(size=(3, 3, 1, 2))), Parameter(rng.normal(size=(1, 2)))
    check_gradients(projection(Conv(x, K, b), (3, 4, 4, 2), rng), [x, K, b])


def test_maxpool_gradients(rng):
    x = Parameter(rng.normal(size=(2, 4, 6, 3)))  # continuous values: no ties, the max is differentiable
    check_gradients(projection(MaxPooling(x, 2), (2, 2, 3, 3), rng), [x])


def test_flatten_gradients(rng):
    x = Parameter(rng.normal(size=(3, 2, 2, 2)))
    check_gradients(projection(Flatten(x), (3, 8), rng), [x])


def test_conv_net_gradients(rng):
    x = Input()
    x.value = rng.normal(size=(2, 4, 4, 1))
    K, c = Parameter(rng.normal(size=(3, 3, 1, 2))), Parameter(rng.normal(size=(2,)))
    A, b = Parameter(rng.normal(size=(8, 3))), Parameter(rng.normal(size=(3,)))
    logits = Linear(Flatten(MaxPooling(Conv(x, K, c), 2)), A, b)
    check_gradients(projection(logits, (2, 3), rng), [K, c, A, b, x])


def test_deferred_input_gradient_uses_K_as_it_was_at_backward(rng):
    x = Input()
    x.value = rng.normal(size=(2, 4, 4, 2))
    K, b = Parameter(rng.normal(size=(3, 3, 2, 3))), Parameter(np.zeros(3))
    weights = rng.normal(size=(2, 4, 4, 3))
    graph = topological_sort(projection(Conv(x, K, b), weights.shape, rng))
    graph[-1].weights = weights
    forward_pass(graph)
    backward_pass(graph)
    want = naive.conv_backward(x.value, K.value, weights)[0]
    K.value -= 0.5 * K.gradients[K]  # the update a script makes before reading x's gradient
    assert_allclose(x.gradients[x], want, **TOL)


# --- the nodes against fastedf/numpy_edf.py -------------------------------


# fastedf's nodes by the names numpy_edf uses
FAST = types.SimpleNamespace(Parameter=Parameter, Linear=Linear, Conv=Conv, MaxPooling=MaxPooling, Flatten=Flatten)


def net_pair(make, values):
    """The same graph built by `make(module, leaves)` in fastedf and numpy_edf; returns both (graph, leaves)."""
    built = []
    for module in (FAST, numpy_edf):
        leaves = [module.Parameter(v.copy()) for v in values]
        nodes = make(module, leaves)
        built.append((nodes, leaves))
    return built


def run_reference(nodes):
    for n in nodes:
        n.forward()
    for n in reversed(nodes):
        n.backward()


@pytest.mark.parametrize("B", [0, 1, 3])
@pytest.mark.parametrize("kh,kw,cin,cout", [(3, 3, 1, 4), (5, 3, 2, 3), (1, 1, 3, 1)])
def test_nodes_equal_the_numpy_reference(rng, B, kh, kw, cin, cout):
    values = [rng.normal(size=(B, 6, 4, cin)), rng.normal(size=(kh, kw, cin, cout)), rng.normal(size=(cout,)),
              rng.normal(size=(3 * 2 * cout, 2)), rng.normal(size=(2,))]

    def make(m, leaves):
        x, K, c, A, b = leaves
        conv = m.Conv(x, K, c)
        pool = m.MaxPooling(conv, 2)
        flat = m.Flatten(pool)
        return [conv, pool, flat, m.Linear(flat, A, b)]

    (fast, fast_leaves), (ref, ref_leaves) = net_pair(make, values)
    forward_pass(fast_leaves + fast)
    backward_pass(fast_leaves + fast)
    run_reference(ref_leaves + ref)
    for f, r in zip(fast, ref):
        assert f.value.shape == r.value.shape
        assert_allclose(f.value, r.value, **TOL)
    for f, r in zip(fast_leaves, ref_leaves):
        assert f.gradients[f].shape == r.gradients[r].shape
        assert_allclose(f.gradients[f], r.gradients[r], **TOL)
    if B == 0:
        assert all(np.all(f.gradients[f] == 0) for f in fast_leaves)


@pytest.mark.parametrize("shape", [(2, 4, 6), (2, 4, 2, 3, 2)])
def test_maxpool_and_flatten_other_ranks_equal_the_reference(rng, shape):
    values = [rng.normal(size=shape)]
    (fast, fl), (ref, rl) = net_pair(lambda m, leaves: [m.MaxPooling(leaves[0], 2), m.Flatten(leaves[0])], values)
    forward_pass(fl + fast)
    run_reference(rl + ref)
    for f, r in zip(fast, ref):
        assert_array_equal(f.value, r.value)
    for node, want in zip(fast, ref):
        node.outputs = [sink(node, np.ones(want.value.shape))]
        node.backward()
    ref[0].outputs = [sink(ref[0], np.ones(ref[0].value.shape))]
    ref[0].backward()
    assert_array_equal(fast[0].gradients[fl[0]], ref[0].gradients[rl[0]])
    assert_array_equal(fast[1].gradients[fl[0]], np.ones(shape))


def test_flatten_of_a_batch_vector():
    x = Input()
    x.value = np.arange(3.0)
    flat = Flatten(x)
    flat.forward()
    assert_array_equal(flat.value, [[0.0], [1.0], [2.0]])


def test_strided_input_is_read_correctly(rng):
    big = rng.normal(size=(3, 6, 10, 2))
    x = Input()
    x.value = big[:, :, ::2, :]  # not contiguous
    K, b = Parameter(rng.normal(size=(3, 3, 2, 2))), Parameter(rng.normal(size=(2,)))
    conv = Conv(x, K, b)
    conv.forward()
    assert_allclose(conv.value, naive.conv_forward(x.value, K.value, b.value), **TOL)


def test_fortran_ordered_kernel_is_read_correctly(rng):
    x = Parameter(rng.normal(size=(2, 5, 5, 3)))
    K = Parameter(np.asfortranarray(rng.normal(size=(3, 3, 3, 2))))  # kept as given: not C-contiguous
    b = Parameter(rng.normal(size=(2,)))
    check_gradients(projection(Conv(x, K, b), (2, 5, 5, 2), rng), [x, K, b])


def test_maxpool_backward_after_a_forward_at_another_shape(rng):
    x = Input()
    x1, x2 = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(3, 6, 4, 3))
    pool = MaxPooling(x, 2)
    g = rng.normal(size=(2, 2, 2, 3))
    pool.outputs.append(sink(pool, g))
    for value in (x1, x2):
        x.value = value
        pool.forward()
    x.value = x1
    pool.backward()  # the maxima in the cache for x1's shape are stale: x2's forward ran last
    assert_array_equal(pool.gradients[x], naive.maxpool_backward(x1, g, 2))


# --- refusals --------------------------------------------------------------


def conv_on(x_shape, K_shape, b_shape):
    x = Input()
    x.value = np.zeros(x_shape)
    return Conv(x, Parameter(np.zeros(K_shape)), Parameter(np.zeros(b_shape)))


@pytest.mark.parametrize("x_shape,K_shape,b_shape,message", [
    ((2, 8, 8), (3, 3, 1, 4), (4,), r"Conv#\d+: x has shape \(2, 8, 8\).*channels last.*x\[\.\.\., None\]"),
    ((2, 8, 8, 1), (3, 3, 4), (4,), (r"Conv#\d+: x has shape \(2, 8, 8, 1\) and K has shape \(3, 3, 4\);.*"
                                     r"\(kh, kw, C_in, C_out\) with odd kh, kw")),
    ((2, 8, 8, 1), (2, 2, 1, 4), (4,), r"Conv#\d+: K has shape \(2, 2, 1, 4\), an even kernel size"),
    ((2, 8, 8, 1), (3, 4, 1, 4), (4,), r"even kernel size \(3, 4\)"),
    ((2, 8, 8, 3), (3, 3, 1, 4), (4,), (r"Conv#\d+: x has shape \(2, 8, 8, 3\) with 3 channels but K has shape "
                                        r"\(3, 3, 1, 4\) for 1")),
    ((2, 3, 8, 8), (3, 3, 3, 4), (4,), r"x looks channels-first: pass x\.transpose\(0, 2, 3, 1\)"),
    ((2, 8, 8, 1), (4, 1, 3, 3), (4,), r"K looks like \(C_out, C_in, kh, kw\): pass K\.transpose\(2, 3, 1, 0\)"),
    ((2, 8, 8, 1), (3, 3, 1, 4), (3,), r"Conv#\d+: b has shape \(3,\) but K has shape \(3, 3, 1, 4\); need b \(4,\)"),
])
def test_conv_refusals(x_shape, K_shape, b_shape, message):
    conv = conv_on(x_shape, K_shape, b_shape)
    with pytest.raises(ValueError, match=message):
        conv.forward()


def test_conv_without_a_bias_is_a_zero_bias_that_is_not_trained(images):
    """Conv(x, K): the value and K's gradient of Conv(x, K, zeros) node by node; the engines agree on training it."""
    X, Y = images[0][:40], images[1][:40]
    rng = np.random.default_rng(2)
    K_start, A_start = rng.normal(scale=0.5, size=(3, 3, 2, 4)), rng.normal(scale=0.2, size=(192, 10))
    runs = {}
    for form, engine in (("zeros", None), ("no bias", "graph"), ("no bias", "compiled")):
        x, y, K, A = Input(), Input(), Parameter(K_start.copy()), Parameter(A_start.copy())
        conv = Conv(x, K, Parameter(np.zeros(4))) if form == "zeros" else Conv(x, K)
        loss = CE(y, Softmax(Linear(Flatten(ReLU(conv)), A, Parameter(np.zeros(10)))))
        x.value, y.value = X[:5], Y[:5]
        graph = topological_sort(loss)
        forward_pass(graph)
        backward_pass(graph)
        runs[form, engine] = [conv.value.copy(), K.gradients[K].copy()]
        if engine:
            assert conv.inputs == [x, K] and sum(isinstance(n, Parameter) for n in graph) == 3  # K, A, b
            history = fastedf.fit(loss, {x: X, y: Y}, batch_size=8, epochs=2, lr=0.05, engine=engine)
            runs[form, engine] += [history.epoch_loss, K.value.copy()]
    for key in (("no bias", "graph"), ("no bias", "compiled")):
        for got, want in zip(runs[key], runs["zeros", None]):
            assert_allclose(got, want, **TOL)
    for got, want in zip(runs["no bias", "compiled"][2:], runs["no bias", "graph"][2:]):
        assert_allclose(got, want, rtol=1e-11, atol=1e-13)


def test_conv_layer_form_makes_trainable_parameters(images):
    """Conv(x, C_in, C_out, kernel, stride=1, padding=1): K ~ N(0, 1/(kh kw C_in)), b = 0, trained by fit."""
    x, y = Input(), Input()
    conv = Conv(x, 2, 16, 3, stride=1, padding=1)
    assert conv.K.value.shape == (3, 3, 2, 16) and conv.inputs == [x, conv.K, conv.b]
    assert_array_equal(conv.b.value, np.zeros(16))
    assert conv.K.value.std() == pytest.approx(1 / np.sqrt(18), rel=0.15)  # 288 draws
    for same in (dict(kernel_size=3, padding="same"), dict(kernel=(3, 3)), dict(kernel=1, padding=0)):
        assert Conv(x, 2, 3, **same).K.value.shape[:2] == _pair_of(same)
    pooled = MaxPooling(ReLU(conv), 2, 2)
    loss = CE(y, Softmax(Linear(Flatten(pooled), 4 * 3 * 16, 10)))
    start = conv.K.value.copy()
    history = fastedf.fit(loss, {x: images[0][:40], y: images[1][:40]}, batch_size=8, epochs=1, lr=0.05)
    assert history.engine == "compiled"
    assert not np.allclose(conv.K.value, start) and np.any(conv.b.value != 0)


def _pair_of(options):
    kernel = options.get("kernel", options.get("kernel_size"))
    return tuple(kernel) if isinstance(kernel, tuple) else (kernel, kernel)


@pytest.mark.parametrize("make,message", [
    (lambda x: Conv(x, 1, 4, 3, stride=2), r"Conv: stride 2; fastedf computes Conv\(x, K, b\) with stride 1"),
    (lambda x: Conv(x, 1, 4, 3, 1, 0), r"Conv: padding 0 for a \(3, 3\) kernel; .*'same' padding \(kernel // 2\)"),
    (lambda x: Conv(x, 1, 4, 3, padding="valid"), r"Conv: padding 'valid' for a \(3, 3\) kernel"),
    (lambda x: Conv(x, Parameter(np.zeros((5, 5, 1, 2))), padding=1), r"Conv#\d+: padding 1 for K of shape \(5, 5"),
    (lambda x: MaxPooling(x, 2, 1), r"MaxPooling: size 2 and stride 1; .*\(stride == size\)"),
    (lambda x: MaxPooling(x, (2, 3)), r"MaxPooling: size \(2, 3\) and stride None"),
])
def test_layer_forms_outside_the_convention_are_refused(make, message):
    x = Input()
    x.value = np.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match=message) as error:
        make(x).forward()
    assert "channels last" in str(error.value) and "`fastedf run SCRIPT.py`" in str(error.value)


def test_channels_first_data_into_the_layer_form_is_refused_at_the_first_forward():
    x = Input()
    conv = Conv(x, 3, 4, 3)
    x.value = np.zeros((2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"Conv#\d+: x has shape \(2, 3, 8, 8\) with 8 channels.*x looks "
                                         r"channels-first: pass x\.transpose\(0, 2, 3, 1\); .*fastedf run"):
        conv.forward()


def test_maxpooling_with_stride_equal_to_size_is_maxpooling(rng):
    x = Input()
    x.value = rng.normal(size=(2, 4, 6, 3))
    for pool in (MaxPooling(x, 2, 2), MaxPooling(x, (2, 2), stride=(2, 2))):
        pool.forward()
        assert_array_equal(pool.value, naive.maxpool_forward(x.value, 2)[0])


def test_conv_refuses_at_backward_when_values_changed_shape():
    conv = conv_on((2, 8, 8, 1), (3, 3, 1, 4), (4,))
    conv.forward()
    conv.inputs[1].value = np.zeros((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"Conv#\d+: x has shape \(2, 8, 8, 1\) with 1 channels"):
        conv.backward()


@pytest.mark.parametrize("shape,size,message", [
    ((2, 5, 4, 1), 2, (r"MaxPooling#\d+: x has shape \(2, 5, 4, 1\); MaxPooling\(x, size=2\) takes x "
                       r"\(batch, H, W, C\) channels-last with H and W divisible by 2")),
    ((2, 6, 6, 1), 4, r"MaxPooling#\d+: x has shape \(2, 6, 6, 1\).*divisible by 4"),
    ((4, 4), 2, r"MaxPooling#\d+: x has shape \(4, 4\)"),
])
def test_maxpool_refusals(shape, size, message):
    x = Input()
    x.value = np.zeros(shape)
    pool = MaxPooling(x, size)
    with pytest.raises(ValueError, match=message):
        pool.forward()


@pytest.mark.parametrize("size", [0, -2, 1.5, True])
def test_maxpool_refuses_bad_sizes(size):
    with pytest.raises(ValueError, match=r"MaxPooling: size must be a positive integer"):
        MaxPooling(Input(), size)


def test_flatten_refuses_a_scalar():
    x = Input()
    x.value = 3.0
    with pytest.raises(ValueError, match=r"Flatten#\d+: x is a scalar"):
        Flatten(x).forward()


# --- buffers ---------------------------------------------------------------


def small_net(rng, batch=8):
    x = Input()
    x.value = rng.normal(size=(batch, 8, 8, 1))
    K, c = Parameter(rng.normal(size=(3, 3, 1, 4))), Parameter(np.zeros(4))
    conv = Conv(x, K, c)
    pool = MaxPooling(conv, 2)
    flat = Flatten(pool)
    loss = projection(flat, (batch, 64), rng)
    return x, conv, pool, flat, topological_sort(loss)


def internal_buffers(conv, pool, flat):
    """Weak references to every array the three nodes hold (values, gradients, scratch), by name.

    Weak, so that holding them does not stop the nodes from reusing their values.
    """
    x, K, c = conv.inputs
    buf = conv._buffers[x.value.shape, K.value.shape, c.value.shape]
    arrays = {"conv.value": conv.value, "cols": buf.cols, "Kb": buf.Kb, "dK": conv.gradients[K],
              "db": conv.gradients[c], "pool.value": pool.value, "arg": pool._arg_of.arg,
              "pool.dx": pool.gradients[conv], "flat.value": flat.value}
    return {name: weakref.ref(a) for name, a in arrays.items()}


def test_a_second_step_reuses_every_buffer(rng):
    x, conv, pool, flat, graph = small_net(rng, batch=64)
    forward_pass(graph)
    backward_pass(graph)
    first = internal_buffers(conv, pool, flat)
    x.value = rng.normal(size=x.value.shape)
    ours = [conv, pool, flat]
    tracemalloc.start()
    for node in ours:
        node.forward()
    forward_peak = tracemalloc.get_traced_memory()[1]
    graph[-1].backward()  # the test's loss node allocates; it is left out
    tracemalloc.reset_peak()
    held = tracemalloc.get_traced_memory()[0]
    for node in reversed(ours):
        node.backward()
    backward_peak = tracemalloc.get_traced_memory()[1] - held
    tracemalloc.stop()
    second = internal_buffers(conv, pool, flat)
    for name in first:
        assert second[name]() is first[name](), name
    # Python objects (views, tuples) only: the smallest array here is 8 KB
    assert forward_peak < 4096 and backward_peak < 4096, (forward_peak, backward_peak)


def test_dx_buffer_is_reused_when_x_is_trainable(rng):
    x = Parameter(rng.normal(size=(4, 6, 6, 2)))
    conv = Conv(x, Parameter(rng.normal(size=(3, 3, 2, 3))), Parameter(np.zeros(3)))
    graph = topological_sort(projection(conv, (4, 6, 6, 3), rng))
    forward_pass(graph)
    backward_pass(graph)
    dx = conv.gradients[x]
    backward_pass(graph)
    assert conv.gradients[x] is dx


def test_kept_values_are_never_overwritten(rng):
    x, conv, pool, flat, graph = small_net(rng)
    forward_pass(graph)
    kept = [conv.value, pool.value, flat.value]
    copies = [v.copy() for v in kept]
    x.value = rng.normal(size=x.value.shape)
    forward_pass(graph)
    for node, old, copy in zip((conv, pool, flat), kept, copies):
        assert node.value is not old
        assert_array_equal(old, copy)


def test_alternating_batch_sizes_keep_their_buffers(rng):
    x, conv, _, _, _ = small_net(rng)
    big, small = rng.normal(size=(8, 8, 8, 1)), rng.normal(size=(3, 8, 8, 1))
    cols = {}
    for value in (big, small, big, small):
        x.value = value
        conv.forward()
        buf = conv._buffers[value.shape, (3, 3, 1, 4), (4,)]
        assert cols.setdefault(value.shape, buf.cols) is buf.cols
        assert_allclose(conv.value, naive.conv_forward(value, conv.inputs[1].value, conv.inputs[2].value), **TOL)


def test_backward_after_a_forward_at_another_shape_rebuilds_the_columns(rng):
    x = Input()
    x1, x2 = rng.normal(size=(2, 4, 4, 1)), rng.normal(size=(5, 4, 4, 1))
    K, b = Parameter(rng.normal(size=(3, 3, 1, 2))), Parameter(np.zeros(2))
    conv = Conv(x, K, b)
    g = rng.normal(size=(2, 4, 4, 2))
    conv.outputs.append(sink(conv, g))
    for value in (x1, x2):
        x.value = value
        conv.forward()
    x.value = x1
    conv.backward()  # the columns in the cache for x1's shape are stale: x2's forward ran last
    _, want_dK, _ = naive.conv_backward(x1, K.value, g)
    assert_allclose(conv.gradients[K], want_dK, **TOL)


def conv_net(two_convs, seed=5):
    """(B, 8, 6, 2) images -> Conv 3x3 -> ReLU -> MaxPooling [-> Conv 3x3 -> Tanh] -> Flatten -> Linear -> CE.

    The head is Softmax into CE."""
    rng = np.random.default_rng(seed)
    x, y = Input(), Input()
    K, c = Parameter(rng.normal(scale=0.5, size=(3, 3, 2, 4))), Parameter(np.zeros(4))
    h = MaxPooling(ReLU(Conv(x, K, c)), 2)
    parameters = [K, c]
    if two_convs:  # a conv whose input is an operation: its dx and MaxPooling's backward run too
        K2, c2 = Parameter(rng.normal(scale=0.3, size=(3, 3, 4, 3))), Parameter(np.zeros((1, 3)))
        h = Tanh(Conv(h, K2, c2))
        parameters += [K2, c2]
    A, b = Parameter(rng.normal(scale=0.2, size=(4 * 3 * (3 if two_convs else 4), 10))), Parameter(np.zeros(10))
    loss = CE(y, Softmax(Linear(Flatten(h), A, b)))
    return x, y, parameters + [A, b], loss


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(300, 8, 6, 2)), np.eye(10)[rng.integers(0, 10, 300)]


def fit_conv_net(images, engine, two_convs, **options):
    x, y, parameters, loss = conv_net(two_convs)
    history = fastedf.fit(loss, {x: images[0], y: images[1]}, epochs=2, lr=0.05, engine=engine, **options)
    return history, np.concatenate([p.value.ravel() for p in parameters])


@pytest.mark.parametrize("batch_size", [1, 7, 32, 256])
@pytest.mark.parametrize("two_convs", [False, True])
def test_engines_agree_on_conv_nets(images, batch_size, two_convs):
    """Compiled and graph engines: the same epoch losses and parameters to 1e-11, shuffled, a short last batch."""
    runs = {engine: fit_conv_net(images, engine, two_convs, batch_size=batch_size, shuffle=True, seed=3)
            for engine in ("graph", "compiled")}
    assert [runs[engine][0].engine for engine in runs] == ["graph", "compiled"]
    assert_allclose(runs["compiled"][0].epoch_loss, runs["graph"][0].epoch_loss, rtol=1e-11)
    assert_allclose(runs["compiled"][1], runs["graph"][1], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("two_convs", [False, True], ids=["one_conv", "two_convs"])
@pytest.mark.parametrize("batch_size,micro_batch", [(7, None), (16, 5)])
@pytest.mark.parametrize("engine", ["compiled", "graph"])
def test_conv_nets_train_as_the_numpy_loop(images, two_convs, batch_size, micro_batch, engine):
    """Shuffled, a short last batch, micro-batches: against tests/naive.py's conv net step, on 40 images."""
    X, Y = images[0][:40], images[1][:40]
    x, y, parameters, loss = conv_net(two_convs)
    want = naive.sgd(naive.conv_net_step, [p.value.copy() for p in parameters], [X, Y], batch_size, 2, 0.05, seed=3)
    history = fastedf.fit(loss, {x: X, y: Y}, batch_size=batch_size, epochs=2, lr=0.05, engine=engine, shuffle=True,
                          seed=3, micro_batch=micro_batch)
    assert history.engine == engine
    naive.assert_trained_as(history.epoch_loss, [p.value for p in parameters], want)


def test_conv_nets_compile_under_auto_and_with_micro_batches(images):
    auto, _ = fit_conv_net(images, "auto", True, batch_size=32)
    assert (auto.engine, auto.note) == ("compiled", "")
    graph = fit_conv_net(images, "graph", True, batch_size=32, micro_batch=8)
    compiled = fit_conv_net(images, "compiled", True, batch_size=32, micro_batch=8)
    assert_allclose(compiled[0].epoch_loss, graph[0].epoch_loss, rtol=1e-11)
    assert_allclose(compiled[1], graph[1], rtol=1e-11, atol=1e-13)


def test_a_parameter_of_rank_4_outside_convs_kernel_slot_is_left_to_the_graph_engine():
    """Rules reshape image rows by the batch; an unbatched image (a Parameter) only compiles as a Conv's K."""
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(10, 2)), np.eye(2)[rng.integers(0, 2, 10)]
    x, y = Input(), Input()
    image = Parameter(rng.normal(size=(1, 2, 2, 1)))
    z = Addition(Linear(Flatten(image), Parameter(rng.normal(size=(4, 2))), Parameter(np.zeros(2))),
                 Linear(x, Parameter(rng.normal(size=(2, 2))), Parameter(np.zeros(2))))
    history = fastedf.fit(CE(y, Softmax(z)), {x: X, y: Y}, batch_size=4, epochs=1)
    assert history.engine == "graph"
    assert f"{image} has shape (1, 2, 2, 1)" in history.note
