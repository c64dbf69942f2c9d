"""The fused course loop (fastedf.fused) gives the node-by-node numbers, whatever the script does.

Every test runs one script twice: node by node (fastedf.fused.node_by_node())
and as the loop runs by default, with fusing starting at a graph's third step;
every number the script records must agree to 1e-12, and steps must really
have been fused (the counter fastedf.fused.stats["fused_steps"]), unless the
test is about a graph that must not fuse.  Each test runs with the compiled
step and with the NumPy step (fastedf.numpy_step) throughout.
"""
import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest

import fastedf
from fastedf import fused

TOL = 1e-12


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def fuse_from_the_third_step(monkeypatch, request):
    numpy = request.param == "numpy"
    # the NumPy step's plan moves to the compiled step after WARM or COLD seconds: never, here
    monkeypatch.setattr(fused, "WARM_SECONDS", 1e9 if numpy else 0.0)
    monkeypatch.setattr(fused, "COLD_SECONDS", 1e9 if numpy else 0.0)
    monkeypatch.setattr(fused, "NUMPY_SECONDS", 0.0)
    monkeypatch.setattr(fused, "_numpy_first", lambda: numpy)
    monkeypatch.setattr(fused, "RETRY_SECONDS", 0.0)
    monkeypatch.setattr(fused, "CAPTURE_SHARE", float("inf"))
    monkeypatch.setattr(fused, "ENABLED", True)
    before = fused.stats["numpy_steps"], fused.stats["fused_steps"]
    yield
    numpy_steps, fused_steps = (fused.stats[k] - b for k, b in zip(("numpy_steps", "fused_steps"), before))
    assert numpy_steps == (fused_steps if numpy else 0)


def numbers(value):
    """A script's records flattened to float64 arrays, for comparison."""
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in numbers(v)]
    return [np.array(value, dtype=np.float64)]


def check(script, fuses=True):
    """Run script() node by node and fused; their records must agree to 1e-12.  Returns the fused records."""
    with fused.node_by_node():
        reference = script()
    before = fused.stats["fused_steps"]
    got = script()
    fused_steps = fused.stats["fused_steps"] - before
    ref, out = numbers(reference), numbers(got)
    assert len(ref) == len(out)
    for i, (a, b) in enumerate(zip(ref, out)):
        assert a.shape == b.shape, f"record {i}: shapes {a.shape} and {b.shape}"
        np.testing.assert_allclose(b, a, rtol=TOL, atol=TOL, err_msg=f"record {i}")
    if fuses:
        assert fused_steps > 0, f"no step was fused: {fused.stats['refused']}"
    elif fuses is not None:  # None: either
        assert fused_steps == 0
    return got


