"""fastedf.vexp: the vectorisable exp (Sigmoid, Softmax) against np.exp, its tanh (Tanh) against np.tanh,
its log (BCE) against np.log.

Bounds: exp at most 1 ulp from np.exp wherever that is finite and nonzero
(subnormals included), exactly NumPy's 0, inf and NaN at the edges; tanh at
most 2 ulp from np.tanh, exactly +-1 at the ends, NaN for NaN; log at most 1 ulp from np.log on
the positive normal floats (its domain), exactly 0 at 1.
"""
import numpy as np
from numba import njit

from fastedf.ops.activations import sigmoid_forward, tanh_forward
from fastedf.vexp import exp, log


@njit(error_model="numpy")
def exp_all(x, out):
    for i in range(x.size):
        out[i] = exp(x[i])


def ulps_apart(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


def test_within_one_ulp_over_the_whole_range(rng):
    x = np.concatenate([rng.uniform(-746.0, 710.0, 400_000), rng.uniform(-1.0, 1.0, 200_000),
                        rng.uniform(-1e-300, 1e-300, 1000), np.arange(-745, 710, 0.5)])
    with np.errstate(over="ignore"):
        got, want = np.empty_like(x), np.exp(x)
    exp_all(x, got)
    finite = np.isfinite(want) & (want > 0)
    assert ulps_apart(got[finite], want[finite]).max() <= 1.0
    assert np.array_equal(got[~finite], want[~finite])


def test_edges_are_numpys():
    with np.errstate(over="ignore"):
        x = np.array([-np.inf, -1e308, -746.0, -745.2, -708.5, -0.0, 0.0, 709.78, 709.79, 710.0, 1e308, np.inf])
        want = np.exp(x)
    got = np.empty_like(x)
    exp_all(x, got)
    assert np.array_equal(got, want)
    nan = np.empty(1)
    exp_all(np.array([np.nan]), nan)
    assert np.isnan(nan[0])


def test_sigmoid_kernel_matches_numpy_to_a_few_ulps(rng):
    z = np.concatenate([rng.normal(0, 5, 5000), [0.0, -0.0, 40.0, -40.0, 800.0, -800.0, np.inf, -np.inf, np.nan]])
    out = np.empty_like(z)
    sigmoid_forward(z, out)
    with np.errstate(over="ignore"):
        want = 1.0 / (1.0 + np.exp(-z))
    finite = np.isfinite(z)
    np.testing.assert_allclose(out[finite], want[finite], rtol=1e-15, atol=0)  # a few ulps: two roundings
    assert list(out[~finite][:2]) == [1.0, 0.0] and np.isnan(out[-1])


def test_tanh_within_two_ulp(rng):
    x = np.concatenate([rng.normal(0, 1, 200_000), rng.uniform(-1e-8, 1e-8, 10_000), rng.uniform(-30, 30, 50_000),
                        [0.625, -0.625, np.nextafter(0.625, 0), 1e-310, 400.0, -400.0, np.inf, -np.inf, np.nan]])
    got, want = np.empty_like(x), np.tanh(x)
    tanh_forward(x, got)
    finite = np.isfinite(x) & (want != 0)
    assert ulps_apart(got[finite], want[finite]).max() <= 2.0
    assert list(got[-5:-1]) == [1.0, -1.0, 1.0, -1.0] and np.isnan(got[-1])
    zeros = np.empty(2)
    tanh_forward(np.array([-0.0, 0.0]), zeros)
    assert list(np.signbit(zeros)) == [True, False]  # -0.0 stays -0.0, as in NumPy


@njit(error_model="numpy")
def log_all(x, out):
    for i in range(x.size):
        out[i] = log(x[i])


def test_log_within_one_ulp_on_positive_normal_floats(rng):
    tiny, huge = np.finfo(float).tiny, np.finfo(float).max
    edges = [tiny, huge, 1e-12, 1 - 1e-12, 0.5, 1.0, 2.0, np.sqrt(2.0), np.sqrt(0.5), np.nextafter(np.sqrt(2.0), 0)]
    x = np.concatenate([rng.uniform(1e-12, 1.0, 400_000), 10.0 ** rng.uniform(-307.5, 308.2, 400_000),
                        rng.uniform(0.5, 2.0, 100_000), edges])
    got, want = np.empty_like(x), np.log(x)
    log_all(x, got)
    nonzero = want != 0
    assert ulps_apart(got[nonzero], want[nonzero]).max() <= 1.0
    assert np.all(got[~nonzero] == 0.0) and np.any(~nonzero)
