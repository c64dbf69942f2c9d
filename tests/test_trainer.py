"""fastedf.fit: the compiled engine gives the graph engine's numbers; validation; compilation policy."""
import math
import pathlib
import subprocess
import sys
import textwrap

import naive
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastedf
from fastedf import BCE, Addition, Input, Linear, Multiply, Node, Parameter, Sigmoid
from fastedf.models import logistic_regression, mlp
from fastedf.study.data import study_data

SAME = dict(rtol=1e-11, atol=0)


@pytest.fixture(scope="module")
def data():
    d = study_data(seed=0)
    return d.X_train, d.y_train.reshape(-1, 1)


def train(data, engine, model=None, **kwargs):
    X, Y = data
    model = model or logistic_regression(X.shape[1], seed=3)
    history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, engine=engine, **kwargs)
    return history, np.concatenate([p.value.ravel() for p in model.parameters])


@pytest.mark.parametrize("batch_size", [1, 2, 32, 1024])
@pytest.mark.parametrize("shuffle", [False, True])
def test_compiled_equals_graph_engine(data, batch_size, shuffle):
    runs = {engine: train(data, engine, batch_size=batch_size, epochs=8, lr=0.1, shuffle=shuffle, seed=11)
            for engine in ("graph", "compiled")}
    (hg, pg), (hc, pc) = runs["graph"], runs["compiled"]
    assert (hg.engine, hc.engine) == ("graph", "compiled")
    assert_allclose(pc, pg, **SAME)
    assert_allclose(hc.epoch_loss, hg.epoch_loss, **SAME)
    assert hc.updates == hg.updates == 8 * math.ceil(1050 / batch_size)
    start = [p.value for p in logistic_regression(2, seed=3).parameters]
    naive.assert_trained_as(hc.epoch_loss, pc, naive.mlp_sgd(start, *data, batch_size, 8, 0.1,
                                                             seed=11 if shuffle else None))


def test_inlined_kernels_give_the_numbers_of_kernels_called_by_address(data, monkeypatch):
    """The study's program has LLVM inline its kernels (fastedf.calls.icall); the same program calling them by
    address computes the same bits: inlining changes no arithmetic (both the scalar and the vector passes)."""
    from fastedf import compiler
    for batch_size in (1, 32, 1024):
        kwargs = dict(batch_size=batch_size, epochs=3, lr=0.1, shuffle=True, seed=5)
        inlined = train(data, "compiled", **kwargs)
        with monkeypatch.context() as patch:
            patch.setattr(compiler, "MAX_INLINED_OPERATIONS", 0)
            called = train(data, "compiled", **kwargs)
        assert np.array_equal(inlined[1], called[1]) and np.array_equal(inlined[0].epoch_loss, called[0].epoch_loss)


def test_the_studys_program_inlines_its_kernels_by_default(data, monkeypatch):
    """Three operations or fewer (the study's logistic regression): the step's kernels are inlined by LLVM and only
    the once-per-epoch shuffle's are called by address; a longer program (an MLP) calls every kernel by address."""
    from fastedf import compiler
    monkeypatch.setattr(compiler, "_loaded", {})  # programs lowered here are never run: keep them out of the record
    assert compiler.MAX_INLINED_OPERATIONS == 3  # the README's figure
    programs = []
    for model in (logistic_regression(2), mlp(2, (3,))):
        model.x.value, model.y.value = data[0][:1], data[1][:1]
        graph = fastedf.topological_sort(model.loss)
        fastedf.forward_pass(graph)
        program, reason = compiler.lower(graph)
        assert reason is None
        programs.append(program)
    study, longer = programs
    assert "icall(linear_forward," in study.source and "kcall(linear_forward," not in study.source
    assert study.called == ["shuffle_order", "take_rows", "take_rows"]
    assert "kcall(linear_forward," in longer.source and "icall(" not in longer.source