def data(rows=40, features=2, classes=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    if classes is None:
        return X, (X[:, :1] - 0.5 * X[:, 1:2] > 0).astype(float)
    return X, np.eye(classes)[rng.integers(0, classes, rows)]


def logistic(seed=0):
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(np.array([[0.3], [-0.2]])), fastedf.Parameter(np.zeros(1))
    h = fastedf.Linear(x, A, b)
    p = fastedf.Sigmoid(h)
    return x, y, [A, b], p, fastedf.BCE(y, p)


def mlp(features=2, hidden=5, classes=None, seed=1):
    rng = np.random.default_rng(seed)
    x, y = fastedf.Input(), fastedf.Input()
    out = 1 if classes is None else classes
    params = [fastedf.Parameter(rng.normal(0, 0.5, (features, hidden))), fastedf.Parameter(np.zeros(hidden)),
              fastedf.Parameter(rng.normal(0, 0.5, (hidden, out))), fastedf.Parameter(np.zeros(out))]
    h = fastedf.ReLU(fastedf.Linear(x, params[0], params[1]))
    z = fastedf.Linear(h, params[2], params[3])
    if classes is None:
        p = fastedf.Sigmoid(z)
        return x, y, params, p, fastedf.BCE(y, p)
    p = fastedf.Softmax(z)
    return x, y, params, p, fastedf.CE(y, p)


def conv_net(seed=2, bias=True):
    rng = np.random.default_rng(seed)
    x, y = fastedf.Input(), fastedf.Input()
    params = [fastedf.Parameter(rng.normal(0, 0.3, (3, 3, 1, 2))), fastedf.Parameter(np.zeros(2)),
              fastedf.Parameter(rng.normal(0, 0.3, (8, 3))), fastedf.Parameter(np.zeros(3))]
    if not bias:  # Conv(x, K): zeros that are not trained
        del params[1]
    conv = fastedf.Conv(x, params[0], params[1]) if bias else fastedf.Conv(x, params[0])
    h = fastedf.Flatten(fastedf.MaxPooling(fastedf.ReLU(conv), 2))
    p = fastedf.Softmax(fastedf.Linear(h, params[-2], params[-1]))
    return x, y, params, p, fastedf.CE(y, p)


IMAGES = (data(rows=24, features=16, classes=3)[0].reshape(24, 4, 4, 1), data(rows=24, features=16, classes=3)[1])
MODELS = {
    "logistic": (logistic, lambda: data()),
    "mlp": (mlp, lambda: data()),
    "softmax_mlp": (lambda: mlp(classes=3), lambda: data(classes=3)),
    "conv": (conv_net, lambda: IMAGES),
    "conv_without_bias": (lambda: conv_net(bias=False), lambda: IMAGES),
}


def batches(x, y, X, Y, size):
    """Feed x and y the batches of `size` rows in order, as course loops do; yields each batch's first row."""
    for i in range(0, len(X), size):
        x.value, y.value = X[i:i + size], Y[i:i + size]
        yield i


def train(model, batch=8, epochs=2, lr=0.1, update="in place", each_step=None, after_forward=None):
    """The course loop on one of MODELS; records losses, predictions and parameters.

    each_step(x, y, params, p, loss, X, Y) runs after each update, after_forward(params) between the forward
    and the backward; what each_step returns is recorded.
    """
    build, load = MODELS[model]
    x, y, params, p, loss = build()
    X, Y = load()
    graph = fastedf.topological_sort(loss)
    records = []
    for _ in range(epochs):
        for i in range(0, len(X), batch):
            x.value, y.value = X[i:i + batch], Y[i:i + batch]
            for n in graph:
                n.forward()
            if after_forward is not None:
                after_forward(params)
            for n in reversed(graph):
                n.backward()
            if update == "in place":
                for t in params:
                    t.value -= lr * t.gradients[t]
            elif update == "rebind":
                for t in params:
                    t.value = t.value - lr * t.gradients[t]
            elif update == "by type":  # the trainables found each step by their class, as some scripts do
                for t in graph:
                    if type(t) is fastedf.Parameter:
                        t.value -= lr * t.gradients[t]
            else:
                fastedf.sgd_update(params, lr)
            records.append(loss.value)
            if each_step is not None:
                records.append(each_step(x, y, params, p, loss, X, Y))
    return records + [t.value.copy() for t in params] + [p.value.copy()]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_course_loop_gives_the_node_by_node_numbers(model):
    check(lambda: train(model))


@pytest.mark.parametrize("update", ["rebind", "sgd_update", "by type"])
def test_updates_by_rebinding_or_sgd_update(update):
    check(lambda: train("mlp", update=update))


@pytest.mark.parametrize("feed", ["arrays", "numbers"])
def test_per_sample_graph_of_multiply_and_addition(feed):
    """The instructor's graph, its inputs fed (1, 1) arrays, or plain floats as tests/course_scripts/per_sample.py."""
    X, Y = data(rows=30)

    def script():
        x1, x2, y = fastedf.Input(), fastedf.Input(), fastedf.Input()
        w1, w2, b = (fastedf.Parameter(np.full((1, 1), v)) for v in (0.1, -0.2, 0.0))
        m1, m2 = fastedf.Multiply(x1, w1), fastedf.Multiply(x2, w2)
        s = fastedf.Addition(m1, m2)
        z = fastedf.Addition(s, b)
        p = fastedf.Sigmoid(z)
        loss = fastedf.BCE(y, p)
        graph = [x1, x2, y, w1, w2, b, m1, m2, s, z, p, loss]
        records = []
        for epoch in range(2):
            for i in range(len(X)):
                x1.value, x2.value, y.value = X[i:i + 1, 0:1], X[i:i + 1, 1:2], Y[i:i + 1]
                if feed == "numbers":
                    x1.forward(float(X[i, 0]))
                    y.value = float(Y[i, 0])
                for n in graph:
                    n.forward()
                for n in reversed(graph):
                    n.backward()
                for t in (w1, w2, b):
                    t.value -= 0.2 * t.gradients[t]
                records.append(loss.value)
            # gradient arrays are reused by the next backward (fastedf.node): kept ones are copied
            records += [x1.gradients[x1], x2.gradients[x2], y.gradients[y], m1.gradients[w1].copy(),
                        z.gradients[s].copy()]
        return records + [w1.value, w2.value, b.value]
    check(script)


@pytest.mark.parametrize("dtype", [int, bool, np.float32])
def test_data_of_another_dtype_fuses(dtype):
    """XOR's integer arrays, boolean or float32 data: fused as float64, as the nodes compute with them."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 3).astype(dtype)
    Y = np.array([[0], [1], [1], [0]] * 3).astype(dtype)

    def script():
        x, y, params, p, loss = mlp(hidden=3)
        graph = fastedf.topological_sort(loss)
        records = []
        for i in range(0, 12, 2):
            x.value, y.value = X[i:i + 2], Y[i:i + 2]
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update(params, 0.5)
            records += [loss.value, x.gradients[x]]
        return records + [p.value.copy()] + [t.value for t in params]
    check(script)


def test_predictions_without_the_loss_on_new_batch_shapes():
    """A prediction (forward without the loss) on the test set between steps; last batches are short."""
    def predict(x, y, params, p, loss, X, Y):
        x.value = X[3:16]
        for n in fastedf.topological_sort(p):
            n.forward()
        return p.value.copy()
    check(lambda: train("softmax_mlp", batch=6, each_step=predict))


@pytest.mark.parametrize("model", ["softmax_mlp", "conv"])
def test_an_evaluation_on_more_rows_than_a_batch_between_steps(model):
    """The whole graph on the whole set (its loss and predictions), then training goes on; the gradients and
    the data gradient read after it are still those of the last backward."""
    def evaluate(x, y, params, p, loss, X, Y):
        x_batch, y_batch = x.value, y.value
        before = [t.gradients[t].copy() for t in params]
        x.value, y.value = X, Y
        for n in fastedf.topological_sort(loss):
            n.forward()
        records = [loss.value, p.value.copy(), before, [t.gradients[t].copy() for t in params], x.gradients[x]]
        x.value, y.value = x_batch, y_batch
        return records
    check(lambda: train(model, batch=5, each_step=evaluate))


def test_the_whole_graph_on_a_test_set_with_stale_labels_and_an_empty_batch():
    steps = iter(range(1000))

    def evaluate(x, y, params, p, loss, X, Y):
        if next(steps) % 4:
            return []
        x.value = X[:15]  # labels hold the last batch: they broadcast only when it has one row
        graph = fastedf.topological_sort(loss)
        if len(y.value) == 1:
            for n in graph:
                n.forward()
            stale = loss.value
        else:
            stale = 0.0
        x.value, y.value = X[:0], Y[:0]  # an empty batch: loss 0 and zero gradients
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        return [stale, loss.value, [t.gradients[t].copy() for t in params]]
    check(lambda: train("logistic", batch=13, epochs=8, each_step=evaluate))


def test_reading_values_and_gradients_mid_loop():
    """Intermediate values read after the forward and inside it (a break), gradients of every kind."""
    X, Y = data()

    def script():
        x, y, params, p, loss = mlp()
        graph = fastedf.topological_sort(loss)
        hidden = p.inputs[0].inputs[0]  # the ReLU
        records = []
        for i in batches(x, y, X, Y, 4):
            for n in graph:
                n.forward()
                if n is hidden and i % 8 == 0:
                    records.append(hidden.value.copy())  # while the step's forward is half done
            records.append(hidden.value.copy())
            for n in reversed(graph):
                n.backward()
            records += [x.gradients[x], y.gradients[y], hidden.gradients[hidden.inputs[0]].copy(),
                        graph[-1].gradients[p].copy()]
            for t in params:
                t.value -= 0.1 * t.gradients[t]
            records += [x.gradients[x], y.gradients[y]]  # after the update: as of the backward
        return records
    check(script)


def test_kept_values_are_never_overwritten_and_backward_twice():
    X, Y = data()

    def script():
        x, y, params, p, loss = logistic()
        graph = fastedf.topological_sort(loss)
        kept, records = [], []
        for i in batches(x, y, X, Y, 5):
            for n in graph:
                n.forward()
            kept.append(p.value)
            for n in reversed(graph):
                n.backward()
            first = [t.gradients[t].copy() for t in params]
            for n in reversed(graph):
                n.backward()  # again: the same gradients
            records += first + [t.gradients[t].copy() for t in params]
            for t in params:
                t.value -= 0.1 * t.gradients[t]
            for n in graph:
                n.forward()  # a forward without backward
            records.append(loss.value)
        return records + kept
    check(script)


def test_a_parameter_changed_between_forward_and_backward():
    def change(params):
        params[2].value *= 1.5  # Linear's backward reads its weight as it is now

    def gradients(x, y, params, p, loss, X, Y):
        return [t.gradients[t].copy() for t in params] + [x.gradients[x]]
    check(lambda: train("mlp", batch=4, after_forward=change, each_step=gradients))


@pytest.mark.parametrize("first", ["flatten", "pool"])
def test_a_data_gradient_through_nodes_without_parameters(first):
    """x.gradients[x] where x reaches Linear through Flatten (an MLP on images) or MaxPooling and Flatten."""
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(24, 4, 4, 1)), np.eye(3)[rng.integers(0, 3, 24)]

    def script():
        x, y = fastedf.Input(), fastedf.Input()
        h = fastedf.Flatten(x if first == "flatten" else fastedf.MaxPooling(x, 2))
        params = [fastedf.Parameter(np.random.default_rng(4).normal(0, 0.3, (16 if first == "flatten" else 4, 3))),
                  fastedf.Parameter(np.zeros(3))]
        loss = fastedf.CE(y, fastedf.Softmax(fastedf.Linear(h, *params)))
        graph = fastedf.topological_sort(loss)
        records = []
        for i in batches(x, y, X, Y, 4):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update(params, 0.1)
            records += [loss.value, x.gradients[x].copy(), h.gradients[h.inputs[0]].copy()]  # reused by backward
        return records
    check(script)


@pytest.mark.parametrize("model", ["conv", "mlp"])
def test_the_nodes_take_over_between_forward_and_backward(model):
    """A plan dropped after the program's forward: the nodes' own backward (Conv's columns, MaxPooling's maxima)
    must not use what their last own forward left."""
    steps = iter(range(1000))

    def drop(params):
        if next(steps) % 3 == 2:
            with fused.node_by_node():
                pass

    def gradients(x, y, params, p, loss, X, Y):
        return [t.gradients[t].copy() for t in params] + [x.gradients[x]]
    check(lambda: train(model, batch=4, after_forward=drop, each_step=gradients))


def test_parameters_pickled_and_a_graph_copied_mid_loop():
    """A checkpoint (pickle of the Parameters, which reach the fused nodes through `outputs`) and a deep copy
    of the whole graph trained beside it: each copy computes as its own graph."""
    X, Y = data()

    def script():
        x, y, params, p, loss = mlp()
        graph = fastedf.topological_sort(loss)
        records = []
        for i in batches(x, y, X, Y, 4):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update(params, 0.1)
            records += [loss.value, [t.value for t in pickle.loads(pickle.dumps(params))] if i % 12 == 8 else []]
        twin = copy.deepcopy(graph)
        copied = {node: twin[k] for k, node in enumerate(graph)}
        for i in batches(x, y, X, Y, 4):
            copied[x].value, copied[y].value = 2 * x.value, y.value
            for g, trained in ((twin, [copied[t] for t in params]), (graph, params)):
                fastedf.forward_pass(g)
                fastedf.backward_pass(g)
                fastedf.sgd_update(trained, 0.1)
            records += [loss.value, copied[loss].value, copied[p].value.copy(), p.value.copy()]
        return records
    check(script)


@pytest.mark.parametrize("change", ["hidden scaled in place", "prediction clipped", "prediction rebound"])
def test_an_operations_value_changed_between_forward_and_backward(change):
    """A script that scales, clips or replaces a node's value before backward (a hand-made dropout, a guard
    against log(0)): the nodes' backward reads what the script made of it, so the fused loop must too."""
    def alter(x, y, params, p, loss):
        z = p.inputs[0]
        if change == "hidden scaled in place":
            z.inputs[0].value *= 0.5
        elif change == "prediction clipped":
            np.clip(p.value, 0.45, 0.55, out=p.value)
        else:
            p.value = 0.5 * p.value + 0.25

    def script():
        X, Y = data()
        x, y, params, p, loss = mlp()
        graph = fastedf.topological_sort(loss)
        records = []
        for i in batches(x, y, X, Y, 4):
            fastedf.forward_pass(graph)
            if i % 12 == 4:
                alter(x, y, params, p, loss)
            fastedf.backward_pass(graph)
            fastedf.sgd_update(params, 0.1)
            records += [loss.value, [t.gradients[t].copy() for t in params]]
        return records
    check(script)


