"""Every kernel against its slow NumPy version in tests/naive.py.

Tolerance: rtol 1e-12 (different summation order only), atol 1e-14.
"""
import types
import warnings

import naive
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError
from numpy.testing import assert_allclose, assert_array_equal

from fastedf.kernels import gemm
from fastedf.ops import linear

K = naive.all_kernels()

TOL = dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch,n,m", [(1, 1, 1), (1, 2, 1), (7, 3, 4), (33, 5, 2), (5, 9, 1), (3, 2, 9),
                                     (300, 5, 1), (40, 30, 20)])
@pytest.mark.parametrize("bias_2d", [False, True])
def test_linear(rng, batch, n, m, bias_2d):
    x, A, g = rng.normal(size=(batch, n)), rng.normal(size=(n, m)), rng.normal(size=(batch, m))
    b = rng.normal(size=(1, m) if bias_2d else (m,))
    out = np.full((batch, m), np.nan)
    K.linear_forward(x, A, b, out)
    assert_allclose(out, naive.linear_forward(x, A, b), **TOL)
    dA, db = np.full((n, m), np.nan), np.full(b.shape, np.nan)
    K.linear_backward(x, g, dA, db)
    want_dA, want_db = naive.linear_backward(x, g)
    assert_allclose(dA, want_dA, **TOL)
    assert_allclose(db.ravel(), want_db, **TOL)
    dx = np.full((batch, n), np.nan)
    K.linear_input_grad(g, A, dx)
    assert_allclose(dx, naive.linear_input_grad(g, A), **TOL)


# Below the BLAS crossover each shape takes one of several loop orders (linear.py): every one adds in the order
# below, so each result is that of a plain Python sum to the last bit.
@pytest.mark.parametrize("batch,n,m", [(40, 2, 1), (4, 9, 1), (2, 3, 6), (6, 5, 2), (1, 7, 3)])
def test_linear_register_loops_add_in_one_stated_order(rng, batch, n, m):
    assert batch * n * m < linear.BLAS_MIN_WORK
    x, A, b, g = rng.normal(size=(batch, n)), rng.normal(size=(n, m)), rng.normal(size=m), rng.normal(size=(batch, m))
    out, dA, db, dx = np.empty((batch, m)), np.empty((n, m)), np.empty(m), np.empty((batch, n))
    K.linear_forward(x, A, b, out)
    K.linear_backward(x, g, dA, db)
    K.linear_input_grad(g, A, dx)
    for i, j in np.ndindex(batch, m):
        want = float(b[j])
        for k in range(n):
            want += float(x[i, k]) * float(A[k, j])
        assert out[i, j] == want
    for k, j in np.ndindex(n, m):
        want = float(x[0, k]) * float(g[0, j])
        for i in range(1, batch):
            want += float(x[i, k]) * float(g[i, j])
        assert dA[k, j] == want
    for i, k in np.ndindex(batch, n):
        want = 0.0
        for j in range(m):
            want += float(g[i, j]) * float(A[k, j])
        assert dx[i, k] == want


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")  # strided on purpose
def test_linear_reads_strided_input(rng):
    wide = rng.normal(size=(6, 4))
    x = wide[:, ::2]  # not contiguous
    A, b, out = rng.normal(size=(2, 3)), rng.normal(size=3), np.empty((6, 3))
    K.linear_forward(x, A, b, out)
    assert_allclose(out, naive.linear_forward(x, A, b), **TOL)