def test_graph_engine_is_the_course_loop(data):
    X, Y = data
    history, params = train(data, "graph", batch_size=100, epochs=3, lr=0.2)
    model = logistic_regression(2, seed=3)
    graph = fastedf.topological_sort(model.loss)
    losses = []
    for _ in range(3):
        total = 0.0
        for i in range(0, len(X), 100):
            model.x.value, model.y.value = X[i:i + 100], Y[i:i + 100]
            fastedf.forward_pass(graph)
            total += model.loss.value  # BCE: the batch's sum (the course's convention)
            fastedf.backward_pass(graph)
            for t in model.parameters:
                t.value -= 0.2 * t.gradients[t]
        losses.append(total / len(X))
    assert_allclose(history.epoch_loss, losses, rtol=1e-14)
    assert_allclose(params, np.concatenate([p.value.ravel() for p in model.parameters]), rtol=1e-14)


def test_mlp_compiles_and_matches(data):
    runs = [train(data, engine, model=mlp(2, (5, 3), seed=4), batch_size=16, epochs=3, lr=0.5)
            for engine in ("graph", "compiled")]
    assert runs[1][0].engine == "compiled"
    assert_allclose(runs[1][1], runs[0][1], **SAME)
    assert_allclose(runs[1][0].epoch_loss, runs[0][0].epoch_loss, **SAME)


def per_sample_model(seed=0):
    """sigmoid(x1 * w1 + x2 * w2 + b) from Multiply and Addition, the per-sample course graph."""
    rng = np.random.default_rng(seed)
    x1, x2, y = Input(), Input(), Input()
    w1, w2, b = Parameter(rng.normal(size=(1, 1))), Parameter(rng.normal(size=(1,))), Parameter(0.0)
    loss = BCE(y, Sigmoid(Addition(Addition(Multiply(x1, w1), Multiply(w2, x2)), b)))
    return loss, (x1, x2, y), (w1, w2, b)


def test_multiply_addition_graph_compiles_and_matches(data):
    X, Y = data
    results = []
    for engine in ("graph", "compiled"):
        loss, (x1, x2, y), params = per_sample_model()
        h = fastedf.fit(loss, {x1: X[:, :1], x2: X[:, 1:], y: Y}, batch_size=7, epochs=3, lr=0.1, engine=engine)
        assert h.engine == engine
        results.append((h.epoch_loss, np.concatenate([np.ravel(p.value) for p in params])))
        assert params[2].value.shape == ()  # a scalar parameter stays a scalar
    assert_allclose(results[1][0], results[0][0], **SAME)
    assert_allclose(results[1][1], results[0][1], **SAME)


class Square(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = self.inputs[0].value ** 2

    def backward(self):
        self.gradients[self.inputs[0]] = 2 * self.inputs[0].value * self.outputs[0].gradients[self]


def test_unsupported_node_names_itself_and_auto_falls_back(data):
    X, Y = data
    x, y = Input(), Input()
    A, b = Parameter(np.full((2, 1), 0.01)), Parameter(np.zeros(1))
    square = Square(Linear(x, A, b))
    loss = BCE(y, Sigmoid(square))
    with pytest.raises(ValueError, match=rf"{square}.*Square"):
        fastedf.fit(loss, {x: X, y: Y}, epochs=1, engine="compiled")
    assert fastedf.fit(loss, {x: X, y: Y}, epochs=1, engine="auto").engine == "graph"


def test_auto_picks_compiled(data):
    assert train(data, "auto", epochs=1)[0].engine == "compiled"


def test_batch_larger_than_data_is_one_batch(data):
    history, _ = train(data, "compiled", batch_size=10**6, epochs=4)
    assert history.updates == 4


def test_zero_epochs_trains_nothing(data):
    history, params = train(data, "compiled", epochs=0)
    assert history.updates == 0 and history.epoch_loss.shape == (0,)
    assert_allclose(params, np.concatenate([p.value.ravel() for p in logistic_regression(2, seed=3).parameters]))


def test_converted_feeds_give_the_same_answer(data):
    X, Y = data
    _, want = train(data, "compiled", batch_size=32, epochs=2)
    wide = np.zeros((len(X), 4))
    wide[:, ::2] = X
    for feeds in [(wide[:, ::2], Y), (X, Y.astype(np.int64)), (X, Y.astype(np.float32)), (np.asfortranarray(X), Y)]:
        _, got = train(feeds, "compiled", batch_size=32, epochs=2)
        assert_allclose(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,words", [
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(batch_size=2.5), "batch_size must be an integer"),
    (dict(batch_size=True), "batch_size must be an integer"),
    (dict(epochs=-1), "epochs must be >= 0"),
    (dict(lr=0), "lr must be finite and > 0"),
    (dict(lr=-0.1), "lr must be finite and > 0"),
    (dict(lr=float("nan")), "lr must be finite and > 0"),
    (dict(lr=float("inf")), "lr must be finite and > 0"),
    (dict(engine="gpu"), "engine must be one of"),
])
def test_bad_arguments(data, kwargs, words):
    model = logistic_regression(2)
    with pytest.raises(ValueError, match=words):
        fastedf.fit(model.loss, {model.x: data[0], model.y: data[1]}, **kwargs)