@pytest.mark.parametrize("layout", ["float32", "fortran"])
def test_a_batch_the_program_copies_changed_in_place_before_backward(layout):
    """The program takes a float32 or Fortran-ordered batch as a float64 C-ordered copy; the script scales the
    batch in place after forward, and Linear's backward reads it as it is then."""
    def script():
        X, Y = data()
        x, y, params, p, loss = mlp()
        graph = fastedf.topological_sort(loss)
        records = []
        for i in batches(x, y, X, Y, 4):
            x.value = X[i:i + 4].astype(np.float32) if layout == "float32" else np.asfortranarray(X[i:i + 4])
            fastedf.forward_pass(graph)
            x.value *= 2
            fastedf.backward_pass(graph)
            fastedf.sgd_update(params, 0.1)
            records += [loss.value, [t.gradients[t].copy() for t in params]]
        return records
    check(script)


def test_parameters_shared_by_two_graphs():
    X, Y = data()

    def script():
        x, y = fastedf.Input(), fastedf.Input()
        A, b, c = (fastedf.Parameter(v) for v in (np.array([[0.3], [-0.2]]), np.zeros(1), np.ones(1)))
        h = fastedf.Linear(x, A, b)
        first = fastedf.BCE(y, fastedf.Sigmoid(h))
        second = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, c)))
        records = []
        for i in batches(x, y, X, Y, 4):
            for loss, trained in ((first, (A, b)), (second, (A, c))):
                graph = fastedf.topological_sort(loss)
                fastedf.forward_pass(graph)
                fastedf.backward_pass(graph)
                fastedf.sgd_update(trained, 0.1)
                records += [loss.value, A.gradients[A].copy()]
        return records + [A.value, b.value, c.value]
    check(script)


