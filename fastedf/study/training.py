"""How a run of `fastedf sweep` trains, beyond a plain `fastedf.fit`.

* `ModelSpec`: the model a run trains (logistic regression, or an MLP), built
  fresh from the seed in every run and in every worker.
* `sgd_path`: the SGD run of fit, node by node (fastedf's graph engine, whose
  numbers are the compiled engine's), with the loss over the WHOLE training
  set measured after every update, or every `loss_stride` updates where that
  is too costly (`loss_stride`), and with one of three batch samplings
  (SAMPLINGS).  `LossRecords` keeps what steps to ANY target need from the
  per-update curve: its running minima (first passage) and its suffix maxima
  (the first update after which the loss stays at or below the target).
* `train_numpy_edf`: the course's training loop on the plain NumPy EDF
  (fastedf.numpy_edf), node by node, with the same model, initial weights and
  batches: the baseline of the time comparison (`--with-edf`).
* `noise_trajectory`: B_simple (fastedf.study.batch_scaling.measure_noise_scale) at the
  start and after chosen epochs of a reference run.

Everything here is a function of its arguments; fastedf.study.one_run.execute composes
them into one run (a RunSpec in, a row and a curve out).
"""
import math
import time
from dataclasses import dataclass

import numpy as np

from .. import numpy_edf as edf
from ..graph import backward_pass, forward_pass, graph_run, sgd_update, topological_sort
from ..models import mlp
from ..node import Input, Parameter
from ..trainer import EpochOrder
from . import batch_scaling
from .batch_scaling import updates_per_epoch

CHECKPOINTS_PER_DOUBLING = 8  # the loss curve kept for the figures: update counts 2**(k/8)


@dataclass(frozen=True)
class ModelSpec:
    """An MLP with these hidden widths and activation (hidden=(): logistic regression), weights N(0, init_scale^2).

    The head follows the data: sigmoid/BCE for 0/1 labels (classes=1),
    softmax/CE over `classes` > 1 (fastedf.models.mlp).
    """

    hidden: tuple = ()
    activation: str = "sigmoid"
    init_scale: float = 0.1

    def build(self, n_features, classes=1, seed=0):
        return mlp(n_features, tuple(self.hidden), seed, self.init_scale, self.activation, classes)

    def widths(self, n_features, classes=1):
        return (n_features, *self.hidden, classes)

    def n_parameters(self, n_features, classes=1):
        """Weights and biases: sum over layers of (n_in + 1) * n_out."""
        w = self.widths(n_features, classes)
        return sum((a + 1) * b for a, b in zip(w[:-1], w[1:]))

    def describe(self, n_features, classes=1):
        """'logistic regression: sigmoid(x @ A + b), BCE, ...' (the study's words) or the MLP's layers."""
        init = f"weights N(0, {self.init_scale:g}^2) from the seed, bias 0"
        if not self.hidden:
            if classes == 1:
                return f"logistic regression: sigmoid(x @ A + b), BCE, {init}"
            return f"softmax regression: softmax(x @ A + b), CE over {classes} classes, {init}"
        layers = " -> ".join(str(w) for w in self.widths(n_features, classes))
        head = "sigmoid, BCE" if classes == 1 else "softmax, CE"
        return f"MLP {layers}, {self.activation} hidden layers, {head}, {init}"


# ---------------------------------------------------------------- checkpointed training

def checkpoint_schedule(total_updates, per_doubling=CHECKPOINTS_PER_DOUBLING):
    """Update counts to measure at: 0, then ceil(2**(k / per_doubling)) for k = 0, 1, ... below total, then total.

    Every integer up to about per_doubling * 1.44, then geometric: about
    per_doubling * log2(total) checkpoints in all (118 for 10**5 updates at 8).
    """
    points, k = [0], 0
    while True:
        u = math.ceil(2 ** (k / per_doubling) - 1e-9)
        if u >= total_updates:
            break
        if u > points[-1]:
            points.append(u)
        k += 1
    if total_updates > 0:
        points.append(int(total_updates))
    return points


