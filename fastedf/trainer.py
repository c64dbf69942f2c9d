"""fastedf.fit: mini-batch SGD over a graph, node by node or as one compiled program.

Both engines share everything but the inner loop: validation, the batch
order (fastedf.kernels.shuffle_order), the loss bookkeeping and the results.
"""
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import fused
from . import kernels as K
from .config import activate, pin_blas_threads
from .graph import graph_run, node_settings, sgd_update, topological_sort
from .node import F64, Input, Node, Parameter, as_float64
from .ops.losses import Loss

ENGINES = ("compiled", "graph")  # what fit(engine=...) can run; "auto" picks one


@dataclass
class History:
    """What fit returns.

    epoch_loss: (epochs,) mean per-sample loss of each epoch, every batch's loss
    weighted by its size; updates: SGD steps taken; train_time_s: wall time of
    the training loop alone; compile_time_s: time spent compiling before it
    (0 when Numba's cache already held the program); engine: the engine that ran;
    seed: the shuffle seed used (None without shuffling); note: why "auto" chose
    the graph engine ("" otherwise).
    """

    epoch_loss: np.ndarray
    updates: int
    train_time_s: float
    compile_time_s: float
    engine: str
    seed: int | None
    note: str = ""


def _check_scalar(name, value, kind, minimum, maximum=None):
    ok_type = (isinstance(value, (int, np.integer)) if kind is int
               else isinstance(value, (int, float, np.integer, np.floating)))
    if isinstance(value, (bool, np.bool_)) or not ok_type:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {_shown(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite or value < minimum or (kind is float and value <= 0):
        bound = f">= {minimum}" if kind is int else "finite and > 0"
        raise ValueError(f"{name} must be {bound}, got {_shown(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {_shown(value)}")


def _check_flag(name, value):
    """True or False (or 1, 0): a string such as "no" is true in Python and would silently switch the option on."""
    if not (isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1))):
        raise ValueError(f"{name} must be True or False, got {_shown(value)}")