class Cube(fastedf.Node):
    """A user's node in plain NumPy, as course scripts write them."""

    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = self.inputs[0].value ** 3

    def backward(self):
        x = self.inputs[0]
        self.gradients[x] = self.outputs[0].gradients[self] * 3 * x.value ** 2


def test_a_user_numpy_node_runs_the_graph_node_by_node():
    X, Y = data()

    def script():
        x, y = fastedf.Input(), fastedf.Input()
        A, b = fastedf.Parameter(np.array([[0.3], [-0.2]])), fastedf.Parameter(np.zeros(1))
        loss = fastedf.BCE(y, fastedf.Sigmoid(Cube(fastedf.Linear(x, A, b))))
        graph = fastedf.topological_sort(loss)
        records = []
        for i in batches(x, y, X, Y, 4):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update([A, b], 0.1)
            records.append(loss.value)
        return records + [A.value, b.value]
    check(script, fuses=False)
    assert any("Cube" in reason for reason in fused.stats["refused"].values())


def test_a_graph_that_cannot_fuse_is_captured_again_within_a_share_of_the_loop(monkeypatch):
    """A user's node in the graph: looked at again as the loop goes on (the graph may change), but its captures
    take at most CAPTURE_SHARE of the loop's time, whatever the retry interval."""
    monkeypatch.setattr(fused, "CAPTURE_SHARE", 0.05)
    captures = []
    real = fused.capture

    def counted(loss):
        captures.append(loss)
        return real(loss)
    monkeypatch.setattr(fused, "capture", counted)
    X, Y = data()
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(np.array([[0.3], [-0.2]])), fastedf.Parameter(np.zeros(1))
    loss = fastedf.BCE(y, fastedf.Sigmoid(Cube(fastedf.Linear(x, A, b))))
    graph = fastedf.topological_sort(loss)
    steps = 0
    for _ in range(50):
        for _ in batches(x, y, X, Y, 4):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update([A, b], 0.1)
            steps += 1
    w = loss._watch
    assert captures and len(captures) < steps // 2  # with no share, every step past the first few
    assert w.tried <= fused.CAPTURE_SHARE * w.spent + 2 * w.tried / len(captures)  # 5%, give or take the last
    assert "has no compiled rule" in fused.stats["refused"][repr(loss)]