SAMPLINGS = ("fixed", "shuffled", "iid")  # --sampling: how each update's batch is drawn (BatchSampler)
# Multiply-adds (rows x parameters per evaluation) a run may spend on whole-training-set losses: measured after
# every update up to it, every k-th update beyond (loss_stride).  About a second: a digits MLP's loss (2410
# parameters, 1348 rows) took 1.5 ms.  The study at B = 1 over 100 epochs needs 3.3e8 (stride 1); the digits
# MLP over 30 epochs at B = 1 about 1.3e11 (stride 66, 5% of an epoch; stride 1 from B = 64).
LOSS_BUDGET = 2e9


def sampling_of(shuffle, sampling=None):
    """The sampling a run uses: `sampling` when given, else fit's epochs (shuffled or in fixed order)."""
    if sampling is None:
        return "shuffled" if shuffle else "fixed"
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    return sampling


class BatchSampler:
    """The (X, Y) rows of each update's batch of B rows, under one of SAMPLINGS.

    fixed: the rows in their order, epoch after epoch, B at a time, the last
    batch of an epoch holding the rest (fit with shuffle=False).
    shuffled: the same over a fresh permutation each epoch, fit's own
    (trainer.EpochOrder with shuffle=True and the seed).
    iid: every batch is B rows drawn uniformly WITH replacement, independently
    of every other batch (the noise-scale theory's assumption): update t's rows
    are the t-th call of numpy.random.default_rng(seed).integers(0, n, size=B),
    one generator per run.  An epoch is ceil(n / B) updates under every sampling.
    """

    def __init__(self, X, Y, batch_size, sampling, seed):
        self.X, self.Y, self.batch_size, self.sampling = X, Y, min(int(batch_size), len(X)), sampling
        if sampling == "iid":
            self.rng = np.random.default_rng(seed)
        else:
            self.order = EpochOrder({0: X, 1: Y}, sampling == "shuffled", int(seed) if sampling == "shuffled" else None)
            self.start, self.data = len(X), None

    def next(self):
        """The next update's (x rows, y rows)."""
        if self.sampling == "iid":
            rows = self.rng.integers(0, len(self.X), size=self.batch_size)
            return self.X[rows], self.Y[rows]
        if self.start >= len(self.X):
            self.data, self.start = self.order.next_epoch(), 0
        stop = min(self.start + self.batch_size, len(self.X))
        batch = self.data[0][self.start:stop], self.data[1][self.start:stop]
        self.start = stop
        return batch


def loss_stride(rows, parameters, updates, budget=LOSS_BUDGET):
    """1 when measuring the whole-training-set loss after every update fits `budget`, else the stride that does."""
    return max(1, math.ceil(updates * rows * parameters / budget))


