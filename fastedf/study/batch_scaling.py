"""Batch-size science: steps to a target loss, the gradient noise scale, the critical batch size.

Three questions from the literature, as small functions the sweep and the report call:

* How many SGD updates does a batch size B need to bring the training loss to a
  target?  (`steps_to_target`, `epochs_to_target`, `history_to_target`.)
  Shallue et al. 2018, "Measuring the Effects of Data Parallelism on Neural
  Network Training" (arXiv:1811.03600), find three regimes in the steps-to-target
  curve S(B): perfect scaling (S ~ 1/B), diminishing returns, no benefit
  (`regimes`, `local_slopes`).
* Can the knee be predicted before sweeping?  McCandlish, Kaplan, Amodei et al.
  2018, "An Empirical Model of Large-Batch Training" (arXiv:1812.06162): the
  simple noise scale B_simple = tr(Sigma) / |G|^2, with G the true gradient and
  Sigma the per-sample gradient covariance, predicts the critical batch size.
  `noise_scale_from_norms` is their unbiased estimator (appendix A),
  `NoiseScaleEMA` their smoothing, `measure_noise_scale` runs it on a model's
  graph at its current parameters, `exact_noise_scale` is the closed form from
  all per-sample gradients.
* Where is the knee in the measured data?  McCandlish et al. (eq. 2.11) model
  the steps S and examples E = S B to reach a target as
  (S / S_min - 1)(E / E_min - 1) = 1, i.e. S = S_min (1 + B_crit / B) with
  B_crit = E_min / S_min (`critical_batch_size`, `predicted_steps`).

Conventions.  A "step" or "update" is one SGD parameter update.  Counts to a
target are 1-based: reaching the target after the first update is 1.  Sigma is
the POPULATION covariance of the per-sample gradients over the N training
samples (divide by N, not N - 1): a batch of B rows drawn uniformly WITH
replacement has E|G_B|^2 = |G|^2 + tr(Sigma) / B exactly under this
convention, which is what the estimator assumes and what `measure_noise_scale`
samples.  Gradients are those of the per-sample MEAN loss (what fastedf's BCE
and CE backward passes give, whatever the reported loss value's reduction).
"""
import math
from typing import NamedTuple

import numpy as np

from ..graph import backward_pass, forward_pass, topological_sort
from ..node import Parameter

REGIMES = ("perfect scaling", "diminishing returns", "no benefit")
PERFECT_SLOPE = -0.8  # d log S / d log B below this: "perfect scaling"
NO_BENEFIT_SLOPE = -0.2  # above this: "no benefit"


# --------------------------------------------------------------------------- input checks

