"""fastedf.study.batch_scaling: steps to target, the gradient noise scale, the critical batch size and the regimes."""
import math

import numpy as np
import pytest

from fastedf.models import logistic_regression, mlp
from fastedf.study import batch_scaling as sc
from fastedf.study.data import study_data
from fastedf.trainer import History

# --------------------------------------------------------------------------- steps to target

# Recorded per-epoch training losses on the study data (study_data(0), logistic_regression(2), no shuffle),
# from fastedf.fit(..., epochs=8), rounded to 4 places:
CURVE = [0.2644, 0.1959, 0.1899, 0.1876, 0.1864, 0.1857, 0.1853, 0.1849]  # batch_size=32, lr=0.1
CURVE_B1 = [0.2768, 0.2842, 0.2842, 0.2842, 0.2842, 0.2842, 0.2842, 0.2842]  # batch_size=1, lr=0.5: rises again


def test_steps_to_target_by_hand():
    assert sc.steps_to_target(CURVE, 0.3) == 1  # already below after the first epoch
    assert sc.steps_to_target(CURVE, 0.1959) == 2  # <= counts: equal reaches
    assert sc.steps_to_target(CURVE, 0.19) == 3  # 0.1899
    assert sc.steps_to_target(CURVE, 0.1860) == 6  # 0.1857
    assert sc.steps_to_target(CURVE, 0.1849) == 8  # the last epoch
    assert sc.steps_to_target(CURVE, 0.18) is None  # never reached
    assert sc.steps_to_target(CURVE_B1, 0.28) == 1  # reached first, then lost: the first time counts
    assert sc.steps_to_target(CURVE_B1, 0.27) is None
    assert sc.steps_to_target(np.array([1.0, np.nan, 0.2]), 0.5) == 3  # a NaN never counts as reached
    assert sc.steps_to_target([np.nan, np.nan], 0.5) is None


def test_epochs_to_target_counts_updates_seconds_examples():
    n, B = 1050, 32
    upe = sc.updates_per_epoch(n, B)
    assert upe == 33  # ceil(1050 / 32): the partial last batch is an update
    got = sc.epochs_to_target(CURVE, 0.19, upe, seconds_per_epoch=0.002, examples_per_epoch=n)
    assert got == sc.ToTarget(epochs=3, updates=99, seconds=pytest.approx(0.006), examples=3150)
    assert sc.epochs_to_target(CURVE, 0.19, upe) == (3, 99, None, None)
    assert sc.epochs_to_target(CURVE, 0.1, upe) is None


def test_history_to_target_reads_a_fit_history():
    n, B, epochs = 1050, 32, len(CURVE)
    history = History(np.array(CURVE), epochs * sc.updates_per_epoch(n, B), 0.016, 1.5, "compiled", None)
    got = sc.history_to_target(history, 0.1860, n_samples=n)
    assert got.epochs == 6 and got.updates == 6 * 33 and got.examples == 6 * n
    assert got.seconds == pytest.approx(0.016 / 8 * 6)  # compile time excluded
    assert sc.history_to_target(history, 0.1) is None
    bad = History(np.array(CURVE), 7, 0.016, 0.0, "compiled", None)
    with pytest.raises(ValueError, match="multiple"):
        sc.history_to_target(bad, 0.5)
    with pytest.raises(ValueError, match="epoch_loss"):
        sc.history_to_target(object(), 0.5)


@pytest.mark.parametrize("curve, target, match", [
    ([], 0.5, "empty"),
    ([[0.5, 0.4]], 0.5, "one-dimensional"),
    (["a", "b"], 0.5, "sequence of numbers"),
    ([0.5], float("nan"), "finite"),
    ([0.5], None, "number"),
])
def test_steps_to_target_rejects_bad_input(curve, target, match):
    with pytest.raises(ValueError, match=match):
        sc.steps_to_target(curve, target)


def test_epoch_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        sc.updates_per_epoch(100, 0)
    with pytest.raises(ValueError, match="n_samples"):
        sc.updates_per_epoch(2.5, 1)
    with pytest.raises(ValueError, match="updates_per_epoch"):
        sc.epochs_to_target(CURVE, 0.5, 0)
    with pytest.raises(ValueError, match="seconds_per_epoch"):
        sc.epochs_to_target(CURVE, 0.5, 3, seconds_per_epoch=-1.0)
    with pytest.raises(ValueError, match="examples_per_epoch"):
        sc.epochs_to_target(CURVE, 0.5, 3, examples_per_epoch=True)


