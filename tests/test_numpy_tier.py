"""The NumPy tier (fastedf.config): every kernel's NumPy twin against the kernel, and when Numba takes over.

Twins and kernels are compared on random inputs and on the edges (saturated
sigmoids, clipped predictions, ReLU at 0, ties and NaN in max pooling, empty
batches, the label and bias forms the nodes pass), to 1e-13 of the size of
the terms they sum.  Which tier runs is decided per process, so the switch is
checked in fresh processes (FASTEDF_NUMPY_TIER_SECONDS).
"""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastedf.ops  # noqa: F401  (every kernel module)
from fastedf import config
from fastedf.node import _sum_to

config.activate()  # the kernels below are Numba's; their twins are in config.twins

# Every kernel a course script's nodes call node by node has a twin (tests/course_scripts run without Numba
# in the NumPy tier: test_course_scripts.py); the rest (compiled programs' kernels, fit's) activate Numba.
COURSE_KERNELS = {
    "fastedf.kernels": ["sgd_update"],
    "fastedf.ops.linear": ["linear_forward", "linear_backward", "linear_input_grad"],
    "fastedf.ops.activations": [f"{f}_{d}" for f in ("sigmoid", "tanh", "relu", "softmax")
                                for d in ("forward", "backward")],
    "fastedf.ops.losses": ["bce_forward", "bce_backward", "bce_label_grad", "ce_forward", "ce_backward",
                           "ce_label_grad"],
    "fastedf.ops.conv": ["conv_forward", "conv_backward", "conv_input_grad", "maxpool_forward",
                         "maxpool_backward"],
}
# ... and every kernel the fused loop's NumPy step calls (fastedf.numpy_step) beside those
STEP_KERNELS = {"fastedf.ops.elementwise": ["broadcast_binary", "sum_to", "product_sum_to"],
                "fastedf.ops.conv": ["copy_into", "split_bias_row"]}
TWINNED = {m: COURSE_KERNELS.get(m, []) + STEP_KERNELS.get(m, []) for m in {**COURSE_KERNELS, **STEP_KERNELS}}


def pair(name):
    """(kernel, twin) for the kernel called `name`."""
    module = next(m for m, names in TWINNED.items() if name in names)
    kernel = getattr(sys.modules[module], name)
    return kernel, config.twins[kernel.py_func]


def test_every_kernel_the_course_nodes_or_the_numpy_step_call_has_a_twin_and_no_other_does():
    have = {f"{f.__module__}.{f.__name__}" for f in config.twins}
    want = {f"{m}.{n}" for m, names in TWINNED.items() for n in names}
    assert have == want
    for module, names in TWINNED.items():
        for name in names:
            kernel, twin = pair(name)
            assert twin.__module__ == module and twin.__name__ == f"{name}_numpy"  # written beside its kernel