def test_graph_changed_between_steps_and_calls_out_of_order():
    X, Y = data()

    def script():
        x, y, params, p, loss = logistic()
        graph = fastedf.topological_sort(loss)
        records = []
        for i in range(0, 40, 4):
            if i == 20:  # a second head on the same Linear: a new graph
                A2 = fastedf.Parameter(np.full((1, 1), 0.5))
                p = fastedf.Sigmoid(fastedf.Multiply(graph[-3], A2))
                loss = fastedf.BCE(y, p)
                graph, params = fastedf.topological_sort(loss), params + [A2]
            x.value, y.value = X[i:i + 4], Y[i:i + 4]
            for n in graph:
                n.forward()
                if i % 12 == 0:
                    n.forward()  # twice: off the plan's course
            for n in reversed(graph):
                n.backward()
            for t in params:
                t.value -= 0.1 * t.gradients[t]
            records.append(loss.value)
        return records + [t.value for t in params]
    check(script)


def test_gradients_accumulated_over_micro_batches_by_the_script():
    """A script that sums the gradients of chunks of a batch (copies: arrays are reused) before updating."""
    X, Y = data(classes=3)

    def script():
        x, y, params, p, loss = mlp(classes=3)
        graph = fastedf.topological_sort(loss)
        for i in range(0, 40, 10):
            total = [np.zeros_like(t.value) for t in params]
            for j in range(i, i + 10, 5):
                x.value, y.value = X[j:j + 5], Y[j:j + 5]
                fastedf.forward_pass(graph)
                fastedf.backward_pass(graph)
                for acc, t in zip(total, params):
                    acc += t.gradients[t] / 2
            for acc, t in zip(total, params):
                t.value -= 0.1 * acc
        return [t.value for t in params]
    check(script)


