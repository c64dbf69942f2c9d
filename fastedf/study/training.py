"""How a run of `fastedf sweep` trains, beyond a plain `fastedf.fit`.

* `ModelSpec`: the model a run trains (logistic regression, or an MLP), built
  fresh from the seed in every run and in every worker.
* `train_with_checkpoints`: the SGD run of fit, cut at chosen update counts
  where the loss over the WHOLE training set is measured at the current weights.
  Checkpoints are spaced geometrically (`checkpoint_schedule`: 8 per doubling
  of the update count, so an update count read from them is at most 9% high at
  any scale) instead of once per epoch: at B = 1 an epoch of the study is 1050
  updates, far too coarse to count the updates to a target loss.  Each piece
  is a `fit` call on a contiguous slice of the epoch's row order (the order
  fit itself uses, `trainer.EpochOrder`), so the weights follow fit's own
  trajectory update for update (tested to 1e-12 against one fit call).
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
from ..graph import topological_sort
from ..models import mlp
from ..node import Input, Parameter
from ..trainer import EpochOrder, fit
from . import batch_scaling
from .batch_scaling import updates_per_epoch

CHECKPOINTS_PER_DOUBLING = 8  # update counts 2**(k/8): consecutive checkpoints at most 2**(1/8) = 1.09x apart


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


@dataclass
class Trajectory:
    """A checkpointed run: fit's per-epoch losses, the whole-training-set loss at each checkpoint, divergence.

    epoch_loss: (epochs done,) as fit reports them (the mean loss of the epoch's
    batches, during training); checkpoints: [(updates, value), ...] where value
    is what `measure(model, updates)` returned (the training loss for steps to
    target); diverged_at: None, or the update count of the first checkpoint not
    reached because fit found NaN or inf; train_time_s: the sum of fit's
    training-loop times (a few fit calls per checkpoint: this includes their
    per-call overhead, so time plain fits to time a run).
    """

    epoch_loss: list
    checkpoints: list
    diverged_at: int | None
    train_time_s: float


def train_with_checkpoints(model, X, Y, batch_size, epochs, lr, shuffle, seed, engine, schedule, measure):
    """Train `model` as fit(model.loss, {x: X, y: Y}, batch_size, epochs, lr, shuffle, seed, engine) would.

    X (n, d) and Y (n, outputs) float64, Y as the loss wants it (model.labels).
    At every update count u in `schedule` (increasing; 0 is before training)
    `measure(model, u)` is called and its value recorded.  Between checkpoints
    the run is a sequence of fit calls over contiguous slices of the epoch's
    row order, each a whole number of batches, so the batches, their order and
    the updates are exactly fit's.  A fit that reports divergence (NaN), or
    leaves a parameter infinite, ends the run: diverged_at is the next
    checkpoint, the parameters are left as fit left them.  Returns a Trajectory.
    """

    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    rows = len(X)
    batch_size = min(int(batch_size), rows)
    per_epoch = updates_per_epoch(rows, batch_size)
    total = epochs * per_epoch
    order = EpochOrder({model.x: X, model.y: Y}, shuffle, int(seed) if shuffle else None)
    epoch_loss, checkpoints, spent = [], [], 0.0
    done, epoch, start, epoch_sum = 0, 0, 0, 0.0
    data = order.next_epoch() if total else None
    for target in schedule:
        target = min(int(target), total)
        while done < target:
            stop = min(rows, start + (target - done) * batch_size)  # whole batches, within this epoch
            feeds = {node: array[start:stop] for node, array in data.items()}
            try:
                history = fit(model.loss, feeds, batch_size=batch_size, epochs=1, lr=lr, shuffle=False,
                              engine=engine)
            except ValueError as error:
                if "diverged" not in str(error):
                    raise
                return Trajectory(epoch_loss, checkpoints, target, spent)
            if not all(np.all(np.isfinite(p.value)) for p in model.parameters):
                return Trajectory(epoch_loss, checkpoints, target, spent)  # inf weights, a finite loss so far
            spent += history.train_time_s
            epoch_sum += float(history.epoch_loss[0]) * (stop - start)
            done += history.updates
            start = stop
            if start == rows:
                epoch_loss.append(epoch_sum / rows)
                epoch, start, epoch_sum = epoch + 1, 0, 0.0
                if epoch < epochs:
                    data = order.next_epoch()
        checkpoints.append((target, measure(model, target)))
    return Trajectory(epoch_loss, checkpoints, None, spent)


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
            for node in graph:
                node.forward()
            for node in reversed(graph):
                node.backward()
            for t in trainable:
                t.value -= lr * t.gradients[t]
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


def noise_trajectory(model, X, y, batch_size, epochs, lr, shuffle, seed, engine, at_epochs,
                     b_small=NOISE_B_SMALL, b_big=NOISE_B_BIG, steps=NOISE_STEPS, exact=None):
    """B_simple along a training run: a dict per epoch in `at_epochs`, measured at the weights after that epoch.

    The run is fit's (train_with_checkpoints, checkpoints at those epochs' ends).
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
        return point["b_simple"]

    train_with_checkpoints(model, X, model.labels(y), batch_size, max(at_epochs), lr, shuffle, seed, engine,
                           [e * per_epoch for e in at_epochs], measure)
    return points