# --------------------------------------------------------------------------- noise scale: the formulas

def test_noise_scale_from_norms_on_exact_expectations():
    # E|G_B|^2 = |G|^2 + tr(Sigma) / B: feed the exact expectations, get the truth back.
    g_sq, trace = 0.25, 4.0
    for b_small, b_big in [(1, 2), (8, 128), (3, 1000)]:
        est = sc.noise_scale_from_norms(g_sq + trace / b_small, g_sq + trace / b_big, b_small, b_big)
        assert est.trace_sigma == pytest.approx(trace, rel=1e-12)
        assert est.g_sq == pytest.approx(g_sq, rel=1e-12)
        assert est.b_simple == pytest.approx(16.0, rel=1e-12)


def test_noise_scale_from_norms_by_hand():
    # |G_small|^2 = 3 at B = 2, |G_big|^2 = 1 at B = 6:
    # |G|^2 = (6 * 1 - 2 * 3) / 4 = 0; tr = (3 - 1) / (1/2 - 1/6) = 6; B_simple = inf (no signal measured).
    est = sc.noise_scale_from_norms(3.0, 1.0, 2, 6)
    assert est.g_sq == 0.0 and est.trace_sigma == pytest.approx(6.0) and est.b_simple == math.inf
    # One step's estimates can be negative: |G_big|^2 > |G_small|^2 gives tr(Sigma) < 0.
    # |G|^2 = (3 * 2 - 1 * 1) / 2 = 2.5; tr = (1 - 2) / (1 - 1/3) = -1.5; B_simple = -0.6.
    est = sc.noise_scale_from_norms(1.0, 2.0, 1, 3)
    assert est.trace_sigma == pytest.approx(-1.5) and est.g_sq == pytest.approx(2.5)
    assert est.b_simple == pytest.approx(-0.6)
    assert sc.noise_scale_from_norms(1.0, 1.0, 1, 2) == (0.0, 1.0, 0.0)  # equal norms: no noise measured
    assert math.isnan(sc.noise_scale_from_norms(0.0, 0.0, 1, 2).b_simple)  # nothing measured at all


@pytest.mark.parametrize("args, match", [
    ((1.0, 1.0, 4, 4), "b_small must be < b_big"),
    ((1.0, 1.0, 8, 4), "b_small must be < b_big"),
    ((1.0, 1.0, 0, 4), "b_small must be > 0"),
    ((-1.0, 1.0, 1, 4), "g_small_sq must be >= 0"),
    ((1.0, float("inf"), 1, 4), "g_big_sq must be finite"),
    ((1.0, "x", 1, 4), "g_big_sq must be a number"),
])
def test_noise_scale_from_norms_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        sc.noise_scale_from_norms(*args)


def test_exact_noise_scale_by_hand():
    # g = (1, 0), (3, 0), (2, 2): G = (2, 2/3); |G|^2 = 4 + 4/9;
    # deviations (-1, -2/3), (1, -2/3), (0, 4/3): tr = (1 + 4/9 + 1 + 4/9 + 16/9) / 3 = (2 + 24/9) / 3.
    got = sc.exact_noise_scale([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0]])
    assert got.g_sq == pytest.approx(4 + 4 / 9)
    assert got.trace_sigma == pytest.approx((2 + 24 / 9) / 3)  # population covariance: divide by N
    assert got.b_simple == pytest.approx(got.trace_sigma / got.g_sq)
    for bad, match in [([1.0, 2.0], "matrix"), (np.zeros((0, 3)), "matrix"), ([[1.0, np.nan]], "finite"),
                       ([["a"]], "numeric")]:
        with pytest.raises(ValueError, match=match):
            sc.exact_noise_scale(bad)


