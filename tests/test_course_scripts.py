"""Course scripts run unchanged on both EDFs and give the same numbers.

Every script in tests/course_scripts/ is written as students write them
(`from EDF import *`, their own forward_pass, backward_pass and sgd_update)
and ends by setting `result`, a dict of trained parameters, printed losses and
evaluated outputs.  Each is run from its source text with `EDF` bound to the plain-NumPy
reference (fastedf/numpy_edf.py) and to fastedf, and with fastedf in a fresh
process on each tier (Numba from the first call, and the NumPy tier's twins
throughout, which must never load Numba); every number must agree to rtol
1e-10 (the kernels sum in another order than NumPy).
"""
import os
import pathlib
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastedf
from fastedf import numpy_edf

SCRIPTS = sorted((pathlib.Path(__file__).parent / "course_scripts").glob("*.py"))


def run_script(path, edf_module):
    """Execute the script at `path` with `import EDF` giving `edf_module`; returns its `result`."""
    path = pathlib.Path(path)
    previous = sys.modules.get("EDF")
    sys.modules["EDF"] = edf_module
    try:
        namespace = {"__name__": "__course_script__", "__file__": str(path)}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        return namespace["result"]
    finally:
        if previous is None:
            del sys.modules["EDF"]
        else:
            sys.modules["EDF"] = previous


def assert_same_numbers(got, want, where="result"):
    """Same structure (dict keys, list lengths, array shapes) and every number within rtol 1e-10."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for key in want:
            assert_same_numbers(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_numbers(g, w, f"{where}[{i}]")
    else:
        assert np.shape(got) == np.shape(want), f"{where}: shape {np.shape(got)}, want {np.shape(want)}"
        assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float),
                        rtol=1e-10, atol=1e-12, err_msg=where)


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_runs_cleanly_on_numpy_edf_and_trains(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference never warns, empty batch included
        result = run_script(path, numpy_edf)
    assert result["losses"][-1] < result["losses"][0]


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_gives_numpy_edf_numbers_on_fastedf(path):
    want = run_script(path, numpy_edf)
    got = run_script(path, fastedf)
    assert_same_numbers(got, want)


RUN_FRESH = """
import pickle, sys
import fastedf
sys.path.insert(0, {tests!r})
from test_course_scripts import run_script
result = run_script({path!r}, fastedf)
with open({out!r}, "wb") as f:
    pickle.dump((result, "numba" in sys.modules), f)
"""


def run_fresh(path, tier_seconds, out):
    """(result, whether Numba was loaded) of the script run on fastedf in a fresh process at that tier setting."""
    code = RUN_FRESH.format(tests=str(pathlib.Path(__file__).parent), path=str(path), out=str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, FASTEDF_NUMPY_TIER_SECONDS=tier_seconds))
    assert done.returncode == 0, done.stderr[-3000:]
    return pickle.loads(out.read_bytes())


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_gives_the_same_numbers_on_either_tier_in_fresh_processes(path, tmp_path):
    want = run_script(path, numpy_edf)
    numba, numba_loaded = run_fresh(path, "0", tmp_path / "numba.pickle")
    twins, twins_loaded = run_fresh(path, "1e9", tmp_path / "twins.pickle")
    assert numba_loaded and not twins_loaded  # every kernel these scripts call has a NumPy twin
    assert_same_numbers(numba, want)
    assert_same_numbers(twins, want)
    assert_same_numbers(twins, numba)


def test_helpers_train_like_the_explicit_loop():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(40, 2)), (rng.random((40, 1)) > 0.5) * 1.0
    results = []
    for use_helpers in (False, True):
        x, y = fastedf.Input(), fastedf.Input()
        A, b = fastedf.Parameter(np.full((2, 1), 0.1)), fastedf.Parameter(np.zeros(1))
        loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))
        graph = fastedf.topological_sort(loss)
        for i in range(0, 40, 8):
            x.value, y.value = X[i:i + 8], Y[i:i + 8]
            if use_helpers:
                fastedf.forward_pass(graph)
                fastedf.backward_pass(graph)
                fastedf.sgd_update([A, b], learning_rate=0.3)
            else:
                for n in graph:
                    n.forward()
                for n in reversed(graph):
                    n.backward()
                for t in (A, b):
                    t.value -= 0.3 * t.gradients[t]
        results.append(np.concatenate([A.value.ravel(), b.value]))
    assert_allclose(results[0], results[1], rtol=1e-14)


def test_star_import_exports_the_edf_names_and_np():
    namespace = {}
    exec("from fastedf import *", namespace)
    for name in ("Node", "Input", "Parameter", "Multiply", "Addition", "Linear", "Sigmoid", "BCE",
                 "ReLU", "Tanh", "Softmax", "CE", "Conv", "MaxPooling", "Flatten",
                 "topological_sort", "forward_pass", "backward_pass", "sgd_update"):
        assert name in namespace, name
    assert namespace["np"] is np  # scripts use np without importing numpy