def close(got, want, scale=None, rtol=1e-13):
    """got == want within rtol of `scale` (|want| by default) elementwise, NaN where NaN."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    scale = np.abs(want) if scale is None else np.asarray(scale)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf
        ok = np.isnan(want) | (got == want) | (np.abs(got - want) <= rtol * scale + 1e-300)
    assert ok.all(), f"{got[~ok]} != {want[~ok]}"


def both(name, *args, outs=()):
    """Run kernel and twin on copies of args; returns (kernel's (return, outs), twin's)."""
    kernel, twin = pair(name)
    results = []
    for f in (kernel, twin):
        copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        returned = f(*copies)
        results.append((returned, [copies[i] for i in outs]))
    return results


EDGES = np.array([-800.0, -40.0, -1.0, -1e-300, -0.0, 0.0, 1e-300, 0.5, 40.0, 800.0, np.nan])


@pytest.mark.parametrize("name", ["sigmoid_forward", "tanh_forward", "relu_forward"])
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (5, 3), (2, 3, 4)])
def test_elementwise_forward_twins(name, shape, rng):
    z = rng.normal(scale=5, size=shape)
    if z.size >= EDGES.size:
        z.flat[:EDGES.size] = EDGES
    (_, [want]), (_, [got]) = both(name, z, np.empty(shape), outs=(1,))
    close(got, want)
    if name == "relu_forward":
        assert np.array_equal(got, want, equal_nan=True)  # a select: exactly


def test_the_sigmoid_twin_past_the_exp_range_gives_the_kernels_tiny_values_not_a_floor():
    z = np.array([-1e300, -800.0, -744.0, -720.0, -709.9, -709.0, -700.0, 700.0, 1e300])
    (_, [want]), (_, [got]) = both("sigmoid_forward", z, np.empty(z.shape), outs=(1,))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)  # 0 and subnormals where the kernel has them


def test_twins_are_as_silent_as_the_kernels_on_inf_and_nan():
    inf, nan = np.inf, np.nan
    calls = [("sigmoid_backward", np.array([0.0, 1.0, 0.5]), np.array([inf, -inf, nan]), np.empty(3)),
             ("tanh_backward", np.array([1.0, -1.0]), np.array([inf, inf]), np.empty(2)),
             ("softmax_forward", np.array([[inf, 1.0, -inf], [1e308, -1e308, 0.0]]), np.empty((2, 3))),
             ("softmax_backward", np.array([[0.5, 0.5, 0.0]]), np.array([[inf, 1.0, -inf]]), np.empty((1, 3))),
             ("linear_forward", np.array([[inf, 0.0]]), np.array([[0.0], [1.0]]), np.zeros(1), np.empty((1, 1))),
             ("conv_forward", np.full((1, 2, 2, 1), inf), np.zeros((1, 1, 1, 1)), np.zeros(1), np.empty((2, 4)),
              np.empty((2, 1)), np.empty((1, 2, 2, 1))),
             ("bce_backward", np.array([[inf]]), np.array([[0.5]]), 1.0, np.empty((1, 1))),
             ("ce_backward", np.array([[inf, -inf]]), np.array([[0.5, 0.5]]), 1.0, np.empty((1, 2))),
             ("sgd_update", np.array([inf, 1.0]), np.array([inf, 1e308]), 1e10)]
    with np.errstate(all="warn"), warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, *args in calls:
            both(name, *args)


@pytest.mark.parametrize("name", ["sigmoid_backward", "tanh_backward", "relu_backward"])
@pytest.mark.parametrize("shape", [(0, 2), (1, 1), (6, 4)])
def test_elementwise_backward_twins(name, shape, rng):
    p, g = rng.random(shape), rng.normal(size=shape)
    if p.size > 1:
        p.flat[0], g.flat[-1] = 0.0, np.inf  # ReLU's p = 0 takes no gradient; an inf gradient where p > 0
    (_, [want]), (_, [got]) = both(name, p, g, np.empty(shape), outs=(2,))
    close(got, want)


@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (4, 10), (3, 7)])
def test_softmax_twins(shape, rng):
    z = rng.normal(scale=30, size=shape)
    if z.size > 3:
        z[0] = 5.0  # a row of ties
        z[1, 0] = 900.0  # exp would overflow without the max subtracted
    (_, [want]), (_, [got]) = both("softmax_forward", z, np.empty(shape), outs=(1,))
    close(got, want, scale=np.maximum(np.abs(want), 1e-16))
    g = rng.normal(size=shape)
    (_, [want]), (_, [got]) = both("softmax_backward", want, g, np.empty(shape), outs=(2,))
    close(got, want, scale=np.abs(g).sum(axis=1, keepdims=True) + np.abs(g))


def linear_cases(rng):
    """(x, A, b) in every loop form of linear_forward (narrow head, wide rows, dot products, BLAS), both bias
    forms, one row, and an empty batch."""
    for batch, n, m in ((16, 3, 1), (1, 2, 1), (5, 3, 8), (3, 4, 2), (32, 64, 10), (0, 3, 2), (4, 1, 1)):
        x, A = rng.normal(size=(batch, n)), rng.normal(size=(n, m))
        yield x, A, rng.normal(size=m)
        yield x, A, rng.normal(size=(1, m))


def test_linear_twins(rng):
    for x, A, b in linear_cases(rng):
        batch, m = x.shape[0], A.shape[1]
        (_, [want]), (_, [got]) = both("linear_forward", x, A, b, np.empty((batch, m)), outs=(3,))
        close(got, want, scale=np.abs(x) @ np.abs(A) + np.abs(b).reshape(1, m))
        g = rng.normal(size=(batch, m))
        (_, want), (_, got) = both("linear_backward", x, g, np.empty(A.shape), np.empty(b.shape), outs=(2, 3))
        close(got[0], want[0], scale=np.abs(x).T @ np.abs(g))
        close(got[1], want[1], scale=np.abs(g).sum(axis=0).reshape(b.shape))
        (_, [want]), (_, [got]) = both("linear_input_grad", g, A, np.empty(x.shape), outs=(2,))
        close(got, want, scale=np.abs(g) @ np.abs(A).T)


def loss_cases(rng):
    """(y, p): random soft and hard labels, predictions at and past the clip, a (B,) label column, empty."""
    p = rng.random((6, 3))
    p[0] = [0.0, 1.0, 1e-15]
    p[1] = [1 - 1e-15, 0.5, 1e-12]
    yield (rng.random((6, 3)) > 0.5) * 1.0, p
    yield rng.random((6, 3)), p
    yield (rng.random(5) > 0.5) * 1.0, rng.random((5, 1))
    yield np.zeros((0, 1)), np.zeros((0, 1))
    yield np.ones((1, 1)), np.full((1, 1), 1e-13)  # one sample (the twins' Python arithmetic), clipped
    yield np.full((2, 4), 0.25), rng.random((2, 4))  # eight elements, the most the twins loop over in Python
    yield np.eye(4)[[0, 3, 1]], np.full((3, 4), 0.25)


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_loss_twins(loss, rng):
    for y, p in loss_cases(rng):
        (want, _), (got, _) = both(f"{loss}_forward", y, p)
        assert got[1] == want[1] == -1
        close(got[0], want[0])
        scale = 1.0 / max(p.shape[0], 1)
        (_, [want]), (_, [got]) = both(f"{loss}_backward", y, p, scale, np.empty(p.shape), outs=(3,))
        close(got, want)
        (_, [want]), (_, [got]) = both(f"{loss}_label_grad", p, scale, np.empty(y.shape), outs=(2,))
        close(got, want)


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_loss_twins_find_the_first_bad_element(loss):
    wide = np.full((3, 5), 0.5)
    wide[2, 1] = -1.0
    for y, p, at in ((np.array([[0.0, 1.0, 1.5]]), np.full((1, 3), 0.5), 2),
                     (np.array([[0.0], [1.0]]), np.array([[0.5], [np.nan]]), 1),
                     (np.array([[1.0, 0.0]]), np.array([[-0.1, 2.0]]), 0),
                     (np.zeros((3, 5)), wide, 11), (wide, np.zeros((3, 5)), 11)):  # past the Python loops' sizes
        (want, _), (got, _) = both(f"{loss}_forward", y, p)
        assert got[1] == want[1] == at and np.isnan(got[0]) and np.isnan(want[0])


@pytest.mark.parametrize("batch,H,W,cin,kh,kw,cout", [(2, 8, 8, 1, 3, 3, 4), (1, 5, 6, 3, 3, 3, 2),
                                                       (3, 4, 4, 2, 1, 1, 3), (2, 6, 5, 2, 5, 3, 2)])
def test_conv_twins(batch, H, W, cin, kh, kw, cout, rng):
    x, K, b = rng.normal(size=(batch, H, W, cin)), rng.normal(size=(kh, kw, cin, cout)), rng.normal(size=cout)
    taps, pixels = kh * kw * cin, batch * H * W
    cols, Kb, out = np.empty((taps + 1, pixels)), np.empty((taps + 1, cout)), np.empty((batch, H, W, cout))
    (_, want), (_, got) = both("conv_forward", x, K, b, cols, Kb, out, outs=(3, 4, 5))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])  # columns and K over b: copies
    close(got[2], want[2], scale=(np.abs(want[0]).T @ np.abs(want[1])).reshape(out.shape))
    g = rng.normal(size=(batch, H, W, cout))
    (_, [want_dKb]), (_, [got_dKb]) = both("conv_backward", want[0], g, np.empty((taps + 1, cout)), outs=(2,))
    close(got_dKb, want_dKb, scale=np.abs(want[0]) @ np.abs(g).reshape(pixels, cout))
    (_, want), (_, got) = both("conv_input_grad", g, K, np.empty((taps, pixels)), np.empty(x.shape), outs=(3,))
    bound = np.empty(x.shape)  # the same correlation run back on absolute values bounds every sum
    pair("conv_input_grad")[0](np.abs(g), np.abs(K), np.empty((taps, pixels)), bound)
    close(got[0], want[0], scale=bound)


@pytest.mark.parametrize("a_shape,b_shape", [((4, 3), (4, 3)), ((4, 3), (1, 3)), ((4, 1), (1, 3)), ((1, 1), (5, 1)),
                                             ((1, 1), (1, 1)), ((0, 2), (1, 2))])
def test_broadcast_twins(a_shape, b_shape, rng):
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    for multiply in (True, False):
        (_, [want]), (_, [got]) = both("broadcast_binary", a, b, multiply, np.empty(out_shape), outs=(3,))
        assert np.array_equal(got, want)  # one product or sum per element: exactly
    g = rng.normal(size=out_shape)
    for shape in (a_shape, b_shape):
        (_, [want]), (_, [got]) = both("sum_to", g, np.full(shape, np.nan), outs=(1,))
        close(got, want, scale=_sum_to(np.abs(g), shape))
        other = b if shape == a_shape else a
        (_, [want]), (_, [got]) = both("product_sum_to", g, other, np.full(shape, np.nan), outs=(2,))
        close(got, want, scale=_sum_to(np.abs(g * other), shape))


def test_copy_and_bias_row_twins(rng):
    src = rng.normal(size=7)
    (_, [want]), (_, [got]) = both("copy_into", np.empty(7), src, outs=(0,))
    assert np.array_equal(got, want) and np.array_equal(got, src)
    dKb = rng.normal(size=(10, 4))  # 9 taps and the bias row
    (_, want), (_, got) = both("split_bias_row", dKb, np.empty((3, 3, 1, 4)), np.empty(4), outs=(1, 2))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    for f in pair("split_bias_row"):
        with pytest.raises(ValueError, match="different sizes"):
            f(dKb, np.empty((2, 4)), np.empty(4))


@pytest.mark.parametrize("size", [2, 3])
def test_maxpool_twins(size, rng):
    x = rng.normal(size=(2, 2 * size, 3 * size, 3))
    x[0, :size, :size, 0] = 1.5  # a window of ties: the first in row-major order wins
    x[1, :size, size:2 * size, 1] = np.round(x[1, :size, size:2 * size, 1])  # some ties, at 0 too
    x[1, size, size, 2] = np.nan  # a window with a NaN: NaN, and no gradient
    shape = (2, 2, 3, 3)
    (_, want), (_, got) = both("maxpool_forward", x, size, np.empty(shape), np.empty(shape, dtype=np.int64),
                               outs=(2, 3))
    assert np.array_equal(got[0], want[0], equal_nan=True) and np.array_equal(got[1], want[1])
    assert (want[1] == -1).sum() == 1
    g = rng.normal(size=shape)
    (_, [want]), (_, [got]) = both("maxpool_backward", g, want[1], size, np.empty(x.shape), outs=(3,))
    assert np.array_equal(got, want)
    empty = np.empty((0, 2, 2, 1))
    (_, want), (_, got) = both("maxpool_forward", np.empty((0, 4, 4, 1)), 2, empty, empty.astype(np.int64),
                               outs=(2, 3))
    assert got[0].shape == want[0].shape == (0, 2, 2, 1)


def test_sgd_update_twin(rng):
    for shape, grad_shape in (((3, 2), (3, 2)), ((4,), (1, 4)), ((1, 1), (1, 1))):
        param, grad = rng.normal(size=shape), rng.normal(size=grad_shape)
        (_, [want]), (_, [got]) = both("sgd_update", param, grad, 0.3, outs=(0,))
        assert np.array_equal(got, want)  # one multiply and one subtract per element, as the kernel
    with pytest.raises(ValueError, match="different sizes"):
        pair("sgd_update")[1](np.zeros(3), np.zeros(4), 0.1)


# ---------------------------------------------------------------------------------- the switch, in fresh processes

LOOP = """
    import json, sys, time
    import numpy as np
    import fastedf
    from fastedf import fused
    fused.WARM_SECONDS = fused.COLD_SECONDS = 0.0  # fused as soon as the tier allows
    {setup}
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 3)), (rng.random((64, 1)) > 0.5) * 1.0
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(np.full((3, 1), 0.1)), fastedf.Parameter(np.zeros(1))
    loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))
    graph = fastedf.topological_sort(loss)
    loaded_at = None
    for step in range({steps}):
        x.value, y.value = X[step % 8 * 8:step % 8 * 8 + 8], Y[step % 8 * 8:step % 8 * 8 + 8]
        fastedf.forward_pass(graph)
        fastedf.backward_pass(graph)
        fastedf.sgd_update([A, b], 0.1)
        if loaded_at is None and "numba" in sys.modules:
            loaded_at = step
    print(json.dumps({{"loaded_at": loaded_at, "fused": fused.stats["fused_steps"],
                      "numpy_steps": fused.stats["numpy_steps"], "refused": list(fused.stats["refused"].values()),
                      "A": A.value.ravel().tolist(), "loss": float(loss.value)}}))