def feeds_with(X, Y, row=None, column=0, value=None):
    X, Y = X.copy(), Y.copy()
    if row is not None:
        X[row, column] = value
    return X, Y


@pytest.mark.parametrize("engine", ["graph", "compiled"])
def test_bad_feeds_are_rejected_before_training(data, engine):
    X, Y = data
    model = logistic_regression(2, seed=3)
    before = [p.value.copy() for p in model.parameters]
    cases = [
        ({model.x: X}, f"{model.y} is an input of the loss but has no feed"),
        ({model.x: X, model.y: Y[:-1]}, "different row counts"),
        ({model.x: feeds_with(X, Y, 17, 1, np.nan)[0], model.y: Y}, f"{model.x}: feed has NaN or inf in row 17"),
        ({model.x: feeds_with(X, Y, 3, 0, np.inf)[0], model.y: Y}, "row 3"),
        ({model.x: X, model.y: np.where(np.arange(len(Y))[:, None] == 5, 2.0, Y)}, "labels must lie in .0, 1.; row 5"),
        ({model.x: X[:, :1], model.y: Y},
         r"x has shape \(1, 1\), A has shape \(2, 1\).*first row of the feeds, shaped Input#\d+ \(1050, 1\)"),
        ({model.x: X, model.y: Y, Input(): X}, "fed but the loss does not depend on it"),
        ({model.x: np.array([["a", "b"]] * len(X)), model.y: Y}, "not numeric"),
    ]
    for feeds, message in cases:
        with pytest.raises(ValueError, match=message):
            fastedf.fit(model.loss, feeds, epochs=1, engine=engine)
    for p, b in zip(model.parameters, before):
        assert_allclose(p.value, b, rtol=0, atol=0)


def test_one_compilation_for_every_batch_size(data):
    from fastedf import compiler
    for batch_size in (1, 3, 64, 1050):
        history, _ = train(data, "compiled", batch_size=batch_size, epochs=1)
    assert compiler._loaded
    for program, _ in compiler._loaded.values():  # every program this process built: one signature each
        assert len(program.signatures) == 1