def _shown(value, limit=40):
    """repr(value), cut to a readable length (an integer of 400 digits is still one line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def validate_graph(loss, graph):
    """Check the graph `fit` would train: `loss` its last node, no cycle, at least one Input and one Parameter."""
    if graph[-1] is not loss:
        raise ValueError(f"{loss} is not the last node of its graph: train the final node")
    position = {node: i for i, node in enumerate(graph)}
    for node in graph:
        for source in node.inputs:
            if position[source] >= position[node]:
                raise ValueError(f"the graph has a cycle: {node} takes {source} as an input, and {source} "
                                 f"depends on {node}; a graph's inputs must come before it")
    if not any(isinstance(node, Input) for node in graph):
        raise ValueError(f"{loss} depends on no Input: fit trains on data, fed to Input nodes as "
                         "{x: X, y: Y}")
    if not any(isinstance(node, Parameter) for node in graph):
        raise ValueError(f"{loss} depends on no Parameter, so fit would train nothing: hold the weights in "
                         "Parameter(...) nodes")


def validate_feeds(graph, feeds):
    """The feed arrays as C-contiguous float64, checked: every Input fed, equal rows, finite, labels in [0, 1]."""
    if not isinstance(feeds, dict):
        raise ValueError("feeds must be a dict {Input node: array}")
    needed = [n for n in graph if isinstance(n, Input)]
    for node in feeds:
        if node not in needed:
            raise ValueError(f"{node} is fed but the loss does not depend on it")
    checked = {}
    for node in needed:
        if node not in feeds:
            raise ValueError(f"{node} is an input of the loss but has no feed")
        if np.iscomplexobj(feeds[node]):  # a cast to float64 would drop the imaginary parts with a warning
            raise ValueError(f"{node}: feed is complex; fit trains on real numbers")
        try:
            array = np.ascontiguousarray(feeds[node], dtype=F64)
        except (TypeError, ValueError):
            raise ValueError(f"{node}: feed is not numeric") from None
        if not array.flags.writeable:
            array = array.copy()  # kernels are compiled for writable arrays; a read-only feed is copied once
        if array.ndim == 0 or len(array) == 0:
            raise ValueError(f"{node}: feed must have at least one row, got shape {array.shape}")
        largest = np.finfo(F64).max
        row = K.first_bad_row(array.reshape(len(array), -1), -largest, largest)  # no n-sized temporary
        if row >= 0:
            raise ValueError(f"{node}: feed has NaN or inf in row {row}")
        checked[node] = array
    rows = {node: len(a) for node, a in checked.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(f"feeds have different row counts: {', '.join(f'{n}: {r}' for n, r in rows.items())}")
    for node in graph:
        if isinstance(node, Loss) and node.inputs[0] in checked:  # every fastedf loss takes labels in [0, 1]
            labels = checked[node.inputs[0]]
            row = K.first_bad_row(labels.reshape(len(labels), -1), 0.0, 1.0)
            if row >= 0:
                indices = np.all(labels == np.round(labels)) and labels.min() >= 0
                hint = ("; class indices? CE takes one-hot labels of the predictions' shape (B, classes): "
                        "model.labels(y), or np.eye(classes)[y]") if indices and type(node).__name__ == "CE" else ""
                raise ValueError(f"{node.inputs[0]}: {type(node).__name__} labels must lie in [0, 1]; "
                                 f"row {row} is {labels[row]}, labels shaped {labels.shape}{hint}")
    return checked


class EpochOrder:
    """The rows of every feed in this epoch's order: the arrays themselves, or shuffled copies.

    Shuffled copies are made once per epoch into buffers allocated once, so a
    batch is always a contiguous slice and the memory does not depend on the
    batch size.
    """

    def __init__(self, feeds, shuffle, seed):
        self.feeds = feeds
        self.rows = len(next(iter(feeds.values())))
        self.shuffle = shuffle
        self.seed = seed
        self.current = feeds
        if shuffle:
            self.order = np.arange(self.rows, dtype=np.int64)
            self.state = np.uint64(seed)
            self.current = {node: np.empty_like(a) for node, a in feeds.items()}

    def next_epoch(self):
        """Reshuffle (when shuffling) and return {Input: array} for the coming epoch."""
        if self.shuffle:
            self.state = np.uint64(K.shuffle_order(self.order, self.state))
            for node, source in self.feeds.items():
                K.take_rows(source.reshape(self.rows, -1), self.order, self.current[node].reshape(self.rows, -1))
        return self.current


def _train_graph(graph, parameters, order, batch_size, epochs, lr, progress=None, micro_batch=None):
    """The course loop, node by node; returns the per-epoch mean loss.

    With micro_batch, each batch runs forward and backward in chunks of that
    many rows and their gradients, weighted by their share of the batch, are
    summed before the update.  Ctrl-C is taken between steps
    (DeferredInterrupt), so the parameters are always those of a finished step.
    """
    loss = graph[-1]
    summed = getattr(loss, "reduction", "mean") == "sum"  # BCE's value is the batch's sum; others a mean
    rows = order.rows
    micro = min(micro_batch or batch_size, batch_size)
    totals = {p: np.zeros(np.shape(p.value)) for p in parameters} if micro < batch_size else None
    epoch_loss = np.zeros(epochs)
    with DeferredInterrupt() as interrupt:
        for epoch in range(epochs):
            data = order.next_epoch()
            total = 0.0
            for start in range(0, rows, batch_size):
                stop = min(start + batch_size, rows)
                for lo in range(start, stop, micro):
                    hi = min(lo + micro, stop)
                    for node, array in data.items():
                        node.value = array[lo:hi]
                    _forward(graph, parameters, epoch, lr)
                    total += float(loss.value) if summed else float(loss.value) * (hi - lo)
                    for node in reversed(graph):
                        node.backward()
                    if totals is not None:
                        for p, acc in totals.items():
                            K.accumulate(acc, as_float64(p.gradients[p]), (hi - lo) / (stop - start), lo == start)
                if totals is None:
                    sgd_update(parameters, lr)
                else:
                    for p, acc in totals.items():
                        K.sgd_update(p.value, acc, lr)  # fit made every parameter a private C-contiguous array
                interrupt.check()
            epoch_loss[epoch] = total / rows
            if progress is not None:
                progress(epoch + 1, epoch_loss)
    return epoch_loss


def _forward(graph, parameters, epoch, lr):
    """forward() on every node; a failure on a non-finite prediction is reported as divergence.

    A NaN that began in a parameter is blamed on the parameter.
    """
    try:
        for node in graph:
            node.forward()
    except ValueError as error:
        _check_parameters_finite(parameters, lr)
        prediction = graph[-1].inputs[-1].value if graph[-1].inputs else None
        if prediction is None or np.all(np.isfinite(prediction)):
            raise
        raise ValueError(f"training diverged in epoch {epoch}: {error}; lower the learning rate {lr}") from None


class DeferredInterrupt:
    """Within the block, Ctrl-C raises KeyboardInterrupt only where check() is called (between steps).

    Only in the main thread (where Python delivers signals); elsewhere check() does nothing.
    """

    def __enter__(self):
        self.pending, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame):
        self.pending = True

    def check(self):
        if self.pending:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def fit(loss, feeds, batch_size=32, epochs=100, lr=0.1, shuffle=False, seed=None, engine="auto", progress=False,
        micro_batch=None):
    """Train every Parameter that `loss` depends on with mini-batch SGD; returns a History.

    feeds: {Input: array (n, ...)}, rows are samples.  Batches follow the row
    order, or with shuffle=True a fresh shuffle each epoch from `seed`: each
    epoch's order is the previous epoch's (0..n-1 before the first) shuffled
    again by fastedf.kernels.shuffle_order, its state starting at `seed` and
    carried from epoch to epoch.  The last partial batch is averaged over its
    own size.  engine: "compiled" runs all epochs in one Numba program,
    "graph" runs the nodes one by one, "auto" picks compiled when every node
    supports it (History.note says why not).
    progress=True shows a tqdm bar (epochs, loss) on stderr.  micro_batch=m
    computes each batch's gradient m rows at a time and sums them (weighted
    by rows), so memory stops growing with the batch beyond m while every
    update stays the batch's (equal to rounding).  The trained
    values are left in the Parameter nodes; a Parameter whose array is
    read-only (np.load(mmap_mode="r"), np.frombuffer) is trained on a private
    copy, its source left alone.  Ctrl-C stops training within ~0.1 s with
    KeyboardInterrupt, the parameters as of the last finished step.
    """
    if not isinstance(loss, Node):
        raise ValueError(f"loss must be a fastedf node, got {type(loss).__name__}")
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be one of auto, {', '.join(ENGINES)}, got {engine!r}")
    _check_scalar("batch_size", batch_size, int, 1)
    _check_scalar("epochs", epochs, int, 0, MAX_EPOCHS)
    _check_scalar("lr", lr, float, 0)
    if micro_batch is not None:
        _check_scalar("micro_batch", micro_batch, int, 1)
    _check_flag("shuffle", shuffle)
    _check_flag("progress", progress)
    activate()  # fit runs Numba's kernels and programs, never the NumPy tier's twins (fastedf.config)
    graph = topological_sort(loss)
    fused.release(graph)  # a course loop's plan on these nodes ends: fit runs and compiles them itself
    validate_graph(loss, graph)
    parameters = [n for n in graph if isinstance(n, Parameter)]
    _own_parameters(parameters)
    feeds = validate_feeds(graph, feeds)
    order = EpochOrder(feeds, shuffle, _shuffle_seed(seed) if shuffle else None)
    batch_size = min(int(batch_size), order.rows)
    check_s = _check_first_row(graph, feeds)
    if np.ndim(loss.value) != 0:
        raise ValueError(f"{loss} is not a scalar loss: its value has shape {np.shape(loss.value)}")

    micro = micro_batch is not None and micro_batch < batch_size
    rows = micro_batch if micro else batch_size  # the most rows a kernel sees at once
    if any(node.uses_blas(rows) for node in graph if hasattr(node, "uses_blas")):
        pin_blas_threads()  # only then: it imports SciPy's BLAS
    from .compiler import lower  # imports Numba's compiler machinery (fastedf.calls): not at `import fastedf`
    program, reason = lower(graph, micro) if engine != "graph" else (None, "engine='graph' was asked for")
    if engine == "compiled" and program is None:
        raise ValueError(f"engine='compiled' cannot compile this graph: {reason}")
    bar = _progress_bar(int(epochs)) if progress else None
    report = None if bar is None else bar.report
    try:
        if program is not None:
            epoch_loss, train_s, compile_s = program.run(order, batch_size, int(epochs), float(lr), report,
                                                         micro_batch)
            used, note = "compiled", ""
        else:
            # the warm-up's backward too runs within the graph: the loss is the root whatever else it feeds.
            # Training never reads data Inputs' gradients: no node keeps copies for them.
            with graph_run(graph), node_settings(graph, rows_are_samples=True, keeps_deferred=False):
                compile_s = _warm_up_graph_engine(graph, order.shuffle)
                start = time.perf_counter()
                epoch_loss = _train_graph(graph, parameters, order, batch_size, int(epochs), float(lr), report,
                                          micro_batch)
            train_s, used, note = time.perf_counter() - start, "graph", reason if engine == "auto" else ""
        _check_parameters_finite(parameters, lr)  # a last step can make a parameter inf with finite predictions
    finally:
        if bar is not None:
            bar.close()
    updates = int(epochs) * math.ceil(order.rows / batch_size)
    return History(epoch_loss, updates, train_s, check_s + compile_s, used, order.seed, note)


MAX_EPOCHS = 10**9  # an epoch_loss array of 8 GB; more cannot be a real request


def _own_parameters(parameters):
    """Check the parameters are finite, and give read-only or non-float64 ones a private writable copy.

    Both engines train in place; memory the caller cannot write (a read-only
    mmap, np.frombuffer over bytes) is never handed to a kernel.
    """
    for node in parameters:
        value = node.value
        if value is None:
            raise ValueError(f"{node}: Parameter has no value")
        try:
            array = np.asarray(value, dtype=F64)
        except (TypeError, ValueError):
            raise ValueError(f"{node}: Parameter value is not numeric") from None
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{node}: Parameter value contains NaN or inf before training")
        if not (type(value) is np.ndarray and value.dtype is F64 and value.flags.writeable
                and value.flags.c_contiguous):
            node.value = np.array(array, dtype=F64, order="C", copy=True)


def _check_parameters_finite(parameters, lr):
    for node in parameters:
        if not np.all(np.isfinite(node.value)):
            raise ValueError(f"training diverged: {node} became NaN or inf; lower the learning rate {lr}")


class _progress_bar:
    """A tqdm bar over epochs on stderr, showing the last finished epoch's loss."""

    def __init__(self, epochs):
        from tqdm import tqdm
        self.bar = tqdm(total=epochs, unit="epoch", file=sys.stderr, leave=True)

    def report(self, epochs_done, epoch_loss):
        self.bar.update(epochs_done - self.bar.n)
        if epochs_done:
            self.bar.set_postfix(loss=f"{epoch_loss[epochs_done - 1]:.6g}", refresh=False)

    def close(self):
        self.bar.close()


