"""fit under control: chunked compiled runs, Ctrl-C, progress, fallbacks, and inputs it must refuse or protect."""
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap

import bench_interrupt
import naive
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastedf
from fastedf import BCE, Input, Linear, Parameter, Sigmoid, compiler
from fastedf.models import logistic_regression, mlp
from fastedf.study.data import study_data


@pytest.fixture(scope="module")
def study():
    d = study_data(0)
    return d.X_train, d.y_train.reshape(-1, 1)


def params(model):
    return np.concatenate([p.value.ravel() for p in model.parameters])


def test_chunking_changes_no_number(study, monkeypatch):
    X, Y = study
    runs = []
    for seconds in (compiler.CHUNK_SECONDS, 1e-9):  # the second returns to Python after every step or two
        monkeypatch.setattr(compiler, "CHUNK_SECONDS", seconds)
        model = mlp(2, (4,), seed=1)
        h = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=7, epochs=3, lr=0.3, shuffle=True, seed=4,
                        engine="compiled")
        runs.append((h.epoch_loss, params(model)))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    start = [p.value for p in mlp(2, (4,), seed=1).parameters]
    naive.assert_trained_as(*runs[1], naive.mlp_sgd(start, X, Y, 7, 3, 0.3, seed=4))


def test_progress_bar_on_stderr(study, capsys):
    X, Y = study
    model = logistic_regression(2)
    fastedf.fit(model.loss, {model.x: X, model.y: Y}, epochs=4, progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err and "loss=" in err


@pytest.mark.parametrize("engine", ["compiled", "graph"])
def test_ctrl_c_stops_a_fit_at_a_finished_step(engine):
    # SIGINT once the child reports a trained step (an event, not a sleep); how fast it stops is a figure of
    # benchmarks/bench_interrupt.py, as a shared machine can delay either process at any time.
    words, _ = bench_interrupt.interrupt(engine)
    assert words[0] == "interrupted", words
    assert words[2:] == ["True", "True"]  # trained, and left at a finished step


READ_ONLY = textwrap.dedent("""
    import sys, numpy as np, fastedf
    from fastedf import Input, Parameter, Linear, Sigmoid, BCE
    np.save(sys.argv[1], np.full((2, 1), 0.5))
    A = Parameter(np.load(sys.argv[1], mmap_mode="r"))
    b = Parameter(np.frombuffer(np.zeros(1).tobytes()))
    x, y = Input(), Input()
    loss = BCE(y, Sigmoid(Linear(x, A, b)))
    X = np.random.default_rng(0).normal(size=(64, 2)); X.setflags(write=False)
    Y = (X[:, :1] > 0) * 1.0; Y.setflags(write=False)
    for engine in ("compiled", "graph"):
        fastedf.fit(loss, {x: X, y: Y}, batch_size=8, epochs=2, engine=engine)
    assert np.array_equal(np.load(sys.argv[1]), np.full((2, 1), 0.5)), "the source changed"
    assert not np.array_equal(A.value, np.full((2, 1), 0.5)), "nothing trained"
    print("ok")
""")


def test_read_only_parameters_and_feeds_are_trained_on_a_private_copy(tmp_path):
    done = subprocess.run([sys.executable, "-c", READ_ONLY, str(tmp_path / "A.npy")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_other_graphs_gradients_never_leak_into_a_fit(study):
    X, Y = study
    shared = Parameter(np.full((2, 1), 0.1))
    x1, y1, x2, y2 = Input(), Input(), Input(), Input()
    first = BCE(y1, Sigmoid(Linear(x1, shared, Parameter(np.zeros(1)))))
    fastedf.fit(first, {x1: X, y1: Y}, epochs=1, engine="graph")  # leaves stale gradients in `first`'s nodes
    b2 = Parameter(np.zeros(1))
    second = BCE(y2, Sigmoid(Linear(x2, shared, b2)))
    extra = Sigmoid(second)  # the loss also feeds a node outside the trained graph
    extra.gradients[second] = np.float64(1e6)
    start = shared.value.copy()
    results = {}
    for engine in ("graph", "compiled"):
        shared.value, b2.value = start.copy(), np.zeros(1)
        fastedf.fit(second, {x2: X, y2: Y}, batch_size=50, epochs=2, lr=0.1, engine=engine)
        results[engine] = shared.value.copy()
    assert_allclose(results["graph"], results["compiled"], rtol=1e-12)


@pytest.mark.parametrize("change,match", [
    (lambda m: setattr(m.parameters[0], "value", np.full((2, 1), np.inf)), "contains NaN or inf before training"),
    (lambda m: setattr(m.parameters[1], "value", np.array([np.nan])), "contains NaN or inf before training"),
])
def test_parameters_that_are_not_finite_are_refused(study, change, match):
    X, Y = study
    model = logistic_regression(2)
    change(model)
    with pytest.raises(ValueError, match=match):
        fastedf.fit(model.loss, {model.x: X, model.y: Y}, epochs=1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=1 + 2j), "lr must be a number"), (dict(lr=float("inf")), "lr must be finite"),
    (dict(lr=10**400), "lr must be"), (dict(shuffle=True, seed=2**64), "seed must be at most"),
    (dict(epochs=10**13), "epochs must be at most"),
])
def test_bad_arguments_name_themselves(study, kwargs, match):
    X, Y = study
    model = logistic_regression(2)
    with pytest.raises(ValueError, match=match):
        fastedf.fit(model.loss, {model.x: X, model.y: Y}, **kwargs)


def test_a_non_scalar_loss_is_refused(study):
    X, Y = study
    model = logistic_regression(2)
    with pytest.raises(ValueError, match="is not a scalar loss"):
        fastedf.fit(model.prediction, {model.x: X}, epochs=1)


