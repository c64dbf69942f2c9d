"""The fused course loop: a script's own forward/backward loop over fastedf's nodes, run as compiled steps.

Course scripts train by calling forward() on every node in order, backward()
in reverse, then updating the Parameters themselves.  Once such a loop has run
long enough to repay capturing it (`Watch`), the graph behind its loss runs each
step as two calls of one step program: first as Python over the kernels' NumPy
twins (fastedf.numpy_step) while Numba is not loaded, then, once the loop has
also repaid loading Numba and the program, compiled.  The program is made from
the same compile rules (each op's `lower`) as fit's, without the SGD update:
the forward at the loss's forward(), the backward at the loss's backward(),
each reading the Inputs and
Parameters as they are at that moment, as node-by-node execution does.  The
operations' own forward()/backward() calls only check that they are the next
call of the recorded plan.  Two calls, not one: a script may change a
Parameter in place between the two (Linear's backward reads its weight then),
and nothing cheap would see it.

What is captured is guarded, as TorchDynamo does: a plan holds the graph (the
loss and its ancestors), the order of its operations' calls (creation order,
or the script's own once a step has shown it) and the shapes of its Inputs
(any rows) and Parameters.
Anything else (a call out of order, a value read while a step's forward is
half done, an operation's value changed by the script before backward, an Input
of another shape, an empty batch, a label outside [0, 1]) runs that step node
by node from where it stands; after BREAKS_TO_DROP such steps in a row the plan
is dropped and the graph is node by node again.  Copying or pickling a fused
node drops its plan.

Reads: an operation's `value` is copied out of the program's buffers when it
is read, into the node's own array as node-by-node execution would have left
it, so a kept value is never overwritten.  Only the operations change class
(to a subclass of theirs with a lazy `value`); Inputs and Parameters keep their
classes and plain values.  A Parameter's `gradients[t]` is the program's
gradient array, which its own backward() passes on, reused by the next backward
as fastedf.node says; any other gradient (of an operation's input, of a data
Input) is computed when read from what the backward kept, as the nodes do.

Numbers: the program calls the kernels the nodes call, in the same order, and
keeps Sigmoid and BCE (Softmax and CE) apart, unlike fit, so values and
gradients are the node-by-node ones (tests/test_fused_loop.py, to 1e-12).

To be fused a node needs what fit needs: a `lower(low)` compile rule beside
its kernels (fastedf.compiler; a class from outside fastedf that defines its
own `lower` vouches for it) and the protocol of fastedf.node; the loss must be
a fastedf loss (BCE, CE) that ends the graph, and no operation may feed a node
outside it.  `capture(loss)` says whether a graph fuses and, if not, why; other
graphs run node by node, and `stats` counts fused and node-by-node steps.

Switches: FASTEDF_FUSE=0 in the environment, or `with node_by_node():`.
"""
import contextlib
import os
import time
import weakref

import numpy as np

from . import config
from .config import env_flag
from .node import F64, Input, Parameter, _reusable, missing_rule

ENABLED = env_flag("FASTEDF_FUSE", True)
BREAKS_TO_DROP = 3  # node-by-node steps in a row after which a plan is dropped

# A loop fuses once its node-by-node steps have taken as long as getting its program is expected to take:
# loading it from Numba's cache when an earlier process compiled it, else compiling it.  For the graphs of
# benchmarks/bench_course_loop.py --first-step on a shared 2-core machine: loads took 8-11 ms of CPU (8-22 ms
# wall at a load of 4, 50-130 ms at 10), compiles 0.6-1.2 s of CPU (0.6-1.6 s wall at 4, 5-10 s at 10); the
# figures below allow for a busy machine, as the loop's own steps, timed in wall time too, slow with it.  A
# loop too short to repay that never fuses; one that fuses is at worst that long slower than node by node
# before it gains (ski rental); it is faster end to end once its steps after fusing would have taken the
# program's cost divided by (1 - 1 / speed-up) node by node: twice that cost at a 2x speed-up.
WARM_SECONDS = 0.03
COLD_SECONDS = 2.0
# In a process without Numba a loop fuses as the NumPy step (fastedf.numpy_step).  Fusing costs C = 1.3-1.7 ms
# (the first in a process: importing the compile rules ~0.7 ms, the step's code from the cache 0.2 ms, its
# arena), after which a step takes r = 0.65-0.82 of its node-by-node time (a 2-3-1 MLP at B = 2 to the 64-wide
# MLP at B = 32, bench_course_loop.py --numpy-tier); the loop is ahead once it has run C / (1 - r) = 4-9 ms more.
# Ski rental with that as the price: a loop fuses once it has spent NUMPY_SECONDS, so one that stops right after
# loses at most this much.  Of the course scripts in tests/, XOR's 27 ms loop gains 2-3 ms, the per-sample
# script's 9 ms loop loses 1-2 ms, and the digits MLP's 4 ms loop is left node by node.
NUMPY_SECONDS = 0.006
PADDING = "unused"  # the step's extra argument when it would otherwise take 20
RETRY_SECONDS = 1e-3  # a graph that could not fuse is looked at again after this much more loop time, doubling
CAPTURE_SHARE = 0.05  # ... and not before its captures have taken at most this share of the loop's time