def test_ema_smoother():
    plain = sc.NoiseScaleEMA(decay=None)
    for t, g in [(1.0, 2.0), (3.0, 0.0), (5.0, 1.0)]:
        plain.update(t, g)
    assert plain.value == (pytest.approx(3.0), pytest.approx(1.0), pytest.approx(3.0))  # averages, then divides
    ema = sc.NoiseScaleEMA(decay=0.9)
    for _ in range(5):
        got = ema.update(2.0, 0.5)
        assert got.trace_sigma == pytest.approx(2.0) and got.g_sq == pytest.approx(0.5)  # bias-corrected
    ema.update(12.0, 0.5)  # weights 0.1 / (1 - 0.9^6) on the new value
    assert ema.value.trace_sigma == pytest.approx(2.0 + 10.0 * 0.1 / (1 - 0.9 ** 6))
    last = sc.NoiseScaleEMA(decay=0.0)
    last.update(1.0, 1.0)
    assert last.update(7.0, 2.0) == (7.0, 2.0, 3.5)
    assert ema.steps == 6
    with pytest.raises(ValueError, match="no estimates"):
        _ = sc.NoiseScaleEMA().value
    for decay in (1.0, -0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="decay"):
            sc.NoiseScaleEMA(decay)
    with pytest.raises(ValueError, match="g_sq"):
        sc.NoiseScaleEMA().update(1.0, float("nan"))


# --------------------------------------------------------------------------- noise scale on a model

@pytest.fixture(scope="module")
def study():
    split = study_data(0)
    return split.X_train, split.y_train


def analytic_per_sample_grads(model, X, y):
    """Logistic regression: the gradient of -[y log p + (1-y) log(1-p)] in (A, b) is (p - y) [x, 1]."""
    A, b = model.parameters
    p = 1.0 / (1.0 + np.exp(-(X @ A.value + b.value)))[:, 0]
    return (p - y)[:, None] * np.column_stack([X, np.ones(len(X))])


def logistic_at(A, b):
    model = logistic_regression(2)
    model.parameters[0].value = np.array(A, dtype=np.float64).reshape(2, 1)
    model.parameters[1].value = np.array(b, dtype=np.float64)
    return model