"""


def run(code, **env):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_loop_switches_to_numba_once_it_has_spent_the_tier_and_gives_the_same_numbers():
    steps = 3000
    numba = run(LOOP.format(steps=steps, setup=""), FASTEDF_NUMPY_TIER_SECONDS="0")
    numpy = run(LOOP.format(steps=steps, setup=""), FASTEDF_NUMPY_TIER_SECONDS="1e9")
    switched = run(LOOP.format(steps=steps, setup=""), FASTEDF_NUMPY_TIER_SECONDS="0.02")
    assert numba["loaded_at"] == 0 and numba["fused"] > 0 and numba["numpy_steps"] == 0
    # fused from the first milliseconds as the NumPy step, which never loads Numba
    assert numpy["loaded_at"] is None and numpy["fused"] == numpy["numpy_steps"] > steps // 2
    # the NumPy step, then the compiled one: the same plan, its buffers kept
    assert 0 < switched["loaded_at"] < steps - 100
    assert 0 < switched["numpy_steps"] < switched["fused"]
    for got in (numpy, switched):
        np.testing.assert_allclose(got["A"], numba["A"], rtol=1e-12)
        np.testing.assert_allclose(got["loss"], numba["loss"], rtol=1e-12)


def test_a_loop_on_the_numpy_step_is_not_also_counted_by_the_tier_through_sgd_update():
    """fastedf.sgd_update calls a twin between the NumPy step's steps; the gaps around those calls are the
    fused loop's, whose plan alone decides when Numba pays (here never: its program would cost 1e9 s)."""
    steps = 4000  # ~0.1 s of steps: five times the tier
    got = run(LOOP.format(steps=steps, setup="fused.WARM_SECONDS = fused.COLD_SECONDS = 1e9"),
              FASTEDF_NUMPY_TIER_SECONDS="0.02")
    assert got["loaded_at"] is None and got["numpy_steps"] > steps // 2


