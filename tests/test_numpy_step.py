"""The fused loop's NumPy step (fastedf.numpy_step): what it refuses, and its code kept between processes.

Its numbers are tested with every fused-loop test (tests/test_fused_loop.py runs each with the NumPy step
throughout) and across the switch to the compiled step (tests/test_numpy_tier.py).
"""
import marshal
import os

import numpy as np
import pytest

import fastedf
from fastedf import fused, numpy_step


@pytest.fixture
def cache(fastedf_cache):
    return fastedf_cache / numpy_step.FOLDER


def logistic_source(rows=4):
    """A Linear/Sigmoid/BCE graph after one node-by-node step, and its NumPy step's source."""
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(np.array([[0.3], [-0.2]])), fastedf.Parameter(np.zeros(1))
    loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))
    x.value, y.value = np.ones((rows, 2)), np.ones((rows, 1))
    with fused.node_by_node():
        for node in fastedf.topological_sort(loss):
            node.forward()
    cap, why = fused.capture(loss)
    assert why is None
    return cap.program.python


def test_a_call_without_a_numpy_twin_is_refused_by_name():
    text = numpy_step.source("x0", [], fused._body("x0.shape[0]", [], ["my_kernel(x0)", "loss_sum = 0.0"], [], 8))
    bind, why = numpy_step.binder(text)
    assert bind is None and why == "no NumPy twin for my_kernel"


def test_the_code_is_kept_served_for_its_source_only_and_made_again_when_damaged(cache):
    text = logistic_source()
    assert numpy_step.binder(text)[0] is not None
    (entry,) = cache.iterdir()
    kept = entry.read_bytes()
    assert text.encode() in kept
    numpy_step.binder(text)
    assert entry.read_bytes() == kept  # served, not written again
    other = text.replace("n = x0.shape[0]", "n = x0.shape[0]  # another source")
    assert numpy_step.binder(other)[0] is not None
    assert len(list(cache.iterdir())) == 2
    entry.write_bytes(kept[:len(kept) // 2] + b"garbage")  # damaged: compiled and kept again
    assert numpy_step.binder(text)[0] is not None
    assert entry.read_bytes() == kept


def test_a_kept_entry_whose_payload_is_not_code_is_made_again(cache):
    """Damage past the source it names: the payload loads, but as another object than code."""
    text = logistic_source()
    numpy_step.binder(text)
    (entry,) = cache.iterdir()
    kept = entry.read_bytes()
    header = kept[:kept.index(text.encode()) + len(text.encode()) + 1]
    entry.write_bytes(header + marshal.dumps(1))
    bind, why = numpy_step.binder(text)
    assert why is None and bind is not None
    assert entry.read_bytes() == kept


def test_nothing_is_kept_without_the_cache(cache, monkeypatch):
    monkeypatch.setenv("FASTEDF_CACHE", "0")
    assert numpy_step.binder(logistic_source())[0] is not None
    assert not os.path.exists(cache)


def test_the_bound_step_gives_the_twins_numbers_for_each_row_count():
    """One arena, batches of 4 then 2 rows: the views made for each row count are those rows."""
    from fastedf.ops.activations import sigmoid_forward_numpy
    from fastedf.ops.linear import linear_forward_numpy
    text = logistic_source()
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(np.array([[0.3], [-0.2]])), fastedf.Parameter(np.array([0.1]))
    p = fastedf.Sigmoid(fastedf.Linear(x, A, b))
    loss = fastedf.BCE(y, p)
    rng = np.random.default_rng(0)
    x.value, y.value = rng.normal(size=(4, 2)), (rng.random((4, 1)) > 0.5) * 1.0
    for node in fastedf.topological_sort(loss):
        node.forward()
    plan = fused.Plan(loss, fused.capture(loss)[0], numpy_spent=0.0)
    plan.spent = -float("inf")  # the NumPy step throughout, whatever this process has loaded
    assert plan.cap.program.python == text
    plan.install()
    for rows in (4, 2, 4):
        X, Y = rng.normal(size=(rows, 2)), (rng.random((rows, 1)) > 0.5) * 1.0
        x.value, y.value = X, Y
        for node in fastedf.topological_sort(loss):
            node.forward()
        z, want = np.empty((rows, 1)), np.empty((rows, 1))
        linear_forward_numpy(X, A.value, b.value, z)
        sigmoid_forward_numpy(z, want)
        np.testing.assert_allclose(p.value, want, rtol=1e-15)
        terms = -(Y * np.log(want) + (1 - Y) * np.log(1 - want))
        expected = terms.sum() if loss.reduction == "sum" else terms.mean()
        np.testing.assert_allclose(loss.value, expected, rtol=1e-12)
    assert plan.numpy and plan.generation == 4  # install's forward and the three above, each the NumPy step's


@pytest.mark.parametrize("where", ["cached", "step"])
def test_a_program_that_cannot_be_had_leaves_the_loop_on_the_numpy_step(monkeypatch, where):
    """An unreadable cache folder, a program that does not compile: the loop stays on the NumPy step."""
    def fails(self):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(fused.StepProgram, "cached", fails if where == "cached" else lambda self: True)
    monkeypatch.setattr(fused.StepProgram, "step", property(fails))
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(np.array([[0.3], [-0.2]])), fastedf.Parameter(np.array([0.1]))
    loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))
    graph = fastedf.topological_sort(loss)
    x.value, y.value = np.ones((4, 2)), np.ones((4, 1))
    fastedf.forward_pass(graph)
    plan = fused.Plan(loss, fused.capture(loss)[0], numpy_spent=1e9)  # long past the move to Numba
    plan.install()
    for _ in range(3):
        fastedf.forward_pass(graph)
        fastedf.backward_pass(graph)
    assert plan.numpy and "_plan" in loss.__dict__
    assert fused.stats["refused"][repr(loss)] == "the step program failed: RuntimeError: no compiler here"
    with fused.node_by_node():
        x2, y2 = fastedf.Input(), fastedf.Input()
        A2, b2 = fastedf.Parameter(A.value.copy()), fastedf.Parameter(b.value.copy())
        loss2 = fastedf.BCE(y2, fastedf.Sigmoid(fastedf.Linear(x2, A2, b2)))
        x2.value, y2.value = x.value, y.value
        fastedf.forward_pass(fastedf.topological_sort(loss2))
        fastedf.backward_pass(fastedf.topological_sort(loss2))
    np.testing.assert_allclose(loss.value, loss2.value, rtol=1e-12)
    np.testing.assert_allclose(A.gradients[A], A2.gradients[A2], rtol=1e-12)


def test_an_unreadable_numba_cache_reads_as_not_compiled(cache, monkeypatch):
    """The NumPy step's plan asks at every step past its switch whether the program is compiled: an unreadable
    index folder (another user's) must not raise out of the script's forward()."""
    x, y = fastedf.Input(), fastedf.Input()
    loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, fastedf.Parameter(np.ones((2, 1))),
                                                         fastedf.Parameter(np.zeros(1)))))
    x.value, y.value = np.ones((3, 2)), np.ones((3, 1))
    with fused.node_by_node():
        fastedf.forward_pass(fastedf.topological_sort(loss))
    program = fused.StepProgram(fused.capture(loss)[0].program.source)  # not loaded by an earlier test
    folder = cache.parent
    (folder / "__pycache__").mkdir(parents=True)
    (folder / (program.name + ".py")).write_text(program.source)

    def unreadable(path):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(os, "listdir", unreadable)
    assert program.cached() is False