def _shuffle_seed(seed):
    if seed is None:
        return int(np.random.default_rng().integers(2**63))
    _check_scalar("seed", seed, int, 0, 2**64 - 1)
    return int(seed)


def _check_first_row(graph, feeds):
    """One forward pass on the first row of the feeds; returns its seconds.

    Every node checks its shapes before any training kernel runs, and the
    compiler reads the value shapes this leaves.  One row keeps the nodes'
    buffers small while the compiled engine runs.
    """
    start = time.perf_counter()
    for node, array in feeds.items():
        node.value = array[:1]
    try:
        for node in graph:
            node.forward()
    except ValueError as error:
        shapes = ", ".join(f"{node} {array.shape}" for node, array in feeds.items())
        raise ValueError(f"{error} (checked on the first row of the feeds, shaped {shapes})") from None
    return time.perf_counter() - start


def _warm_up_graph_engine(graph, shuffle):
    """Compile (or load from Numba's cache) the rest of what the graph engine calls; returns seconds.

    A backward pass over the first row that _check_first_row left, no update,
    and the shuffle kernels when shuffling: outside the timed loop.  The
    compiled engine needs none of it: its program holds its own copies.
    """
    start = time.perf_counter()
    for node in reversed(graph):
        node.backward()
    if shuffle:
        rows = np.zeros(1, dtype=np.int64)
        K.shuffle_order(rows, np.uint64(0))
        K.take_rows(np.zeros((1, 1)), rows, np.zeros((1, 1)))
    return time.perf_counter() - start
