"""The course's later nodes (ReLU, Tanh, Softmax, CE), its conventions and Linear's other call forms.

Kernels against tests/naive.py (rtol 1e-12), gradients against central
differences (tests/test_nodes.py: h=1e-6, rtol 1e-6), the two engines against
each other on digits-sized softmax MLPs (bit-equal in practice; asserted to 1e-11).
"""
import os
import subprocess
import sys
import textwrap

import naive
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_nodes import check_gradients, projection

import fastedf
from fastedf import BCE, CE, Input, Linear, Parameter, ReLU, Sigmoid, Softmax, Tanh, forward_pass, topological_sort
from fastedf.models import logistic_regression, mlp

K = naive.all_kernels()
TOL = dict(rtol=1e-12, atol=1e-15)


def test_activation_kernels_match_numpy(rng):
    z = np.concatenate([rng.normal(scale=3, size=(6, 4)), [[0.0, -0.0, 50.0, -50.0]]])
    g = rng.normal(size=z.shape)
    for forward, backward, f, df in [(K.tanh_forward, K.tanh_backward, np.tanh, naive.tanh_backward),
                                     (K.relu_forward, K.relu_backward, naive.relu, naive.relu_backward),
                                     (K.softmax_forward, K.softmax_backward, naive.softmax, naive.softmax_backward)]:
        p, dz = np.empty_like(z), np.empty_like(z)
        forward(z, p)
        assert_allclose(p, f(z), **TOL)
        backward(p, g, dz)
        assert_allclose(dz, df(p, g), **TOL)


def test_softmax_is_stable_and_rows_sum_to_one():
    z = np.array([[1000.0, 1000.0, -1000.0], [-1e308, 0.0, 1e308]])
    p = np.empty_like(z)
    K.softmax_forward(z, p)
    assert np.all(np.isfinite(p))
    assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)


def test_ce_kernels_match_numpy(rng):
    y = np.eye(4)[rng.integers(0, 4, size=5)]
    p = naive.softmax(rng.normal(size=(5, 4)))
    p[0, y[0].argmax()] = 0.0  # the clip: finite loss and gradient
    total, bad = K.ce_forward(y, p)
    assert bad == -1 and total == pytest.approx(naive.ce_sum(y, p), rel=1e-12)
    out = np.empty_like(p)
    K.ce_backward(y, p, 0.2, out)
    assert_allclose(out, naive.ce_backward(y, p, 0.2), **TOL)
    K.ce_label_grad(p, 0.2, out)
    assert_allclose(out, naive.ce_label_grad(p, 0.2), **TOL)


@pytest.mark.parametrize("saturate", [False, True])
def test_fused_softmax_ce_is_the_chain_of_all_four(rng, saturate):
    z = rng.normal(scale=40 if saturate else 1, size=(6, 5))
    y = np.eye(5)[rng.integers(0, 5, size=6)]
    out = np.empty_like(z)
    total, bad = K.softmax_ce(z, y, out, True)
    p = naive.softmax(z)
    assert bad == -1 and total == pytest.approx(naive.ce_sum(y, p), rel=1e-12)
    assert_allclose(out, naive.softmax_backward(p, naive.ce_backward(y, p, 1 / 6)), rtol=1e-10, atol=1e-15)


