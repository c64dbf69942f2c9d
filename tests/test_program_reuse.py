"""fit reuses a lowered program from memory (fastedf.compiler.structure) and computes the numbers of a fresh lowering.

Every case trains the same initial parameters twice: once with the
in-memory programs cleared before each fit (as in a fresh process: the
lowering, source and kernel table made again), once served from memory, on
a graph fitted before, on a new graph of the same structure, and on a graph
of another shape.  The results must agree to the last bit.
"""
import numpy as np
import pytest

import fastedf
from fastedf import compiler
from fastedf.graph import forward_pass, topological_sort


def logistic(rng, n_in=2):
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(rng.normal(size=(n_in, 1))), fastedf.Parameter(np.zeros(1))
    return x, y, fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))


def per_sample(rng, n_in=1):
    """The instructor's graph: x * w + b, Sigmoid, BCE (broadcast Multiply and Addition)."""
    x, y = fastedf.Input(), fastedf.Input()
    w, b = fastedf.Parameter(rng.normal(size=(1, n_in))), fastedf.Parameter(np.zeros((1, n_in)))
    return x, y, fastedf.BCE(y, fastedf.Sigmoid(fastedf.Addition(fastedf.Multiply(x, w), b)))


def softmax_mlp(rng, n_in=6, classes=3):
    x, y = fastedf.Input(), fastedf.Input()
    A1, b1 = fastedf.Parameter(rng.normal(scale=0.5, size=(n_in, 8))), fastedf.Parameter(np.zeros(8))
    A2, b2 = fastedf.Parameter(rng.normal(scale=0.5, size=(8, classes))), fastedf.Parameter(np.zeros(classes))
    hidden = fastedf.Tanh(fastedf.Linear(x, A1, b1))
    return x, y, fastedf.CE(y, fastedf.Softmax(fastedf.Linear(hidden, A2, b2)))