@pytest.mark.parametrize("model", ["logistic_regression(2)", "mlp(2, (3,))"])  # kernels inlined; called by address
def test_second_process_loads_from_cache(tmp_path, model):
    script = textwrap.dedent(f"""
        import fastedf
        from fastedf import compiler
        from fastedf.models import logistic_regression, mlp
        from fastedf.study.data import study_data
        d = study_data(0)
        m = {model}
        h = fastedf.fit(m.loss, {{m.x: d.X_train, m.y: d.y_train.reshape(-1, 1)}}, epochs=1, engine="compiled")
        ((program, _),) = compiler._loaded.values()
        print(program.stats.cache_hits and sum(program.stats.cache_hits.values()),
              sum(program.stats.cache_misses.values()), h.compile_time_s, repr(h.epoch_loss[0]))
    """)
    env = {"FASTEDF_CACHE_DIR": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PATH": ""}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]
    first, second = (run.stdout.split() for run in runs)
    assert int(first[1]) == 1  # compiled once
    assert int(second[0]) >= 1 and int(second[1]) == 0  # then loaded, not compiled
    assert second[3] == first[3]  # the same training


@pytest.mark.parametrize("engine", ["graph", "compiled"])
def test_nan_during_training_raises(engine):
    # x @ A = 1e300 * 1e10 - 1e300 * 1e10 = inf - inf = NaN in the first step
    x, y = Input(), Input()
    A, b = Parameter(np.array([[1e10], [-1e10]])), Parameter(np.zeros(1))
    loss = BCE(y, Sigmoid(Linear(x, A, b)))
    X = np.array([[1.0, 1.0], [1e300, 1e300]])
    with pytest.raises(ValueError, match="nan|NaN"):
        fastedf.fit(loss, {x: X, y: np.ones((2, 1))}, batch_size=1, epochs=1, engine=engine)


def test_a_last_step_that_makes_a_parameter_inf_is_reported_by_both_engines():
    """Predictions stay finite (softmax of +-inf logits), so only the parameter check can see it."""
    from fastedf import CE, Softmax
    X, Y = np.array([[1e300, -1e300]] * 4), np.array([[0.0, 1.0]] * 4)
    for engine in ("compiled", "graph"):
        x, y = Input(), Input()
        A = Parameter(np.zeros((2, 2)))
        loss = CE(y, Softmax(Linear(x, A, Parameter(np.zeros(2)))))
        with pytest.raises(ValueError, match=rf"training diverged: {A} became NaN or inf; lower the learning rate"):
            fastedf.fit(loss, {x: X, y: Y}, batch_size=4, epochs=1, lr=1e10, engine=engine)


def test_ce_labels_outside_0_1_are_named_before_training():
    from fastedf import CE, Softmax
    x, y = Input(), Input()
    loss = CE(y, Softmax(Linear(x, Parameter(np.zeros((2, 2))), Parameter(np.zeros(2)))))
    Y = np.array([[0.0, 1.0], [0.0, 2.0]])
    for engine in ("compiled", "graph"):
        with pytest.raises(ValueError, match=rf"{y}: CE labels must lie in \[0, 1\]; row 1 is \[0. 2.\]"):
            fastedf.fit(loss, {x: np.ones((2, 2)), y: Y}, batch_size=2, epochs=1, engine=engine)


class LeakyReLU(fastedf.ReLU):
    """A student's node built on fastedf's ReLU with its own forward and backward."""

    def forward(self):
        z = self.inputs[0].value
        self.value = np.where(z > 0, z, 0.1 * z)

    def backward(self):
        z = self.inputs[0].value
        self.gradients[self.inputs[0]] = self._upstream(z.shape) * np.where(z > 0, 1.0, 0.1)


class HalfGradientReLU(fastedf.ReLU):
    """A subclass that overrides only backward: ReLU's value, half its gradient."""

    def backward(self):
        z = self.inputs[0].value
        self.gradients[self.inputs[0]] = self._upstream(z.shape) * np.where(z > 0, 0.5, 0.0)


class RenamedReLU(fastedf.ReLU):
    """A subclass that only renames: fastedf's code, so it compiles."""


# Each class's maths for the NumPy reference (tests/naive.py's mlp_step): (h(z), dh/dz).
REFERENCE_ACTIVATIONS = {LeakyReLU: (lambda z: np.where(z > 0, z, 0.1 * z), lambda z, h: np.where(z > 0, 1.0, 0.1)),
                         HalfGradientReLU: (naive.relu, lambda z, h: np.where(z > 0, 0.5, 0.0)),
                         RenamedReLU: naive.ACTIVATIONS["relu"]}


@pytest.mark.parametrize("cls,own", [(LeakyReLU, "forward"), (HalfGradientReLU, "backward"), (RenamedReLU, "")])
def test_a_subclass_with_its_own_code_is_not_compiled_by_its_parents_rule(cls, own):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 3)), (rng.uniform(size=(40, 1)) > 0.5) * 1.0
    start = [np.full((3, 4), 0.3), np.zeros(4), np.full((4, 1), -0.2), np.zeros(1)]
    want = naive.sgd(lambda p, x, y: naive.mlp_step(p, x, y, REFERENCE_ACTIVATIONS[cls]), start, [X, Y], 8, 2, 0.1)
    for engine in ("auto", "graph"):
        x, y = Input(), Input()
        parameters = [Parameter(a.copy()) for a in start]
        hidden = cls(Linear(x, *parameters[:2]))
        loss = BCE(y, Sigmoid(Linear(hidden, *parameters[2:])))
        history = fastedf.fit(loss, {x: X, y: Y}, batch_size=8, epochs=2, engine=engine)
        naive.assert_trained_as(history.epoch_loss, [p.value for p in parameters], want)
        if engine == "auto":
            assert history.engine == ("compiled" if not own else "graph")
            assert (f"overrides {own}(): the compile rule it inherits" in history.note) if own else history.note == ""
    if own:
        x, y = Input(), Input()
        loss = BCE(y, Sigmoid(cls(Linear(x, Parameter(np.ones((3, 1))), Parameter(np.zeros(1))))))
        with pytest.raises(ValueError, match=f"cannot compile this graph: .* overrides {own}()"):
            fastedf.fit(loss, {x: X, y: Y}, engine="compiled")


