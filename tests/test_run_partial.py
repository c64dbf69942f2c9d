"""`fastedf run`'s fused graphs (fastedf.runner.fuse) below the nodes no program runs, beside other graphs, on 1-D
values: the user's numbers however the script orders and writes its nodes."""
import sys

import numpy as np
import pytest

from fastedf.runner import nodes, report
from test_run_fuse import VARIANTS, _compare, _edf, _fused_steps, _same, _step, fuse_at_once  # noqa: F401  (the fixture)

# An unknown node that writes its value into the same array every step, in place; a Softmax whose temperature the
# script may change
CLASSES = '''

class Smooth(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        y = self.inputs[0].value
        if self.value is None or self.value.shape != y.shape:
            self.value = np.empty_like(y)
        np.multiply(y, 0.9, out=self.value)
        self.value += 0.1 / y.shape[1]

    def backward(self):
        self.gradients[self.inputs[0]] = 0.9 * self.outputs[0].gradients[self]


SCALE = 1.0


class ScaledSoftmax(Node):
    def __init__(self, x):
        Node.__init__(self, [x])

    def forward(self):
        z = SCALE * self.inputs[0].value
        e = np.exp(z - np.max(z, axis=1, keepdims=True))
        self.value = e / np.sum(e, axis=1, keepdims=True)

    def backward(self):
        g = self.outputs[0].gradients[self]
        s = self.value
        self.gradients[self.inputs[0]] = SCALE * s * (g - np.sum(g * s, axis=1, keepdims=True))
'''


def _module(tmp_path, registry=None):
    """dropout_batchnorm's EDF module with the classes above, imported afresh (with the registry's hook)."""
    path = tmp_path / "EDF.py"
    if not path.exists():
        path.write_text((VARIANTS / "dropout_batchnorm" / "EDF.py").read_text() + CLASSES)
    return _edf("partial", registry, path=path)


def _late_labels(edf, steps=60):
    """Labels smoothed by a node the script forwards after the pass's first fused operation (just before the
    loss), which rewrites its value in place: the program must not read last step's labels."""
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(48, 6)), np.eye(3)[rng.integers(0, 3, 48)]
    x, y = edf.Input(), edf.Input()
    A, b = edf.Parameter(rng.normal(size=(6, 3)) * 0.4), edf.Parameter(np.zeros(3))
    smooth = edf.Smooth(y)
    loss = edf.CE(smooth, edf.Softmax(edf.Linear(x, A, b)))
    graph = [n for n in edf.topological_sort(loss) if n is not smooth]
    graph.insert(len(graph) - 1, smooth)
    seen = {"loss": [], "gradients": []}
    for i in range(steps):
        k = (i * 8) % 48
        x.value, y.value = X[k:k + 8], Y[k:k + 8]
        edf.forward_pass(graph)
        edf.backward_pass(graph)
        seen["loss"].append(loss.value)
        seen["gradients"] += [A.gradients[A].copy(), b.gradients[b].copy()]
        edf.sgd_update([A, b], 0.1)
    seen["parameters"] = [A.value, b.value]
    return seen


def test_a_cut_node_forwarded_after_the_first_fused_operation_writing_in_place_fuses_with_the_users_numbers(tmp_path):
    registry = nodes.Registry(eager=True)
    run = _late_labels(_module(tmp_path, registry))
    registry.finish()
    assert _fused_steps(registry) > 45  # from the second step, the program runs at the loss's call
    _compare(_late_labels(_module(tmp_path)), run)


def _two_losses(edf, steps=120):
    """A training loss and a second one trained on other rows with the same classes, whose Linear also feeds a
    monitor: that graph is unfusable, the training one is not."""
    rng = np.random.default_rng(6)
    X, Y = rng.normal(size=(48, 6)), np.eye(3)[rng.integers(0, 3, 48)]
    x, y, x2, y2 = edf.Input(), edf.Input(), edf.Input(), edf.Input()
    A, b = edf.Parameter(rng.normal(size=(6, 3)) * 0.4), edf.Parameter(np.zeros(3))
    A2, b2 = edf.Parameter(rng.normal(size=(6, 3)) * 0.4), edf.Parameter(np.zeros(3))
    loss = edf.CE(y, edf.Softmax(edf.Linear(x, A, b)))
    z2 = edf.Linear(x2, A2, b2)
    loss2 = edf.CE(y2, edf.Softmax(z2))
    edf.ReLU(z2)  # never run: a second consumer all the same
    graph, graph2 = edf.topological_sort(loss), edf.topological_sort(loss2)
    seen = {"loss": [], "loss2": [], "gradients": []}
    for i in range(steps):
        k = (i * 8) % 40
        x.value, y.value, x2.value, y2.value = X[k:k + 8], Y[k:k + 8], X[40:], Y[40:]
        for g, ps, losses in ((graph, (A, b), seen["loss"]), (graph2, (A2, b2), seen["loss2"]))[:1 + i % 2]:
            edf.forward_pass(g)
            edf.backward_pass(g)
            losses.append(g[-1].value)
            seen["gradients"] += [p.gradients[p].copy() for p in ps]
            edf.sgd_update(ps, 0.1)
    return seen