def test_a_bad_label_raises_the_nodes_error():
    X, Y = data()
    Y = Y.copy()
    Y[30] = 2.0

    def script():
        x, y, params, p, loss = logistic()
        graph = fastedf.topological_sort(loss)
        for i in batches(x, y, X, Y, 4):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update(params, 0.1)
    with fused.node_by_node(), pytest.raises(ValueError) as reference:
        script()
    with pytest.raises(ValueError) as got:
        script()
    assert str(got.value).split(":", 1)[1] == str(reference.value).split(":", 1)[1]


def test_no_fusing_under_node_by_node_and_before_the_loop_repays_it(monkeypatch):
    monkeypatch.setattr(fused, "COLD_SECONDS", 1e9)
    monkeypatch.setattr(fused, "WARM_SECONDS", 1e9)
    monkeypatch.setattr(fused, "NUMPY_SECONDS", 1e9)
    before = fused.stats["fused_steps"]
    train("logistic")
    assert fused.stats["fused_steps"] == before


def test_fit_after_a_fused_course_loop():
    """fit on the nodes of a fused loop takes them back and compiles them as usual."""
    def script():
        x, y, params, p, loss = mlp(classes=3)
        X, Y = data(classes=3)
        graph = fastedf.topological_sort(loss)
        for i in batches(x, y, X, Y, 8):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update(params, 0.1)
        history = fastedf.fit(loss, {x: X, y: Y}, batch_size=8, epochs=2, lr=0.1, engine="compiled")
        return [history.epoch_loss, [t.value for t in params]]
    check(script)


def test_a_loop_off_the_plan_drops_it_and_runs_node_by_node():
    X, Y = data()

    def script():
        x, y, params, p, loss = mlp()
        graph = fastedf.topological_sort(loss)
        records = []
        for i in batches(x, y, X, Y, 4):
            for n in graph:
                n.forward()
                if n is p and i >= 12:
                    p.forward()  # again, every step from the fourth: the plan breaks three times and is dropped
            for n in reversed(graph):
                n.backward()
            for t in params:
                t.value -= 0.1 * t.gradients[t]
            records += [loss.value, p.value.copy(), x.gradients[x]]
        return records + [t.value for t in params]
    before = fused.stats["dropped"]
    check(script)
    assert fused.stats["dropped"] > before


def test_the_environment_switch_runs_every_loop_node_by_node():
    import os
    import subprocess
    import sys
    code = ("import numpy as np, fastedf; from fastedf import fused\n"
            "fused.WARM_SECONDS = fused.COLD_SECONDS = fused.NUMPY_SECONDS = 0.0\n"
            "x, y = fastedf.Input(), fastedf.Input()\n"
            "A, b = fastedf.Parameter(np.ones((2, 1))), fastedf.Parameter(np.zeros(1))\n"
            "loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))\n"
            "graph = fastedf.topological_sort(loss)\n"
            "x.value, y.value = np.ones((4, 2)), np.ones((4, 1))\n"
            "for _ in range(10):\n"
            "    fastedf.forward_pass(graph); fastedf.backward_pass(graph); fastedf.sgd_update([A, b], 0.1)\n"
            "print(fused.stats['fused_steps'])\n")
    steps = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=dict(os.environ, FASTEDF_FUSE=flag)).stdout
        steps[flag] = int(out.split()[-1])
    assert steps["0"] == 0 and steps["1"] > 0