@pytest.mark.parametrize("engine", ["graph", "compiled"])
@pytest.mark.parametrize("outside_ran", [False, True])
def test_the_trained_loss_is_the_root_whatever_else_it_feeds(data, engine, outside_ran):
    """A node outside the trained graph that the loss also feeds adds nothing, fresh or with stale gradients."""
    X, Y = data[0][:64], data[1][:64]
    plain = logistic_regression(2, seed=4)
    want = fastedf.fit(plain.loss, {plain.x: X, plain.y: Y}, batch_size=8, epochs=2, engine="graph")
    model = logistic_regression(2, seed=4)
    total = Multiply(model.loss, Parameter(3.0))
    if outside_ran:  # the outside node's gradient for the loss is now 3.0
        model.x.value, model.y.value = X, Y
        graph = fastedf.topological_sort(total)
        fastedf.forward_pass(graph)
        fastedf.backward_pass(graph)
    history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=8, epochs=2, engine=engine)
    assert_allclose(history.epoch_loss, want.epoch_loss, rtol=1e-12)
    for p, q in zip(model.parameters, plain.parameters):
        assert_allclose(p.value, q.value, rtol=1e-12)
    model.x.value, model.y.value = X, Y  # the course loop with backward_pass: the same gradients as without total
    plain.x.value, plain.y.value = X, Y
    for m in (model, plain):
        graph = fastedf.topological_sort(m.loss)
        fastedf.forward_pass(graph)
        fastedf.backward_pass(graph)
    for p, q in zip(model.parameters, plain.parameters):
        assert_allclose(p.gradients[p], q.gradients[q], rtol=1e-12)


def test_no_writable_cache_compiles_in_memory_with_one_warning(tmp_path, data):
    """Every cache location blocked for real: NUMBA_CACHE_DIR, $HOME, FASTEDF_CACHE_DIR and the temp dir under a
    regular file, and the package's __pycache__ a regular file (unwritable even by root, unlike chmod)."""
    import shutil
    package = tmp_path / "site" / "fastedf"
    shutil.copytree(pathlib.Path(fastedf.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in (package, package / "ops"):
        (folder / "__pycache__").write_text("")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    script = textwrap.dedent(f"""
        import tempfile
        tempfile.tempdir = {str(blocked / "tmp")!r}
        import numpy as np
        import fastedf
        from fastedf.models import logistic_regression
        X, Y = np.load({str(tmp_path / "X.npy")!r}), np.load({str(tmp_path / "Y.npy")!r})
        print(fastedf.__file__)
        for engine in ("graph", "compiled"):
            m = logistic_regression(2, seed=4)
            history = fastedf.fit(m.loss, {{m.x: X, m.y: Y}}, batch_size=8, epochs=2, engine=engine)
            print(repr(float(history.epoch_loss[-1])))
    """)
    X, Y = data[0][:64], data[1][:64]
    np.save(tmp_path / "X.npy", X), np.save(tmp_path / "Y.npy", Y)
    env = {"PYTHONPATH": str(package.parent), "HOME": str(blocked / "home"), "PATH": "",
           "NUMBA_CACHE_DIR": str(blocked / "numba"), "FASTEDF_CACHE_DIR": str(blocked / "fastedf")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    where, *losses = run.stdout.split()
    assert where == str(package / "__init__.py")
    assert run.stderr.count("RuntimeWarning") == 1, run.stderr
    for words in ("no writable directory for Numba's cache", "NUMBA_CACHE_DIR", "FASTEDF_CACHE_DIR", "FASTEDF_CACHE=0"):
        assert words in run.stderr
    model = logistic_regression(2, seed=4)
    want = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=8, epochs=2, engine="graph").epoch_loss[-1]
    assert [float(loss) for loss in losses] == [want, want]
    assert not list(tmp_path.rglob("*.nbi"))  # nothing was cached anywhere