def test_an_unfusable_graph_does_not_give_back_the_classes_another_graph_fuses(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes, "FIRST_RECHECK", 10 ** 9)
    registry = nodes.Registry()
    edf = _module(tmp_path, registry)
    registry.activate()
    registry.dispatch_seconds = 1.0  # node by node, slower than the user's code whatever this machine measures
    run = _two_losses(edf)
    registry.finish()
    assert "a Linear with 2 consumers" in registry._fuser.refused.values()
    assert {c.cls.__name__: c.state for c in registry.classes if c.state in ("user", "accelerated")} == {
        "Linear": "accelerated", "Softmax": "accelerated", "CE": "accelerated"}
    assert _fused_steps(registry) > 100
    _compare(_two_losses(_module(tmp_path)), run)


def _one_dimensional(edf, steps=80):
    """The instructor's Multiply, Sigmoid and BCE on 1-D values (a batch of 8 as a vector): the BCE's gradient
    divides by their length, the rows of NumPy's shape."""
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(48,)), (rng.random(48) > 0.5).astype(float)
    x, y = edf.Input(), edf.Input()
    w = edf.Parameter(np.full(8, 0.3))
    loss = edf.BCE(y, edf.Sigmoid(edf.Multiply(w, x)))
    graph = [x, y, w, loss.inputs[1].inputs[0], loss.inputs[1], loss]
    seen = {"loss": [], "gradients": []}
    for i in range(steps):
        k = (i * 8) % 40
        x.value, y.value = X[k:k + 8], Y[k:k + 8]
        _step(graph)
        seen["loss"].append(loss.value)
        seen["gradients"] += [w.gradients[w].copy(), loss.gradients[loss.inputs[1]].copy()]
        w.value -= 0.1 * w.gradients[w]
    return seen


def test_a_graph_of_1d_values_fuses_with_the_users_numbers():
    registry = nodes.Registry(eager=True)
    run = _one_dimensional(_edf("instructor_per_sample", registry))
    registry.finish()
    assert _fused_steps(registry) > 60, report.explain(registry)
    _compare(_one_dimensional(_edf("instructor_per_sample")), run)



def _predict_first(edf, phase=12):
    """Batches of 16 while the graph starts to fuse, with batches of 8 verified before; then a prediction on 8
    rows (no loss: the program's first step on them ends before a backward), and batches of 8 again."""
    rng = np.random.default_rng(8)
    X, Y = rng.normal(size=(40, 6)), np.eye(3)[rng.integers(0, 3, 40)]
    x, y = edf.Input(), edf.Input()
    A, b = edf.Parameter(rng.normal(size=(6, 3)) * 0.4), edf.Parameter(np.zeros(3))
    probs = edf.Softmax(edf.Linear(x, A, b))
    loss = edf.CE(y, probs)
    graph = edf.topological_sort(loss)
    seen = {"loss": [], "gradients": [], "prediction": []}
    for rows in [8] * 4 + [16] * phase + [0] + [8] * phase:
        if rows == 0:
            x.value, y.value = X[-8:], Y[-8:]
            edf.forward_pass(graph[:-1])
            seen["prediction"].append(probs.value.copy())
            continue
        x.value, y.value = X[:rows], Y[:rows]
        edf.forward_pass(graph)
        edf.backward_pass(graph)
        seen["loss"].append(loss.value)
        seen["gradients"] += [A.gradients[A].copy(), b.gradients[b].copy()]
        edf.sgd_update([A, b], 0.1)
    return seen


