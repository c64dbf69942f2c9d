"""`fastedf run`'s fused user graphs (fastedf.runner.fuse): the same numbers as the user's own code.

Each test runs a course loop twice on a student's EDF module of tests/run_variants: once as plain python,
once with the runner's hook verifying from the first call and fusing as soon as it may; every value and
gradient the script reads (and every array it kept) must agree to 1e-12 (fastedf.runner.verify's equality), and
the loop must have run fused.
"""
import gc
import importlib.util
import os
import pathlib
import sys

import numpy as np
import pytest

from fastedf import fused
from fastedf.runner import fuse, nodes, report

VARIANTS = pathlib.Path(__file__).resolve().parent / "run_variants"
TOL = 1e-12


@pytest.fixture(autouse=True)
def fuse_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(fused, "WARM_SECONDS", 0.0)
    monkeypatch.setattr(fused, "COLD_SECONDS", 0.0)
    monkeypatch.setattr(nodes, "NUMBA_IMPORT_SECONDS", 0.0)  # a graph with cut nodes waits for it otherwise
    monkeypatch.setattr(fuse, "FIRST_RECHECK", 16)


def _edf(variant, registry=None, file="EDF.py", path=None):
    """The variant's EDF module (or the one at `path`), imported afresh (with the registry's class hook when
    given)."""
    path = path or VARIANTS / variant / file
    name = f"edf_{variant}_{'run' if registry else 'plain'}_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if registry is not None:
        registry.install()
    try:
        spec.loader.exec_module(module)
    finally:
        if registry is not None:
            registry.uninstall()
    return module


def _same(a, b, what=""):
    assert len(a) == len(b), what
    for i, (u, v) in enumerate(zip(a, b)):
        assert type(u) is type(v), (what, i, type(u), type(v))
        assert np.shape(u) == np.shape(v), (what, i)
        # the runner's equality (fastedf.runner.verify): 1e-12 relative, or of the array's largest magnitude
        scale = np.max(np.abs(u), initial=0.0)
        np.testing.assert_allclose(v, u, rtol=TOL, atol=max(TOL * scale, 1e-300), err_msg=f"{what} #{i}")


def _step(graph):
    """A course loop's step: every node's forward in order, then every backward in reverse."""
    for n in graph:
        n.forward()
    for n in graph[::-1]:
        n.backward()


def _fused_steps(registry):
    fuser = registry._fuser
    return sum(p.steps - p.node_steps for p in fuser.plans) if fuser is not None else 0


