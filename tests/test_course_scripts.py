"""Course scripts run unchanged but for the import line and give the plain NumPy EDF's numbers.

Each script is run twice from its source text, once with `EDF` bound to the
NumPy baseline (benchmarks/numpy_edf.py) and once to fastedf; parameters and
losses must agree to rtol 1e-12 (the kernels sum in another order than BLAS).
"""
import sys

import numpy as np
import numpy_edf
import pytest
from numpy.testing import assert_allclose

import fastedf

PER_SAMPLE = """
from EDF import *
import numpy as np

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 2))
Y = (X[:, 0] - X[:, 1] > 0).astype(float)

x1, x2, y = Input(), Input(), Input()
w1, w2, b = Parameter(np.array([[0.1]])), Parameter(np.array([[-0.2]])), Parameter(np.array([[0.0]]))
z = Addition(Addition(Multiply(x1, w1), Multiply(x2, w2)), b)
p = Sigmoid(z)
loss = BCE(y, p)
graph = [x1, x2, y, w1, w2, b, z.inputs[0].inputs[0], z.inputs[0].inputs[1], z.inputs[0], z, p, loss]
trainable = [w1, w2, b]
losses = []
for epoch in range(3):
    for i in range(len(X)):
        x1.value, x2.value, y.value = X[i:i+1, 0:1], X[i:i+1, 1:2], Y[i:i+1].reshape(1, 1)
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        for t in trainable:
            t.value -= 0.1 * t.gradients[t]
        losses.append(float(loss.value))
result = [t.value.copy() for t in trainable], losses, []
"""

BATCHED = """
from EDF import *
import numpy as np

rng = np.random.default_rng(1)
X = rng.normal(size=(100, 3))
Y = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype(float).reshape(-1, 1)
x, y = Input(), Input()
A, b = Parameter(rng.normal(scale=0.1, size=(3, 1))), Parameter(np.zeros(1))
linear = Linear(x, A, b)
sigmoid = Sigmoid(linear)
loss = BCE(y, sigmoid)
graph = [x, y, A, b, linear, sigmoid, loss]
trainable = [A, b]
losses = []
for epoch in range(5):
    for i in range(0, len(X), 16):
        x.value, y.value = X[i:i + 16], Y[i:i + 16]
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        for t in trainable:
            t.value -= 0.5 * t.gradients[t]
        losses.append(float(loss.value))
x.value, y.value = X, Y
for n in graph:
    n.forward()
accuracy = np.mean((sigmoid.value > 0.5) == (Y > 0.5))
result = [t.value.copy() for t in trainable], losses, [accuracy]
"""


def run_script(source, module):
    sys.modules["EDF"] = module
    try:
        namespace = {}
        exec(compile(source, "<course script>", "exec"), namespace)
        return namespace["result"]
    finally:
        del sys.modules["EDF"]


@pytest.mark.parametrize("source", [PER_SAMPLE, BATCHED], ids=["per-sample", "batched"])
def test_course_script_matches_numpy_edf(source):
    params_ref, losses_ref, extra_ref = run_script(source, numpy_edf)
    params, losses, extra = run_script(source, fastedf)
    for got, want in zip(params, params_ref):
        assert got.shape == want.shape
        assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert_allclose(losses, losses_ref, rtol=1e-12)
    assert extra == extra_ref
    assert losses[-1] < losses[0]  # it trained


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


def test_star_import_exports_the_edf_names():
    namespace = {}
    exec("from fastedf import *", namespace)
    for name in ("Node", "Input", "Parameter", "Multiply", "Addition", "Linear", "Sigmoid", "BCE",
                 "topological_sort", "forward_pass", "backward_pass", "sgd_update"):
        assert name in namespace
