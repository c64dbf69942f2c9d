"""`fastedf run`: the script runs as under python; node classes are verified before they are accelerated.

The command line is tested with real subprocesses (argv, __main__, cwd, exit
status, stdout against stderr); verification in-process, with a small EDF
module written per test and trained by a course loop, so that a candidate can
be broken on purpose.  The variants of tests/run_variants are compared end to
end by test_run_variants.py.
"""
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastedf.runner import candidates, command, nodes, records, report

ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# A student's EDF module; each test swaps one node for its own version.
EDF = """
import numpy as np


class Node:
    def __init__(self, inputs=None):
        self.inputs = inputs or []
        self.outputs = []
        self.value = None
        self.gradients = {}
        for n in self.inputs:
            n.outputs.append(self)

    def upstream(self):
        return self.outputs[0].gradients[self]


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = value

    def backward(self):
        self.gradients = {self: sum(n.gradients[self] for n in self.outputs)}


class Parameter(Input):
    def __init__(self, value):
        super().__init__()
        self.value = value


class Linear(Node):
    def __init__(self, x, A, b):
        super().__init__([x, A, b])

    def forward(self):
        x, A, b = self.inputs
        self.value = x.value @ A.value + b.value

    def backward(self):
        x, A, b = self.inputs
        g = self.upstream()
        self.gradients[x] = g @ A.value.T
        self.gradients[A] = x.value.T @ g
        self.gradients[b] = g.sum(axis=0)


class Sigmoid(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = 1 / (1 + np.exp(-self.inputs[0].value))

    def backward(self):
        s = self.value
        self.gradients[self.inputs[0]] = self.upstream() * s * (1 - s)


class ReLU(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.maximum(self.inputs[0].value, 0)

    def backward(self):
        self.gradients[self.inputs[0]] = self.upstream() * (self.inputs[0].value > 0)


class BCE(Node):
    def __init__(self, y, p):
        super().__init__([y, p])

    def forward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.value = np.sum(-(y * np.log(p) + (1 - y) * np.log(1 - p)))

    def backward(self):
        y, p = self.inputs[0].value, np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)
        self.gradients[self.inputs[1]] = (p - y) / (p * (1 - p)) / len(y)
        self.gradients[self.inputs[0]] = (np.log(1 - p) - np.log(p)) / len(y)
"""


def _module(tmp_path, registry, replace=None, extra=""):
    """The EDF module above, with `replace` {old: new} applied and `extra` appended, imported with the hook on."""
    source = EDF
    for old, new in (replace or {}).items():
        assert old in source
        source = source.replace(old, new)
    path = tmp_path / f"edf_{len(list(tmp_path.iterdir()))}.py"
    path.write_text(source + textwrap.dedent(extra))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    registry.install()
    try:
        spec.loader.exec_module(module)
    finally:
        registry.uninstall()
    return module