def test_per_sample_gradients_match_the_analytic_ones(study):
    X, y = study
    model = logistic_at([-0.3, 0.4], [0.1])
    exact = analytic_per_sample_grads(model, X, y)
    np.testing.assert_allclose(sc.per_sample_gradients(model, X, y), exact, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sc.batch_gradient(model, X, y), exact.mean(axis=0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("A, b, b_small, b_big, steps", [
    ([-0.3, 0.4], [0.1], 8, 128, 2000),  # B_simple ~ 4.5
    ([-0.6, 0.8], [0.2], 16, 512, 3000),  # nearer the optimum: |G|^2 small, B_simple ~ 107
])
def test_measured_noise_scale_matches_the_closed_form(study, A, b, b_small, b_big, steps):
    """The estimator is unbiased for batches drawn with replacement, so its mean over many steps converges.

    Over 20 seeds the relative spread of the averaged estimates at these
    settings is <= 3% (b_simple: 1.9% and 2.6%), so a 10% tolerance is more
    than 3 standard deviations; the seed is fixed, so the test is deterministic.
    """
    X, y = study
    model = logistic_at(A, b)
    exact = sc.exact_noise_scale(analytic_per_sample_grads(model, X, y))
    before = [p.value.copy() for p in model.parameters]
    got = sc.measure_noise_scale(model, X, y, b_small, b_big, rng=np.random.default_rng(7), steps=steps)
    assert got.trace_sigma == pytest.approx(exact.trace_sigma, rel=0.10)
    assert got.g_sq == pytest.approx(exact.g_sq, rel=0.10)
    assert got.b_simple == pytest.approx(exact.b_simple, rel=0.10)
    for p, value in zip(model.parameters, before):  # measured at fixed weights: no update
        np.testing.assert_array_equal(p.value, value)


def test_measure_noise_scale_smoother_seed_and_feeds(study):
    X, y = study
    model = logistic_at([-0.3, 0.4], [0.1])
    model.x.value, model.y.value = X[:5], y[:5, None]
    a = sc.measure_noise_scale(model, X, y, 4, 16, rng=3, steps=20)
    assert sc.measure_noise_scale(model, X, y, 4, 16, rng=3, steps=20) == a  # an int seed reproduces
    assert model.x.value.shape == (5, 2) and model.y.value.shape == (5, 1)  # the feeds are restored
    smoother = sc.NoiseScaleEMA(decay=0.5)
    sc.measure_noise_scale(model, X, y, 4, 16, rng=1, steps=3, smoother=smoother)
    sc.measure_noise_scale(model, X, y, 4, 16, rng=2, steps=3, smoother=smoother)
    assert smoother.steps == 6  # one smoother follows estimates across calls (epochs)


def test_measure_noise_scale_on_multi_parameter_models():
    # digits-shaped data (64 features in [0, 1], 10 classes) without importing scikit-learn (2.5 s)
    rng = np.random.default_rng(0)
    X, digit = rng.random((150, 64)), rng.integers(0, 10, 150).astype(float)
    # (model, labels, b_small, b_big): B_simple ~ 1 and ~ 40 here; each pair brackets it, where the estimates
    # vary least (relative spread over 20 seeds <= 4% at 1000 steps, so 10% is > 2.5 standard deviations)
    for model, labels, b_small, b_big in [
            (mlp(64, hidden=(8,), seed=0, activation="tanh"), (digit == 3).astype(float), 1, 16),
            (mlp(64, classes=10, seed=0), digit, 4, 64)]:
        grads = sc.per_sample_gradients(model, X, labels)
        n_params = sum(p.value.size for p in model.parameters)
        assert grads.shape == (150, n_params)  # every Parameter, flattened and concatenated
        np.testing.assert_allclose(grads.mean(axis=0), sc.batch_gradient(model, X, labels), atol=1e-12)
        exact = sc.exact_noise_scale(grads)
        got = sc.measure_noise_scale(model, X, labels, b_small, b_big, rng=0, steps=1000)
        assert got.trace_sigma == pytest.approx(exact.trace_sigma, rel=0.10)
        assert got.g_sq == pytest.approx(exact.g_sq, rel=0.10)
        assert got.b_simple == pytest.approx(exact.b_simple, rel=0.10)


def test_measure_noise_scale_rejects_bad_input(study):
    X, y = study
    model = logistic_at([-0.3, 0.4], [0.1])
    for kwargs, match in [({"b_small": 8, "b_big": 8}, "b_small must be < b_big"),
                          ({"b_small": 0, "b_big": 8}, "b_small must be >= 1"),
                          ({"b_small": 2.0, "b_big": 8}, "b_small must be an integer"),
                          ({"b_small": 2, "b_big": 8, "steps": 0}, "steps must be >= 1"),
                          ({"b_small": 2, "b_big": 8, "smoother": "ema"}, "smoother")]:
        with pytest.raises(ValueError, match=match):
            sc.measure_noise_scale(model, X, y, **kwargs)
    with pytest.raises(ValueError, match="rows"):
        sc.measure_noise_scale(model, X, y[:10], 2, 8)
    with pytest.raises(ValueError, match="finite"):
        sc.measure_noise_scale(model, np.full_like(X, np.nan), y, 2, 8)
    with pytest.raises(ValueError, match="one row per sample"):
        sc.measure_noise_scale(model, X[:, 0], y, 2, 8)
    with pytest.raises(ValueError, match="model must have"):
        sc.measure_noise_scale(object(), X, y, 2, 8)


# --------------------------------------------------------------------------- critical batch size

B12 = 2.0 ** np.arange(12)  # 1 .. 2048


@pytest.mark.parametrize("weights", ["relative", "absolute"])
def test_critical_batch_size_recovers_exact_synthetic_data(weights):
    S = 200.0 * (1 + 64.0 / B12)
    got = sc.critical_batch_size(B12, S, weights=weights)
    assert got.s_min == pytest.approx(200.0, rel=1e-9)
    assert got.b_crit == pytest.approx(64.0, rel=1e-9)
    assert got.e_min == pytest.approx(200.0 * 64.0, rel=1e-9)
    # the fitted curve satisfies (S / S_min - 1)(E / E_min - 1) = 1 with E = S B
    E = S * B12
    np.testing.assert_allclose((S / got.s_min - 1) * (E / got.e_min - 1), 1.0, rtol=1e-8)
    np.testing.assert_allclose(sc.predicted_steps(B12, got.s_min, got.e_min), S, rtol=1e-9)


def test_critical_batch_size_with_noise():
    """12 batch sizes x 5 seeds, 5% multiplicative (log-normal) noise: within 10% for every one of 30 draws.

    Over 500 draws the worst relative errors were 3.8% (S_min) and 5.4% (B_crit).
    """
    B = np.repeat(B12, 5)
    S = 200.0 * (1 + 64.0 / B)
    for seed in range(30):
        noisy = S * np.exp(np.random.default_rng(seed).normal(0.0, 0.05, len(S)))
        got = sc.critical_batch_size(B, noisy)
        assert got.s_min == pytest.approx(200.0, rel=0.10)
        assert got.b_crit == pytest.approx(64.0, rel=0.10)


def test_critical_batch_size_uses_examples_per_update():
    n, epochs = 1050, np.array([40, 21, 12, 8, 6, 5])
    B = np.array([1, 4, 16, 64, 256, 1024])
    S = epochs * np.ceil(n / B)  # fit's updates: partial last batches count
    E = epochs * n  # every epoch sees every row once
    assert sc.critical_batch_size(B, S, examples=E) == sc.critical_batch_size(E / S, S)
    assert sc.critical_batch_size(B, S, examples=S * B) == sc.critical_batch_size(B, S)


def test_critical_batch_size_limits():
    B = 2.0 ** np.arange(10)
    perfect = sc.critical_batch_size(B, 1000.0 / B - 1.0)  # would need S_min < 0: clipped
    assert perfect.s_min == 0.0 and perfect.b_crit == math.inf and perfect.e_min > 0
    none = sc.critical_batch_size(B, 100.0 + B)  # steps grow with B: no benefit anywhere
    assert none.e_min == 0.0 and none.b_crit == 0.0 and none.s_min > 0


@pytest.mark.parametrize("args, kwargs, match", [
    (([1, 2, 4], [10, 5]), {}, "3 values but steps has 2"),
    (([1], [10]), {}, "at least 2"),
    (([4, 4, 4], [10, 11, 12]), {}, "two different batch sizes"),
    (([1, 2, 4], [10, None, 3]), {}, "steps must all be finite and > 0"),
    (([1, 0, 4], [10, 5, 3]), {}, "batch_sizes must all be"),
    (([1, 2, 4], [10, 5, 3]), {"weights": "log"}, "weights"),
    (([1, 2, 4], [10, 5, 3]), {"examples": [10, 10]}, "examples has 2"),
    (([[1, 2]], [[10, 5]]), {}, "one-dimensional"),
])
def test_critical_batch_size_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sc.critical_batch_size(*args, **kwargs)


def test_predicted_steps_rejects_bad_input():
    with pytest.raises(ValueError, match="s_min"):
        sc.predicted_steps([1, 2], -1.0, 5.0)
    with pytest.raises(ValueError, match="e_min"):
        sc.predicted_steps([1, 2], 1.0, float("inf"))


# --------------------------------------------------------------------------- regimes

def test_regimes_by_hand():
    B = [1, 2, 4, 8, 16, 32]
    S = [1000, 500, 250, 180, 160, 158]
    slopes = sc.local_slopes(B, S)
    # even log spacing: ends one-sided (log S_1 - log S_0) / log 2, interior (log S_{i+1} - log S_{i-1}) / (2 log 2)
    assert slopes[0] == pytest.approx(-1.0)
    assert slopes[2] == pytest.approx(math.log(180 / 500) / (2 * math.log(2)))  # -0.737
    assert slopes[-1] == pytest.approx(math.log(158 / 160) / math.log(2))
    assert sc.regimes(B, S) == ["perfect scaling", "perfect scaling", "diminishing returns",
                                "diminishing returns", "no benefit", "no benefit"]
    shuffled = [3, 0, 5, 1, 4, 2]  # input order is kept
    assert sc.regimes([B[i] for i in shuffled], [S[i] for i in shuffled]) == [sc.regimes(B, S)[i] for i in shuffled]
    assert sc.regimes(B, S, perfect=-1.5, no_benefit=-0.01) == ["diminishing returns"] * 6


def test_regimes_on_the_model_curve():
    # S = S_min (1 + B_crit / B) has slope -B_crit / (B + B_crit): < -0.8 below B_crit / 4, > -0.2 above 4 B_crit.
    B = 2.0 ** np.arange(13)
    labels = sc.regimes(B, 100.0 * (1 + 100.0 / B))
    expected = ["perfect scaling" if b < 25 else "no benefit" if b > 400 else "diminishing returns" for b in B]
    assert labels == expected


@pytest.mark.parametrize("args, kwargs, match", [
    (([1, 2, 2], [10, 5, 5]), {}, "distinct"),
    (([1, 2], [10, 0]), {}, "steps must all be"),
    (([1, 2, 4], [10, 5]), {}, "3 values but steps has 2"),
    (([1, 2], [10, 5]), {"perfect": -0.2, "no_benefit": -0.8}, "perfect must be < no_benefit"),
    (([1, 2], [10, 5]), {"perfect": float("nan")}, "perfect must be finite"),
])
def test_regimes_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sc.regimes(*args, **kwargs)