def test_a_loop_whose_program_is_not_compiled_moves_from_the_numpy_step_to_numbas_kernels(tmp_path):
    """Once moving to Numba pays and the program would have to be compiled, the nodes run Numba's kernels node by
    node (faster than the NumPy step) until compiling pays; the numbers stay the node-by-node ones."""
    steps = 3000
    numba = run(LOOP.format(steps=steps, setup=""), FASTEDF_NUMPY_TIER_SECONDS="0")
    got = run(LOOP.format(steps=steps, setup="fused.COLD_SECONDS = 1e9"), FASTEDF_NUMPY_TIER_SECONDS="0.02",
              FASTEDF_CACHE_DIR=str(tmp_path))  # no program compiled here yet
    assert 0 < got["loaded_at"] < steps - 100
    assert got["fused"] == got["numpy_steps"] > 0  # the NumPy step, then node by node: never the program
    assert any("not compiled yet" in why for why in got["refused"])
    np.testing.assert_allclose(got["A"], numba["A"], rtol=1e-12)
    np.testing.assert_allclose(got["loss"], numba["loss"], rtol=1e-12)


def test_fit_numba_typing_a_kernel_and_a_kernel_without_a_twin_load_numba_whatever_the_tier():
    got = run("""
        import json, sys
        import numpy as np
        import fastedf
        from fastedf.ops.activations import sigmoid_forward
        x, y = fastedf.Input(), fastedf.Input()
        A, b = fastedf.Parameter(np.full((2, 1), 0.1)), fastedf.Parameter(np.zeros(1))
        loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))
        before = "numba" in sys.modules
        fastedf.fit(loss, {x: np.ones((4, 2)), y: np.ones((4, 1))}, batch_size=2, epochs=1, lr=0.1)
        after_fit = "numba" in sys.modules
        print(json.dumps([before, after_fit, type(sigmoid_forward).__name__]))
    """, FASTEDF_NUMPY_TIER_SECONDS="1e9")
    assert got == [False, True, "Lazy"]  # imported before activation: a Lazy, now calling Numba's kernel
    typed = run("""
        import json, sys
        import numpy as np
        from fastedf.ops.activations import sigmoid_forward
        z, out = np.zeros(3), np.empty(3)
        sigmoid_forward(z, out)
        twin_ran = "numba" not in sys.modules
        from numba import njit

        @njit
        def outside(z, out):
            sigmoid_forward(z, out)
        outside(z - 1.0, out)
        print(json.dumps([twin_ran, out.tolist()]))
    """, FASTEDF_NUMPY_TIER_SECONDS="1e9")
    assert typed[0] and np.allclose(typed[1], 1 / (1 + np.e), rtol=1e-15)
    no_twin = run("""
        import json, sys
        import numpy as np
        from fastedf import kernels
        twin_ran = (kernels.sgd_update(np.ones(2), np.ones(2), 0.5), "numba" not in sys.modules)[1]
        row = kernels.first_bad_row(np.array([[0.5], [2.0]]), 0.0, 1.0)  # fit's check: no twin
        print(json.dumps([twin_ran, row, "numba" in sys.modules]))
    """, FASTEDF_NUMPY_TIER_SECONDS="1e9")
    assert no_twin == [True, 1, True]


def test_a_bad_tier_setting_warns_and_keeps_the_default():
    got = run("""
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from fastedf import config
        print(json.dumps([config.NUMPY_TIER_SECONDS, [str(w.message) for w in caught]]))
    """, FASTEDF_NUMPY_TIER_SECONDS="soon")
    assert got[0] == config.NUMBA_LOAD_SECONDS and "FASTEDF_NUMPY_TIER_SECONDS='soon'" in got[1][0]