def test_sigmoid_matches_and_never_warns(rng):
    z = np.concatenate([rng.normal(scale=5, size=20), [-1e308, -1000.0, -745.0, -40.0, 0.0, 40.0, 1000.0, 1e308]])
    z = z.reshape(4, 7)
    p, g, dz = np.empty_like(z), rng.normal(size=z.shape), np.empty_like(z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K.sigmoid_forward(z, p)
        want = naive.sigmoid(z)
    assert_allclose(p, want, **TOL)
    assert np.all((p >= 0) & (p <= 1))
    K.sigmoid_backward(p, g, dz)
    assert_allclose(dz, naive.sigmoid_backward(p, g), **TOL)


def test_sigmoid_in_place(rng):
    z = rng.normal(size=(5, 1))
    want = naive.sigmoid(z)
    K.sigmoid_forward(z, z)
    assert_allclose(z, want, **TOL)


@pytest.mark.parametrize("shape", [(1, 1), (9, 1), (4, 3)])
def test_bce(rng, shape):
    y = (rng.random(shape) > 0.5).astype(float)
    y.flat[0] = 0.3  # a soft label takes the general branch
    p = rng.random(shape)
    loss, bad = K.bce_forward(y, p)
    assert bad == -1
    assert loss == pytest.approx(naive.bce(y, p), rel=1e-12)
    out = np.empty(shape)
    K.bce_backward(y, p, 0.7, out)
    assert_allclose(out, naive.bce_backward(y, p, 0.7), **TOL)
    K.bce_label_grad(p, 0.7, out)
    assert_allclose(out, naive.bce_label_grad(p, 0.7), **TOL)


@pytest.mark.parametrize("rows", [15, 16, 300])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_bce_vector_and_scalar_passes_agree(rng, rows, soft):
    """From 16 rows with 0/1 labels sigmoid_bce runs vectorised passes (vexp's log); otherwise, and without
    want_grad, one scalar pass (libm's): the losses agree to 1e-14, the gradients are the chain rule's bits."""
    z = rng.normal(size=(rows, 1)) * 4
    y = (rng.random((rows, 1)) > 0.5).astype(float)
    z[:3] = [[-40.0], [40.0], [0.0]]  # the clip active at both ends
    if soft:
        y[5] = 0.25
    out = np.empty_like(z)
    loss, bad = K.sigmoid_bce(z, y, out, True)
    scalar, bad_scalar = K.sigmoid_bce(z, y, np.empty_like(z), False)
    assert bad == bad_scalar == -1
    assert loss == pytest.approx(scalar, rel=1e-14)
    assert loss == pytest.approx(naive.bce(y, naive.sigmoid(z)), rel=1e-12)
    p, want = np.empty_like(z), np.empty_like(z)
    K.sigmoid_forward(z, p)
    K.sigmoid_bce_backward(y, p, 1.0 / rows, want)
    assert_array_equal(out, want)


def test_bce_finite_at_saturation():
    y = np.array([[0.0], [1.0], [0.0], [1.0]])
    p = np.array([[0.0], [1.0], [1.0], [0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, bad = K.bce_forward(y, p)
        out = np.empty_like(p)
        K.bce_backward(y, p, 1.0, out)
    assert bad == -1 and np.isfinite(loss) and np.all(np.isfinite(out))
    assert loss == pytest.approx(naive.bce(y, p), rel=1e-12)
    assert_allclose(out, naive.bce_backward(y, p), **TOL)


@pytest.mark.parametrize("y,p,index", [([0.0, 2.0], [0.5, 0.5], 1), ([0.0, -0.1], [0.5, 0.5], 1),
                                       ([1.0, 0.0], [np.nan, 0.5], 0), ([1.0, 0.0], [0.5, 1.5], 1),
                                       ([np.nan, 0.0], [0.5, 0.5], 0)])
def test_bce_reports_first_bad_element(y, p, index):
    loss, bad = K.bce_forward(np.array(y), np.array(p))
    assert bad == index and np.isnan(loss)


def test_sgd_update(rng):
    param, grad = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    want = param - 0.05 * grad
    K.sgd_update(param, grad, 0.05)
    assert_allclose(param, want, **TOL)


@pytest.mark.parametrize("a_shape,b_shape", [((5, 3), (5, 3)), ((5, 3), (1, 3)), ((5, 1), (1, 1)),
                                             ((1, 1), (5, 2)), ((5, 1), (1, 4))])
def test_broadcasting_kernels(rng, a_shape, b_shape):
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    out = np.empty(out_shape)
    K.broadcast_binary(a, b, True, out)
    assert_allclose(out, a * b, **TOL)
    K.broadcast_binary(a, b, False, out)
    assert_allclose(out, a + b, **TOL)
    g = rng.normal(size=out_shape)
    da = np.full(a_shape, np.nan)
    K.sum_to(g, da)
    assert_allclose(da, naive.sum_to(g, a_shape), **TOL)
    K.product_sum_to(g, b, da)
    assert_allclose(da, naive.sum_to(g * b, a_shape), **TOL)


def test_shuffle_order_is_a_seeded_permutation():
    orders = []
    for seed in (7, 7, 8):
        order = np.arange(100, dtype=np.int64)
        state = K.shuffle_order(order, np.uint64(seed))
        assert sorted(order) == list(range(100))
        orders.append((order.copy(), state))
    assert np.array_equal(orders[0][0], orders[1][0]) and orders[0][1] == orders[1][1]
    assert not np.array_equal(orders[0][0], orders[2][0])
    assert not np.array_equal(orders[0][0], np.arange(100))


@pytest.mark.parametrize("rows", [1, 2, 5, 1050])
@pytest.mark.parametrize("seed", [0, 11, 2**64 - 1])
def test_shuffle_order_follows_its_documented_rule(rows, seed):
    """Three epochs' orders against tests/naive.py's shuffle, written from the kernel's docstring."""
    order, state, reference, want_state = np.arange(rows, dtype=np.int64), np.uint64(seed), list(range(rows)), seed
    for _ in range(3):
        state = np.uint64(K.shuffle_order(order, state))  # as fit carries it
        want_state = naive.shuffle_order(reference, want_state)
        assert order.tolist() == reference and int(state) == want_state


def test_take_rows(rng):
    src, order = rng.normal(size=(6, 3)), rng.permutation(6).astype(np.int64)
    dst = np.empty_like(src)
    K.take_rows(src, order, dst)
    assert np.array_equal(dst, src[order])


@pytest.mark.parametrize("call", [
    lambda: K.sigmoid_forward(np.zeros(3), np.zeros(2)),
    lambda: K.sigmoid_backward(np.zeros(3), np.zeros(3), np.zeros(2)),
    lambda: K.bce_forward(np.zeros(2), np.zeros(3)),
    lambda: K.bce_backward(np.zeros(2), np.zeros(3), 1.0, np.zeros(3)),
    lambda: K.sigmoid_bce_backward(np.zeros(3), np.zeros(3), 1.0, np.zeros(2)),
    lambda: K.bce_label_grad(np.zeros(3), 1.0, np.zeros(2)),
    lambda: K.sgd_update(np.zeros(3), np.zeros(2), 0.1),
])
def test_elementwise_kernels_refuse_mismatched_sizes(call):
    # .flat is never bounds-checked: the kernels check sizes themselves
    with pytest.raises(ValueError, match="different sizes"):
        call()


def test_sigmoid_bce_backward_is_the_chain_of_both(rng):
    y = (rng.random((6, 1)) > 0.5) * 1.0
    z = np.concatenate([rng.normal(size=(4, 1)), [[40.0], [-40.0]]])  # two saturated: the clip is active
    p = naive.sigmoid(z)
    out = np.empty_like(p)
    K.sigmoid_bce_backward(y, p, 0.5, out)
    assert_allclose(out, naive.sigmoid_backward(p, naive.bce_backward(y, p, 0.5)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("low,high,data,row", [(0.0, 1.0, [[0.0], [1.0], [0.5]], -1), (0.0, 1.0, [[0.0], [2.0]], 1),
                                               (-1e308, 1e308, [[1.0, np.nan], [0.0, 0.0]], 0)])
def test_first_bad_row(low, high, data, row):
    assert K.first_bad_row(np.array(data), low, high) == row


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("n,m", [(1, 1), (784, 1), (3, 5), (64, 64)])
def test_linear_sgd_rows_is_backward_then_sgd_bit_for_bit(rng, batch, n, m):
    """The fused one- and two-row step against linear_backward and two sgd_updates: the same bits."""
    x, g, A, b = (rng.normal(size=(batch, n)), rng.normal(size=(batch, m)), rng.normal(size=(n, m)),
                  rng.normal(size=m))
    A2, b2, dA, db = A.copy(), b.copy(), np.empty((n, m)), np.empty(m)
    K.linear_backward(x, g, dA, db)
    K.sgd_update(A2, dA, 0.3)
    K.sgd_update(b2, db, 0.3)
    K.linear_sgd_rows(x, g, A, b, 0.3)
    assert_array_equal(A, A2)
    assert_array_equal(b, b2)


def test_linear_sgd_rows_refuses_other_shapes(rng):
    with pytest.raises(ValueError, match="arrays of different shapes"):
        K.linear_sgd_rows(np.ones((2, 3)), np.ones((2, 4)), np.ones((3, 5)), np.ones(4), 0.1)
    with pytest.raises(ValueError, match="arrays of different shapes"):  # more rows than it fuses
        rows = linear.FUSED_MAX_ROWS + 1
        K.linear_sgd_rows(np.ones((rows, 3)), np.ones((rows, 4)), np.ones((3, 4)), np.ones(4), 0.1)


@pytest.mark.parametrize("batch", [2, 5, linear.BLAS_MIN_ROWS - 1])
def test_small_batches_multiply_row_by_row(rng, batch):
    """Under BLAS_MIN_ROWS a BLAS-sized product is one call per row, each row's bits those of a batch of one."""
    n, m = 64, 32
    assert n * m >= linear.BLAS_MIN_WORK
    x, A, b, g = rng.normal(size=(batch, n)), rng.normal(size=(n, m)), rng.normal(size=m), rng.normal(size=(batch, m))
    out, dA, db, dx = np.empty((batch, m)), np.empty((n, m)), np.empty(m), np.empty((batch, n))
    K.linear_forward(x, A, b, out)
    K.linear_backward(x, g, dA, db)
    K.linear_input_grad(g, A, dx)
    for i in range(batch):
        one, one_dx = np.empty((1, m)), np.empty((1, n))
        K.linear_forward(x[i:i + 1], A, b, one)
        K.linear_input_grad(g[i:i + 1], A, one_dx)
        assert_array_equal(out[i], one[0])
        assert_array_equal(dx[i], one_dx[0])
    assert_allclose(dA, naive.linear_backward(x, g)[0], **TOL)
    assert_allclose(out, naive.linear_forward(x, A, b), **TOL)


def test_borrowed_views_read_and_write_the_arrays_memory():
    from numba import njit

    from fastedf.kernels import borrowed

    @njit
    def double_middle(a):
        view = borrowed(a)[1:3]
        view *= 2.0
        return view.sum(), borrowed(a).reshape((2, 2))[1, 0]

    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert double_middle(a) == (10.0, 6.0)
    assert_array_equal(a, [1.0, 4.0, 6.0, 4.0])


@njit(cache=False)
def _gemm(a, b, out):
    return gemm(a, b, out)


@njit(cache=False)
def _np_dot(a, b, out):
    return np.dot(a, b, out)


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")  # strided on purpose
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 7, 5), (6, 7, 1), (33, 20, 17), (3, 0, 4)])
@pytest.mark.parametrize("layouts", ["CC", "FC", "CF", "AC"])
def test_gemm_is_numbas_np_dot(rng, m, k, n, layouts):
    def operand(rows, cols, layout):
        if layout == "F":
            return np.asfortranarray(rng.normal(size=(rows, cols)))
        if layout == "A":
            return rng.normal(size=(rows, 2 * cols))[:, ::2]
        return rng.normal(size=(rows, cols))
    a, b = operand(m, k, layouts[0]), operand(k, n, layouts[1])
    out, want = np.full((m, n), np.nan), np.full((m, n), np.nan)
    returned = _gemm(a, b, out)
    assert np.shares_memory(returned, out) and returned.shape == out.shape  # out itself, as documented
    _np_dot(a, b, want)
    assert_array_equal(out, want)  # the same BLAS calls: the same bits
    assert_allclose(out, a @ b, **TOL)


def test_gemm_checks_shapes_and_refuses_an_output_it_cannot_write():
    with pytest.raises(ValueError, match="incompatible"):
        _gemm(np.ones((2, 3)), np.ones((4, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="incompatible"):
        _gemm(np.ones((2, 3)), np.ones((3, 2)), np.zeros((3, 2)))
    with pytest.raises(TypingError):
        _gemm(np.ones((2, 3)), np.ones((3, 2)), np.zeros((2, 4))[:, ::2])  # a strided out: a copy would be written


def test_calls_blas_says_what_the_kernels_decide():
    """Linear pins BLAS threads (importing SciPy) only where blas_rows sends a product to BLAS."""
    space = dict(vars(linear), blas_pays=linear.blas_pays.py_func)
    blas_rows = types.FunctionType(linear.blas_rows.py_func.__code__, space)
    sizes = (0, 1, 2, 7, 8, 9, 64, 100, 784)
    for batch in sizes:
        for n in sizes:
            for m in sizes:
                uses = batch > 0 and blas_rows(batch, n, m) != 0
                assert linear.calls_blas(batch, n, m) == uses, (batch, n, m)