stats = {"fused_steps": 0, "numpy_steps": 0, "node_steps": 0, "plans": 0, "dropped": 0, "refused": {}}

_plans = weakref.WeakSet()
_off = 0  # depth of node_by_node() blocks


@contextlib.contextmanager
def node_by_node():
    """Within the block every course loop runs node by node (plans in force are dropped): the reference path."""
    global _off
    for plan in list(_plans):
        plan.drop("node_by_node()")
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def release(nodes):
    """Drop the plans that hold any of `nodes` (fit runs the nodes' own code, and compiles them itself)."""
    nodes = set(nodes)
    for plan in list(_plans):
        if not nodes.isdisjoint(plan.ops):
            plan.drop("released")


def watch(loss):
    """Called by a loss's node-by-node forward(): counts the loop's time and fuses its graph once it pays."""
    w = loss.__dict__.get("_watch")
    if w is None:
        if not ENABLED or _off or not loss.keeps_deferred:  # fit's own loop does not keep them: not a course loop
            return
        w = loss._watch = Watch(loss)
    if w.active and loss.keeps_deferred:
        w.tick()


class Watch:
    """A loss's node-by-node steps: once the time between its forwards adds up to what its program costs, fuse.

    A graph that cannot fuse now (a user's node, a batch that does not fit) is
    looked at again after twice as long each time, so a loop never pays for it
    more than a few times.
    """

    def __init__(self, loss):
        self.loss, self.active = loss, True
        self.last, self.spent, self.retry, self.cost = None, 0.0, RETRY_SECONDS, None
        self.wait = NUMPY_SECONDS if _numpy_first() else config.numba_switch_seconds()
        self.tried = 0.0  # seconds its captures took

    def tick(self):
        now = time.perf_counter()
        if self.last is not None and now - self.last < config.LOOP_GAP:
            self.spent += now - self.last
        self.last = now
        if self.spent <= self.wait or self.tried > CAPTURE_SHARE * self.spent or _off:
            return
        try:
            self._try()
        except _Break as why:  # this batch does not fit the plan
            self._later(str(why))
        except Exception as error:  # a program that does not compile, say: the loop stays node by node
            self.active = False
            stats["refused"][repr(self.loss)] = f"the step program failed: {type(error).__name__}: {error}"

    def _try(self):
        start = time.perf_counter()
        cap, reason = capture(self.loss)
        self.tried += time.perf_counter() - start
        if reason:
            return self._later(reason)
        if self.cost is None:  # the loop is a loop: what would its program cost?
            if _numpy_first() and self.spent < _numba_after_numpy() and cap.program.numpy_bind()[0] is not None:
                return Plan(self.loss, cap, numpy_spent=self.spent).install()
            self.cost = (WARM_SECONDS if cap.program.cached() else COLD_SECONDS) + config.numba_switch_seconds()
            if self.spent < self.cost:
                self.wait = self.cost
                return
        Plan(self.loss, cap).install()

    def _later(self, reason):
        stats["refused"][repr(self.loss)] = reason
        self.wait, self.retry = self.spent + self.retry, 2 * self.retry


def _numba_after_numpy():
    """The loop time after which a loop on the NumPy step moves to Numba: what loading Numba and the program
    costs, when a loop node by node moved before the NumPy step, so long loops gain what the NumPy step saved.

    Waiting for C / (1 - r), r the compiled step's share of the NumPy step's time (0.3-0.6 on the course graphs),
    would lose less on a loop that stops right after and more on every long one: a digits MLP's 1-3 s loop took
    0.1-0.2 s longer so (r about 0.5: twice the wait).
    """
    return WARM_SECONDS + config.numba_switch_seconds()


def _numpy_first():
    """Whether a loop fuses first as the NumPy step: Numba is not loaded, and the NumPy tier is on."""
    return config.numba_switch_seconds() > 0


class _Break(Exception):
    """A guard failed: the step runs node by node."""


class _Drop(_Break):
    """The plan gives its nodes back: they run node by node from this step on."""


TEMPLATE = '''\
"""Generated by fastedf.fused for one graph structure: the forward or backward of a course-loop step."""
# kernels {kernels_digest}: Numba's cache does not see edits to called functions, this line does
import numpy as np

from fastedf.config import program
from fastedf.kernels import *
{op_imports}


@program
def step({args}, arena, iarena, table, backward):
    """The forward (its summed loss into arena's last element) or the backward of one step on n rows.

    Returns the compile rules' (epoch, start, state, row): row is -1, or where a label or prediction is
    outside [0, 1].
    """
{body}
'''