def _train(edf, steps=40, hidden=None, seed=0, batch=16, data=None):
    """A course loop: (losses, the weights at the end, every kept Sigmoid value).  hidden: a class between two
    Linears (ReLU, or the test's own)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(96, 3)) if data is None else data
    Y = (X[:, :1] - X[:, 1:2] > 0).astype(float)
    x, y = edf.Input(), edf.Input()
    params = [edf.Parameter(rng.normal(0, 0.5, (3, 4))), edf.Parameter(np.zeros(4)),
              edf.Parameter(rng.normal(0, 0.5, (4, 1))), edf.Parameter(np.zeros(1))]
    h = edf.Linear(x, params[0], params[1])
    if hidden is not None:
        h = hidden(h)
    p = edf.Sigmoid(edf.Linear(h, params[2], params[3]))
    loss = edf.BCE(y, p)
    graph = [x, y, *params]
    order = []

    def visit(n):
        if n not in order:
            for i in n.inputs:
                visit(i)
            order.append(n)
    visit(loss)
    graph = order
    losses, kept = [], []
    for step in range(steps):
        i = (step * batch) % len(X)
        x.value, y.value = X[i:i + batch], Y[i:i + batch]
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        for t in params:
            t.value -= 0.1 * t.gradients[t]
        losses.append(loss.value)
        kept.append(p.value)
    return losses, [t.value.copy() for t in params], kept


def _plain(tmp_path, **kwargs):
    """The same module trained without fastedf: the reference numbers."""
    registry = nodes.Registry()
    edf = _module(tmp_path, registry, **kwargs)
    registry.finish()
    return edf


def _by_name(registry, name):
    (found,) = [c for c in registry.classes if c.cls.__name__ == name]
    return found


def _same_training(a, b):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-10)
    for u, v in zip(a[1], b[1]):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-14)


# ---- verification -------------------------------------------------------------------------------------------

def test_a_standard_module_is_accelerated_with_the_users_numbers(tmp_path):
    reference = _train(_plain(tmp_path), hidden=None)
    registry = nodes.Registry(eager=True)
    edf = _module(tmp_path, registry)
    result = _train(edf, hidden=edf.ReLU)
    registry.finish()
    _same_training(_train(_plain(tmp_path), hidden=_plain(tmp_path).ReLU), result)
    assert reference[0] != result[0]  # the ReLU made a difference: the comparison above is not vacuous
    for name in ("Linear", "Sigmoid", "ReLU", "BCE"):
        c = _by_name(registry, name)
        assert c.state == "accelerated" and c.fast_calls > 0, (name, c.state, c.reason)
    assert _by_name(registry, "BCE").match.conventions["clip"] == 1e-12
    assert _by_name(registry, "ReLU").match.conventions["at_zero"] == 0
    # values the script kept are its own arrays, never overwritten by later steps
    kept = result[2]
    assert len({id(v) for v in kept}) == len(kept) and not np.array_equal(kept[-1], kept[-2])


def test_edge_probes_find_a_bce_that_clips_at_1e7(tmp_path):
    clip7 = {"np.clip(self.inputs[1].value, 1e-12, 1 - 1e-12)": "np.clip(self.inputs[1].value, 1e-7, 1 - 1e-7)"}
    registry = nodes.Registry(eager=True)
    edf = _module(tmp_path, registry, replace=clip7)
    result = _train(edf)  # the script's predictions stay far from 1e-7: only the probes can tell
    registry.finish()
    _same_training(_train(_plain(tmp_path, replace=clip7)), result)
    bce = _by_name(registry, "BCE")
    assert bce.state == "accelerated" and bce.match.conventions["clip"] == 1e-7
    dropped = [d for c, d in bce.eliminated.items() if c.op == "bce" and c.conventions["clip"] == 1e-12
               and c.conventions["reduce"] == "sum" and c.conventions["scale"] == "rows" and c.conventions["order"] == (0, 1)]
    assert dropped and dropped[0].startswith("probe"), dropped


def _two_outputs(edf, steps=30):
    """Linear(3 -> 2), Sigmoid, BCE against two labels a row: the loss's elements are not its rows."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(64, 3))
    Y = np.stack([X[:, 0] > 0, X[:, 1] - X[:, 2] > 0], axis=1).astype(float)
    x, y = edf.Input(), edf.Input()
    A, b = edf.Parameter(rng.normal(0, 0.5, (3, 2))), edf.Parameter(np.zeros(2))
    lin = edf.Linear(x, A, b)
    p = edf.Sigmoid(lin)
    loss = edf.BCE(y, p)
    graph, losses = [x, y, A, b, lin, p, loss], []
    for step in range(steps):
        i = (step * 16) % len(X)
        x.value, y.value = X[i:i + 16], Y[i:i + 16]
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        for t in (A, b):
            t.value -= 0.5 * t.gradients[t]
        losses.append(loss.value)
    return losses, [A.value.copy(), b.value.copy()]


def test_a_mean_bce_whose_gradient_divides_by_its_elements_is_matched(tmp_path):
    """np.mean's own gradient, `/ y.size`: with two outputs a row it is neither `/ rows` nor undivided."""
    mean = {"self.value = np.sum(-(y": "self.value = np.mean(-(y", "/ len(y)": "/ y.size"}
    registry = nodes.Registry(eager=True)
    result = _two_outputs(_module(tmp_path, registry, replace=mean))
    registry.finish()
    _same_training(_two_outputs(_plain(tmp_path, replace=mean)), result)
    bce = _by_name(registry, "BCE")
    assert bce.state == "accelerated" and bce.fast_calls > 0, (bce.state, bce.reason)
    assert bce.match.conventions["reduce"] == "mean" and bce.match.conventions["scale"] == "size"
    rows = [c for c in bce.eliminated if c.op == "bce" and c.conventions["scale"] == "rows"
            and c.conventions["reduce"] == "mean" and c.conventions["clip"] == 1e-12]
    assert rows  # dividing by the rows was tried and told apart


