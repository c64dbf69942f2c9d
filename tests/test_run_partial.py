"""`fastedf run`'s partial fusion (fastedf.runner.fuse): a graph fused below the nodes no program runs gives the
user's numbers however the script orders and writes those nodes."""
import importlib.util
import sys

import numpy as np

from fastedf.runner import nodes
from test_run_fuse import VARIANTS, _compare, fuse_at_once  # noqa: F401  (the fixture)

# An unknown node that writes its value into the same array every step, in place
IN_PLACE = '''

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
'''


def _module(tmp_path, registry=None):
    """dropout_batchnorm's EDF module with the classes above, imported afresh (with the registry's hook)."""
    path = tmp_path / "EDF.py"
    if not path.exists():
        path.write_text((VARIANTS / "dropout_batchnorm" / "EDF.py").read_text() + IN_PLACE)
    name = f"edf_partial_{'run' if registry else 'plain'}_{len(sys.modules)}"
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


def test_a_cut_node_forwarded_after_the_first_fused_operation_writing_in_place_gives_the_users_numbers(tmp_path):
    registry = nodes.Registry(eager=True)
    run = _late_labels(_module(tmp_path, registry))
    registry.finish()
    assert registry._fuser.plans  # the program ran each step: its values were not taken
    _compare(_late_labels(_module(tmp_path)), run)