def test_fused_sigmoid_bce_is_the_chain(rng):
    z = np.concatenate([rng.normal(size=(5, 1)), [[40.0], [-40.0]]])
    y = (rng.random(z.shape) > 0.5) * 1.0
    out = np.empty_like(z)
    total, bad = K.sigmoid_bce(z, y, out, True)
    p = naive.sigmoid(z)
    assert bad == -1 and total == pytest.approx(naive.bce(y, p), rel=1e-12)
    assert_allclose(out, naive.sigmoid_backward(p, naive.bce_backward(y, p, 1 / 7)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation", [ReLU, Tanh, Sigmoid, Softmax])
def test_activation_gradients(rng, activation):
    z = Parameter(rng.normal(size=(4, 3)) + 0.05)  # away from ReLU's kink
    check_gradients(projection(activation(z), (4, 3), rng), [z])


def test_softmax_ce_gradients_for_logits_and_labels(rng):
    z, y = Parameter(rng.normal(size=(5, 3))), Input()
    y.value = rng.dirichlet(np.ones(3), size=5)
    check_gradients(CE(y, Softmax(z)), [z, y])


def test_bce_is_a_sum_and_ce_a_mean_over_rows(rng):
    p, y = Parameter(rng.uniform(0.1, 0.9, size=(6, 1))), Input()
    y.value = (rng.random((6, 1)) > 0.5) * 1.0
    assert forward_pass(topological_sort(BCE(y, p))) == pytest.approx(naive.bce(y.value, p.value), rel=1e-12)
    q, t = Parameter(naive.softmax(rng.normal(size=(6, 3)))), Input()
    t.value = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    assert forward_pass(topological_sort(CE(t, q))) == pytest.approx(naive.ce_sum(t.value, q.value) / 6, rel=1e-12)


@pytest.mark.parametrize("loss_type", [BCE, CE])
def test_empty_batch_gives_zero_loss_and_zero_gradients(loss_type):
    x, y = Input(), Input()
    A, b = Parameter(np.ones((2, 3))), Parameter(np.zeros(3))
    head = Sigmoid if loss_type is BCE else Softmax
    loss = loss_type(y, head(Linear(x, A, b)))
    x.value, y.value = np.zeros((0, 2)), np.zeros((0, 3))
    graph = topological_sort(loss)
    with np.errstate(all="raise"):
        assert fastedf.forward_pass(graph) == 0.0
        fastedf.backward_pass(graph)
    assert_array_equal(A.gradients[A], np.zeros((2, 3)))
    assert_array_equal(b.gradients[b], np.zeros(3))


def test_stale_labels_broadcast_as_numpy_does(rng):
    x, y = Input(), Input()
    A, b = Parameter(rng.normal(size=(2, 1))), Parameter(np.zeros(1))
    p = Sigmoid(Linear(x, A, b))
    loss = BCE(y, p)
    graph = topological_sort(loss)
    y.value = np.array([[1.0]])  # a last training batch of one row
    x.value = rng.normal(size=(5, 2))  # evaluation on five rows
    want = naive.bce(np.broadcast_to(y.value, (5, 1)), forward_pass(topological_sort(p)))
    assert forward_pass(graph) == pytest.approx(want, rel=1e-12)
    fastedf.backward_pass(graph)
    assert y.gradients[y].shape == (1, 1) and A.gradients[A].shape == (2, 1)


def test_labels_that_do_not_broadcast_are_refused(rng):
    y, p = Input(), Parameter(rng.uniform(0.1, 0.9, size=(4, 1)))
    y.value = np.ones((3, 1))
    with pytest.raises(ValueError, match=r"labels have shape \(3, 1\) but predictions have shape \(4, 1\)"):
        BCE(y, p).forward()


@pytest.mark.parametrize("engine", ["graph", "compiled", "course loop"])
@pytest.mark.parametrize("index_shape", [(-1, 1), (-1,)])
def test_class_index_labels_into_ce_are_refused_before_training(rng, engine, index_shape):
    """Two-class index labels against (n, 2) predictions would broadcast (each 1 becoming [1, 1])."""
    X = rng.normal(size=(40, 3))
    labels = (X[:, 0] > 0).astype(float).reshape(index_shape)
    model = mlp(3, (4,), seed=1, classes=2)
    before = [p.value.copy() for p in model.parameters]
    with pytest.raises(ValueError) as error:
        if engine == "course loop":
            model.x.value, model.y.value = X[:8], labels[:8]
            graph = topological_sort(model.loss)
            forward_pass(graph)
            fastedf.backward_pass(graph)
        else:
            fastedf.fit(model.loss, {model.x: X, model.y: labels}, batch_size=8, epochs=1, engine=engine)
    message = str(error.value)
    assert __import__("re").match(rf"CE#\d+: labels have shape \({8 if engine == 'course loop' else 1}",
                                  message), message
    assert "predictions have shape" in message and "model.labels(y)" in message and "fastedf run" in message
    for p, b in zip(model.parameters, before):
        assert_allclose(p.value, b, rtol=0, atol=0)
    history = fastedf.fit(model.loss, {model.x: X, model.y: model.labels(labels)}, batch_size=8, epochs=1,
                          engine="graph" if engine == "course loop" else engine)  # the conversion the message names
    assert np.isfinite(history.epoch_loss).all()


@pytest.mark.parametrize("engine", ["graph", "compiled"])
def test_bce_labels_of_another_width_are_refused_naming_the_shapes(rng, engine):
    X = rng.normal(size=(12, 3))
    model = logistic_regression(3)
    Y = np.eye(2)[(X[:, 0] > 0).astype(int)]  # one-hot labels for a one-output head
    with pytest.raises(ValueError, match=r"BCE#\d+: labels have shape \(1, 2\) but predictions have shape \(1, 1\), "
                                         r"label columns 2 != prediction columns 1.*shaped .*\(12, 2\)"):
        fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=4, epochs=1, engine=engine)


def test_one_hot_labels_of_one_row_still_broadcast_at_evaluation(rng):
    """A per-sample script's last one-hot label, (k,) or (1, k), held while the graph runs on a new batch."""
    x, y = Input(), Input()
    p = Softmax(Linear(x, Parameter(rng.normal(size=(3, 2))), Parameter(np.zeros(2))))
    loss = CE(y, p)
    x.value = rng.normal(size=(5, 3))
    for stale in (np.array([0.0, 1.0]), np.array([[0.0, 1.0]])):
        y.value = stale
        want = naive.ce_sum(np.broadcast_to(stale, (5, 2)), forward_pass(topological_sort(p))) / 5
        assert forward_pass(topological_sort(loss)) == pytest.approx(want, rel=1e-12)
    x.value, y.value = x.value[:2], np.array([0.0, 1.0])  # two rows and two classes: two class indices?
    with pytest.raises(ValueError, match="may be one one-hot row or 2 class indices"):
        forward_pass(topological_sort(loss))


def test_star_import_gives_np_and_the_course_spellings():
    namespace = {}
    exec("from fastedf import *", namespace)
    assert namespace["np"] is np
    for name, node in [("SoftMax", Softmax), ("CrossEntropy", CE), ("Cross_Entropy", CE), ("ReLu", ReLU)]:
        assert namespace[name] is node


def test_star_import_gives_plt_importing_matplotlib_at_first_use():
    script = textwrap.dedent("""
        import sys
        from fastedf import *
        print("matplotlib" in sys.modules)
        figure = plt.figure()
        import matplotlib.pyplot
        print("matplotlib.pyplot" in sys.modules, isinstance(figure, matplotlib.figure.Figure),
              plt.plot is matplotlib.pyplot.plot)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "MPLBACKEND": "Agg"})
    assert run.stdout.split() == ["False", "True", "True", "True"]


# ---------------------------------------------------------------- Linear's call forms

def test_linear_layer_form_makes_its_parameters(rng):
    x = Input()
    x.value = rng.normal(size=(4, 3))
    layer = Linear(x, 3, 2)
    layer.forward()
    assert layer.A.value.shape == (3, 2) and layer.b.value.shape == (2,)
    assert_allclose(layer.value, x.value @ layer.A.value)
    swapped = Linear(x, 5, 3)  # x is 3 wide: the integers are (n_out, n_in)
    swapped.forward()
    assert swapped.A.value.shape == (3, 5)


def test_linear_layer_form_draws_weights_from_n_0_1_over_n_in(monkeypatch):
    """A ~ N(0, 1/n_in), b = 0, on a 400 x 500 layer: 200000 draws, seeded (fastedf.ops.linear.init_rng).

    For N draws of N(0, s^2): the sample variance has relative standard error sqrt(2 / (N - 1)) = 0.32%, the mean a
    standard error s / sqrt(N), the fraction within one s a standard error sqrt(0.68 * 0.32 / N) = 0.10%.  Six
    standard errors each (1.9%, 0.013 s, 0.6%): 1/n_out would be 20% off, a uniform of the same variance puts 58%
    within one s, not 68%.
    """
    from fastedf.ops import linear
    monkeypatch.setattr(linear, "init_rng", np.random.default_rng(2024))
    x = Input()
    x.value = np.ones((2, 400))
    layer = Linear(x, 400, 500)
    layer.forward()
    A, s, N = layer.A.value, 1 / np.sqrt(400), 400 * 500
    assert A.shape == (400, 500) and np.array_equal(layer.b.value, np.zeros(500))
    assert abs(A.var() / s**2 - 1) <= 6 * np.sqrt(2 / (N - 1))
    assert abs(A.mean()) <= 6 * s / np.sqrt(N)
    within = np.mean(np.abs(A) <= s)
    assert abs(within - 0.6827) <= 6 * np.sqrt(0.6827 * 0.3173 / N)


def test_linear_weight_first_with_an_input_is_accepted(rng):
    x, A, b = Input(), Parameter(rng.normal(size=(3, 2))), Parameter(np.zeros(2))
    x.value = rng.normal(size=(4, 3))
    node = Linear(A, x, b)
    node.forward()
    assert_allclose(node.value, x.value @ A.value)


def test_linear_weight_first_into_a_hidden_layer_is_accepted(rng):
    """Linear(A, h, b) with h an activation: the Parameter is the weight, in both engines and node by node."""
    X, Y, A1_start = rng.normal(size=(24, 3)), (rng.random((24, 1)) > 0.5) * 1.0, rng.normal(size=(3, 4))
    runs = []
    for weight_first in (False, True):
        x, y = Input(), Input()
        A1, b1 = Parameter(A1_start.copy()), Parameter(np.zeros(4))
        A2, b2 = Parameter(np.full((4, 1), 0.2)), Parameter(np.zeros(1))
        h = Tanh(Linear(x, A1, b1))
        out = Linear(A2, h, b2) if weight_first else Linear(h, A2, b2)
        loss = BCE(y, Sigmoid(out))
        x.value, y.value = X, Y
        graph = topological_sort(loss)
        forward_pass(graph)
        fastedf.backward_pass(graph)
        grads = [p.gradients[p].copy() for p in (A1, b1, A2, b2)]
        history = fastedf.fit(loss, {x: X, y: Y}, batch_size=6, epochs=2, engine="compiled")
        runs.append((grads, history.epoch_loss))
    assert out.inputs[0] is h and out.inputs[1] is A2
    for want, got in zip(runs[0][0], runs[1][0]):
        assert_allclose(got, want, rtol=1e-12)
    assert_allclose(runs[1][1], runs[0][1], rtol=1e-12)


@pytest.mark.parametrize("x_shape,A_shape,match", [
    ((4, 3), (2, 3), r"\(n_out, n_in\): pass its transpose, Parameter\(A.T\)"),
    ((3, 5), (2, 3), r"samples as columns \(A @ x\): feed x.T"),
    ((4,), (4, 2), r"reshape x to 2-D"),
    ((4, 3), (5, 2), r"A's rows \(5\) must match x's columns \(3\)"),
])
def test_linear_refuses_other_layouts_naming_shapes_and_the_fix(rng, x_shape, A_shape, match):
    x, A, b = Input(), Parameter(rng.normal(size=A_shape)), Parameter(np.zeros(A_shape[-1]))
    x.value = rng.normal(size=x_shape)
    with pytest.raises(ValueError, match=r"Linear#\d+: x has shape .*, A has shape .* and b has shape .*") as error:
        Linear(x, A, b).forward()
    assert __import__("re").search(match, str(error.value))
    assert "fastedf computes x @ A + b" in str(error.value) and "`fastedf run SCRIPT.py`" in str(error.value)


@pytest.mark.parametrize("b_shape", [(1, 1), (3,)])  # the course's bias, then the one the old message asked for
def test_one_sample_as_a_column_is_refused_not_an_outer_product(rng, b_shape):
    """x (n_in, 1) with A (1, n_in) fits x @ A, but means A @ x: one sample as a column, one output."""
    x, A, b = Input(), Parameter(rng.normal(size=(1, 3))), Parameter(np.zeros(b_shape))
    x.value = rng.normal(size=(3, 1))
    loss = BCE(Input(), Sigmoid(Linear(x, A, b)))
    loss.inputs[0].value = np.ones((1, 1))
    with pytest.raises(ValueError) as error:
        forward_pass(topological_sort(loss))
    message = str(error.value)
    for part in (r"Linear#\d+: x has shape \(3, 1\), A has shape \(1, 3\) and b has shape", "samples as columns",
                 r"fastedf computes x @ A \+ b with samples as rows: x \(B, n_in\), A \(n_in, n_out\)",
                 "Addition\\(Multiply\\(x, A\\), b\\)", "`fastedf run SCRIPT.py`"):
        assert __import__("re").search(part, message), part
    layer = Linear(x, 3, 1)  # the layer form's sizes, swapped to fit x's width, would give the same outer product
    with pytest.raises(ValueError, match="samples as columns"):
        layer.forward()


def test_fit_and_models_read_one_feature_rows_as_samples(rng):
    """In fit and a model the rows are samples: a batch of 4 one-feature rows into 4 outputs is not ambiguous."""
    X, Y = rng.normal(size=(12, 1)), (rng.random((12, 4)) > 0.5) * 1.0
    runs = []
    for engine in ("graph", "compiled"):
        x, y, A, b = Input(), Input(), Parameter(np.full((1, 4), 0.3)), Parameter(np.zeros(4))
        history = fastedf.fit(BCE(y, Sigmoid(Linear(x, A, b))), {x: X, y: Y}, batch_size=4, epochs=2, engine=engine)
        runs.append((history.epoch_loss, A.value.copy()))
    assert_allclose(runs[0][0], runs[1][0], rtol=1e-12)
    assert_allclose(runs[0][1], runs[1][1], rtol=1e-12)
    model = mlp(1, (4,))  # a model's x is rows of samples too
    assert model.predict(X[:4]).shape == (4, 1) and np.isfinite(model.mean_loss(X[:4], Y[:4, :1]))
    x.value = X[:4]  # outside them the same shapes are ambiguous again
    with pytest.raises(ValueError, match="samples as columns"):
        Linear(x, A, b).forward()


def test_linear_square_weight_is_read_as_given(rng):
    x, A, b = Input(), Parameter(rng.normal(size=(3, 3))), Parameter(np.zeros(3))
    x.value = rng.normal(size=(2, 3))
    node = Linear(x, A, b)
    node.forward()
    assert_allclose(node.value, x.value @ A.value)  # never A.T


def test_linear_layer_form_with_a_width_matching_neither_size(rng):
    x = Input()
    x.value = rng.normal(size=(4, 7))
    with pytest.raises(ValueError, match="x has width 7 but the layer was made with sizes 3 and 2"):
        Linear(x, 3, 2).forward()


# ---------------------------------------------------------------- engines

@pytest.fixture(scope="module")
def digits_like():
    rng = np.random.default_rng(5)
    X = rng.random((300, 64))
    return X, np.eye(10)[rng.integers(0, 10, size=300)]


@pytest.mark.parametrize("batch_size", [1, 32, 256])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_engines_agree_on_a_softmax_mlp(digits_like, batch_size, activation):
    X, Y = digits_like
    runs = {}
    for engine in ("graph", "compiled"):
        model = mlp(64, (32,), seed=2, activation=activation, classes=10)
        history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=batch_size, epochs=2, lr=0.2,
                              engine=engine)
        assert history.engine == engine
        runs[engine] = history.epoch_loss, np.concatenate([p.value.ravel() for p in model.parameters])
    assert_allclose(runs["compiled"][0], runs["graph"][0], rtol=1e-11)
    assert_allclose(runs["compiled"][1], runs["graph"][1], rtol=1e-11, atol=1e-11)
    start = [p.value for p in mlp(64, (32,), seed=2, activation=activation, classes=10).parameters]
    naive.assert_trained_as(*runs["compiled"], naive.mlp_sgd(start, X, Y, batch_size, 2, 0.2, activation=activation))


@pytest.mark.parametrize("width", [1, 3, 64, 200])
def test_engines_agree_on_sigmoid_mlps_of_every_width(width):
    rng = np.random.default_rng(width)
    X = rng.normal(size=(257, 20)) / 4
    Y = (X[:, :1] > 0) * 1.0
    runs = []
    for engine in ("graph", "compiled"):
        model = mlp(20, (width,), seed=1)
        fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=32, epochs=2, lr=0.5, engine=engine)
        runs.append(np.concatenate([p.value.ravel() for p in model.parameters]))
    assert_allclose(runs[1], runs[0], rtol=1e-11, atol=1e-13)


def test_fit_reports_per_sample_mean_losses(digits_like):
    X, Y = digits_like
    model = mlp(64, (16,), seed=0, activation="relu", classes=10)
    history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=300, epochs=1, lr=1e-9)
    assert history.epoch_loss[0] == pytest.approx(-np.mean(np.sum(Y * np.log(model.predict(X)), axis=1)), rel=1e-6)


def test_softmax_and_linear_refusals_name_the_problem():
    z = Input()
    z.value = np.float64(3.0)
    with pytest.raises(ValueError, match=r"Softmax#\d+: input is a scalar; Softmax needs \(batch, classes\)"):
        Softmax(z).forward()
    z.value = np.zeros((2, 0))
    with pytest.raises(ValueError, match="no classes to normalise over"):
        Softmax(z).forward()
    with pytest.raises(TypeError, match=r"Linear needs \(x, A, b\) or \(x, n_in, n_out\)"):
        Linear(Input(), Parameter(np.ones((2, 2))))
    with pytest.raises(ValueError, match="layer sizes must be >= 1"):
        Linear(Input(), 0, 3)