def test_edge_probes_find_a_relu_whose_gradient_at_0_is_1(tmp_path):
    at1 = {"(self.inputs[0].value > 0)": "(self.inputs[0].value >= 0)"}
    registry = nodes.Registry(eager=True)
    edf = _module(tmp_path, registry, replace=at1)
    result = _train(edf, hidden=edf.ReLU)  # no pre-activation is exactly 0 in the script's own data
    registry.finish()
    plain = _plain(tmp_path, replace=at1)
    _same_training(_train(plain, hidden=plain.ReLU), result)
    relu = _by_name(registry, "ReLU")
    assert relu.state == "accelerated" and relu.match.conventions["at_zero"] == 1
    (zero,) = [d for c, d in relu.eliminated.items() if c.op == "relu" and c.conventions["at_zero"] == 0]
    assert zero.startswith("probe"), zero


UNKNOWN = """
class Softplus(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.value = np.log1p(np.exp(self.inputs[0].value))

    def backward(self):
        self.gradients[self.inputs[0]] = self.upstream() / (1 + np.exp(-self.inputs[0].value))
"""


def test_a_node_fastedf_does_not_know_runs_as_the_users_code(tmp_path):
    registry = nodes.Registry(eager=True)
    edf = _module(tmp_path, registry, extra=UNKNOWN)
    result = _train(edf, hidden=edf.Softplus)
    registry.finish()
    plain = _plain(tmp_path, extra=UNKNOWN)
    _same_training(_train(plain, hidden=plain.Softplus), result)
    softplus = _by_name(registry, "Softplus")
    assert softplus.state == "user" and softplus.reason.startswith("unknown")
    assert edf.Softplus.forward is softplus.forward0  # given back: no wrapper left
    assert _by_name(registry, "Linear").state == "accelerated"
    assert "Softplus: unknown" in report.summary(registry)


def test_a_class_given_back_is_still_timed_by_sampling_for_the_records(tmp_path):
    """Its methods run unwrapped; the sampler charges their time to the class, so the script's recorded node time,
    from which its next run decides when to verify, counts them."""
    registry = nodes.Registry()
    edf = _module(tmp_path, registry, extra=UNKNOWN)
    registry.activate()
    X = np.random.default_rng(6).normal(size=(4000, 3))
    _train(edf, steps=20, hidden=edf.Softplus, data=X)
    softplus = _by_name(registry, "Softplus")
    assert softplus.state == "user" and softplus.reason.startswith("unknown")
    verified = softplus.seconds
    assert signal.getitimer(signal.ITIMER_PROF)[0] > 0  # the sampler runs again
    start = time.process_time()
    while softplus.seconds - verified < 0.02 and time.process_time() - start < 20:
        _train(edf, steps=20, hidden=edf.Softplus, data=X)
    registry.finish()
    assert softplus.seconds - verified >= 0.02 and edf.Softplus.forward is softplus.forward0
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)  # stopped at the end


@pytest.mark.parametrize("extra, name, reason", [
    ("""
class Counted(Node):
    def __init__(self, x):
        super().__init__([x])
        self.calls = 0

    def forward(self):
        self.calls += 1
        self.value = np.maximum(self.inputs[0].value, 0)

    def backward(self):
        self.gradients[self.inputs[0]] = self.upstream() * (self.inputs[0].value > 0)
""", "Counted", "state"),
    ("""
class Dropout(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        self.mask = np.random.random(self.inputs[0].value.shape) > 0.2
        self.value = self.inputs[0].value * self.mask

    def backward(self):
        self.gradients[self.inputs[0]] = self.upstream() * self.mask
""", "Dropout", "random"),
    ("""
class Noisy(Node):
    def __init__(self, x):
        super().__init__([x])

    def forward(self):
        print("forward of", self.inputs[0].value.shape)
        self.value = np.tanh(self.inputs[0].value)

    def backward(self):
        self.gradients[self.inputs[0]] = self.upstream() * (1 - self.value ** 2)
""", "Noisy", "prints"),
    ("""
class Slotted:
    __slots__ = ("inputs", "outputs", "value", "gradients")

    def __init__(self, x):
        self.inputs, self.outputs, self.value, self.gradients = [x], [], None, {}
        x.outputs.append(self)

    def forward(self):
        self.value = np.maximum(self.inputs[0].value, 0)

    def backward(self):
        self.gradients[self.inputs[0]] = self.outputs[0].gradients[self] * (self.inputs[0].value > 0)
""", "Slotted", "__slots__"),
])
def test_state_randomness_printing_and_slots_keep_the_users_code(tmp_path, capsys, extra, name, reason):
    np.random.seed(5)
    registry = nodes.Registry(eager=True)
    edf = _module(tmp_path, registry, extra=extra)
    result = _train(edf, hidden=getattr(edf, name))
    registry.finish()
    printed = capsys.readouterr().out
    np.random.seed(5)
    plain = _plain(tmp_path, extra=extra)
    _same_training(_train(plain, hidden=getattr(plain, name)), result)
    assert capsys.readouterr().out == printed  # every print of the user's node reached stdout
    c = _by_name(registry, name)
    assert c.state == "user" and reason in c.reason, c.reason


