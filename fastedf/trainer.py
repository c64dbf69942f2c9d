"""fastedf.fit: mini-batch SGD over a graph, node by node or as one compiled program.

Both engines share everything but the inner loop: validation, the batch
order (fastedf.kernels.shuffle_order), the loss bookkeeping and the results.
"""
import math
import time
from dataclasses import dataclass

import numpy as np

from . import kernels as K
from .compiler import lower
from .graph import sgd_update, topological_sort
from .node import F64, Input, Node, Parameter
from .ops import BCE

ENGINES = ("compiled", "graph")  # what fit(engine=...) can run; "auto" picks one


@dataclass
class History:
    """What fit returns.

    epoch_loss: (epochs,) mean per-sample loss of each epoch, every batch's loss
    weighted by its size; updates: SGD steps taken; train_time_s: wall time of
    the training loop alone; compile_time_s: time spent compiling before it
    (0 when Numba's cache already held the program); engine: the engine that ran;
    seed: the shuffle seed used (None without shuffling).
    """

    epoch_loss: np.ndarray
    updates: int
    train_time_s: float
    compile_time_s: float
    engine: str
    seed: int | None


def _check_scalar(name, value, kind, minimum):
    ok_type = isinstance(value, (int, np.integer)) if kind is int else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value < minimum or (kind is float and value <= 0):
        bound = f">= {minimum}" if kind is int else "finite and > 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


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
        try:
            array = np.ascontiguousarray(feeds[node], dtype=F64)
        except (TypeError, ValueError):
            raise ValueError(f"{node}: feed is not numeric") from None
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
        if isinstance(node, BCE) and node.inputs[0] in checked:
            labels = checked[node.inputs[0]]
            row = K.first_bad_row(labels.reshape(len(labels), -1), 0.0, 1.0)
            if row >= 0:
                raise ValueError(f"{node.inputs[0]}: BCE labels must lie in [0, 1]; row {row} is {labels[row]}")
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


def _train_graph(graph, parameters, order, batch_size, epochs, lr):
    """The course loop, node by node; returns the per-epoch mean loss."""
    loss = graph[-1]
    rows = order.rows
    epoch_loss = np.zeros(epochs)
    for epoch in range(epochs):
        data = order.next_epoch()
        total = 0.0
        for start in range(0, rows, batch_size):
            stop = min(start + batch_size, rows)
            for node, array in data.items():
                node.value = array[start:stop]
            for node in graph:
                node.forward()
            total += float(loss.value) * (stop - start)
            for node in reversed(graph):
                node.backward()
            sgd_update(parameters, lr)
        epoch_loss[epoch] = total / rows
    return epoch_loss


def fit(loss, feeds, batch_size=32, epochs=100, lr=0.1, shuffle=False, seed=None, engine="auto"):
    """Train every Parameter that `loss` depends on with mini-batch SGD; returns a History.

    feeds: {Input: array (n, ...)}, rows are samples.  Batches follow the row
    order (or a fresh shuffle each epoch from `seed` when shuffle=True); the
    last partial batch is averaged over its own size.  engine: "compiled" runs
    all epochs in one Numba program, "graph" runs the nodes one by one, "auto"
    picks compiled when every node supports it.  The trained values are left
    in the Parameter nodes.
    """
    if not isinstance(loss, Node):
        raise ValueError(f"loss must be a fastedf node, got {type(loss).__name__}")
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be one of auto, {', '.join(ENGINES)}, got {engine!r}")
    _check_scalar("batch_size", batch_size, int, 1)
    _check_scalar("epochs", epochs, int, 0)
    _check_scalar("lr", lr, float, 0)
    graph = topological_sort(loss)
    if graph[-1] is not loss:
        raise ValueError(f"{loss} is not the last node of its graph: train the final node")
    parameters = [n for n in graph if isinstance(n, Parameter)]
    feeds = validate_feeds(graph, feeds)
    order = EpochOrder(feeds, shuffle, _shuffle_seed(seed) if shuffle else None)
    batch_size = min(int(batch_size), order.rows)
    check_s = _check_first_row(graph, feeds)

    program, reason = lower(graph) if engine != "graph" else (None, None)
    if engine == "compiled" and program is None:
        raise ValueError(f"engine='compiled' cannot compile this graph: {reason}")
    if program is not None:
        epoch_loss, train_s, compile_s = program.run(order, batch_size, int(epochs), float(lr))
        used = "compiled"
    else:
        compile_s = _warm_up_graph_engine(graph, order.shuffle)
        start = time.perf_counter()
        epoch_loss = _train_graph(graph, parameters, order, batch_size, int(epochs), float(lr))
        train_s, used = time.perf_counter() - start, "graph"
    updates = int(epochs) * math.ceil(order.rows / batch_size)
    return History(epoch_loss, updates, train_s, check_s + compile_s, used, order.seed)


def _shuffle_seed(seed):
    if seed is None:
        return int(np.random.default_rng().integers(2**63))
    _check_scalar("seed", seed, int, 0)
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
        raise ValueError(f"{error} (checked on the first row of the feeds)") from None
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