ACTIONS = ("step", "step", "step", "step", "predict", "evaluate", "read", "backward again", "forward again",
           "change a weight", "rebind a weight", "empty batch")


def random_script(model, seed, length=40):
    """A course loop interleaved with `length` random actions of ACTIONS (a stateful differential test)."""
    def script():
        rng = np.random.default_rng(seed)
        build, load = MODELS[model]
        x, y, params, p, loss = build()
        X, Y = load()
        graph = fastedf.topological_sort(loss)
        ops = [n for n in graph if n.inputs]
        records, at, other_rows = [], 0, False
        x.value, y.value = X[:4], Y[:4]
        fastedf.forward_pass(graph)
        fastedf.backward_pass(graph)
        for _ in range(length):
            action = ACTIONS[rng.integers(len(ACTIONS))]
            if action == "backward again" and other_rows:
                action = "forward again"  # the values are the other rows': the nodes would refuse
            if action in ("predict", "evaluate", "step", "forward again", "empty batch"):
                other_rows = action in ("predict", "evaluate")
            if action == "step":
                rows = int(rng.integers(1, 7))
                x.value, y.value = X[at:at + rows], Y[at:at + rows]
                at = (at + rows) % (len(X) - 6)
                fastedf.forward_pass(graph)
                fastedf.backward_pass(graph)
                records.append(loss.value)
                fastedf.sgd_update(params, 0.1)
            elif action == "predict":
                fed, x.value = x.value, X[:int(rng.integers(1, len(X)))]
                fastedf.forward_pass(fastedf.topological_sort(p))
                records.append(p.value.copy())
                x.value = fed
            elif action == "evaluate":
                fed, x.value, y.value = (x.value, y.value), X, Y
                fastedf.forward_pass(graph)
                records.append(loss.value)
                x.value, y.value = fed
            elif action == "read":
                node = ops[rng.integers(len(ops))]
                inp = node.inputs[rng.integers(len(node.inputs))]
                records.append(np.copy(node.value))
                if inp in node.gradients:
                    records.append(np.copy(node.gradients[inp]))
                records.append(np.copy(x.gradients[x]) if x in x.gradients else 0.0)
            elif action == "backward again":
                for n in reversed(graph):
                    n.backward()
                records.append([np.copy(t.gradients[t]) for t in params])
            elif action == "forward again":
                for n in graph:
                    n.forward()
                records.append(loss.value)
            elif action == "change a weight":
                params[0].value *= 0.9
            elif action == "rebind a weight":
                params[-1].value = params[-1].value + 0.01
            else:
                x.value, y.value = X[:0], Y[:0]
                fastedf.forward_pass(graph)
                fastedf.backward_pass(graph)
                records.append([loss.value] + [np.copy(t.gradients[t]) for t in params])
        return records + [t.value for t in params]
    return script


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("seed", range(4))
def test_random_sequences_of_what_scripts_do(model, seed):
    check(random_script(model, seed), fuses=None)


def test_a_batch_linear_refuses_is_refused_as_node_by_node():
    """x (n, 1) with A (1, n) is one sample as a column, which Linear refuses: a batch of n rows after others."""
    X, Y = data(rows=40)
    X = X[:, :1].copy()

    def script():
        x, y = fastedf.Input(), fastedf.Input()
        A, b = fastedf.Parameter(np.full((1, 3), 0.5)), fastedf.Parameter(np.zeros(3))
        v, c = fastedf.Parameter(np.full((3, 1), 0.2)), fastedf.Parameter(np.zeros(1))
        loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(fastedf.Sigmoid(fastedf.Linear(x, A, b)), v, c)))
        graph = fastedf.topological_sort(loss)
        for i in batches(x, y, X, Y, 5):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update([A, b, v, c], 0.1)
        x.value, y.value = X[:3], Y[:3]
        fastedf.forward_pass(graph)
    with fused.node_by_node(), pytest.raises(ValueError) as reference:
        script()
    before = fused.stats["fused_steps"]
    with pytest.raises(ValueError) as got:
        script()
    assert fused.stats["fused_steps"] > before
    assert str(got.value).split(":", 1)[1] == str(reference.value).split(":", 1)[1]