def test_an_error_inside_a_candidate_falls_back_and_is_reported_once(tmp_path, capsys, monkeypatch):
    calls = []

    def broken(self, vals):
        calls.append(1)
        if len(calls) > 40:  # after acceptance, on the accelerated path
            raise FloatingPointError("injected")
        return original(self, vals)
    original = candidates.Sigmoid.forward
    monkeypatch.setattr(candidates.Sigmoid, "forward", broken)
    registry = nodes.Registry(eager=True)
    edf = _module(tmp_path, registry)
    result = _train(edf, steps=60)
    registry.finish()
    _same_training(_train(_plain(tmp_path), steps=60), result)
    sigmoid = _by_name(registry, "Sigmoid")
    assert sigmoid.state == "user" and "FloatingPointError: injected" in sigmoid.reason
    err = capsys.readouterr().err
    assert err.count("injected") == 1 and "Sigmoid" in err


def test_check_reports_a_candidate_that_drifts_from_the_users_code(tmp_path, capsys, monkeypatch):
    registry = nodes.Registry(check=True, eager=True)
    edf = _module(tmp_path, registry)
    original = candidates.Sigmoid.forward
    state = {"steps": 0}

    def drifting(self, vals):
        return original(self, vals) * (1 + 1e-9 * (state["steps"] > 10))
    monkeypatch.setattr(candidates.Sigmoid, "forward", drifting)
    losses = []
    for steps in (10, 20):
        state["steps"] = steps
        losses.append(_train(edf, steps=steps)[0])
    registry.finish()
    plain = _plain(tmp_path)
    np.testing.assert_allclose(losses[1], _train(plain, steps=20)[0], rtol=1e-12)  # the user's values, always
    sigmoid = _by_name(registry, "Sigmoid")
    assert sigmoid.fast_calls == 0  # --check runs the user's code on every call
    assert sigmoid.state == "user" and "--check" in sigmoid.reason
    assert "differs from the user's code on --check" in capsys.readouterr().err
    assert "1 difference(s)" in report.summary(registry)


def test_the_upstream_rule_is_learned_from_a_node_with_two_consumers(tmp_path):
    sum_rule = {"return self.outputs[0].gradients[self]": "return sum(n.gradients[self] for n in self.outputs)"}
    for replace, rule in ((None, "first"), (sum_rule, "sum")):
        registry = nodes.Registry(eager=True)
        edf = _module(tmp_path, registry, replace=replace)
        results = []
        for module in (edf, _plain(tmp_path, replace=replace)):
            rng = np.random.default_rng(3)
            x, y = module.Input(), module.Input()
            A, b = module.Parameter(rng.normal(size=(2, 1))), module.Parameter(np.zeros(1))
            z = module.Linear(x, A, b)
            p1, p2 = module.Sigmoid(z), module.Sigmoid(z)  # z has two consumers
            loss1, loss2 = module.BCE(y, p1), module.BCE(y, p2)
            graph = [x, y, A, b, z, p1, p2, loss1, loss2]
            for _ in range(12):
                x.value, y.value = rng.normal(size=(8, 2)), rng.integers(0, 2, (8, 1)).astype(float)
                for n in graph:
                    n.forward()
                for n in reversed(graph):
                    n.backward()
                A.value -= 0.1 * A.gradients[A]
            results.append(A.value.copy())
        registry.finish()
        np.testing.assert_allclose(results[0], results[1], rtol=1e-12)
        assert _by_name(registry, "Linear").rule == rule


def test_empty_batches_run_the_users_code(tmp_path):
    registry = nodes.Registry(eager=True)
    edf = _module(tmp_path, registry)
    X = np.random.default_rng(0).normal(size=(40, 3))
    result = _train(edf, steps=30, batch=16, data=X)  # every third batch has 8 rows, none is empty
    x = edf.Input()
    z = edf.Sigmoid(x)
    x.value = np.empty((0, 3))
    z.forward()
    registry.finish()
    assert z.value.shape == (0, 3)
    _same_training(_train(_plain(tmp_path), steps=30, batch=16, data=X), result)


