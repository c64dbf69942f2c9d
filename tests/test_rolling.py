"""Loop rolling (fastedf.rolling): repeated layers compile to one loop, and the numbers do not change."""
import naive
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastedf
from fastedf import BCE, Input, Linear, Multiply, Parameter, ReLU, Sigmoid, Tanh, compiler, rolling
from fastedf.graph import forward_pass, topological_sort
from fastedf.models import mlp


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(45, 3))
    return X, (X[:, :1] + X[:, 1:2] > 0).astype(float)


def fit_both(build, data, **kwargs):
    """(graph run, compiled run): each (History, parameters) of a fresh model from build()."""
    X, Y = data
    runs = []
    for engine in ("graph", "compiled"):
        model = build()
        history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, lr=0.5, engine=engine, **kwargs)
        runs.append((history, [p.value.copy() for p in model.parameters]))
    return runs


@pytest.mark.parametrize("hidden", [(4, 4, 4), (9,) * 30, (3, 9, 9, 9, 9, 2)], ids=["three_4", "thirty_9", "mixed"])
@pytest.mark.parametrize("batch_size,micro_batch", [(1, None), (7, None), (16, 5)])
def test_deep_mlps_compile_and_give_the_graph_engines_numbers(data, hidden, batch_size, micro_batch):
    # width 9: 81 weights, so those layers also take their own SGD step (Linear's fused rule) in the loop
    (hg, pg), (hc, pc) = fit_both(lambda: mlp(3, hidden, seed=2, init_scale=0.5), data, batch_size=batch_size,
                                  epochs=2, shuffle=True, seed=1, micro_batch=micro_batch)
    assert hc.engine == "compiled"
    assert_allclose(hc.epoch_loss, hg.epoch_loss, rtol=1e-11, atol=1e-14)
    for a, b in zip(pc, pg):
        assert_allclose(a, b, rtol=1e-11, atol=1e-14)
    start = [p.value for p in mlp(3, hidden, seed=2, init_scale=0.5).parameters]
    naive.assert_trained_as(hc.epoch_loss, pc, naive.mlp_sgd(start, *data, batch_size, 2, 0.5, seed=1))


def lowered(x, y, loss, X, Y):
    """compiler.lower's (Program, reason) for the graph of loss, after a forward pass on the first row."""
    x.value, y.value = X[:1], Y[:1]
    graph = topological_sort(loss)
    forward_pass(graph)
    return compiler.lower(graph)


def program(model, X, Y):
    prog, reason = lowered(model.x, model.y, model.loss, X, Y)
    assert reason is None
    return prog


def test_one_program_serves_a_stack_of_layers_at_any_depth(data):
    X, Y = data
    four, twelve = (program(mlp(3, (5,) * depth), X, Y) for depth in (4, 12))
    assert four.source == twelve.source  # so Numba compiles it once, and its cache serves both
    assert four.source.count("for layer in range(") == 3  # forward, backward, and the SGD updates after
    assert four.length == twelve.length == 5  # Linear (of x), [Activation, Linear] rolled, Linear, loss


SQUARE_FREE = "abcacbabcbacabcacbacabcb"  # Thue's ternary word: no block of layers repeats back to back


def unrolled(layers, scale=False):
    """(x, y, loss) of `layers` Linear + activation layers that no loop can roll, a Multiply by a Parameter after
    them if `scale`, then Linear, Sigmoid and BCE: 2 * layers + 3 operations (+1 with scale)."""
    x, y, rng = Input(), Input(), np.random.default_rng(0)
    layer = x
    for letter in SQUARE_FREE[:layers]:
        A, b = Parameter(rng.normal(size=(3 if layer is x else 2, 2))), Parameter(np.zeros(2))
        layer = {"a": Sigmoid, "b": Tanh, "c": ReLU}[letter](Linear(layer, A, b))
    if scale:
        layer = Multiply(layer, Parameter(np.full((1, 2), 0.5)))
    A, b = Parameter(rng.normal(size=(2, 1))), Parameter(np.zeros(1))
    return x, y, BCE(y, Sigmoid(Linear(layer, A, b)))


def test_a_deep_graph_without_repeated_layers_falls_back_to_the_graph_engine_and_says_why(data):
    X, Y = data
    x, y, loss = unrolled(len(SQUARE_FREE))
    history = fastedf.fit(loss, {x: X, y: Y}, epochs=1)
    assert history.engine == "graph" and "operations" in history.note


def test_programs_compile_up_to_24_operations(data, monkeypatch):
    monkeypatch.setattr(compiler, "_loaded", {})  # programs lowered here are never run: keep them out of the record
    X, Y = data
    assert compiler.MAX_COMPILED_OPERATIONS == 24  # the README's figure
    prog, reason = lowered(*unrolled(10, scale=True), X, Y)
    assert reason is None and prog.length == 24
    x, y, loss = unrolled(11)
    assert lowered(x, y, loss, X, Y) == (None, "the graph has 25 operations after rolling its repeated layers into "
                                               "loops; programs are compiled for at most 24 (compile time grows with "
                                               "length)")
    with pytest.raises(ValueError, match="cannot compile this graph: the graph has 25 operations"):
        fastedf.fit(loss, {x: X, y: Y}, epochs=1, engine="compiled")


def units(*lines):
    return [{"forward": [line], "backward": [], "accumulate": [], "update": []} for line in lines]


def kind(name):
    return "same"


def test_segments_roll_the_longest_run_of_matching_groups():
    found = rolling.segments(units("f(x0, v1)", "g(v1, v2)", "f(v2, v3)", "g(v3, v4)", "f(v4, v5)", "h(v5)"), kind)
    assert [(s.start, s.length, s.repeats) for s in found] == [(0, 1, 1), (1, 2, 2), (5, 1, 1)]


def test_segments_do_not_roll_over_different_array_kinds_or_assignments():
    lines = ("f(v1, p2)", "f(v3, p4)", "f(v5, p6)")
    assert len(rolling.segments(units(*lines), kind)) == 1
    ranks = {"p2": 1, "p4": 2, "p6": 1}
    assert len(rolling.segments(units(*lines), lambda name: ranks.get(name, 2))) == 3
    assert len(rolling.segments(units("c1 = f(v2)", "c3 = f(v4)"), kind)) == 2


def test_a_rolled_backward_runs_from_the_last_layer_to_the_first():
    layers = [{"forward": [f"f(v{i})"], "backward": [f"b(g{i})"], "accumulate": [], "update": []} for i in (1, 2, 3)]
    sections = rolling.emit(layers, rolling.segments(layers, kind), lambda names: f"T[{names[0]}..{names[-1]}]",
                            lambda k: str(k))
    assert sections["forward"][0] == "for layer in range(3):"
    assert sections["backward"][0] == "for layer in range(3 - 1, -1, -1):"
    assert sections["backward"][1:] == ["    g_0_1 = T[G1..G3][:n]", "    b(g_0_1)"]  # the view of layer l, sliced