def _instructor(edf, steps=300, floats=0):
    """The instructor's per-sample loop, reading what scripts read and keeping references to what they see; its
    first `floats` steps feed x1 a Python float."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(steps, 2)), (rng.random(steps) > 0.5).astype(float)
    x1, x2, y = edf.Input(), edf.Input(), edf.Input()
    w1, w2, b = (edf.Parameter(v) for v in (np.full((1, 1), 0.3), np.full((1, 1), -0.2), np.zeros((1, 1))))
    u1, u2 = edf.Multiply(w1, x1), edf.Multiply(w2, x2)
    s = edf.Sigmoid(edf.Addition(edf.Addition(u1, u2), b))
    loss = edf.BCE(y, s)
    graph = [x1, x2, y, w1, w2, b, u1, u2, u1.outputs[0], s.inputs[0], s, loss]
    seen = {"loss": [], "kept values": [], "kept gradients": [], "parameter gradients": [], "copies": []}
    for i in range(steps):
        x1.value, x2.value, y.value = X[i, :1].reshape(1, -1), X[i, 1:].reshape(1, -1), Y[i].reshape(1, -1)
        if i < floats:
            x1.value = float(X[i, 0])
        for n in graph:
            n.forward()
        seen["loss"].append(loss.value)
        for n in graph[::-1]:
            n.backward()
        if i % 7 == 0:  # kept, not copied: later steps must not change them
            seen["kept values"].append(s.value)
            seen["kept gradients"].append(u1.gradients[w1])
        seen["copies"] += [s.value.copy(), u2.gradients[x2].copy(), loss.gradients[s].copy()]
        for t in (w1, w2, b):
            seen["parameter gradients"].append(t.gradients[t])
            t.value -= 0.1 * t.gradients[t]
    predictions = []
    for i in range(20):  # a partial forward: no label, the loss not called
        x1.value, x2.value = X[i, :1].reshape(1, -1), X[i, 1:].reshape(1, -1)
        for n in graph[:-1]:
            n.forward()
        predictions.append(s.value.copy())
    seen["predictions"] = predictions
    x1.value, x2.value = X[:, :1], X[:, 1:]  # the Inputs change shape: the whole set at once
    for n in graph:
        n.forward()
    seen["vectorised"] = [s.value.copy(), loss.value]
    seen["parameters"] = [w1.value, w2.value, b.value]
    return seen


def _rows(edf, batch, epochs=6):
    """The batch study's loop (x @ A + b, clipped BCE, an empty last batch), with kept references."""
    rng = np.random.default_rng(9)
    X = rng.normal(size=(64, 2))
    Y = (X[:, :1] + 0.3 * X[:, 1:] > 0).astype(float)
    x, y = edf.Input(), edf.Input()
    A, b = edf.Parameter(np.array([[0.1], [-0.2]])), edf.Parameter(np.zeros(1))
    lin = edf.Linear(x, A, b)
    prob = edf.Sigmoid(lin)
    loss = edf.BCE(y, prob)
    graph = edf.topological_sort(loss)
    seen = {"loss": [], "kept": [], "gradients": []}
    for _ in range(epochs):
        for i in range(len(X) // batch + 1):
            x.value, y.value = X[i * batch:(i + 1) * batch], Y[i * batch:(i + 1) * batch]
            edf.forward_pass(graph)
            edf.backward_pass(graph)
            seen["loss"].append(loss.value)
            seen["kept"] += [prob.value[:, 0], lin.gradients[A]]  # a view of a value, a gradient array
            seen["gradients"] += [A.gradients[A].copy(), b.gradients[b].copy(), lin.gradients[x].copy()]
            edf.sgd_update([A, b], 0.1)
    x.value = X[:10]
    edf.forward_pass(graph[:-1])
    seen["prediction"] = [prob.value.copy()]
    seen["parameters"] = [A.value, b.value]
    return seen


def _columns(edf, steps=120):
    """Samples as columns: W @ x + b, Tanh, Softmax and a mean CE over columns; a forward on new columns."""
    rng = np.random.default_rng(3)
    X, labels = rng.normal(size=(6, 80)), rng.integers(0, 4, 80)
    Y = np.eye(4)[labels].T
    W1, b1 = edf.Parameter(rng.normal(size=(5, 6)) * 0.3), edf.Parameter(np.zeros((5, 1)))
    W2, b2 = edf.Parameter(rng.normal(size=(4, 5)) * 0.3), edf.Parameter(np.zeros((4, 1)))
    x, y = edf.Input(), edf.Input()
    h = edf.Tanh(edf.Linear(W1, x, b1))
    probs = edf.Softmax(edf.Linear(W2, h, b2))
    loss = edf.CrossEntropy(y, probs)
    graph = [x, y, W1, b1, W2, b2, h.inputs[0], h, probs.inputs[0], probs, loss]
    seen = {"loss": [], "values": [], "gradients": []}
    for i in range(steps):
        c = rng.permutation(80)[:8]
        x.value, y.value = X[:, c], Y[:, c]  # column slices: not C-contiguous
        _step(graph)
        seen["loss"].append(loss.value)
        seen["values"] += [probs.value.copy(), h.value.copy()]
        seen["gradients"] += [W1.gradients[W1].copy(), probs.gradients[probs.inputs[0]].copy()]
        for p in (W1, b1, W2, b2):
            p.value -= 0.1 * p.gradients[p]
    x.value = X
    for n in graph[:-1]:
        n.forward()
    seen["test"] = [probs.value.copy()]
    return seen


def _rows_softmax(edf, steps=120):
    """Linear layers making their own weights, ReLU, a Softmax with its Jacobian, a summed CE over rows."""
    np.random.seed(4)
    rng = np.random.default_rng(4)
    X, labels = rng.normal(size=(60, 8)), rng.integers(0, 10, 60)
    Y = np.eye(10)[labels]
    x, y = edf.Input(), edf.Input()
    out = edf.Softmax(edf.Linear(edf.ReLU(edf.Linear(x, 6, 8)), 10, 6))
    loss = edf.CrossEntropy(y, out)
    graph = edf.topological_sort(loss)
    trainables = [n for n in graph if isinstance(n, edf.Parameter)]
    seen = {"loss": [], "values": [], "gradients": []}
    for i in range(steps):
        k = (i * 10) % 60
        x.value, y.value = X[k:k + 10], Y[k:k + 10]
        edf.forward_pass(graph)
        edf.backward_pass(graph)
        seen["loss"].append(loss.value)
        seen["values"].append(out.value.copy())
        seen["gradients"] += [t.gradients[t].copy() for t in trainables]
        edf.sgd_update(trainables, 0.05)
    return seen


def _dropout(edf, steps=90):
    """Linear -> BatchNorm -> ReLU -> Dropout (classes that keep state, draw random numbers) -> Linear ->
    Softmax -> CE: the part below the Dropout can run as a program, its value read as a leaf's."""
    np.random.seed(11)
    X, labels = np.random.normal(size=(96, 12)), np.random.randint(0, 4, 96)
    Y = np.eye(4)[labels]
    x, y = edf.Input(), edf.Input()
    model = edf.MLP(x, [12, 10, 4], dropout=0.25)
    loss = edf.CE(y, model.output)
    graph = edf.topological_sort(loss)
    seen = {"loss": [], "values": [], "kept": [], "gradients": [], "eval": []}
    for i in range(steps):
        model.train(i % 10 != 9)  # every tenth step evaluates: no mask drawn
        k = (i * 16) % 96
        x.value, y.value = X[k:k + 16], Y[k:k + 16]
        edf.forward_pass(graph)
        edf.backward_pass(graph)
        seen["loss"].append(loss.value)
        seen["values"].append(model.output.value.copy())
        seen["kept"].append(model.output.value)
        # a bias before a BatchNorm has a gradient of exactly 0, computed as round-off: the program's matmul
        # and NumPy's give different round-off, so it is left out; every other parameter's gradient is compared
        seen["gradients"] += [p.gradients[p].copy() for j, p in enumerate(model.parameters) if j != 1]
        edf.sgd_update(model.parameters, 0.1)
    model.train(False)
    x.value = X
    edf.forward_pass(graph[:-1])
    seen["eval"].append(model.output.value.copy())
    return seen


def _passthrough(edf, steps=60):
    """Linear layers taking [W, b], a LeakyReLU no candidate computes, a Softmax without the maximum subtracted
    and a CE giving the logits' gradient."""
    rng = np.random.default_rng(8)
    X, labels = rng.normal(size=(48, 6)), rng.integers(0, 3, 48)
    Y = np.eye(3)[labels]
    x, y = edf.Input(), edf.Input()
    W1, b1 = edf.Parameter(rng.normal(size=(6, 5)) * 0.4), edf.Parameter(np.zeros(5))
    W2, b2 = edf.Parameter(rng.normal(size=(5, 3)) * 0.4), edf.Parameter(np.zeros(3))
    probs = edf.Softmax(edf.Linear(edf.LeakyReLU(edf.Linear(x, [W1, b1])), [W2, b2]))
    loss = edf.CE(y, probs)
    graph = [x, W1, b1, probs.inputs[0].inputs[0].inputs[0], probs.inputs[0].inputs[0], W2, b2,
             probs.inputs[0], probs, y, loss]
    seen = {"loss": [], "gradients": []}
    for i in range(steps):
        k = (i * 8) % 48
        x.value, y.value = X[k:k + 8], Y[k:k + 8]
        _step(graph)
        seen["loss"].append(loss.value)
        seen["gradients"] += [p.gradients[p].copy() for p in (W1, b1, W2, b2)]
        for p in (W1, b1, W2, b2):
            p.value -= 0.1 * p.gradients[p]
    return seen


def _by_state(registry, states=("user",)):
    return {c.cls.__name__: c.state for c in registry.classes if c.state in states}


def _compare(plain, run):
    for key in plain:
        _same(plain[key], run[key], key)


def test_instructor_per_sample_graph_fuses_and_gives_the_users_numbers():
    registry = nodes.Registry(eager=True)
    run = _instructor(_edf("instructor_per_sample", registry))
    registry.finish()
    assert _fused_steps(registry) > 200
    _compare(_instructor(_edf("instructor_per_sample")), run)
    assert "fused graph Multiply -> Multiply -> Addition -> Addition -> Sigmoid -> BCE" in report.explain(registry)


def test_a_graph_fed_python_floats_runs_node_by_node_and_fuses_once_fed_arrays():
    registry = nodes.Registry(eager=True)
    run = _instructor(_edf("instructor_per_sample", registry), floats=40)
    registry.finish()
    assert _fused_steps(registry) > 150
    _compare(_instructor(_edf("instructor_per_sample"), floats=40), run)
    assert "internal error" not in report.explain(registry)


@pytest.mark.parametrize("batch", [1, 16, 20])
def test_linear_sigmoid_clipped_bce_fuses_with_kept_views_and_other_batches(batch):
    registry = nodes.Registry(eager=True)
    run = _rows(_edf("rows_batch_study", registry), batch)
    registry.finish()
    assert _fused_steps(registry) > 0
    _compare(_rows(_edf("rows_batch_study"), batch), run)


def test_a_kept_array_moves_the_program_to_new_buffers():
    """Without the reference counts' check, a kept value would be overwritten by the next step."""
    registry = nodes.Registry(eager=True)
    edf = _edf("rows_batch_study", registry)
    run = _rows(edf, 16, epochs=3)
    registry.finish()
    kept = run["kept"][-10:]
    plain = _rows(_edf("rows_batch_study"), 16, epochs=3)["kept"][-10:]
    assert _fused_steps(registry) > 0
    _same(plain, kept, "kept arrays")
    assert len({id(a.base if a.base is not None else a) for a in kept[0::2]}) > 1  # the views' buffers differ


def test_a_class_without_lowering_runs_node_by_node_and_the_part_below_it_fuses():
    registry = nodes.Registry(eager=True)
    edf = _edf("rows_batch_study", registry)
    lowering = fuse.LOWER.pop("sigmoid")
    try:
        run = _rows(edf, 16, epochs=3)
    finally:
        fuse.LOWER["sigmoid"] = lowering
    registry.finish()
    assert _fused_steps(registry) > 0
    assert "fused graph BCE:" in report.explain(registry)  # the Sigmoid's value is the program's leaf
    _compare(_rows(_edf("rows_batch_study"), 16, epochs=3), run)


def test_a_graph_around_nodes_that_keep_state_and_draw_random_numbers_fuses_below_them():
    registry = nodes.Registry(eager=True)
    run = _dropout(_edf("dropout_batchnorm", registry))
    registry.finish()
    explained = report.explain(registry)
    assert _fused_steps(registry) > 20, explained
    assert "fused graph Linear -> Softmax -> CE" in explained
    assert _by_state(registry) == {"BatchNorm": "user", "Dropout": "user"}
    _compare(_dropout(_edf("dropout_batchnorm")), run)


def test_an_unfusable_graph_does_not_keep_its_classes_for_a_program(monkeypatch):
    """A Softmax without the maximum subtracted has no lowering: its graph is found unfusable once, and its
    classes are given back then (not at a later re-check) where node by node they are no faster than the user's
    code."""
    monkeypatch.setattr(nodes, "FIRST_RECHECK", 10 ** 9)
    registry = nodes.Registry()
    edf = _edf("softmax_passthrough", registry)
    registry.activate()
    registry.dispatch_seconds = 1.0  # whatever this machine measures: node by node, slower than the user's code
    run = _passthrough(edf)
    registry.finish()
    ce = next(c for c in registry.classes if c.cls.__name__ == "CE")
    assert "without the maximum subtracted" in registry._fuser.refused[ce.name]
    assert _by_state(registry, ("user", "accelerated")) == {"Linear": "user", "LeakyReLU": "user",
                                                             "Softmax": "user", "CE": "user"}
    _compare(_passthrough(_edf("softmax_passthrough")), run)


def test_a_program_that_differs_from_the_candidates_is_caught_on_its_first_step(monkeypatch):
    """The program's first step on a signature is checked against the verified candidates' dry run."""
    lower = fuse.LOWER["multiply"]

    def wrong(c, ins, out, g, grads, shapes):  # each input's gradient times itself, not the other input
        fwd, _ = lower(c, ins, out, g, grads, shapes)
        return fwd, [line for i, name in grads.items()
                     for line in fuse._loop2(name, f"{g}[i, j] * {ins[i]}[i, j]")]
    monkeypatch.setitem(fuse.LOWER, "multiply", wrong)
    registry = nodes.Registry(eager=True)
    run = _instructor(_edf("instructor_per_sample", registry), steps=60)
    registry.finish()
    assert _fused_steps(registry) <= 1
    assert "the program's gradient of a Multiply differs from the candidate's" in report.explain(registry)
    _compare(_instructor(_edf("instructor_per_sample"), steps=60), run)


@pytest.mark.parametrize("loop, variant, file", [
    (_columns, "columns_digits", "edf.py"),  # columns: Softmax and a mean CE over columns
    (_rows_softmax, "softmax_jacobian", "nodes.py"),  # rows: a Softmax with its Jacobian, a summed CE
])
def test_softmax_and_ce_fuse(loop, variant, file):
    registry = nodes.Registry(eager=True)
    run = loop(_edf(variant, registry, file))
    registry.finish()
    assert _fused_steps(registry) > 50
    _compare(loop(_edf(variant, None, file)), run)


def test_a_script_whose_earlier_run_was_long_verifies_from_its_first_call(tmp_path):
    """records: a short script verifies nothing, unless an earlier run of it showed verifying repays."""
    import shutil
    import subprocess

    from fastedf.runner import records
    shutil.copy(VARIANTS / "instructor_per_sample" / "EDF.py", tmp_path / "EDF.py")
    script = tmp_path / "train.py"
    script.write_text(
        "from EDF import *\n"
        "x, y = Input(), Input()\n"
        "w = Parameter(np.full((1, 1), 0.5))\n"
        "loss = BCE(y, Sigmoid(Multiply(w, x)))\n"
        "graph = [x, y, w, loss.inputs[1].inputs[0], loss.inputs[1], loss]\n"
        "for i in range(50):\n"
        "    x.value, y.value = np.full((1, 1), i / 50.0), np.full((1, 1), float(i % 2))\n"
        "    for n in graph:\n"
        "        n.forward()\n"
        "    for n in graph[::-1]:\n"
        "        n.backward()\n"
        "    w.value -= 0.1 * w.gradients[w]\n"
        "print(float(w.value[0, 0]))\n")
    env = {**os.environ, "FASTEDF_CACHE_DIR": str(tmp_path / "cache")}

    def run():
        done = subprocess.run([sys.executable, "-m", "fastedf", "run", "train.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=True)
        return done.stdout, done.stderr
    plain = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True).stdout
    out, err = run()
    assert out == plain and "no node class accelerated" in err
    key = "script:" + str(script.resolve())
    records_path = tmp_path / "cache" / records.NAME
    assert key in records_path.read_text()
    records_path.write_text(f"10.0\t{key}\n")  # as if an earlier run had spent 10 s in its nodes
    out, err = run()
    assert out == plain and "3 of 3 node classes accelerated" in err


def test_a_script_that_builds_a_graph_every_few_steps_keeps_few_plans(monkeypatch):
    monkeypatch.setattr(fuse, "MAX_PLANS", 3)
    monkeypatch.setattr(fuse, "MAX_WATCHES", 4)

    def loop(edf):
        rng = np.random.default_rng(11)
        X = rng.normal(size=(32, 2))
        Y = (X[:, :1] > 0).astype(float)
        A0, seen = np.array([[0.1], [-0.2]]), []
        for graph_number in range(12):  # a fresh graph each time, as some scripts write their epoch loop
            gc.collect()  # graphs are cycles (inputs, outputs): the collector frees them
            x, y = edf.Input(), edf.Input()
            A, b = edf.Parameter(A0.copy()), edf.Parameter(np.zeros(1))
            loss = edf.BCE(y, edf.Sigmoid(edf.Linear(x, A, b)))
            graph = edf.topological_sort(loss)
            for i in range(8):
                x.value, y.value = X[4 * i:4 * i + 4], Y[4 * i:4 * i + 4]
                edf.forward_pass(graph)
                edf.backward_pass(graph)
                edf.sgd_update([A, b], 0.1)
                seen.append(loss.value)
            A0 = A.value
        return {"loss": seen, "A": [A0]}
    registry = nodes.Registry(eager=True)
    run = loop(_edf("rows_batch_study", registry))
    registry.finish()
    fuser = registry._fuser
    assert len(fuser.plans) <= 3 and fuser.dropped[0] > 0 and len(fuser.watches) <= 5
    assert fuser.steps()[0] > 40
    _compare(loop(_edf("rows_batch_study")), run)


def test_per_row_gradients_stay_node_by_node_with_the_users_numbers():
    """Gradients kept per sample row, averaged by the script's update: not fused (said why), same numbers."""
    def loop(edf):
        rng = np.random.default_rng(6)
        X, Y = rng.normal(size=(40, 2)), (rng.random(40) > 0.5).astype(float)
        x, y = edf.Input(), edf.Input()
        w, b = edf.Parameter(np.array([0.1, -0.1])), edf.Parameter(np.zeros(1))
        loss = edf.BCE(y, edf.Sigmoid(edf.Linear(x, w, b)))
        graph = [x, y, w, b, loss.inputs[1].inputs[0], loss.inputs[1], loss]
        seen = []
        for i in range(100):
            k = (8 * i) % 40
            x.value, y.value = X[k:k + 8], Y[k:k + 8]
            _step(graph)
            for p in (w, b):
                seen.append(p.gradients[p].copy())
                p.value -= 0.1 * np.mean(p.gradients[p], axis=0)
        return {"gradients": seen, "parameters": [w.value, b.value]}
    registry = nodes.Registry(eager=True)
    run = loop(_edf("per_row_gradients", registry))
    registry.finish()
    assert _fused_steps(registry) == 0 and "not fused (gradients per row)" in report.explain(registry)
    _compare(loop(_edf("per_row_gradients")), run)


def test_fastedf_fuse_0_keeps_every_graph_node_by_node(monkeypatch):
    monkeypatch.setattr(fused, "ENABLED", False)  # FASTEDF_FUSE=0
    registry = nodes.Registry(eager=True)
    run = _rows(_edf("rows_batch_study", registry), 16, epochs=3)
    registry.finish()
    assert _fused_steps(registry) == 0 and "fused graph" not in report.explain(registry)
    _compare(_rows(_edf("rows_batch_study"), 16, epochs=3), run)


def test_records_keep_the_most_recent_and_stay_bounded(tmp_path, monkeypatch):
    """Every run of a new script path adds a record: the file keeps the MAX_RECORDS written last."""
    from fastedf.runner import records
    monkeypatch.setenv("FASTEDF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(records, "MAX_RECORDS", 5)
    for i in range(8):
        records.remember({f"script:/s{i}.py": float(i)})
    records.remember({"program:p": 1.0}, accumulate={"program:p"})
    records.remember({"script:/s4.py": 9.0})  # written again: now the most recent
    records.remember({"program:p": 2.0}, accumulate={"program:p"})
    kept = (tmp_path / records.NAME).read_text().splitlines()
    assert [line.split("\t")[1] for line in kept] == ["script:/s5.py", "script:/s6.py", "script:/s7.py",
                                                      "script:/s4.py", "program:p"]
    assert records.earlier("program:p") == 3.0 and records.earlier("script:/s4.py") == 9.0
    assert records.earlier("script:/s0.py") == 0.0