def test_a_short_run_is_only_sampled_and_its_classes_keep_their_methods(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes, "ACTIVATE_AFTER", 1e9)
    registry = nodes.Registry()
    edf = _module(tmp_path, registry)
    assert edf.Linear.forward.__code__ is _by_name(registry, "Linear").forward0.__code__  # no wrapper while counting
    _train(edf, steps=5)
    linear = _by_name(registry, "Linear")
    assert linear.state == "counting" and edf.Linear.backward is linear.backward0
    registry.finish()
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)  # the sampling timer stopped
    assert "no node class accelerated" in report.summary(registry)


def test_sampled_time_in_nodes_starts_verification(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes, "ACTIVATE_AFTER", 0.05)
    registry = nodes.Registry()
    edf = _module(tmp_path, registry)
    X = np.random.default_rng(1).normal(size=(4000, 3))
    start = time.process_time()
    while not registry.active and time.process_time() - start < 20:
        _train(edf, steps=40, data=X)
    assert registry.active and registry.seconds > 0.05
    _train(edf, steps=40, data=X)  # the classes' next calls verify
    assert _by_name(registry, "Linear").verified_calls > 0
    registry.finish()
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_a_class_whose_kernels_do_not_repay_yet_waits_unwrapped_then_is_accelerated(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes, "ACTIVATE_AFTER", 0.02)
    monkeypatch.setattr(nodes, "NUMBA_IMPORT_SECONDS", 0.0)
    monkeypatch.setattr(nodes, "PROBE_SECONDS", 0.02)
    monkeypatch.setattr(nodes, "KERNEL_LOAD_SECONDS", 0.02)  # a BCE repays after ~0.2 s of its own time
    # Once accelerated, the class stays so whatever this machine measures per call: the test is about the
    # deferred -> accelerated path, not about which side a busy or quiet machine times faster.
    monkeypatch.setattr(nodes.NodeClass, "paying", lambda self, node: True)
    monkeypatch.setattr(nodes.NodeClass, "may_fuse", lambda self, node: False)  # a graph that may fuse waits not
    registry = nodes.Registry()
    edf = _module(tmp_path, registry)
    X = np.random.default_rng(2).normal(size=(4000, 3))
    bce, seen = None, set()
    start = time.process_time()
    while time.process_time() - start < 30 and not (bce is not None and bce.state == "accelerated" and bce.fast_calls):
        _train(edf, steps=40, data=X)
        bce = _by_name(registry, "BCE") if registry.active else None
        if bce is not None and bce.state == "deferred":
            seen.add("deferred")
            assert edf.BCE.forward is bce.forward0 and edf.BCE.backward is bce.backward0  # no wrapper meanwhile
    assert "deferred" in seen and bce.state == "accelerated" and bce.fast_calls > 0, (bce.state, bce.reason)
    result = _train(edf, steps=30, data=X)
    registry.finish()
    _same_training(_train(_plain(tmp_path), steps=30, data=X), result)


def test_a_class_whose_whole_run_last_time_repays_its_kernels_is_accelerated_without_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes, "NUMBA_IMPORT_SECONDS", 0.0)
    monkeypatch.setattr(nodes, "PROBE_SECONDS", 0.02)
    monkeypatch.setattr(nodes, "KERNEL_LOAD_SECONDS", 0.02)  # a BCE repays after ~0.2 s of its own time
    monkeypatch.setattr(nodes.NodeClass, "paying", lambda self, node: True)
    monkeypatch.setattr(nodes.NodeClass, "may_fuse", lambda self, node: False)
    X = np.random.default_rng(2).normal(size=(400, 3))
    states = {}
    for record in (None, 100.0):  # no record, then the class's 100 s of a run before (fastedf.runner.records)
        registry = nodes.Registry()
        edf = _module(tmp_path, registry)
        if record is not None:
            registry.expected = {f"{edf.__name__}.BCE": record}
        registry.activate()
        result = _train(edf, steps=40, data=X)  # a few ms: far below what repays the kernels by itself
        states[record] = _by_name(registry, "BCE").state
        registry.finish()
        _same_training(_train(_plain(tmp_path), steps=40, data=X), result)
    assert states == {None: "deferred", 100.0: "accelerated"}