def sgd_path(model, X, Y, batch_size, updates, lr, sampling, seed, measure, at):
    """Train `model` for `updates` SGD updates; returns (measurements [(u, measure(model, u))], diverged_at).

    Every update is fit's step, node by node (forward, backward, p -= lr * grad:
    the graph engine's, whose numbers the compiled engine reproduces), on the
    batches of BatchSampler(sampling, seed).  `at`: the increasing update counts
    (0 is before training) after which `measure` is called.  A step whose loss
    or weights become NaN or inf ends the run: diverged_at is that update
    (else None), the parameters are left as it left them.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    graph = topological_sort(model.loss)
    parameters = [n for n in graph if isinstance(n, Parameter)]
    sampler = BatchSampler(X, Y, batch_size, sampling, seed)
    measured, points, done = [], iter(at), 0
    point = next(points, None)
    with graph_run(graph):
        while point is not None:
            while done < min(point, updates):
                model.x.value, model.y.value = sampler.next()
                with np.errstate(all="ignore"):
                    try:
                        forward_pass(graph)
                    except ValueError:  # a non-finite prediction
                        return measured, done + 1
                    backward_pass(graph)
                    sgd_update(parameters, lr)
                done += 1
                if not all(np.all(np.isfinite(p.value)) for p in parameters):
                    return measured, done
            value = measure(model, done)
            if not math.isfinite(value):
                return measured, done
            measured.append((done, value))
            point = next(points, None)
    return measured, None


@dataclass
class LossRecords:
    """What steps to any target need from a measured loss curve (update counts >= 1), in two short lists.

    lows: [u, loss] where the loss is below every earlier measured loss (first
    passage: the first update whose loss is <= the target is a low);
    highs: [u, loss] where the loss is above every later measured loss (the
    last update above the target is a high); stride: the updates between
    measurements (1: every update); last: the last measured update.
    """

    lows: list
    highs: list
    stride: int
    last: int

    @classmethod
    def of(cls, points, stride):
        """From measured [(u, loss), ...] (u increasing; u = 0 is ignored)."""
        after = [(int(u), float(v)) for u, v in points if u > 0]
        lows, highs = [], []
        for u, v in after:
            if not lows or v < lows[-1][1]:
                lows.append([u, v])
        for u, v in reversed(after):
            if not highs or v > highs[-1][1]:
                highs.append([u, v])
        return cls(lows, highs[::-1], int(stride), after[-1][0] if after else 0)

    def first_passage(self, target):
        """The first measured update whose whole-training-set loss is <= target, or None."""
        return next((u for u, v in self.lows if v <= target), None)

    def stays_below(self, target):
        """The first measured update after which (it included) every measured loss of the run is <= target, or
        None when the last one is above it."""
        above = [u for u, v in self.highs if v > target]
        if not above:
            return min(self.stride, self.last) if self.last else None
        return None if above[-1] >= self.last else min(above[-1] + self.stride, self.last)


def loss_records(model, X, Y, batch_size, epochs, lr, sampling, seed, per_doubling=CHECKPOINTS_PER_DOUBLING):
    """Train one run measuring its whole-training-set loss after every update (or every loss_stride updates).

    Returns (LossRecords, curve: [[u, loss]] at the measured updates nearest
    2**(k / per_doubling), for the figures, diverged_at or None).
    """
    rows = len(X)
    total = epochs * updates_per_epoch(rows, min(int(batch_size), rows))
    stride = loss_stride(rows, sum(p.value.size for p in model.parameters), total)
    at = [*range(0, total, stride), total] if total else [0]
    measured, diverged = sgd_path(model, X, Y, batch_size, total, lr, sampling, seed,
                                  lambda m, _: m.mean_loss(X, Y), at)
    grid = {min(-(-u // stride) * stride, total) for u in checkpoint_schedule(total, per_doubling)}
    curve = [[u, v] for u, v in measured if u in grid]
    return LossRecords.of(measured, stride), curve, diverged


# ---------------------------------------------------------------- the NumPy EDF course loop

def numpy_edf_graph(model, edf):
    """The graph of a fastedf.models Model rebuilt from `edf`'s nodes (module fastedf.numpy_edf), same weights.

    Returns (x, y, graph in topological order, trainable Parameters, loss node).
    """

    kinds = {"Linear": edf.Linear, "Sigmoid": edf.Sigmoid, "ReLU": edf.ReLU, "Tanh": edf.Tanh,
             "Softmax": edf.Softmax, "BCE": edf.BCE, "CE": edf.CE}
    made, graph, trainable = {}, [], []
    for node in topological_sort(model.loss):
        if isinstance(node, Parameter):
            made[node] = edf.Parameter(np.array(node.value, dtype=np.float64))
            trainable.append(made[node])
        elif isinstance(node, Input):
            made[node] = edf.Input()
        else:
            kind = next((k for k in type(node).__mro__ if k.__name__ in kinds), None)
            if kind is None:
                raise ValueError(f"the NumPy EDF loop has no node for {type(node).__name__}")
            made[node] = kinds[kind.__name__](*(made[i] for i in node.inputs))
        graph.append(made[node])
    return made[model.x], made[model.y], graph, trainable, made[model.loss]


def train_numpy_edf(model, X, Y, batch_size, epochs, lr, shuffle, seed):
    """The course loop on the plain NumPy EDF: forward every node, backward in reverse, t.value -= lr * grad.

    Same model and initial weights as `model` (a fastedf.models Model, left
    untouched), same batches in the same order as fit(shuffle, seed).
    Returns (epoch_loss (epochs,), seconds of the loop, trained parameter arrays
    in the order of model.parameters).
    """

    x, y, graph, trainable, loss = numpy_edf_graph(model, edf)
    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    rows = len(X)
    batch_size = min(int(batch_size), rows)
    summed = isinstance(loss, edf.BCE)  # BCE's value is the batch's sum, CE's the batch mean
    order = EpochOrder({x: X, y: Y}, shuffle, int(seed) if shuffle else None)
    epoch_loss = np.zeros(epochs)
    start = time.perf_counter()
    for epoch in range(epochs):
        data = order.next_epoch()
        xs, ys = data[x], data[y]
        total = 0.0
        for lo in range(0, rows, batch_size):
            x.value, y.value = xs[lo:lo + batch_size], ys[lo:lo + batch_size]
            edf.course_step(graph, trainable, lr)
            total += float(loss.value) if summed else float(loss.value) * len(x.value)
        epoch_loss[epoch] = total / rows
    seconds = time.perf_counter() - start
    if not all(np.all(np.isfinite(t.value)) for t in trainable):
        raise ValueError(f"training diverged on the NumPy EDF: a parameter became NaN or inf; lower the learning "
                         f"rate {lr}")
    return epoch_loss, seconds, [t.value for t in trainable]


# ---------------------------------------------------------------- the gradient noise scale during training

NOISE_B_SMALL, NOISE_B_BIG = 8, 512  # the two batch sizes of the estimator (drawn with replacement)
NOISE_STEPS = 100  # pairs of batches per measurement, averaged (batch_scaling.NoiseScaleEMA(decay=None))
NOISE_POINTS = 12  # measurements after epochs, log-spaced, besides the one at the start
EXACT_NOISE_ROWS = 5000  # also the exact B_simple from every per-sample gradient up to this many training rows


def noise_epochs(epochs, points=NOISE_POINTS):
    """Epochs after which to measure: 0 (the start), then every epoch up to `points`, else `points` log-spaced."""
    if epochs <= points:
        return list(range(epochs + 1))
    spaced = np.unique(np.round(np.geomspace(1, epochs, points)).astype(int))
    return [0, *map(int, spaced)]


def noise_trajectory(model, X, y, batch_size, epochs, lr, sampling, seed, at_epochs,
                     b_small=NOISE_B_SMALL, b_big=NOISE_B_BIG, steps=NOISE_STEPS, exact=None):
    """B_simple along a training run: a dict per epoch in `at_epochs`, measured at the weights after that epoch.

    The run is fit's step on `sampling`'s batches (sgd_path, stopped at those epochs' ends).
    Each dict: epoch, updates, train_loss (whole training set), and
    batch_scaling.measure_noise_scale's trace_sigma, g_sq, b_simple (from `steps`
    pairs of batches of b_small and b_big rows drawn with replacement, plainly
    averaged); b_simple_exact from all per-sample gradients when `exact`
    (default: up to EXACT_NOISE_ROWS rows), else None.  Stops early, with the
    points measured so far, if training diverges.
    """

    if exact is None:
        exact = len(X) <= EXACT_NOISE_ROWS
    rng = np.random.default_rng(seed)
    per_epoch = updates_per_epoch(len(X), min(int(batch_size), len(X)))
    points = []

    def measure(m, updates):
        estimate = batch_scaling.measure_noise_scale(m, X, y, b_small, b_big, rng=rng, steps=steps, decay=None)
        point = {"epoch": updates // per_epoch, "updates": int(updates), "train_loss": m.mean_loss(X, y),
                 "trace_sigma": estimate.trace_sigma, "g_sq": estimate.g_sq, "b_simple": estimate.b_simple,
                 "b_simple_exact": None}
        if exact:
            gradients = batch_scaling.per_sample_gradients(m, X, y)
            point["b_simple_exact"] = batch_scaling.exact_noise_scale(gradients).b_simple
        points.append(point)
        return point["train_loss"]

    sgd_path(model, X, model.labels(y), batch_size, max(at_epochs) * per_epoch, lr, sampling, seed, measure,
             [e * per_epoch for e in at_epochs])
    return points