def _body(rows, prologue, forward, backward, depth):
    """The lines of a step's body, indented by `depth`: the compiled step's and the NumPy step's
    (fastedf.numpy_step), which differ only in their prologue.  An empty section is a `pass`."""
    def block(lines, extra=0):
        return [" " * (depth + extra) + line for line in lines or ["pass"]]
    return "\n".join(block(["epoch = start = lo = 0", "state = np.uint64(0)", f"n = {rows}"]) + block(prologue)
                     + block(["if backward:"]) + block(backward, 4) + block(["return epoch, start, state, -1"], 4)
                     + block(forward) + block(["arena[arena.size - 1] = loss_sum", "return epoch, start, state, -1"]))


class StepProgram:
    """The compiled step of one graph structure (`source`), shared by every graph of that structure, and the same
    step as Python over the NumPy twins (`python`, fastedf.numpy_step) when the caller made one."""

    def __init__(self, source, python=None):
        self._source, self.python = source, python
        self._name = self._step = self._bind = None

    @property
    def source(self):
        """The source, with its kernels' digest (fastedf.compiler) filled in when first asked: a loop that only
        ever runs the NumPy step never hashes anything."""
        if DIGEST in self._source:
            from . import compiler
            self._source = self._source.replace(DIGEST, compiler._kernels_digest())
        return self._source

    @property
    def name(self):
        if self._name is None:
            from . import compiler
            self._name = compiler.program_name(self.source)
        return self._name

    def numpy_bind(self):
        """(bind, None): bind(arena, iarena, table) gives the NumPy step over that arena; or (None, why not)."""
        if self._bind is None:
            from . import numpy_step
            self._bind = numpy_step.binder(self.python) if self.python else (None, "no NumPy step was made")
        return self._bind

    def cached(self):
        """True when an earlier process compiled this program into Numba's on-disk cache (or this one loaded it)."""
        if self._step is not None:
            return True
        from . import compiler
        folder = compiler.cache_dir()
        if folder is None:  # no writable cache: every process compiles it
            return False
        index = os.path.join(folder, "__pycache__")
        if not (os.path.exists(os.path.join(folder, self.name + ".py")) and os.path.isdir(index)):
            return False
        try:
            entries = os.listdir(index)
        except OSError:  # another user's, unreadable: Numba could not load from it either
            return False
        return any(f.startswith(self.name + ".step-") and f.endswith(".nbi") for f in entries)

    @property
    def step(self):
        if self._step is None:
            from . import compiler
            self._step = compiler._load(self.source, "step")[0]
        return self._step


_programs = {}  # source: StepProgram
DIGEST = "{kernels_digest}"  # in a source from _source until StepProgram.source fills it in


class Capture:
    """A graph as a step program can run it: the Lowering, the program, and the buffers it names."""

    def __init__(self, low, program, stored, kept, trailing):
        self.low, self.program, self.stored, self.kept = low, program, stored, kept
        self.trailing = trailing  # each Input's shape after its rows


def capture(loss):
    """(Capture, None) for the graph behind `loss` as its values stand now, or (None, why it cannot fuse).

    An Input fed a number (the per-sample scripts' floats) is captured as a batch of one (1, 1) row, one fed
    integers, booleans or float32 (XOR's data, int labels) as float64, as the program takes it (Plan._leaf_args).
    """
    from .graph import _ancestors_first
    from .ops.losses import Loss
    if not isinstance(loss, Loss) or loss.outputs:
        return None, f"{loss} is not a fastedf loss that ends its graph"
    graph = _ancestors_first([loss])
    fed = [(n, n.value) for n in graph if isinstance(n, Input) and _as_float64(n.value) is not None]
    try:
        for node, value in fed:
            node.value = _as_float64(value)
        return _capture(loss, graph)
    finally:
        for node, value in fed:
            node.value = value