def test_last_run_s_match_is_verified_alone_and_a_wrong_one_falls_back_to_every_candidate(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes.NodeClass, "worth_probing", lambda self, node: True)  # decisions of cost aside
    monkeypatch.setattr(nodes.NodeClass, "paying", lambda self, node: True)
    X = np.random.default_rng(3).normal(size=(400, 3))
    registry = nodes.Registry(eager=True)  # --explain's registry: every candidate, whatever the records say
    edf = _module(tmp_path, registry)
    _train(edf, steps=10, data=X)
    registry.finish()
    right = _by_name(registry, "BCE").match.candidate.describe()
    assert "clip 1e-12" in right and len(_by_name(registry, "BCE").eliminated) > 100
    # a BCE that clips at 1e-7 computes the same on these values: only the edge probes tell them apart
    wrong = right.replace("clip 1e-12", "clip 1e-7")
    found = {}
    for hint in (right, wrong):
        registry = nodes.Registry()
        edf = _module(tmp_path, registry)
        bce = _by_name(registry, "BCE")
        registry.hints = {bce.code_digest(): hint}
        registry.activate()
        result = _train(edf, steps=40, data=X)
        registry.finish()
        _same_training(_train(_plain(tmp_path), steps=40, data=X), result)
        found[hint] = (bce.state, bce.reason, bce.match and bce.match.candidate.describe(), len(bce.eliminated))
    assert found[right] == ("accelerated", None, right, 0)  # no other candidate was run
    state, reason, match, eliminated = found[wrong]
    assert state == "accelerated" and match == right and eliminated > 100, found[wrong]


def test_a_class_kept_for_its_graph_s_program_runs_the_faster_user_code_meanwhile(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes.NodeClass, "may_fuse", lambda self, node: True)  # never fused: FASTEDF_FUSE=0 below
    monkeypatch.setattr(nodes.NodeClass, "worth_probing", lambda self, node: True)
    X = np.random.default_rng(4).normal(size=(400, 3))
    registry = nodes.Registry()
    registry.fuser().enabled = False
    edf = _module(tmp_path, registry)
    sigmoid = _by_name(registry, "Sigmoid")
    calls = []
    user_forward = sigmoid.forward0
    sigmoid.forward0 = lambda node: calls.append(1) or user_forward(node)
    registry.activate()
    registry.dispatch_seconds = 1.0  # a candidate's call measured slower than the user's code, whatever its own
    result = _train(edf, steps=60, data=X)
    registry.finish()
    _same_training(_train(_plain(tmp_path), steps=60, data=X), result)
    assert sigmoid.state == "accelerated" and sigmoid.user_faster and sigmoid.fast_calls > 0
    assert len(calls) >= sigmoid.verified_calls + sigmoid.fast_calls  # the accelerated calls ran the user's code


def test_each_class_s_time_is_recorded_for_the_script_s_next_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTEDF_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "EDF.py").write_text(EDF)
    (folder / "train.py").write_text(textwrap.dedent("""
        import numpy as np
        from EDF import *
        x, A, b = Input(), Parameter(np.ones((3, 1))), Parameter(np.zeros(1))
        p = Sigmoid(Linear(x, A, b))
        x.value = np.ones((4, 3))
        for _ in range(50):
            for n in (x, A, b, p.inputs[0], p):
                n.forward()
        print(float(p.value[0, 0]))
        """))
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / records.NAME).write_text("1.0\tmatch:no-colon-after-the-digest\nnot a number\tx\n")
    try:
        assert command.main(["--explain", "train.py"]) == 0  # garbage in the records: ignored
    finally:
        sys.modules.pop("EDF", None)
    found = records.read()
    classes = records.under(found, f"class:{folder / 'train.py'}:")
    assert set(classes) == {"EDF.Linear", "EDF.Sigmoid"} and all(v > 0 for v in classes.values())
    assert found[f"script:{folder / 'train.py'}"] == pytest.approx(sum(classes.values()))


# ---- the command line -----------------------------------------------------------------------------------------

SCRIPT = """
import os, sys
print("argv", sys.argv)
print("name", __name__)
print("cwd", os.getcwd())
print("path0", sys.path[0])
import helper
print("helper", helper.VALUE)
code = sys.argv[1] if len(sys.argv) > 1 else "0"
if code == "raise":
    def inner():
        raise ValueError("the script's own error")
    inner()
if code == "message":
    sys.exit("bye")
sys.exit(int(code))
"""