def test_a_signature_whose_first_fused_pass_has_no_backward_is_checked_on_its_next_step(tmp_path):
    """The program's gradients on a signature are checked against the candidates' dry run on the leaves of the
    step they are computed in, not those of the signature's first step."""
    registry = nodes.Registry(eager=True)
    run = _predict_first(_module(tmp_path, registry))
    registry.finish()
    plan, = registry._fuser.plans
    assert not plan.refused and len(plan.layouts) == 2 and _fused_steps(registry) > 18, report.explain(registry)
    _compare(_predict_first(_module(tmp_path)), run)


def _changed(edf, steps=150, change=40):
    """The script changes a class's behaviour (a module global) mid-run, while its graph is fused."""
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(48, 6)), np.eye(3)[rng.integers(0, 3, 48)]
    x, y = edf.Input(), edf.Input()
    A, b = edf.Parameter(rng.normal(size=(6, 3)) * 0.4), edf.Parameter(np.zeros(3))
    loss = edf.CE(y, edf.ScaledSoftmax(edf.Linear(x, A, b)))
    graph = edf.topological_sort(loss)
    seen = {"loss": []}
    for i in range(steps):
        edf.SCALE = 1.0 if i < change else 2.0
        k = (i * 8) % 40
        x.value, y.value = X[k:k + 8], Y[k:k + 8]
        edf.forward_pass(graph)
        edf.backward_pass(graph)
        seen["loss"].append(loss.value)
        edf.sgd_update([A, b], 0.1)
    return seen


def test_a_fused_class_is_re_checked_on_the_programs_node_by_node_steps(tmp_path):
    """Every 2^k-th step of a fused graph runs node by node: its classes' calls there verify, so one whose code
    no longer computes what its candidate does is given back (the steps between the change and that re-check
    are the thinning's, as node by node)."""
    registry = nodes.Registry(eager=True)
    run = _changed(_module(tmp_path, registry))
    registry.finish()
    scaled = next(c for c in registry.classes if c.cls.__name__ == "ScaledSoftmax")
    assert scaled.state == "user" and "on a re-check" in scaled.reason
    plain = _changed(_module(tmp_path))
    _same(plain["loss"][:40], run["loss"][:40], "loss before the change")


def test_a_graph_with_cut_nodes_waits_until_its_own_share_of_the_loop_repays_the_program(monkeypatch):
    """A whole graph is tried at once; a part of one (below a cut node) only once its operations' share of the
    loop's time, as their user's code was timed, reaches the program's cost: before that, nothing is lowered."""
    from fastedf import fused
    from fastedf.runner import fuse
    monkeypatch.setattr(fused, "WARM_SECONDS", 0.01)

    class Timed:  # a class whose user's code took 10 us a call on its verified calls
        name = "edf.Timed"
        user_times = [1e-5] * 5

    class Leaf:
        inputs, value = [], None

    class Cut:
        inputs, value = [Leaf()], None

    whole = type("S", (), {"leaves": [Leaf()], "classes": [Timed, Timed]})()
    part = type("S", (), {"leaves": [Cut(), Leaf()], "classes": [Timed, Timed]})()
    w = fuse._Watch(Leaf())
    w.steps, w.spent = 1000, 0.2  # 200 us a step, of which the part's two operations take 2 x 2 x 10 us
    assert fuse._share(whole, w) == 1.0
    assert abs(fuse._share(part, w) - 0.2) < 1e-12

    fuser = nodes.Registry().fuser()
    monkeypatch.setattr(fuse, "Structure", lambda registry, loss: part)
    monkeypatch.setattr(fuse, "_lowered", lambda s, vals: (_ for _ in ()).throw(AssertionError("lowered")))
    monkeypatch.setitem(sys.modules, "numba", sys.modules.get("numba") or object())  # the cost: WARM_SECONDS
    w.steps, w.spent = 200, 0.04  # the part's share, 0.008 s, is below 0.01 s: it waits, and nothing is lowered
    fuser._try(w, Leaf())
    assert w.program is None and abs(w.wait - (0.04 + (0.01 - 0.04 * 0.2) / 0.2)) < 1e-9
    # the script's last run spent 0.5 s in its nodes: half its part's share, 0.05 s, repays 0.01 s at once
    fuser.registry.expected_total = 0.5
    with pytest.raises(AssertionError, match="lowered"):
        fuser._try(w, Leaf())
    # 0.08 s: half its part's share, 0.008 s, cannot repay 0.01 s: not fused this run, nothing lowered
    fuser.registry.expected_total = 0.08
    with pytest.raises(fuse.Unfusable, match="would not repay"):
        fuser._try(w, Leaf())