def test_graph_engine_divergence_names_the_learning_rate(study):
    X, Y = study
    model = logistic_regression(2)
    with pytest.raises(ValueError, match=r"training diverged.*lower the learning rate 1e\+308"):
        fastedf.fit(model.loss, {model.x: X, model.y: Y}, epochs=3, lr=1e308, engine="graph")
    model.parameters[0].value = np.full((2, 1), np.nan)  # a NaN that begins in a parameter is blamed on it
    model.x.value = X
    with pytest.raises(ValueError, match=r"Parameter#\d+ became NaN or inf; lower the learning rate"):
        fastedf.trainer._train_graph(fastedf.topological_sort(model.loss), model.parameters,
                                     fastedf.trainer.EpochOrder({model.x: X, model.y: Y}, False, None), 32, 1, 0.1)


HEAL = textwrap.dedent("""
    import warnings, numpy as np, fastedf
    from fastedf.models import mlp
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 2)); Y = (X[:, :1] > 0) * 1.0
    m = mlp(2, (3,), seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = fastedf.fit(m.loss, {m.x: X, m.y: Y}, epochs=2, engine="compiled")
    damage = [str(w.message) for w in caught if "fastedf" in str(w.message)]
    print(repr(h.epoch_loss[-1]), len(damage), *damage, sep="\\n")
""")


def _damage(directory, how):
    for path in directory.rglob("*"):
        if path.suffix == ".py" and how == "stub":
            path.write_text("def train(*args):\n    return 0, 0, 0, -1\n")
        elif path.suffix == ".py" and how in ("truncated", "garbage"):
            text = path.read_text()
            path.write_text(text[: len(text) // 2] if how == "truncated" else "\x00garbage(")
        elif path.suffix in (".nbi", ".nbc") and how in ("garbage", "empty-index"):
            path.write_bytes(b"" if how == "empty-index" else b"garbage")
        elif path.suffix == ".kernels" and how.startswith("kernels"):  # a program's kernel table (fastedf.calls)
            if how == "kernels-missing":
                path.unlink()
            elif how == "kernels-garbage":
                path.write_bytes(b"garbage")
            else:  # each entry given another call site's signature of the same kernel: loads, but does not match
                entries = pickle.loads(path.read_bytes())
                swapped = [(name, next((a for n2, a in entries if n2 == name and a != args), args))
                           for name, args in entries]
                assert swapped != entries, "no kernel is called with two signatures: nothing to swap"
                path.write_bytes(pickle.dumps(swapped))


@pytest.fixture(scope="module")
def healthy_cache(tmp_path_factory):
    """Caches filled by one cold run of HEAL, and its output: each damage test starts from a copy."""
    root = tmp_path_factory.mktemp("healthy")
    return root, _heal_run(root)[0]


def _heal_run(root):
    """HEAL's output lines in a fresh process over the caches under root: the loss, the count, the warnings."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(root / "numba"), FASTEDF_CACHE_DIR=str(root / "programs"))
    done = subprocess.run([sys.executable, "-c", HEAL], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


# The one warning each damage gives (README: "rewritten ... with one warning"); a kernel table that cannot be used
# only costs a compile, silently, as a missing one does.
PROGRAM_REWRITTEN = r"the generated program \S+fastedf_program_\w+\.py did not hold its source .*; it is rewritten"
NUMBA_DROPPED = r"Numba's cache for \S+ was unreadable .*; damaged entries are dropped and recompiled"

DAMAGE_WARNING = {"truncated": PROGRAM_REWRITTEN, "stub": PROGRAM_REWRITTEN, "empty-index": NUMBA_DROPPED,
                  "garbage": f"{PROGRAM_REWRITTEN}|{NUMBA_DROPPED}",  # both damaged: still one warning
                  "kernels-missing": None, "kernels-garbage": None, "kernels-swapped": None}


@pytest.mark.parametrize("how", list(DAMAGE_WARNING))
def test_a_damaged_cache_heals_itself(tmp_path, healthy_cache, how):
    root, loss = healthy_cache
    warning = DAMAGE_WARNING[how]
    for name in ("numba", "programs"):
        shutil.copytree(root / name, tmp_path / name)
    _damage(tmp_path, how)
    second, third = _heal_run(tmp_path), _heal_run(tmp_path)
    assert second[0] == loss == third[0]  # the same training, not a stub's
    assert second[1:] == (["1", second[2]] if warning else ["0"]), second
    if warning:
        assert re.fullmatch(f"fastedf: ({warning}) \\(warned once\\)", second[2]), second[2]
    assert third[1:] == ["0"]  # healed: the next process has nothing to say


@pytest.mark.parametrize("hidden", [(8,), ()])  # called by address; a three-operation program inlines its kernels
@pytest.mark.parametrize("engine", ["graph", "compiled"])
def test_micro_batches_give_the_batch_update(engine, hidden):
    rng = np.random.default_rng(3)
    X, Y = rng.random((300, 16)), np.eye(4)[rng.integers(0, 4, size=300)]
    runs = []
    for micro in (None, 7, 64, 1000):
        model = mlp(16, hidden, seed=1, activation="relu", classes=4)
        history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=64, epochs=2, lr=0.3, engine=engine,
                              micro_batch=micro)
        assert history.engine == engine
        runs.append((history.epoch_loss, params(model)))
    for losses, values in runs[1:]:
        assert_allclose(values, runs[0][1], rtol=1e-12, atol=1e-14)
        assert_allclose(losses, runs[0][0], rtol=1e-12)
    start = [p.value for p in mlp(16, hidden, seed=1, activation="relu", classes=4).parameters]
    want = naive.mlp_sgd(start, X, Y, 64, 2, 0.3, activation="relu")
    for losses, values in runs:
        naive.assert_trained_as(losses, values, want)