def _positive_int(name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _finite_number(name, value, positive=False, nonnegative=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _one_dimensional(name, values):
    """`values` as a 1-D float64 array (NaN allowed), or a ValueError naming `name`."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _vector(name, values, positive=True, min_len=1):
    """A 1-D finite float64 array (positive unless told otherwise) of at least min_len entries."""
    arr = _one_dimensional(name, values)
    if len(arr) < min_len:
        raise ValueError(f"{name} needs at least {min_len} values, got {len(arr)}")
    bad = np.flatnonzero(~np.isfinite(arr) | ((arr <= 0) if positive else False))
    if len(bad):
        rule = "finite and > 0" if positive else "finite"
        raise ValueError(f"{name} must all be {rule}, got {arr[bad[0]]:g} at position {bad[0]} "
                         "(None reads as nan: drop runs that never reached the target first)")
    return arr


# --------------------------------------------------------------------------- steps to target

class ToTarget(NamedTuple):
    """Cost of reaching a target loss: epochs, SGD updates, wall seconds and examples (None when not known)."""

    epochs: int
    updates: int
    seconds: float | None
    examples: int | None


def steps_to_target(loss_curve, target):
    """The 1-based index of the first entry of `loss_curve` that is <= `target`, or None if none is.

    For a per-update curve (entry k = loss after update k) this is the number of
    updates to the target; for a per-epoch curve it is the number of epochs.
    NaN entries (a diverged run) never count as reaching the target.
    """
    target = _finite_number("target", target)
    curve = _one_dimensional("loss_curve", loss_curve)
    if len(curve) == 0:
        raise ValueError("loss_curve is empty")
    hits = np.flatnonzero(curve <= target)  # NaN <= target is False
    return int(hits[0]) + 1 if len(hits) else None


def updates_per_epoch(n_samples, batch_size):
    """ceil(n_samples / batch_size): fastedf.fit's updates per epoch (the last partial batch is an update)."""
    n_samples = _positive_int("n_samples", n_samples)
    batch_size = _positive_int("batch_size", batch_size)
    return -(-n_samples // batch_size)


def examples_seen(updates, batch_size, rows):
    """Training rows processed by the first `updates` SGD updates (each epoch: full batches, then the rest)."""
    full, rest = divmod(int(updates), updates_per_epoch(rows, batch_size))
    return full * rows + min(rest * batch_size, rows)


def epochs_to_target(epoch_loss, target, updates_per_epoch, seconds_per_epoch=None, examples_per_epoch=None):
    """Epochs, updates (epochs * updates_per_epoch), seconds and examples until the per-epoch loss is <= target.

    Returns a ToTarget, or None if no epoch reaches the target.  The resolution
    is one epoch: a run that reaches the target during epoch k is charged all k
    epochs' updates (use a per-update curve and `steps_to_target` for finer counts).
    """
    updates_per_epoch = _positive_int("updates_per_epoch", updates_per_epoch)
    if seconds_per_epoch is not None:
        seconds_per_epoch = _finite_number("seconds_per_epoch", seconds_per_epoch, nonnegative=True)
    if examples_per_epoch is not None:
        examples_per_epoch = _positive_int("examples_per_epoch", examples_per_epoch)
    epochs = steps_to_target(epoch_loss, target)
    if epochs is None:
        return None
    return ToTarget(epochs, epochs * updates_per_epoch,
                    None if seconds_per_epoch is None else epochs * seconds_per_epoch,
                    None if examples_per_epoch is None else epochs * examples_per_epoch)


def history_to_target(history, target, n_samples=None):
    """`epochs_to_target` for a fastedf.fit History: updates and seconds per epoch from the history itself.

    seconds_per_epoch = train_time_s / epochs (compile time excluded);
    updates_per_epoch = updates / epochs; examples are counted when n_samples
    (the training rows) is given: every epoch sees each row once.
    """
    curve = np.asarray(getattr(history, "epoch_loss", None), dtype=np.float64)
    if curve.ndim != 1 or len(curve) == 0:
        raise ValueError("history must have a non-empty one-dimensional epoch_loss (a fastedf.fit History)")
    epochs = len(curve)
    updates = _positive_int("history.updates", getattr(history, "updates", None))
    if updates % epochs:
        raise ValueError(f"history.updates ({updates}) is not a multiple of its {epochs} epochs")
    seconds = _finite_number("history.train_time_s", getattr(history, "train_time_s", None), nonnegative=True)
    return epochs_to_target(curve, target, updates // epochs, seconds / epochs, n_samples)


# --------------------------------------------------------------------------- gradient noise scale

class NoiseScale(NamedTuple):
    """tr(Sigma), |G|^2 and B_simple = tr(Sigma) / |G|^2 (estimates or exact values)."""

    trace_sigma: float
    g_sq: float
    b_simple: float


def _ratio(trace_sigma, g_sq):
    """B_simple = tr(Sigma) / |G|^2; inf when the |G|^2 estimate is <= 0 < tr(Sigma), nan when both are <= 0."""
    if g_sq > 0:
        return trace_sigma / g_sq
    return math.inf if trace_sigma > 0 else math.nan


def noise_scale_from_norms(g_small_sq, g_big_sq, b_small, b_big):
    """McCandlish et al. 2018, appendix A: unbiased estimates from squared norms of two batch-mean gradients.

    With G_B the mean gradient over B samples drawn independently,
    E|G_B|^2 = |G|^2 + tr(Sigma) / B.  Two batch sizes give two equations, so

        |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
        tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)

    each unbiased; B_simple = tr(Sigma) / |G|^2 is their ratio, which is NOT
    unbiased: average the two estimates over many steps first (`NoiseScaleEMA`)
    and divide the averages.  A single step's estimates can be negative.
    Returns a NoiseScale of floats.
    """
    g_small_sq = _finite_number("g_small_sq", g_small_sq, nonnegative=True)
    g_big_sq = _finite_number("g_big_sq", g_big_sq, nonnegative=True)
    b_small = _finite_number("b_small", b_small, positive=True)
    b_big = _finite_number("b_big", b_big, positive=True)
    if not b_small < b_big:
        raise ValueError(f"b_small must be < b_big, got b_small={b_small:g}, b_big={b_big:g}")
    g_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace_sigma = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return NoiseScale(trace_sigma, g_sq, _ratio(trace_sigma, g_sq))


class NoiseScaleEMA:
    """Smooths per-step (tr(Sigma), |G|^2) estimates separately, then divides (McCandlish et al., appendix A.1).

    decay in [0, 1): a bias-corrected exponential moving average,
    m_t = decay m_{t-1} + (1 - decay) x_t, reported as m_t / (1 - decay^t)
    (as in Adam), so a constant input reads back unchanged from the first
    step; decay = 0 keeps only the last step.  decay=None: the plain mean of
    all steps so far (right at fixed parameters, where every step estimates
    the same quantities).  Keep one smoother across epochs to follow training.
    """

    def __init__(self, decay=0.9):
        if decay is not None:
            decay = _finite_number("decay", decay, nonnegative=True)
            if decay >= 1:
                raise ValueError(f"decay must be in [0, 1) or None, got {decay!r}")
        self.decay = decay
        self.steps = 0
        self._trace = self._g_sq = 0.0

    def update(self, trace_sigma, g_sq):
        """Add one step's estimates (or a NoiseScale's first two fields); returns the smoothed NoiseScale."""
        trace_sigma = _finite_number("trace_sigma", trace_sigma)
        g_sq = _finite_number("g_sq", g_sq)
        self.steps += 1
        weight = 1.0 / self.steps if self.decay is None else 1.0 - self.decay
        self._trace += weight * (trace_sigma - self._trace)
        self._g_sq += weight * (g_sq - self._g_sq)
        return self.value

    @property
    def value(self):
        """The smoothed NoiseScale; ValueError before the first update."""
        if self.steps == 0:
            raise ValueError("NoiseScaleEMA has no estimates yet: call update() first")
        correction = 1.0 if self.decay is None else 1.0 - self.decay ** self.steps
        trace_sigma, g_sq = self._trace / correction, self._g_sq / correction
        return NoiseScale(trace_sigma, g_sq, _ratio(trace_sigma, g_sq))


def exact_noise_scale(per_sample_grads):
    """The closed form from all N per-sample gradients g_i (the rows of an (N, P) matrix).

        G = (1/N) sum_i g_i,   |G|^2,   tr(Sigma) = (1/N) sum_i |g_i - G|^2

    Sigma is the population covariance (divide by N): the covariance of one
    row drawn uniformly from the N, which sampling with replacement sees.
    """
    try:
        grads = np.asarray(per_sample_grads, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("per_sample_grads must be a numeric (N, P) matrix") from None
    if grads.ndim != 2 or grads.shape[0] < 1 or grads.shape[1] < 1:
        raise ValueError(f"per_sample_grads must be an (N, P) matrix with N, P >= 1, got shape {grads.shape}")
    if not np.all(np.isfinite(grads)):
        raise ValueError("per_sample_grads must be finite")
    mean = grads.mean(axis=0)
    g_sq = float(mean @ mean)
    trace_sigma = float(np.mean(np.sum((grads - mean) ** 2, axis=1)))
    return NoiseScale(trace_sigma, g_sq, _ratio(trace_sigma, g_sq))


def _model_parameters(model):
    params = list(getattr(model, "parameters", None) or [])
    if not params:
        params = [n for n in topological_sort(model.loss) if isinstance(n, Parameter)]
    if not params:
        raise ValueError("the model's loss depends on no Parameter")
    return params


def _model_data(model, X, Y):
    for attr in ("x", "y", "loss"):
        if not hasattr(model, attr):
            raise ValueError(f"model must have x, y and loss (a fastedf.models.Model); it has no {attr!r}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim < 2 or len(X) == 0:
        raise ValueError(f"X must have one row per sample (at least 2-D, non-empty), got shape {X.shape}")
    Y = model.labels(Y) if hasattr(model, "labels") else np.asarray(Y, dtype=np.float64)
    if len(Y) != len(X):
        raise ValueError(f"X has {len(X)} rows but Y has {len(Y)}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise ValueError("X and Y must be finite")
    return X, Y


def _mean_gradient(model, graph, params, X, Y):
    """Flattened gradient of the mean loss over the rows of X at the current parameters (no update)."""
    model.x.value = X
    model.y.value = Y
    forward_pass(graph)
    backward_pass(graph)
    return np.concatenate([np.ravel(p.gradients[p]) for p in params])  # concatenate copies: buffers get reused


class _Feeds:
    """Restores the model's x and y values on exit, so measuring leaves the graph's inputs as they were."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.saved = (self.model.x.value, self.model.y.value)

    def __exit__(self, *exc):
        self.model.x.value, self.model.y.value = self.saved


def batch_gradient(model, X, Y):
    """The gradient of the model's mean loss over all rows of X, every Parameter's flattened and concatenated."""
    X, Y = _model_data(model, X, Y)
    params = _model_parameters(model)
    with _Feeds(model):
        return _mean_gradient(model, topological_sort(model.loss), params, X, Y)


def per_sample_gradients(model, X, Y):
    """(N, P): row i is the gradient of sample i's loss (one forward/backward per row; for exact checks)."""
    X, Y = _model_data(model, X, Y)
    params = _model_parameters(model)
    graph = topological_sort(model.loss)
    with _Feeds(model):
        return np.stack([_mean_gradient(model, graph, params, X[i:i + 1], Y[i:i + 1]) for i in range(len(X))])


def measure_noise_scale(model, X, Y, b_small, b_big, rng=None, steps=100, decay=None, smoother=None):
    """Estimate B_simple at the model's CURRENT parameters from `steps` pairs of sampled batches.

    Each step draws b_big row indices uniformly WITH replacement from X (so the
    estimator's E|G_B|^2 = |G|^2 + tr(Sigma)/B holds exactly, Sigma the
    population covariance over the rows); the small batch is the first b_small
    of them.  The mean gradient over each batch comes from a forward and a
    backward pass over the model's graph, all Parameters' gradients flattened
    into one vector; no update is made.  Each step's unbiased estimates
    (`noise_scale_from_norms`) go into `smoother` (a NoiseScaleEMA; a new one
    with `decay` when None: decay=None averages all steps equally), whose
    smoothed NoiseScale is returned.  rng: a numpy Generator or a seed.
    The estimates vary least when b_small <~ B_simple <~ b_big.  Cost:
    steps * (b_small + b_big) rows of forward and backward.
    """
    X, Y = _model_data(model, X, Y)
    b_small = _positive_int("b_small", b_small)
    b_big = _positive_int("b_big", b_big)
    if not b_small < b_big:
        raise ValueError(f"b_small must be < b_big, got b_small={b_small}, b_big={b_big}")
    steps = _positive_int("steps", steps)
    if smoother is None:
        smoother = NoiseScaleEMA(decay)
    elif not isinstance(smoother, NoiseScaleEMA):
        raise ValueError(f"smoother must be a NoiseScaleEMA, got {type(smoother).__name__}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    params = _model_parameters(model)
    graph = topological_sort(model.loss)
    with _Feeds(model):
        for _ in range(steps):
            rows = rng.integers(0, len(X), size=b_big)
            g_big = _mean_gradient(model, graph, params, X[rows], Y[rows])
            g_small = _mean_gradient(model, graph, params, X[rows[:b_small]], Y[rows[:b_small]])
            estimate = noise_scale_from_norms(float(g_small @ g_small), float(g_big @ g_big), b_small, b_big)
            smoother.update(estimate.trace_sigma, estimate.g_sq)
    return smoother.value


# --------------------------------------------------------------------------- critical batch size

class CriticalBatch(NamedTuple):
    """S_min (fewest updates, B -> inf), E_min (fewest examples, B -> 0) and B_crit = E_min / S_min."""

    s_min: float
    e_min: float
    b_crit: float


def predicted_steps(batch_sizes, s_min, e_min):
    """S(B) = S_min + E_min / B = S_min (1 + B_crit / B), the steps-to-target model of McCandlish et al. (eq. 2.11).

    Written with E_min so the fit's limits (s_min = 0 or e_min = 0) need no special case.
    """
    B = _vector("batch_sizes", batch_sizes)
    s_min = _finite_number("s_min", s_min, nonnegative=True)
    e_min = _finite_number("e_min", e_min, nonnegative=True)
    return s_min + e_min / B


def critical_batch_size(batch_sizes, steps, examples=None, weights="relative"):
    """Fit (S / S_min - 1)(E / E_min - 1) = 1 to steps-to-target data; returns CriticalBatch(s_min, e_min, b_crit).

    With E = S B the relation is S = S_min + E_min / B, linear in 1/B:
    least squares of S against [1, 1/B] gives S_min (intercept) and
    E_min (slope), and B_crit = E_min / S_min.  weights="relative" (default)
    minimises sum((fit_i - S_i) / S_i)^2, so the many-step small-B points do
    not swamp the rest and multiplicative noise is weighted evenly;
    "absolute" minimises sum(fit_i - S_i)^2.  Both coefficients are kept
    >= 0 (a two-variable non-negative least squares): s_min = 0, b_crit = inf
    means perfect scaling through the largest B (the knee lies beyond the
    data); e_min = 0, b_crit = 0 means no benefit from larger batches anywhere.

    examples (optional): examples processed to the target per run.  When
    given, the fit uses each run's examples per update E / S as its batch
    size (with a partial last batch per epoch it is below the nominal B).
    Runs that never reached the target must be dropped first.
    """
    B = _vector("batch_sizes", batch_sizes, min_len=2)
    S = _vector("steps", steps, min_len=2)
    if len(S) != len(B):
        raise ValueError(f"batch_sizes has {len(B)} values but steps has {len(S)}")
    if examples is not None:
        E = _vector("examples", examples, min_len=2)
        if len(E) != len(B):
            raise ValueError(f"batch_sizes has {len(B)} values but examples has {len(E)}")
        B = E / S
    if weights not in ("relative", "absolute"):
        raise ValueError(f"weights must be 'relative' or 'absolute', got {weights!r}")
    if np.ptp(B) <= 1e-12 * np.max(B):
        raise ValueError("critical_batch_size needs at least two different batch sizes")
    w = 1.0 / S if weights == "relative" else np.ones_like(S)
    design = np.column_stack([w, w / B])  # rows [1, 1/B] * w
    target = w * S

    def residual(coef):
        return float(np.sum((design @ coef - target) ** 2))

    candidates = []
    coef = np.linalg.lstsq(design, target, rcond=None)[0]
    if np.all(coef >= 0):
        candidates.append(coef)
    for column in (0, 1):  # the constrained optimum otherwise lies on an axis, where the 1-D fit is > 0
        only = design[:, column]
        c = np.zeros(2)
        c[column] = (only @ target) / (only @ only)
        candidates.append(c)
    s_min, e_min = (float(v) for v in min(candidates, key=residual))
    b_crit = e_min / s_min if s_min > 0 else math.inf
    return CriticalBatch(s_min, e_min, b_crit)


# --------------------------------------------------------------------------- regimes

def local_slopes(batch_sizes, steps):
    """d log S / d log B at each point (input order): np.gradient over the points sorted by B.

    Interior points use the second-order central difference for uneven
    spacing, the two ends a one-sided difference.  Batch sizes must be
    distinct (aggregate seeds first, e.g. the median steps per B).
    """
    B = _vector("batch_sizes", batch_sizes, min_len=2)
    S = _vector("steps", steps, min_len=2)
    if len(S) != len(B):
        raise ValueError(f"batch_sizes has {len(B)} values but steps has {len(S)}")
    order = np.argsort(B, kind="stable")
    logB, logS = np.log(B[order]), np.log(S[order])
    if np.any(np.diff(logB) <= 0):
        raise ValueError("batch_sizes must be distinct: aggregate repeated runs (e.g. median steps per B) first")
    slopes = np.empty_like(B)
    slopes[order] = np.gradient(logS, logB)
    return slopes


def regimes(batch_sizes, steps, perfect=PERFECT_SLOPE, no_benefit=NO_BENEFIT_SLOPE):
    """Label each point by the local slope s = d log S / d log B (Shallue et al. 2018's three regimes).

    s < perfect (-0.8): "perfect scaling" (doubling B nearly halves the steps);
    s > no_benefit (-0.2): "no benefit"; otherwise "diminishing returns".
    Under S = S_min (1 + B_crit / B) the slope is -B_crit / (B + B_crit), so
    the default thresholds fall at B = B_crit / 4 and B = 4 B_crit (and the
    slope is -1/2 at B_crit).  Returns a list of labels in input order.
    """
    perfect = _finite_number("perfect", perfect)
    no_benefit = _finite_number("no_benefit", no_benefit)
    if not perfect < no_benefit:
        raise ValueError(f"perfect must be < no_benefit, got perfect={perfect:g}, no_benefit={no_benefit:g}")
    slopes = local_slopes(batch_sizes, steps)
    return [REGIMES[0] if s < perfect else REGIMES[2] if s > no_benefit else REGIMES[1] for s in slopes]