# The warning itself is counted by test_trainer's test of an unwritable cache; here,
# only the numbers of a step program compiled in memory.
@pytest.mark.filterwarnings("ignore:fastedf. no writable directory:RuntimeWarning")
def test_without_a_writable_cache_the_program_compiles_in_memory(monkeypatch):
    from fastedf import compiler
    monkeypatch.setattr(compiler, "cache_dir", lambda: None)
    X, Y = data()

    def script():  # a structure no other test compiles (Tanh, Multiply by a weight): a new program
        x, y = fastedf.Input(), fastedf.Input()
        A, b, w = (fastedf.Parameter(v) for v in (np.array([[0.3], [-0.2]]), np.zeros(1), np.full((1, 1), 0.7)))
        loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Multiply(fastedf.Tanh(fastedf.Linear(x, A, b)), w)))
        graph = fastedf.topological_sort(loss)
        records = []
        for i in batches(x, y, X, Y, 4):
            fastedf.forward_pass(graph)
            fastedf.backward_pass(graph)
            fastedf.sgd_update([A, b, w], 0.1)
            records.append(loss.value)
        return records + [A.value, b.value, w.value]
    check(script)


@pytest.mark.parametrize("order", ["script's list", "depth first"])
def test_a_loop_in_another_topological_order_is_learnt(order):
    """Two branches, the second made first in the script's list, or a depth-first sort (the course's own)."""
    X, Y = data()

    def script():
        x, y = fastedf.Input(), fastedf.Input()
        A1, b1, A2, b2 = (fastedf.Parameter(v) for v in (np.array([[0.3], [-0.2]]), np.zeros(1),
                                                          np.array([[-0.1], [0.4]]), np.zeros(1)))
        h1, h2 = fastedf.Linear(x, A1, b1), fastedf.Linear(x, A2, b2)
        z = fastedf.Addition(h2, fastedf.Sigmoid(h1))
        p = fastedf.Sigmoid(z)
        loss = fastedf.BCE(y, p)
        if order == "depth first":
            graph = fastedf.topological_sort(loss)
        else:
            graph = [x, y, A1, b1, A2, b2, h2, h1, z.inputs[1], z, p, loss]
        records = []
        for i in batches(x, y, X, Y, 4):
            for n in graph:
                n.forward()
            for n in reversed(graph):
                n.backward()
            for t in (A1, b1, A2, b2):
                t.value -= 0.1 * t.gradients[t]
            records.append(loss.value)
        return records + [t.value for t in (A1, b1, A2, b2)]
    before = fused.stats["fused_steps"]
    check(script)
    assert fused.stats["fused_steps"] - before >= 7  # of 10: the order is learnt from one step node by node


SIXTEEN_LEAVES = """
import tracemalloc, numpy as np, fastedf
from fastedf import fused
rng = np.random.default_rng(1)
X, Y = rng.normal(size=(64, 3)), (rng.uniform(size=(64, 1)) > 0.5) * 1.0
x, y = fastedf.Input(), fastedf.Input()
h, params = x, []
for width in (3, 3, 3, 3, 3, 3, 1):  # 7 Linear layers: 14 Parameters, 16 leaves with the Inputs
    A, b = fastedf.Parameter(rng.normal(scale=0.5, size=(3, width))), fastedf.Parameter(np.zeros(width))
    h = fastedf.Sigmoid(fastedf.Linear(h, A, b))
    params += [A, b]
graph = fastedf.topological_sort(fastedf.BCE(y, h))

def train(steps):
    for i in range(steps):
        x.value, y.value = X[i % 8 * 8:i % 8 * 8 + 8], Y[i % 8 * 8:i % 8 * 8 + 8]
        fastedf.forward_pass(graph)
        fastedf.backward_pass(graph)
        fastedf.sgd_update(params, 0.1)

steps = 0
while fused.stats["fused_steps"] == 0 and steps < 100_000:  # until the loop fuses
    train(10)
    steps += 10
train(10)
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
train(300)
print(fused.stats["fused_steps"], tracemalloc.get_traced_memory()[0] - before)
"""


def test_a_step_of_sixteen_leaves_keeps_no_python_memory():
    """Two Inputs and 14 Parameters: the step call would take 20 arguments, and CPython 3.11 never reuses a
    freed 20-tuple (compiler.TEMPLATE says more), so two would be kept per call; the program takes one more.
    In a new process: the free list fills up (2000 tuples) and stops growing, so it shows only at first."""
    done = subprocess.run([sys.executable, "-c", SIXTEEN_LEAVES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    fused_steps, grown = map(int, done.stdout.split())
    assert fused_steps >= 300
    assert grown < 20_000, grown  # 600 calls keeping two 20-tuples each would be ~240 kB