def _as_float64(value):
    """An Input's value as the program takes it, where that is not the value itself: a number as a (1, 1) row,
    a real array of another dtype as float64; else None."""
    if isinstance(value, (int, float, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return np.full((1, 1), float(value))
    if isinstance(value, np.ndarray) and value.dtype != F64 and value.dtype.kind in "biuf":
        return value.astype(F64)
    return None


def _capture(loss, graph):
    from .ops.losses import Loss, _labels_fit
    leaves, ops = [n for n in graph if not n.inputs], [n for n in graph if n.inputs]
    for node in ops:  # before the compile rules are imported: a user's own node is the common refusal
        if missing_rule(node):
            return None, missing_rule(node)
    from . import compiler
    for node in leaves:
        if not isinstance(node, (Input, Parameter)):
            return None, f"{node} has no inputs but is not an Input or a Parameter"
        if not isinstance(node.value, np.ndarray) or node.value.ndim == 0 or node.value.dtype != F64:
            return None, f"{node}'s value is not a float64 array of rank >= 1 (a {type(node.value).__name__})"
    rows = {n.value.shape[0] for n in leaves if isinstance(n, Input)}
    if len(rows) != 1 or 0 in rows:
        return None, "the Inputs do not hold one batch of rows"
    for node in ops:
        if getattr(type(node), "_fused_base", None) is not None:
            return None, f"{node} is in another graph's plan"
        if node is not loss and not isinstance(node.value, np.ndarray):
            return None, f"{node} has no array value"
    y, p = loss.inputs
    if not _labels_fit(np.shape(y.value), np.shape(p.value)):
        return None, f"{loss}'s labels {np.shape(y.value)} and predictions {np.shape(p.value)} are not elementwise"
    members = set(graph)
    for node in ops:  # a raw loop sums every consumer's gradient, a stale one outside the graph too
        if any(out not in members for out in node.outputs):
            return None, f"{node} also feeds a node outside the graph of {loss}"
    low = compiler.Lowering(graph, updates=False)
    low.fused = set()  # Sigmoid and BCE apart, as the nodes compute them: the node-by-node numbers
    (n,) = rows
    for node in ops:
        if low.batched[node] and node is not loss and (node.value.ndim == 0 or node.value.shape[0] != n):
            return None, f"{node} has shape {node.value.shape}, not a batch of the Inputs' {n} rows"
    for node in leaves:  # a data Input's gradient, where its consumers compute it at every backward too
        if isinstance(node, Input) and not any(hasattr(o, "_data_gradient") or isinstance(o, Loss)
                                               for o in node.outputs):
            low.wants_grad[node] = True
    for node in ops:  # and the gradients between it and the Parameters' (Linear(Flatten(x)) computes Flatten's)
        low.wants_grad[node] = any(low.wants_grad[i] for i in node.inputs)
    units, reason = compiler.rules(low)
    if reason:
        return None, reason
    source, python, stored, kept = _source(low, units)
    program = _programs.get(source)
    if program is None:
        program = _programs[source] = StepProgram(source, python)
    return Capture(low, program, stored, kept, [n.value.shape[1:] for n in leaves if isinstance(n, Input)]), None


def _source(low, units):
    """The program's source, the same step as Python over the NumPy twins (fastedf.numpy_step), the buffer names
    it views in the arena in record order, and {node: its kept buffer} for the nodes whose data gradient is
    computed when read: Linear and Conv keep their weight, a loss its prediction, copied at every backward as the
    nodes do (Node.keeps_deferred)."""
    from . import compiler, rolling
    from .ops.losses import Loss
    forward = [line for unit in units for line in unit["forward"]]
    # A rule's local views (Conv's columns, MaxPooling's argmax) serve its backward too: made before either runs
    local = [line for line in forward if rolling.ASSIGNS.match(line) and not line.startswith("loss_sum")]
    forward = [line for line in forward if line not in local]
    backward = [line for unit in reversed(units) for line in unit["backward"]]
    kept = {}
    for unit in units:
        node = unit["node"]
        x, w = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        if isinstance(node, Loss) and isinstance(x, Input):
            width = int(np.prod(np.shape(w.value)[1:]))
            kept[node] = name = low.buffer(node, "kept", per_row=width)
            backward.append(f"copy_into({name}[:n * {width}], {low.value(w)}.reshape(n * {width}))")
        elif isinstance(x, Input) and hasattr(node, "_data_gradient") and isinstance(w, Parameter):
            kept[node] = name = low.buffer(node, "kept", shape=(int(np.size(w.value)),))
            backward.append(f"copy_into({name}, {low.value(w)}.reshape({name}.size))")
    leaves = [n for n in low.graph if not n.inputs]
    first = next(low.value(n) for n in leaves if isinstance(n, Input))
    names = {m.group(0) for m in rolling.NAME.finditer("\n".join(local + forward + backward))}
    views = []
    for name in sorted(n for n in names if n[0] in rolling.VIEWS):
        full = rolling.VIEWS[name[0]] + name[1:]
        views.append(f"{name} = {full}[:n]" if low.batched[low.graph[int(name[1:])]] else f"{name} = {full}")
        names.add(full)
    params = []
    for name in sorted(n for n in names if n[0] == "q"):  # a Parameter's 2-D view
        rank = low.graph[int(name[1:])].value.ndim
        param = f"p{name[1:]}"
        params.append(f"{name} = {param}" if rank == 2 else f"{name} = {param}.reshape((1, {param}.size))")
    stored, record, arena_views = sorted(n for n in names if n[0] in "deVGw"), 0, []
    for name in stored:
        _, shape, dtype = compiler._storage(low, name, 1)
        arena_views.append(f"{name} = view{len(shape)}({'iarena' if dtype == 'int64' else 'arena'}, table, "
                           f"np.int64({record}))")
        record += 2 + len(shape)
    args = [low.value(n) for n in leaves if isinstance(n, Input)] + [low.value(n) for n in leaves
                                                                     if isinstance(n, Parameter)]  # as Plan passes
    if _padded(len(args)):
        args.append(PADDING)
    args, rows = ", ".join(args), f"{first}.shape[0]"
    source = TEMPLATE.format(args=args, kernels_digest=DIGEST, op_imports=compiler._OP_IMPORTS,
                             body=_body(rows, params + arena_views + views + local, forward, backward, 4))
    from . import numpy_step
    python = numpy_step.source(args, arena_views,
                               _body(rows, numpy_step.batch_views(views) + params + local, forward, backward, 8))
    return source, python, stored, kept


def _padded(leaves):
    """Whether the step of `leaves` leaves takes PADDING: CPython 3.11 never reuses a freed 20-tuple
    (compiler.TEMPLATE says more), and the step takes 4 arguments more."""
    return leaves + 4 == 20


class Plan:
    """One graph's steps as compiled calls: where the loop stands, the program's buffers, and the guards.

    at / back: the next operation's place in the forward / backward order;
    eager: this step runs node by node (a guard failed);  pending: operations
    were called this step but the forward has not run yet;  generation: how many
    forwards the program has run (a node's `_gen` says which one its own value
    reflects);  program_backward: the program has run a backward (into this arena), whose gradients stand
    for every node but those in `eager_backward`, whose own backward ran since and stored its own.
    """

    def __init__(self, loss, cap, numpy_spent=None):
        from .ops.linear import Linear
        low = cap.low
        self.loss, self.cap = loss, cap
        # numpy: the steps run as the NumPy step (bound to the arena by _layout) until the loop has spent
        # what loading Numba and the program costs, counted as the Watch counts (`spent`, `last`)
        self.numpy = numpy_spent is not None
        self.step = None if self.numpy else cap.program.step
        self.spent, self.last = numpy_spent, None
        self.ops = sorted((n for n in low.graph if n.inputs), key=lambda n: n._id)  # creation order: topological
        self.stateful = [n for n in self.ops if n.forward_state]  # what their own forward left is stale after ours
        self.inputs = [n for n in low.graph if isinstance(n, Input)]
        self.params = [n for n in low.graph if isinstance(n, Parameter)]
        self.padding = (0,) if _padded(len(self.inputs) + len(self.params)) else ()
        self.trailing = cap.trailing
        self.param_shapes = [n.value.shape for n in self.params]
        self.param_seen, self.param_args = [None] * len(self.params), [None] * len(self.params)
        self.shapes = {n: np.shape(n.value) for n in self.ops}  # node by node, with the batch's rows first
        # Batch sizes at which Linear refuses x (n, 1) with A (1, n), one sample as a column (ops.linear)
        self.refused_rows = {n.inputs[1].value.shape[1] for n in self.ops if isinstance(n, Linear)
                             and n.inputs[1].value.shape[0] == 1 and n.inputs[1].value.shape[1] > 1}
        self.at = self.back = self.generation = self.breaks = self.rows = self.back_rows = self.capacity = 0
        self.eager = self.pending = False
        self.seen = None  # the operations a node-by-node step has called, in order, while it teaches the order
        self.program_backward, self.eager_backward = False, set()
        self.forward_args, self.forward_raw, self.forward_copied, self.deferred = None, None, False, {}
        self.handed = set()  # operations whose value the script got (or set) since the program's forward

    # --- installing and dropping ---

    def install(self):
        """Run this step's forward as the program (the nodes have just run it), then take over the nodes."""
        self._forward()  # raises _Break before anything is touched
        for i, node in enumerate(self.ops):
            node.__class__ = _fused_class(type(node))
            # _gen -1: a value read from here on is the program's, against which the script's changes are checked
            # (the loss's node-by-node forward, running now, sets its own)
            node.__dict__.update(_plan=self, _at=i, _back_at=len(self.ops) - 1 - i, _gen=-1)
            for inp in node.inputs:  # gradients are computed when read (Plan.gradient)
                self.deferred[node, inp] = node.gradients._deferred.get(inp)
                node.gradients.defer(inp, _Read(self, node, inp))
        self.at = len(self.ops)
        self.eager_backward = set(self.ops)  # their gradients stand until the program's backward
        self.loss._watch.active = False
        _plans.add(self)
        stats["plans"] += 1

    def drop(self, why):
        """Give the nodes back their node-by-node state and classes; the loss's Watch starts over."""
        if self.pending:
            self._run_pending()
        for node in self.ops:
            if node._gen != self.generation:
                self._materialise(node)
        self._gradients_to_nodes()
        for (node, inp), original in self.deferred.items():
            node.gradients._deferred.pop(inp, None)
            if original is not None:
                node.gradients._deferred[inp] = original
        for node in self.ops:
            node.__class__ = type(node)._fused_base
            for attr in ("_plan", "_at", "_back_at", "_gen"):
                node.__dict__.pop(attr, None)
        self.loss.__dict__.pop("_watch", None)
        self.eager = True  # calls still under way in the old classes run node by node
        _plans.discard(self)
        stats["dropped"] += 1
        stats["refused"][repr(self.loss)] = f"plan dropped: {why}"

    def _gradients_to_nodes(self):
        """Store the program's last gradients in the nodes' dicts and kept state, as their backward would."""
        if not self.program_backward:
            return
        for node, inp in self.deferred:
            if node in self.eager_backward:
                continue
            if isinstance(inp, Input) and node in self.cap.kept:
                self._keep(node)  # the node's own deferred entry computes it
            else:
                dict.__setitem__(node.gradients, inp, self.gradient(node, inp))
        self.program_backward, self.eager_backward = False, set(self.ops)

    # --- the compiled calls ---

    def _leaf_args(self):
        """(args, rows, raw, copied): the leaves' values as the program takes them (2-D batches, C-contiguous
        float64), checked against the plan, the Inputs' values as given, and whether an Input's array was copied
        to be so (the script may change the original in place); raises _Break."""
        args, raw, n, copied = [], [], -1, False
        for node, trailing in zip(self.inputs, self.trailing):
            v = node.value
            raw.append(v)
            if type(v) is not np.ndarray or v.dtype is not F64:
                copied = copied or isinstance(v, (np.ndarray, list))
                try:
                    v = np.asarray(v, dtype=F64)
                except (TypeError, ValueError):
                    raise _Break(f"{node}'s value is not numeric") from None
            shape = v.shape
            if not shape:
                v, shape = v.reshape(1, 1), (1, 1)  # a number: a batch of one row, as the nodes broadcast it
            if shape[1:] != trailing or (n >= 0 and shape[0] != n):
                raise _Break(f"{node} has shape {shape}; the plan has (rows,) + {trailing}, rows as the others'")
            n = shape[0]
            if n == 0:
                raise _Break("an empty batch")  # the nodes give 0.0 and zero gradients
            if v.ndim != 2:
                v = v.reshape(n, -1)
            if not v.flags.c_contiguous:
                v, copied = np.ascontiguousarray(v), True
            args.append(v)
        if n in self.refused_rows and not any(op.rows_are_samples for op in self.ops):  # the Inputs share n
            raise _Break(f"a batch of {n} rows, which a Linear of this graph refuses")
        for i, node in enumerate(self.params):
            v = node.value
            if v is not self.param_seen[i]:
                w = np.ascontiguousarray(v, dtype=F64) if isinstance(v, np.ndarray) else None
                if w is None or w.shape != self.param_shapes[i]:
                    raise _Break(f"{node} has shape {np.shape(v)}; the plan has {self.param_shapes[i]}")
                # the same array next step holds whatever the script wrote into it; a converted copy would not
                self.param_seen[i], self.param_args[i] = (v if w is v else None), w
            args.append(self.param_args[i])
        return args, n, raw, copied

    def _forward(self):
        if self.numpy:
            self._tick()
        args, n, raw, self.forward_copied = self._leaf_args()
        if n > self.capacity:
            self._layout(n)
        if self.step(*args, *self.padding, self.arena, self.iarena, self.table, False)[3] >= 0:
            raise _Break("a label or prediction outside [0, 1]")  # the nodes raise the error
        self.rows, self.forward_args, self.forward_raw = n, args, raw
        for node in self.stateful:  # a node-by-node backward in this step (a break, a drop) must not use it
            for attr in node.forward_state:
                setattr(node, attr, None)
        self.handed.clear()
        self.generation += 1
        self.pending = False
        self.breaks = 0

    def _tick(self):
        """The NumPy step's loop clock: once moving to Numba pays (_numba_after_numpy), the compiled step runs, or
        while the program is not compiled, the nodes run Numba's kernels node by node; raises _Drop then."""
        now = time.perf_counter()
        if self.last is not None and now - self.last < config.LOOP_GAP:
            self.spent += now - self.last
        self.last = now
        config.tier_owned(now)  # this loop's time is counted here, not by the twins' clock (fastedf.config)
        if self.spent < _numba_after_numpy():
            return
        try:
            if not self.cap.program.cached():
                # Compiling takes seconds: meanwhile Numba's kernels, node by node, outrun the NumPy step (a
                # 16-16-1 MLP at B = 8: 28 against 46 us a step).  The loop's Watch compiles once that has paid.
                config.activate()
                raise _Drop("the program is not compiled yet: Numba's kernels node by node meanwhile")
            step = self.cap.program.step
        except _Drop:
            raise
        except Exception as error:  # no Numba, a program that does not compile: the NumPy step, for good
            self.spent = -float("inf")
            stats["refused"][repr(self.loss)] = f"the step program failed: {type(error).__name__}: {error}"
            return
        self.numpy, self.step = False, step

    def _backward(self):
        args, raw = self.forward_args, self.forward_raw
        if args is None:
            raise _Break("backward without a forward")
        for node in self.handed:  # the nodes' backward would read what the script made of it (clipped, scaled)
            value, held = node.__dict__["value"], self._held(node)
            if not (type(value) is np.ndarray and value.shape == held.shape and value.dtype is F64
                    and value.tobytes() == held.tobytes()):  # bit for bit, NaN too: 0.3 us, np.array_equal 4
                raise _Break(f"{node}.value was changed between forward and backward")
        for node, v in zip(self.inputs, raw):
            if node.value is not v or self.forward_copied:  # rebound, or copied: its array may have changed since
                args, n, raw, _ = self._leaf_args()
                if n != self.rows:
                    raise _Break("an Input changed its rows between forward and backward")
                break
        else:
            for i, node in enumerate(self.params):
                if node.value is not self.param_seen[i]:
                    args, _, raw, _ = self._leaf_args()
                    break
        self.step(*args, *self.padding, self.arena, self.iarena, self.table, True)
        if self.eager_backward:  # nodes whose own backward stored arrays of their own
            for node in self.eager_backward:
                for inp in node.inputs:  # a Parameter's: the program's, which its own backward() passes on
                    if isinstance(inp, Parameter):
                        dict.__setitem__(node.gradients, inp, self._param_grad(inp))
                    else:
                        dict.pop(node.gradients, inp, None)
            self.eager_backward.clear()
        self.program_backward, self.back_rows = True, self.rows  # a later forward may have other rows
        self.backward_raw = raw
        self.breaks = 0
        stats["fused_steps"] += 1
        stats["numpy_steps"] += self.numpy

    def _layout(self, rows):
        """The arena and table for batches of up to `rows` rows (the buffers of compiler._storage)."""
        from . import compiler
        low, where, sizes, table, views = self.cap.low, {}, {"float64": 0, "int64": 0}, [], {}
        for name in self.cap.stored:
            key, shape, dtype = compiler._storage(low, name, rows)
            if key not in where:
                size = int(np.prod(shape))
                where[key] = (dtype, sizes[dtype], sizes[dtype] + size)
                sizes[dtype] += size
            table += [*where[key][1:], *shape]
            views[name] = shape
        self.arena = np.zeros(sizes["float64"] + 1)  # the last element: the forward's summed loss
        self.iarena = np.zeros(max(sizes["int64"], 1), dtype=np.int64)
        self.table = np.array(table, dtype=np.int64)
        self._gradients_to_nodes()  # from the old arena, which they keep alive
        self.memory = {key: (self.arena if dtype == "float64" else self.iarena)[lo:hi]
                       for key, (dtype, lo, hi) in where.items()}
        self.capacity, self.views = rows, views
        if self.numpy:
            self.step = self.cap.program.numpy_bind()[0](self.arena, self.iarena, self.table)

    # --- where the loop stands ---

    def forward_call(self, node):
        """A forward() call off the plan's course: a new step, or a break (whose calls may teach the order)."""
        if node._at == 0 and (self.seen is None or node in self.seen):  # a new step (not one being learnt)
            self.eager, self.seen = False, None
            self.at, self.back, self.pending = 1, 0, True
            if node is self.loss:
                self.run_forward()
            return
        if self.seen is None:  # the step runs node by node from here: its calls may show the script's order
            called = self.ops[:self.at] if self.pending else []
            if not self.eager:
                self.to_eager(f"{node}.forward() out of order")
            self.seen = list(called)
        _base(node).forward(node)
        if self.seen is not None:
            self.seen.append(node)
            if node is self.loss:
                self._learn()

    def _learn(self):
        """Take the order in which this node-by-node step called the operations, if it is a whole forward in
        another topological order (a script's own list, a depth-first sort): the next step follows it."""
        seen, self.seen = self.seen, None
        place = {n: i for i, n in enumerate(seen)}
        if len(seen) != len(self.ops) or set(seen) != set(self.ops) or seen[-1] is not self.loss:
            return
        if any(place.get(inp, -1) > place[n] for n in seen for inp in n.inputs):
            return
        self.ops = seen
        for i, n in enumerate(seen):
            n._at, n._back_at = i, len(seen) - 1 - i

    def run_forward(self):
        try:
            self._forward()
        except _Break as why:
            self.at -= 1  # the loss's own forward runs below
            self.to_eager(str(why))
            if isinstance(why, _Drop) and "_plan" in self.loss.__dict__:
                self.drop(str(why))
            _base(self.loss).forward(self.loss)

    def backward_call(self, node):
        """A backward() call off the plan's course, or the loss's: the program's backward, or a break."""
        if not self.eager and node is self.loss and self.back == 0 and self.at == len(self.ops):
            try:
                self._backward()
            except _Break as why:
                self.to_eager(str(why))
            else:
                self.back = 1
                if len(self.ops) == 1:
                    self.back = 0
                return
        elif not self.eager:
            self.to_eager(f"{node}.backward() out of order")
        _base(node).backward(node)
        self.eager_backward.add(node)

    def to_eager(self, why):
        """The rest of this step runs node by node, from where it stands."""
        if self.pending:
            self._run_pending()
        self.eager = True
        self.breaks += 1
        stats["node_steps"] += 1
        if self.breaks >= BREAKS_TO_DROP:
            self.drop(why)

    def _run_pending(self):
        """Run the operations the step has called so far, which the program has not run yet, node by node."""
        self.pending = False
        self.eager = True
        for node in self.ops[:self.at]:
            _base(node).forward(node)

    # --- reads ---

    def value(self, node):
        """node.value as node-by-node execution would show it now."""
        if self.pending and node._at < self.at:
            self.to_eager(f"{node}.value read before the step's forward ended")
        if "_plan" in node.__dict__ and node._gen != self.generation:
            self._materialise(node)
        return node.__dict__["value"]

    def _materialise(self, node):
        d = node.__dict__
        if node is self.loss:
            total = self.arena[-1]
            d["value"] = np.float64(total if node.reduction == "sum" else total / max(self.rows, 1))
        else:
            held = self._held(node)
            out = d["value"] if _reusable(d["value"], held.shape) else np.empty(held.shape)
            out[...] = held
            d["value"] = out
            self.handed.add(node)
        d["_gen"] = self.generation

    def _held(self, node):
        """The program's value of an operation for this step's rows, in the node's shape."""
        return self._buffer("V", node, self.rows).reshape(self._shape(node, self.rows))

    def _shape(self, node, rows):
        shape = self.shapes[node]
        return (rows,) + shape[1:] if self.cap.low.batched[node] else shape

    def _buffer(self, letter, node, rows):
        """The program's value (V) or gradient (G) buffer of `node` for this step's rows, 2-D."""
        name = f"{letter}{self.cap.low.index[node]}"
        full = self.memory[name].reshape(self.views[name])
        return full[:rows] if self.cap.low.batched[node] else full

    def _param_grad(self, param):
        return self.memory[f"d{self.cap.low.index[param]}"].reshape(self.param_shapes[self.params.index(param)])

    def gradient(self, node, inp):
        """node.gradients[inp] as node-by-node execution would show it now (a read the dict did not hold)."""
        original = self.deferred.get((node, inp))
        if not self.program_backward or node in self.eager_backward:
            if original is None:
                raise KeyError(inp)
            return original()
        if isinstance(inp, Parameter):
            return self._param_grad(inp)
        if not isinstance(inp, Input):
            return self._buffer("G", inp, self.back_rows).reshape(self._shape(inp, self.back_rows))
        if node in self.cap.kept:
            self._keep(node)
            return original()
        raw = self.backward_raw[self.inputs.index(inp)]
        return self._buffer("G", inp, self.back_rows).reshape(np.shape(raw)).copy()

    def _keep(self, node):
        """Set what `node`'s own deferred data gradient reads, as its node-by-node backward keeps it."""
        from .ops.losses import Loss, _labels_fit
        kept = self.memory[self.cap.kept[node]]
        if isinstance(node, Loss):
            y, p = node.inputs
            rows = self.back_rows
            node._p_kept = kept[:kept.size // self.capacity * rows].reshape(self._shape(p, rows))
            node._y_kept = np.asarray(self.backward_raw[self.inputs.index(y)], dtype=F64)
            node._elementwise_kept = _labels_fit(node._y_kept.shape, node._p_kept.shape)
            node._upstream_kept = 1.0 / max(rows, 1)
        else:
            weight = node.inputs[1]
            setattr(node, "_A_kept" if "_A_kept" in vars(node) else "_K_kept", kept.reshape(weight.value.shape))
            node._g_kept = self._buffer("G", node, self.back_rows).reshape(self._shape(node, self.back_rows))


class _Read:
    """A deferred gradient entry of a fused node: Plan.gradient(node, inp) when read."""

    __slots__ = ("plan", "node", "inp")

    def __init__(self, plan, node, inp):
        self.plan, self.node, self.inp = plan, node, inp

    def __call__(self):
        return self.plan.gradient(self.node, self.inp)


def _op_forward(self):
    plan = self._plan
    if plan.at == self._at and not plan.eager:
        plan.at += 1
        if self is plan.loss:
            plan.run_forward()
        return
    plan.forward_call(self)


def _op_backward(self):
    plan = self._plan
    if plan.back == self._back_at and plan.back and not plan.eager:
        plan.back += 1
        if plan.back == len(plan.ops):
            plan.back = 0  # the step's backward is complete; a second one starts over
        return
    plan.backward_call(self)


def _get_value(self):
    plan = self.__dict__["_plan"]
    if self.__dict__["_gen"] != plan.generation or plan.pending:
        return plan.value(self)
    return self.__dict__["value"]


def _set_value(self, value):
    d = self.__dict__
    plan = d["_plan"]
    d["value"], d["_gen"] = value, plan.generation
    if self is not plan.loss:
        plan.handed.add(self)


def _reduce_ex(self, protocol):
    """Copying or pickling a fused node gives the node-by-node one: the plan is dropped first (a copy of the
    plan's buffers would not share its arena), and the loop fuses again as it goes on."""
    plan = self.__dict__.get("_plan")
    if plan is not None:
        plan.drop("a node was copied or pickled")
    return _base(self).__reduce_ex__(self, protocol)


_fused_classes = {}


def _base(node):
    """The node's own class: its node-by-node forward() and backward() (also once its plan is dropped)."""
    return getattr(type(node), "_fused_base", type(node))


def _fused_class(cls):
    """The class a fused operation takes: `cls` with its calls checked against the plan, and a lazy value.

    Inputs and Parameters keep their classes (scripts test `type(n) is Parameter`) and plain values.
    """
    fused = _fused_classes.get(cls)
    if fused is None:
        fused = _fused_classes[cls] = type(cls.__name__, (cls,), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "_fused_base": cls,
            "forward": _op_forward, "backward": _op_backward, "value": property(_get_value, _set_value),
            "__reduce_ex__": _reduce_ex})
    return fused