def conv_net(rng, side=4, classes=3):
    x, y = fastedf.Input(), fastedf.Input()
    K, c = fastedf.Parameter(rng.normal(scale=0.3, size=(3, 3, 1, 2))), fastedf.Parameter(np.zeros(2))
    pooled = fastedf.Flatten(fastedf.MaxPooling(fastedf.ReLU(fastedf.Conv(x, K, c)), 2))
    width = (side // 2) ** 2 * 2
    A, b = fastedf.Parameter(rng.normal(scale=0.3, size=(width, classes))), fastedf.Parameter(np.zeros(classes))
    return x, y, fastedf.CE(y, fastedf.Softmax(fastedf.Linear(pooled, A, b)))


def data(kind, rows, shape_seed, **sizes):
    rng = np.random.default_rng(shape_seed)
    if kind is conv_net:
        side, classes = sizes.get("side", 4), 3
        X = rng.normal(size=(rows, side, side, 1))
    else:
        X = rng.normal(size=(rows, sizes.get("n_in", {logistic: 2, per_sample: 1}.get(kind, 6))))
        classes = sizes.get("classes", 3)
    if kind is per_sample:
        return X, (X > 0).astype(float)
    if kind is logistic:
        return X, (X[:, :1] > 0).astype(float)
    return X, np.eye(classes)[rng.integers(0, classes, rows)]


def train(kind, fits, fresh, options, **sizes):
    """Build kind(**sizes) from seed 7 and fit it `fits` times; the losses and parameters after each fit.

    fresh: clear the in-memory programs before every fit, as a new process would start.
    """
    x, y, loss = kind(np.random.default_rng(7), **sizes)
    X, Y = data(kind, 37, 3, **sizes)
    out = []
    for _ in range(fits):
        if fresh:
            compiler._programs.clear()
            compiler._tables.clear()
        history = fastedf.fit(loss, {x: X, y: Y}, engine="compiled", **options)
        out.append((history.epoch_loss.copy(), [p.value.copy() for p in topological_sort(loss)
                                                if isinstance(p, fastedf.Parameter)]))
    return out


def assert_bitwise(got, want):
    for (loss_got, params_got), (loss_want, params_want) in zip(got, want, strict=True):
        assert loss_got.tobytes() == loss_want.tobytes()
        for a, b in zip(params_got, params_want, strict=True):
            assert a.shape == b.shape and a.tobytes() == b.tobytes()


OPTIONS = [dict(batch_size=5, epochs=2, lr=0.3), dict(batch_size=8, epochs=2, lr=0.3, shuffle=True, seed=4),
           dict(batch_size=9, epochs=1, lr=0.3, micro_batch=4), dict(batch_size=1, epochs=1, lr=0.1)]


@pytest.mark.parametrize("kind", [logistic, per_sample, softmax_mlp, conv_net], ids=lambda k: k.__name__)
@pytest.mark.parametrize("options", OPTIONS, ids=["batches", "shuffled", "micro", "B1"])
def test_a_graph_fitted_before_and_a_new_graph_of_its_structure_give_a_fresh_lowerings_numbers(kind, options):
    want = train(kind, 2, True, options)
    compiler._programs.clear()
    first = train(kind, 2, False, options)  # the second fit: the same graph, its program from memory
    again = train(kind, 2, False, options)  # a new graph of the same structure
    assert_bitwise(first, want)
    assert_bitwise(again, want)


@pytest.mark.parametrize("kind,sizes", [(logistic, dict(n_in=3)), (per_sample, dict(n_in=2)),
                                        (softmax_mlp, dict(n_in=5, classes=4)), (conv_net, dict(side=6))],
                         ids=["logistic", "per_sample", "softmax_mlp", "conv_net"])
def test_a_graph_of_another_shape_gets_its_own_program(kind, sizes):
    options = OPTIONS[1]
    train(kind, 1, False, options)  # the default shapes' program is in memory
    want = train(kind, 1, True, options, **sizes)
    compiler._programs.clear()
    train(kind, 1, False, options)
    assert_bitwise(train(kind, 1, False, options, **sizes), want)


def lowered(kind, **sizes):
    """The program compiler.lower gives for a fresh kind(**sizes) after fit's dry run on one row."""
    x, y, loss = kind(np.random.default_rng(1), **sizes)
    X, Y = data(kind, 4, 3, **sizes)
    x.value, y.value = X[:1], Y[:1]
    graph = topological_sort(loss)
    forward_pass(graph)
    program, reason = compiler.lower(graph)
    assert reason is None
    return program, graph


@pytest.mark.parametrize("kind", [logistic, per_sample, softmax_mlp, conv_net], ids=lambda k: k.__name__)
def test_the_program_from_memory_is_the_one_lowering_makes(kind):
    compiler._programs.clear()
    made, graph = lowered(kind)
    kept, other = lowered(kind)
    assert kept.source == made.source and kept.called == made.called
    assert (kept.records, kept.layer_records) == (made.records, made.layer_records)
    assert kept.inputs == [n for n in other if isinstance(n, fastedf.Input)]  # bound to the new graph's nodes
    assert kept.parameters == [n for n in other if isinstance(n, fastedf.Parameter)]
    assert not set(kept.parameters) & set(made.parameters)
    assert len(compiler._programs) == 1


def test_a_users_node_class_is_lowered_every_time():
    class Scaled(fastedf.Sigmoid):  # a user's subclass: its compile rule may read anything, so nothing is kept
        pass

    rng = np.random.default_rng(0)
    x, y = fastedf.Input(), fastedf.Input()
    loss = fastedf.BCE(y, Scaled(fastedf.Linear(x, fastedf.Parameter(rng.normal(size=(2, 1))),
                                                fastedf.Parameter(np.zeros(1)))))
    x.value, y.value = np.ones((1, 2)), np.ones((1, 1))
    graph = topological_sort(loss)
    forward_pass(graph)
    assert compiler.structure(graph, False) is None
    assert compiler.structure(lowered(logistic)[1], False) is not None