def _fastedf(args, cwd):
    return subprocess.run([sys.executable, "-m", "fastedf", "run", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def script(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "prog.py").write_text(SCRIPT)
    (folder / "helper.py").write_text("VALUE = 42\n")
    return folder / "prog.py"


def test_the_script_runs_as_under_python(script, tmp_path):
    for args in ([], ["3"], ["raise"], ["message"]):
        plain = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=ENV, capture_output=True,
                               text=True, timeout=60)
        fast = _fastedf(["--quiet", str(script), *args], cwd=tmp_path)
        assert fast.stdout == plain.stdout and fast.returncode == plain.returncode, (args, fast.stderr)
        assert f"cwd {tmp_path}" in fast.stdout and "name __main__" in fast.stdout and "helper 42" in fast.stdout
        assert fast.stderr == plain.stderr.replace(str(script), str(script)), (args, fast.stderr, plain.stderr)
    assert plain.returncode == 1
    # a relative path stays as typed in sys.argv[0], as python leaves it
    plain = subprocess.run([sys.executable, "prog.py", "5"], cwd=script.parent, env=ENV, capture_output=True,
                           text=True, timeout=60)
    fast = _fastedf(["--quiet", "prog.py", "5"], cwd=script.parent)
    assert "argv ['prog.py', '5']" in fast.stdout and fast.stdout == plain.stdout and fast.returncode == 5


def test_an_uncaught_exception_shows_the_scripts_traceback_only(script, tmp_path):
    fast = _fastedf([str(script), "raise"], cwd=tmp_path)
    assert fast.returncode == 1
    assert "Traceback (most recent call last)" in fast.stderr and "ValueError: the script's own error" in fast.stderr
    assert "in inner" in fast.stderr and "runpy" not in fast.stderr and "fastedf" + os.sep not in fast.stderr
    assert fast.stderr.strip().splitlines()[-1].startswith("fastedf run: ")  # the summary comes after


def test_options_before_the_script_and_the_scripts_own_after_it(script, tmp_path):
    fast = _fastedf(["--explain", str(script), "--explain", "0"], cwd=tmp_path)
    assert "argv ['" + str(script) + "', '--explain', '0']" in fast.stdout
    assert "fastedf run --explain:" in fast.stderr and fast.stderr.count("fastedf run:") == 1
    bad = _fastedf(["--fast", str(script)], cwd=tmp_path)
    assert bad.returncode == 2 and "unknown option '--fast'" in bad.stderr and not bad.stdout
    missing = _fastedf([str(tmp_path / "nope.py")], cwd=tmp_path)
    assert missing.returncode == 2 and "nope.py" in missing.stderr


AT_EXIT = """
import atexit, sys, weakref
class Holder:
    pass
log = open("global.txt", "w")
log.write("a file the script never closes\\n")
held = Holder()
held.me = held  # a reference cycle: only the collector frees it
held.file = open("cycle.txt", "w")
held.file.write("a file held in a cycle\\n")
class Noisy:
    def __del__(self):
        print("the script's __del__, at exit")
noisy = Noisy()
noisy.me = noisy
weakref.finalize(Holder(), print, "a finalizer of an object that died")
kept = Holder()
weakref.finalize(kept, print, "a finalizer at exit")
atexit.register(print, "the script's atexit function")
print("end of the script")
"""


@pytest.mark.parametrize("own_del", [False, True])
def test_what_happens_at_exit_is_what_python_does(tmp_path, own_del):
    """The script stays __main__ to the end; files it never closed are written; atexit functions, finalizers
    and its own __del__ print what and in the order they do under python.  (Without a __del__ of its own, the
    collector's last passes are skipped: fastedf.runner.command._light_teardown.)"""
    source = AT_EXIT if own_del else AT_EXIT.replace("class Noisy:", "class Noisy:\n    pass\nclass Quiet:")
    outputs = []
    for command in ([sys.executable], [sys.executable, "-m", "fastedf", "run", "--quiet"]):
        folder = tmp_path / str(len(outputs))
        folder.mkdir()
        (folder / "prog.py").write_text(source)
        done = subprocess.run([*command, "prog.py"], cwd=folder, env=ENV, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append((done.stdout, done.stderr, (folder / "global.txt").read_text(),
                        (folder / "cycle.txt").read_text()))
    assert outputs[0] == outputs[1]
    assert "a file held in a cycle" in outputs[0][3] and ("__del__" in outputs[0][0]) == own_del  # not vacuous


def test_exit_status_of_interrupt_and_system_exit_in_process(tmp_path, capsys):
    path = tmp_path / "stop.py"
    path.write_text("import sys\nif sys.argv[1] == 'int':\n    raise KeyboardInterrupt\nraise SystemExit(3)\n")
    saved = sys.argv[:], sys.path[0]
    try:
        assert command.main(["--quiet", str(path), "exit"]) == 3
        assert command.main(["--quiet", str(path), "int"]) == 130
    finally:
        sys.argv[:], sys.path[0] = saved
    assert "KeyboardInterrupt" in capsys.readouterr().err


# ---- candidates against plain references ------------------------------------------------------------------

def _naive_conv(x, K, b, stride, pad):
    """Channels last, K (kh, kw, C_in, C_out): the direct loop."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = K.shape[:2]
    Ho, Wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], Ho, Wo, K.shape[3]))
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(window, K, axes=([1, 2, 3], [0, 1, 2]))
    return out + b


@pytest.mark.parametrize("kernels", [False, True])
@pytest.mark.parametrize("layout", ["last", "first"])
@pytest.mark.parametrize("padding, stride", [("same", 1), ("valid", 1), ("same", 2), ("valid", 2)])
def test_conv_candidates_match_the_direct_loop_and_their_gradients_are_its_adjoints(layout, padding, stride, kernels):
    rng = np.random.default_rng(0)
    x, K, b = rng.normal(size=(2, 7, 6, 3)), rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4)
    want = _naive_conv(x, K, b, stride, 1 if padding == "same" else 0)
    c = candidates.Conv(layout, padding, stride, True)
    c.use_kernels = kernels  # NumPy while conventions are searched, fastedf's kernels once matched
    to = (lambda a: a) if layout == "last" else (lambda a: a.transpose(0, 3, 1, 2))
    K_in = K if layout == "last" else K.transpose(3, 2, 0, 1)
    vals = [np.ascontiguousarray(to(x)), np.ascontiguousarray(K_in), b]
    got = c.forward(vals)
    np.testing.assert_allclose(got, to(want), rtol=1e-12, atol=1e-12)
    g = rng.normal(size=got.shape)
    grads = c.backward(vals, got, g, (0, 1, 2))
    # the output is bilinear in (x, K): <g, out - b> = <dx, x> = <dK, K>, and db sums g over the pixels
    inner = np.sum(g * (got - (b if layout == "last" else b[:, None, None])))
    assert np.isclose(np.sum(grads[0] * vals[0]), inner, rtol=1e-10)
    assert np.isclose(np.sum(grads[1] * vals[1]), inner, rtol=1e-10)
    np.testing.assert_allclose(grads[2], g.sum(axis=(0, 1, 2) if layout == "last" else (0, 2, 3)), rtol=1e-12)


def test_python_s_library_and_site_packages_are_not_the_user_s():
    """Classes there are never wrapped: every directory sysconfig names for this Python, and numpy's files."""
    import sysconfig

    from fastedf.runner.nodes import user_file
    for key, path in sysconfig.get_paths().items():
        if key in ("stdlib", "platstdlib", "purelib", "platlib"):
            assert not user_file(os.path.join(path, "some_module.py")), key
    assert not user_file(np.__file__)
    assert user_file(os.path.abspath(__file__))


def test_a_bad_activate_after_setting_warns_and_runs_the_script(tmp_path):
    (tmp_path / "prog.py").write_text("print('ran')\n")
    env = {**ENV, "FASTEDF_RUN_ACTIVATE_AFTER": "abc"}
    done = subprocess.run([sys.executable, "-m", "fastedf", "run", "prog.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "ran\n", done.stderr
    assert "FASTEDF_RUN_ACTIVATE_AFTER='abc' is not a number of seconds" in done.stderr
    assert "Traceback" not in done.stderr


def test_what_was_alive_before_the_script_is_frozen_during_it_and_thawed_after(tmp_path, capsys):
    """The collector's full passes skip fastedf's and NumPy's objects while the script runs; an in-process caller
    gets its collector back as it was."""
    import gc
    (tmp_path / "prog.py").write_text("import gc\nprint('frozen', gc.get_freeze_count() > 0)\n")
    before = gc.get_freeze_count()
    assert command.main(["--quiet", str(tmp_path / "prog.py")]) == 0
    assert "frozen True" in capsys.readouterr().out
    assert gc.get_freeze_count() == before == 0
