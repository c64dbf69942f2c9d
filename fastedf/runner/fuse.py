"""A user's graph as one compiled step: the fused course loop for node classes fastedf has verified.

Once every operation of a loss's graph belongs to a class accelerated with a
Match (fastedf.runner.nodes), or sits above a node no program runs (its class
given back, or matched without a lowering: Conv, MaxPooling, Flatten, a class
fastedf does not know), and the loop has run long enough to repay the
program (the cost model of fastedf.fused: a load from Numba's cache, else a
compile), the graph's forward runs as one compiled call at the pass's first
operation call, its backward as another at the loss's backward().  Each
operation is lowered (LOWER) to the kernels its verified candidate calls for
its conventions, or to the loop its NumPy expression stands for, so the step
computes what the candidate computes, which is what the user's code computes.

The user's objects behave as under plain python: the leaves (Inputs,
Parameters, whatever the user calls them) keep running the user's own
forward() and backward(); an operation's `value` and its `gradients` entries
are arrays the program writes, in the shapes and types the verified
candidate gives (a loss value in the user's form), set on the node as its own
code would set them.  They are reused in place from step to step only while
nothing but the node holds them (reference counts, the arrays' and their
buffer's): an array the script kept, or a view of one, is left alone and the
program moves to a new buffer.

The program itself is verified: its first step on each signature of the
leaves is compared with the verified candidates' dry run on the same leaves
(values and gradients, fastedf.runner.verify's 1e-12); a difference leaves
that signature node by node, reported by --explain.  So a class whose graph may
fuse skips its node-by-node kernels (whose loading would cost more than the
program's).

Guards (any failure runs that call, and the rest of its step, node by node on
the verified candidates): the leaves' shapes form a signature whose every
operation was verified (the plan is built per signature, a dry run of the
candidates giving the shapes); an operation's direct leaves hold the arrays the
program read; a backward starts at the loss after a whole fused forward; the
classes are still accelerated.  Every 2^k-th step (from FIRST_RECHECK) runs
node by node, its classes' calls there verifying (re-checks).

What differs from plain python, by design: a pass's operation values are all
written at its first operation's forward() (a script reading an operation's
value between two forward() calls of one pass sees the new one early); the
loss's value is set at its own forward().  A Parameter changed in place between
a forward and its backward is read by the backward, as the user's code reads it.

The nodes no program runs are cut off (_outside): the program runs the part
of the graph between them and the loss, their values read as its leaves, and
they and what feeds them run node by node around it.

Not fused (node by node, reported by --explain): an operation with two
consumers or one input twice, rank above 2, broadcasting other than a bias,
per-row gradients, a Softmax without its maximum subtracted.  The structures
and conventions among these make the graph Unfusable for good: its watch
stops, and the classes kept accelerated for its program are given back where
node by node they do not pay.
"""
import operator
import re
import sys
import time
import weakref

import numpy as np

from .. import config, fused
from . import records
from .verify import F64

ndarray = np.ndarray

FIRST_RECHECK = 64  # fused steps 64, 128, 256... run node by node: the classes' re-checks see real calls
MAX_PLANS = 32  # fused graphs held at once (each holds its nodes and buffers)
MAX_WATCHES = 1024  # watches kept before those of dead losses are cleared

_getrefcount = sys.getrefcount
_is = operator.is_


class Refused(Exception):
    """The graph (or this signature of it) cannot be fused; the message says why."""


class Unfusable(Refused):
    """The graph is not fused for the rest of the run: a convention or a structure no lowering takes, or a part
    of a graph the script's last run says cannot repay its program.  (A refusal for the leaves' shapes is not:
    a step on other shapes, a test set's, may be the one looked at.)"""


# ---- lowering: each operation's forward and backward as lines of the step program ---------------------------
# Every array in the program is 2-D (rows, columns); a lowering gets the names of its inputs' values, its own
# value (the loss: none, it returns its total), the upstream gradient g, and the gradient buffers it writes
# ({input index: name}); it returns (forward lines, backward lines).

def _loop2(target, expr):
    return [f"for i in range({target}.shape[0]):", f"    for j in range({target}.shape[1]):",
            f"        {target}[i, j] = {expr}"]


def _lower_multiply(c, ins, out, g, grads, shapes):
    if shapes[0] != shapes[1]:
        raise Refused("Multiply broadcasts its inputs")
    a, b = ins
    back = []
    for i, name in grads.items():
        back += _loop2(name, f"{g}[i, j] * {ins[1 - i]}[i, j]")
    return _loop2(out, f"{a}[i, j] * {b}[i, j]"), back


def _lower_addition(c, ins, out, g, grads, shapes):
    if shapes[0] != shapes[1]:
        raise Refused("Addition broadcasts its inputs")
    back = []
    for name in grads.values():
        back += _loop2(name, f"{g}[i, j]")
    return _loop2(out, f"{ins[0]}[i, j] + {ins[1]}[i, j]"), back


def _lower_linear(c, ins, out, g, grads, shapes):
    if c.per_row:
        raise Unfusable("gradients per row")
    o = c.order
    x, A = ins[o.index(0)], ins[o.index(1)]
    xs, As = shapes[o.index(0)], shapes[o.index(1)]
    b = ins[o.index(2)] if len(o) == 3 else None
    bs = shapes[o.index(2)] if b else None
    if len(xs) != 2 or len(As) != 2:
        raise Refused("a Linear whose x or weight is not 2-D")
    rows = c.formula.startswith("x")  # samples as rows: z = x @ M + b, else z = M @ x + b
    M = "{A}[k, j]" if c.formula in ("x @ A + b", "A.T @ x + b") else "{A}[j, k]"
    # M[k, j] in the rows formulas (z[i, j] = sum_k x[i, k] M[k, j]); M[j, k] read as Mt in the columns ones
    if rows:
        if b and not (len(bs) == 1 or bs[0] == 1):
            raise Refused("a bias that is not one row")
        m = M.format(A=A)
        fwd = [f"for i in range({x}.shape[0]):", f"    for j in range({out}.shape[1]):", "        s = 0.0",
               f"        for k in range({x}.shape[1]):", f"            s += {x}[i, k] * {m}",
               f"        {out}[i, j] = s" + (f" + {b}[0, j]" if b else "")]
    else:
        if b and not (len(bs) == 2 and bs[1] == 1):
            raise Refused("a bias that is not one column")
        m = ("{A}[k, j]" if c.formula == "A.T @ x + b" else "{A}[j, k]").format(A=A)
        fwd = [f"for j in range({out}.shape[0]):", f"    for i in range({x}.shape[1]):", "        s = 0.0",
               f"        for k in range({x}.shape[0]):", f"            s += {m} * {x}[k, i]",
               f"        {out}[j, i] = s" + (f" + {b}[j, 0]" if b else "")]
    back = []
    for i, name in grads.items():
        role = o[i]
        if rows:
            if role == 0:  # dx[i, k] = sum_j g[i, j] M[k, j]
                back += [f"for i in range({name}.shape[0]):", f"    for k in range({name}.shape[1]):",
                         "        s = 0.0", f"        for j in range({g}.shape[1]):",
                         f"            s += {g}[i, j] * {M.format(A=A)}", f"        {name}[i, k] = s"]
            elif role == 1:  # dM[k, j] = sum_i x[i, k] g[i, j]; dA is dM or its transpose
                at = "[k, j]" if M == "{A}[k, j]" else "[j, k]"
                back += [f"for k in range({x}.shape[1]):", f"    for j in range({g}.shape[1]):", "        s = 0.0",
                         f"        for i in range({x}.shape[0]):", f"            s += {x}[i, k] * {g}[i, j]",
                         f"        {name}{at} = s"]
            else:  # db = g summed over the rows
                back += [f"for j in range({g}.shape[1]):", "    s = 0.0", f"    for i in range({g}.shape[0]):",
                         f"        s += {g}[i, j]", f"    {name}[0, j] = s"]
        else:
            mt = m  # M[j, k] as read in the forward: z[j, i] = sum_k M[j, k] x[k, i]
            if role == 0:  # dx[k, i] = sum_j M[j, k] g[j, i]
                back += [f"for k in range({name}.shape[0]):", f"    for i in range({name}.shape[1]):",
                         "        s = 0.0", f"        for j in range({g}.shape[0]):",
                         f"            s += {mt} * {g}[j, i]", f"        {name}[k, i] = s"]
            elif role == 1:  # dM[j, k] = sum_i g[j, i] x[k, i]
                at = "[k, j]" if c.formula == "A.T @ x + b" else "[j, k]"
                back += [f"for j in range({g}.shape[0]):", f"    for k in range({x}.shape[0]):", "        s = 0.0",
                         f"        for i in range({x}.shape[1]):", f"            s += {g}[j, i] * {x}[k, i]",
                         f"        {name}{at} = s"]
            else:  # db = g summed over the columns
                back += [f"for j in range({g}.shape[0]):", "    s = 0.0", f"    for i in range({g}.shape[1]):",
                         f"        s += {g}[j, i]", f"    {name}[j, 0] = s"]
    return fwd, back


def _lower_activation(forward, backward):
    def lower(c, ins, out, g, grads, shapes):
        if c.op == "relu" and c.at_zero == 1:  # the candidate's g * (z >= 0)
            back = _loop2(grads[0], f"{g}[i, j] * (1.0 if {ins[0]}[i, j] >= 0.0 else 0.0)") if grads else []
        else:
            back = [f"{backward}({out}, {g}, {grads[0]})"] if grads else []
        return [f"{forward}({ins[0]}, {out})"], back
    return lower


def _lower_bce(c, ins, out, g, grads, shapes):
    y, p = ins[c.order[0]], ins[c.order[1]]
    if shapes[0] != shapes[1]:
        raise Refused("a BCE whose labels and probabilities differ in shape")
    rows = f"{p}.shape[{0 if len(shapes[c.order[1]]) == 2 else 1}]"  # a 1-D p's rows: its (1, n) array's columns
    scale = {"rows": f"1.0 / max({rows}, 1)", "size": f"1.0 / max({p}.size, 1)"}.get(c.scale, "1.0")
    back = [f"s = {scale}"] if grads else []
    for i, name in grads.items():
        back.append(f"bce_gradient({y}, {p}, {c.eps!r}, {c.code}, s, {name})" if c.order[i] == 1
                    else f"bce_label_gradient({p}, {c.eps!r}, {c.code}, s, {name})")
    return [f"total = bce_total({y}, {p}, {c.eps!r}, {c.code})"], back


def _lower_softmax(c, ins, out, g, grads, shapes):
    z = ins[0]
    if len(shapes[0]) != 2:
        raise Refused("a Softmax whose input is not 2-D")
    if not c.stable:
        raise Unfusable("a Softmax without the maximum subtracted")
    if c.axis == "rows":
        fwd = [f"softmax_forward({z}, {out})"]
        back = [] if not grads else [f"softmax_backward({out}, {g}, {grads[0]})"]
    else:  # over columns: the row kernels on the transposes, as the candidate computes it
        fwd = [f"zt = np.ascontiguousarray({z}.T)", "ot = np.empty_like(zt)", "softmax_forward(zt, ot)",
               f"{out}[:, :] = ot.T"]
        back = [] if not grads else [f"pt = np.ascontiguousarray({out}.T)", f"gt = np.ascontiguousarray({g}.T)",
                                     "dt = np.empty_like(pt)", "softmax_backward(pt, gt, dt)",
                                     f"{grads[0]}[:, :] = dt.T"]
    if c.through and grads:
        back = _loop2(grads[0], f"{g}[i, j]")
    return fwd, back


def _lower_ce(c, ins, out, g, grads, shapes):
    y, p = ins[c.order[0]], ins[c.order[1]]
    if shapes[0] != shapes[1] or len(shapes[0]) != 2:
        raise Refused("a CE whose labels and probabilities are not one 2-D shape")
    samples = f"max({p}.shape[{0 if c.axis == 'rows' else 1}], 1)"
    back = [f"s = {'1.0 / ' + samples if c.scale == 'samples' else '1.0'}"] if grads else []
    for i, name in grads.items():
        back.append(f"ce_gradient({y}, {p}, {c.eps!r}, {c.code}, {c.logits}, s, {name})" if c.order[i] == 1
                    else f"ce_label_gradient({p}, {c.eps!r}, {c.code}, s, {name})")
    return [f"total = ce_total({y}, {p}, {c.eps!r}, {c.code})"], back


LOWER = {
    "multiply": _lower_multiply, "addition": _lower_addition, "linear": _lower_linear,
    "sigmoid": _lower_activation("sigmoid_forward", "sigmoid_backward"),
    "tanh": _lower_activation("tanh_forward", "tanh_backward"),
    "relu": _lower_activation("relu_forward", "relu_backward"),
    "bce": _lower_bce, "softmax": _lower_softmax, "ce": _lower_ce,
}

TEMPLATE = '''\
"""Generated by fastedf.runner.fuse for one user graph structure: its forward or backward."""
# kernels {digest}: Numba's cache does not see edits to called functions, this line does
import numpy as np

from fastedf.config import program
from fastedf.ops.activations import *
from fastedf.runner.kernels import *


@program
def step({args}, arena, table, backward):
    """The forward (returns the loss's total) or the backward (returns 0.0) of one step."""
    total = 0.0
    if backward:
{backward_views}
{backward}
        return 0.0
{forward_views}
{forward}
    return total
'''


def _source(ops, leaves, lowered, buffers):
    from .. import compiler
    views = [f"{name} = arena[table[{3 * k}]:table[{3 * k}] + table[{3 * k + 1}] * table[{3 * k + 2}]]"
             f".reshape((table[{3 * k + 1}], table[{3 * k + 2}]))" for k, name in enumerate(buffers)]
    forward = [line for fwd, _ in lowered for line in fwd]
    backward = [line for _, back in reversed(lowered) for line in back]

    def used(lines):  # each pass makes only the views it names: a view costs its call ~10 ns
        words = set(re.findall(r"\w+", "\n".join(lines)))
        return [view for name, view in zip(buffers, views) if name in words]
    body = {"args": ", ".join(f"L{k}" for k in range(len(leaves))), "digest": compiler._kernels_digest()}
    for key, depth, lines in (("forward_views", 4, used(forward)), ("forward", 4, forward),
                              ("backward_views", 8, used(backward)), ("backward", 8, backward)):
        body[key] = "\n".join(" " * depth + line for line in lines) or " " * depth + "pass"
    return TEMPLATE.format(**body)


# ---- the graph ---------------------------------------------------------------------------------------------

def _graph(loss, cut=None):
    """(operations in an order the forward can run, leaves) of the graph behind `loss`.  An operation for which
    `cut` is true (never the loss) counts as a leaf: its value is read as it is, its inputs not visited."""
    order, seen, cuts, stack = [], set(), set(), [(loss, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node.inputs and node is not loss and cut is not None and cut(node):
            cuts.add(id(node))
            continue
        stack.extend((n, False) for n in reversed(list(node.inputs)))
    return ([n for n in order if n.inputs and id(n) not in cuts],
            [n for n in order if not n.inputs or id(n) in cuts])


def _outside(registry):
    """cut(node) for _graph: true for a node no program will run, as far as can be told now (its class given
    back, deferred or not the user's, or matched, or left with candidates only, of operations without a
    lowering).  A program then runs the part of the graph below it, the node's value one of its leaves; the
    node and what feeds it run node by node, around the program."""
    classes = {nc.cls: nc for nc in registry.classes}

    def cut(node):
        nc = classes.get(type(node))
        if nc is None or nc.state in ("user", "deferred", "other"):
            return True
        if nc.match is not None:
            return nc.match.op not in LOWER
        return nc.survivors is not None and not any(c.op in LOWER for c in nc.survivors)
    return cut


def may_fuse(registry, node):
    """Whether a program may run calls of `node`'s class once its graph's classes are verified: the class has a
    node in the part of its loss's graph a program can run (_graph with _outside's cuts), and that graph was not
    found unfusable; or in another graph that may fuse (a script's second loss, its training one)."""
    try:
        loss, hops = node, 0
        while loss.outputs and hops < 10000:
            loss, hops = loss.outputs[0], hops + 1
        cut = _outside(registry)
        fuser = registry.fuser()
        if not (cut(loss) or fuser.unfusable(loss)) and any(type(n) is type(node) for n in _graph(loss, cut)[0]):
            return True
        return fuser.keeps(type(node), cut)
    except Exception:  # noqa: BLE001  not a graph of the protocol: node by node
        return False


class Structure:
    """What a graph's program is made of: the operations' classes, lowerings, and the leaves' places."""

    def __init__(self, registry, loss):
        ops, leaves = _graph(loss, _outside(registry))
        self.loss, self.ops, self.leaves = loss, ops, leaves
        classes = {nc.cls: nc for nc in registry.classes}
        self.classes = []
        for node in ops:
            nc = classes.get(type(node))
            if nc is None or nc.state != "accelerated" or nc.match is None:  # still being verified
                raise Refused(f"{type(node).__name__} is not accelerated")
            if nc.match.op not in LOWER:
                raise Unfusable(f"{type(node).__name__} ({nc.match.op}) has no fused lowering")
            if nc.match.replaces_dict:
                raise Unfusable(f"{type(node).__name__}'s backward replaces its gradients dict")
            if len({id(n) for n in node.inputs}) != len(node.inputs):
                raise Unfusable(f"a {type(node).__name__} takes one node twice")
            consumers = node.outputs
            if node is loss:
                if consumers:
                    raise Unfusable("the loss feeds another node")
            elif len(consumers) != 1:
                raise Unfusable(f"a {type(node).__name__} with {len(consumers)} consumers")
            self.classes.append(nc)
        self.place = {id(n): k for k, n in enumerate(ops)}
        self.leaf_place = {id(n): k for k, n in enumerate(leaves)}
        # where each operation's upstream gradient comes from: (consumer's place, input index there)
        self.upstream = [None if n is loss else (self.place[id(n.outputs[0])],
                                                 list(map(id, n.outputs[0].inputs)).index(id(n))) for n in ops]
        for k, node in enumerate(ops):
            if self.upstream[k] is not None:
                consumer, i = self.upstream[k]
                if i not in self.classes[consumer].match.keys:
                    raise Unfusable(f"{type(ops[consumer]).__name__}'s backward does not write its input's gradient")
        # each op's leaves, read directly: (input index, leaf place)
        self.direct = [tuple((i, self.leaf_place[id(i)]) for i in n.inputs if id(i) in self.leaf_place)
                       for n in ops]
        # the cut nodes among each op's direct leaves, and those not direct to it: a script may forward a cut node
        # after the pass's first operation, and one that rewrites its value in place keeps the array the program
        # read, so their contents are compared at their consumers' calls (Plan.unchanged)
        cut = {j for j, n in enumerate(leaves) if n.inputs}
        self.cut_direct = [tuple(j for _, j in d if j in cut) for d in self.direct]
        self.later_cuts = [tuple(sorted(cut.difference(j for _, j in d))) for d in self.direct]

    def dry_run(self, vals):
        """The verified candidates on the leaves' values: each operation's value and gradients (shapes, types),
        and its verified entry; raises Refused when a signature was not verified."""
        values, grads, entries = {}, [], []
        leaf_vals = {id(n): v for n, v in zip(self.leaves, vals)}

        def value_of(n):
            return leaf_vals[id(n)] if id(n) in leaf_vals else values[self.place[id(n)]]
        with np.errstate(all="ignore"):
            for k, node in enumerate(self.ops):
                nc, ins = self.classes[k], [value_of(n) for n in node.inputs]
                key = (id(node), *[v.shape for v in ins])
                entry = nc.fast.get(key)
                if entry is None:
                    raise Refused(f"{type(node).__name__} not verified at shapes {key[1:]}")
                entries.append(entry)
                values[k] = entry.forward(ins)
            grads = [None] * len(self.ops)
            for k in reversed(range(len(self.ops))):
                node, entry = self.ops[k], entries[k]
                up = self.upstream[k]
                g = None if up is None else grads[up[0]][up[1]]
                ins = [value_of(n) for n in node.inputs]
                grads[k] = entry.backward(ins, values[k], g, entry.keys)
        return values, grads, entries


def _loss_value(structure, vals, values):
    """total -> the loss's value as the verified candidate gives it (its reduction, then the user's form)."""
    c = structure.classes[-1].match.candidate
    loss = structure.ops[-1]
    ins = [vals[structure.leaf_place[id(n)]] if id(n) in structure.leaf_place else values[structure.place[id(n)]]
           for n in loss.inputs]
    form = structure.classes[-1].match.forms.get(tuple(v.shape for v in ins))
    p = ins[c.order[1]]
    size = c._samples(p) if c.op == "ce" else max(np.size(p), 1)  # what the candidate's mean divides by
    mean = c.reduce == "mean"

    probe = np.float64(1.0)
    if form is None or form(probe) is probe:  # the user's value is a float64 as np.float64 makes it: one call
        return (lambda total: np.float64(total / size)) if mean else np.float64

    def value(total):
        v = np.float64(total / size if mean else total)
        return form(v)
    return value


def _2d(shape):
    return shape if len(shape) == 2 else (1, shape[0]) if len(shape) == 1 else None


class Layout:
    """One leaf signature's buffers: the arena, the table, and the arrays shown to the script."""

    def __init__(self, structure, vals):
        if any(type(v) is not np.ndarray or v.dtype != F64 or v.ndim not in (1, 2) or not v.size for v in vals):
            raise Refused("a leaf that is not a non-empty float64 array of rank 1 or 2")
        values, grads, entries = structure.dry_run(vals)
        self.values, self.grads = values, grads
        self.unchecked = {"V", "G"}  # the program's first step on these leaves is checked against them
        self.made = None  # the step whose leaves these are (Plan)
        loss_k = len(structure.ops) - 1
        self.shapes, table, offset = [], [], 0
        for k, node in enumerate(structure.ops):
            if k != loss_k:
                v = values[k]
                if type(v) is not np.ndarray or v.dtype != F64 or _2d(v.shape) is None:
                    raise Refused(f"a {type(node).__name__}'s value is not a float64 array of rank 1 or 2")
                self.shapes.append(("V", k, None, v.shape))
            for i, d in grads[k].items():
                if type(d) is not np.ndarray or d.dtype != F64 or _2d(d.shape) is None:
                    raise Refused(f"a {type(node).__name__}'s gradient is not a float64 array of rank 1 or 2")
                self.shapes.append(("G", k, i, d.shape))
        self.loss_of = _loss_value(structure, vals, values)
        for _, _, _, shape in self.shapes:
            r, c = _2d(shape)
            table += [offset, r, c]
            offset += r * c
        self.size = offset
        self.leaf_shapes = [v.shape for v in vals]
        self.kinds = {kind: [(j, k, i) for j, (kind_, k, i, _) in enumerate(self.shapes) if kind_ == kind]
                      for kind in "VG"}
        self.table = np.array(table or [0], dtype=np.int64)
        self.arena = None
        self.new_arena(np.zeros(max(self.size, 1)))

    def new_arena(self, arena):
        self.arena, self.views = arena, []
        for (_, _, _, shape), (offset, r, c) in zip(self.shapes, self.table.reshape(-1, 3)):
            self.views.append(arena[offset:offset + r * c].reshape(shape))
        self.by_kind = {kind: [self.views[j] for j, _, _ in self.kinds[kind]] for kind in "VG"}
        self.view_refs = {kind: 4 * len(views) for kind, views in self.by_kind.items()}
        # what holds the arena when nothing else does: self.arena, each view, and getrefcount's argument
        self.arena_refs = 2 + len(self.views)


# ---- the plan: where the loop stands ------------------------------------------------------------------------

class Plan:
    """One user graph run as compiled steps.

    done[k]: operation k was forwarded since the last compiled forward;
    fresh: the compiled forward's values stand for the pass under way; eager:
    this step runs node by node; backed: the compiled backward ran for this
    step and the operations' backward() calls are its; waiting: the pass's
    operations run node by node until `start`'s call runs the program.
    """

    def __init__(self, fuser, structure, program):
        self.fuser, self.s, self.program = fuser, structure, program
        self.layouts, self.refused = {}, {}
        self.layout = None
        self.read = [None] * len(structure.leaves)
        self.args = [None] * len(structure.leaves)
        self.shares = [False] * len(structure.leaves)  # args[j] is a view of read[j]: valid while that array is
        self.done = [False] * len(structure.ops)
        self.fresh = self.eager = self.backed = self.waiting = False
        self.start = None  # the operation whose call runs the program, once a pass showed the first one too early
        self.last = len(structure.ops) - 1
        self.count = len(structure.ops)
        self.shown = None  # the layout whose arrays the nodes show (values and gradients), if they all do
        self.back_count = 0
        self.snaps = None  # cut leaves' contents as the program read them (those not direct to its first operation)
        self.steps = self.node_steps = 0
        self.next_check = FIRST_RECHECK
        self.registry = fuser.registry
        self.generation = fuser.registry.generation
        self._step = None  # the program's compiled step, once loaded

    # the forward

    def forward(self, node, k):
        """An operation's forward() that the wrapper's fresh path (fastedf.runner.nodes) did not take: True when
        the program runs it (a new pass), False: node by node."""
        if self.eager:
            if not self.done[k]:
                self.done[k] = True
                return False
            self.eager = False  # a new pass
        elif self.waiting:  # the operations called before `start` run node by node, the program at it
            if k != self.start and not self.done[k]:
                self.done[k] = True
                return False
            self.waiting = False
            if k == self.start:
                return self._run(node, k)
        elif self.fresh and not self.done[k]:
            # a leaf fed after the program ran (a cut node the script forwards late): node by node from here, and
            # from the next pass the program waits for this operation's call
            self.start = k
            return self._break(k)
        # a new pass: the compiled forward on the leaves as they are, or node by node
        self.done = done = [False] * self.count
        self.fresh = self.backed = False
        self.steps += 1
        if self.steps == self.next_check:
            self.next_check *= 2
            for nc in set(self.s.classes):  # a class whose calls, fused ones too, reached its next re-check: its
                calls = nc.fast_calls + self.fuser.fused_calls(nc)  # next call verifies (its own count sees
                if calls >= nc.due:  # only node-by-node calls; every plan's steps counting, not each plan's)
                    nc.due, nc.next_check = 2 * calls, nc.fast_calls + 1
            return self._break(k)
        if self.generation != self.registry.generation and not self.fuser.plan_alive(self):
            return self._break(k)
        if self.start is not None and k != self.start:
            self.waiting, self.shown = True, None  # the candidates set those operations' values
            done[k] = True
            return False
        return self._run(node, k)

    def _run(self, node, k):
        """The program's forward at operation k's call: True, or False (node by node) where it cannot run."""
        done = self.done
        # The leaves, as the last step's layout takes them: each fed since converted (the common step, inline:
        # it is most of the wrapper's cost), else the layout chosen again (_args)
        vals = [n.value for n in self.s.leaves]
        layout = self.layout
        if layout is not None:
            args, read, shares, shapes = self.args, self.read, self.shares, layout.leaf_shapes
            for j, v in enumerate(vals):
                if type(v) is not ndarray or v.dtype is not F64 or v.shape != shapes[j]:
                    args = self._args(vals)
                    break
                if v is not read[j] or not shares[j]:
                    if v.ndim == 2 and v.flags.c_contiguous:
                        args[j], shares[j] = v, True
                    else:
                        self._convert(j, v)
            else:
                self.read = vals
        else:
            args = self._args(vals)
        if args is None:
            return self._break(k)
        layout = self.layout
        if layout.unchecked and layout.made != self.steps:  # its first step ended before its backward
            try:
                layout.values, layout.grads, _ = self.s.dry_run(vals)
            except Refused:
                return self._break(k)
            layout.unchecked, layout.made = {"V", "G"}, self.steps
        views = layout.by_kind["V"]
        if (self.shown is not layout or _getrefcount(layout.arena) != layout.arena_refs
                or sum(map(_getrefcount, views)) != layout.view_refs["V"]):
            self._own(layout, "V")
        step = self._step
        if step is None:
            step = self._step = self.program.step
        self.total = step(*args, layout.arena, layout.table, False)
        later = self.s.later_cuts[k]
        self.snaps = {j: vals[j].copy() for j in later} if later else None
        if layout.unchecked and not self._check(layout, "V"):
            return self._break(k)
        if self.shown is not layout:
            self._show(layout, "V")
        self.fresh = True
        done[k] = True
        if k == self.last:
            node.value = layout.loss_of(self.total)
        return True

    def unchanged(self, cut):
        """Whether the cut leaves at places `cut` hold what the program read (a cut node forwarded after the
        program ran, writing its value in place, does not)."""
        snaps = self.snaps
        return snaps is None or all(j not in snaps or np.array_equal(self.read[j], snaps[j], equal_nan=True)
                                    for j in cut)

    def _break(self, k):
        self.eager, self.fresh, self.waiting, self.shown = True, False, False, None
        self.done[k] = True
        self.node_steps += 1
        return False

    def _args(self, vals):
        """The leaves' values `vals` as the program takes them (2-D, C-contiguous float64), choosing the layout
        for their signature; None when it cannot be fused."""
        try:
            sig = tuple([(v.shape, v.dtype) for v in vals])
        except AttributeError:
            return None
        layout = self.layouts.get(sig)
        if layout is None:
            if sig in self.refused:
                return None
            try:
                layout = self.layouts[sig] = Layout(self.s, vals)
                layout.made = self.steps  # the step of its dry run's leaves
            except Refused as why:
                self.refused[sig] = str(why)
                return None
        if layout is not self.layout:
            self.layout, self.shown = layout, None
        for j, v in enumerate(vals):
            self._convert(j, v)
        self.read = vals
        return self.args

    def _convert(self, j, v):
        """args[j]: the leaf's array as it is if 2-D and C-contiguous, else a 2-D contiguous view or copy."""
        if v.ndim == 2 and v.flags.c_contiguous:
            self.args[j], self.shares[j] = v, True
        else:
            c = np.ascontiguousarray(v)
            self.args[j], self.shares[j] = c.reshape(_2d(v.shape)), c is v

    def _own(self, layout, kind):
        """Before the program writes its `kind` buffers: if anything besides the nodes holds one of them, or a
        view of the arena, the arena is left to its holder and the program moves to a copy.  (The passes test
        the common case inline: the nodes show the layout and hold each view, and nothing else does.)"""
        views = layout.by_kind[kind]
        if self.shown is layout:  # each view: the layout's two lists, the node, getrefcount's argument
            held = (_getrefcount(layout.arena) != layout.arena_refs
                    or sum(map(_getrefcount, views)) != layout.view_refs[kind])
        else:
            held = _getrefcount(layout.arena) != layout.arena_refs
            ops = self.s.ops
            for (j, k, i), v in zip(layout.kinds[kind], views):
                node = ops[k]
                on = (node.__dict__.get("value") if i is None else node.gradients.get(node.inputs[i])) is v
                held = held or _getrefcount(v) > 5 + on  # two lists, the zip's tuple, v, the argument: 5
        if held:
            layout.new_arena(layout.arena.copy())
            self.shown = None

    def _check(self, layout, kind):
        """The program's first values (V) or gradients (G) of a layout against the verified candidates' on the
        same leaves (its dry run): False, and the signature node by node from then on, where they differ."""
        from .verify import differs
        found = layout.values if kind == "V" else layout.grads
        for (j, k, i), v in zip(layout.kinds[kind], layout.by_kind[kind]):
            difference = differs(found[k] if i is None else found[k][i], v)
            if difference is not None:
                break
        else:
            difference = differs(layout.values[self.last], layout.loss_of(self.total)) if kind == "V" else None
        if difference is None:
            layout.unchecked.discard(kind)
            return True
        where = type(self.s.ops[k]).__name__
        sig = next(sig for sig, found in self.layouts.items() if found is layout)
        self.refused[sig] = (f"the program's {'value' if kind == 'V' else 'gradient'} of a {where} differs from "
                             f"the candidate's ({difference})")
        del self.layouts[sig]
        self.layout = None
        return False

    def _show(self, layout, kind):
        """Set the nodes' values (V) or gradient entries (G) to the program's arrays, where they are not."""
        views, ops = layout.views, self.s.ops
        for j, k, i in layout.kinds[kind]:
            node, v = ops[k], views[j]
            if i is None:
                if node.__dict__.get("value") is not v:
                    node.value = v
            else:
                gradients, inp = node.gradients, node.inputs[i]
                if gradients.get(inp) is not v:
                    gradients[inp] = v
        if kind == "G":
            self.shown = layout  # both kinds are the program's until a step runs node by node

    # the backward

    def backward(self, node, k):
        """An operation's backward() before the program's (the wrapper takes the calls after it): True when it
        starts the program's backward (at the loss, after a fused pass), False: node by node."""
        args = None
        if k == self.last and not self.eager and self.fresh and all(self.done):
            vals = [n.value for n in self.s.leaves]
            args = self.args if all(map(_is, vals, self.read)) and all(self.shares) else self._backward_args(vals)
        if args is None:  # the user's code or the candidate sets this node's gradients
            self.shown = None
            return False
        layout = self.layout
        views = layout.by_kind["G"]
        if (self.shown is not layout or _getrefcount(layout.arena) != layout.arena_refs
                or sum(map(_getrefcount, views)) != layout.view_refs["G"]):
            self._own(layout, "G")
        self._step(*args, layout.arena, layout.table, True)  # loaded: the forward ran
        if layout.unchecked and not self._check(layout, "G"):
            self.shown, self.fresh = None, False
            return False
        if self.shown is not layout:
            self._show(layout, "G")
        self.backed, self.back_count = self.count > 1, 1
        return True

    def _backward_args(self, vals):
        """The leaves as they are now (the user's backward reads them then), in the forward's signature; the
        forward's arguments serve when the leaves are the same arrays, and none was copied (it may be stale)."""
        if any(type(v) is not np.ndarray or v.dtype is not F64 or v.shape != r.shape
               for v, r in zip(vals, self.read)):
            return None
        return [v if v.ndim == 2 and v.flags.c_contiguous else np.ascontiguousarray(v).reshape(_2d(v.shape))
                for v in vals]


# ---- when to fuse ------------------------------------------------------------------------------------------

class Fuser:
    """The registry's fused graphs: `owners` maps an operation node's id to its Plan (the plan holds the node,
    so the id is not reused), and each loss's loop time until its program would pay."""

    def __init__(self, registry):
        self.registry = registry
        self.owners, self.plans, self.watches, self.refused = {}, [], {}, {}
        self.dropped = [0, 0]  # fused and node-by-node steps of plans dropped
        from ..fused import ENABLED
        self.enabled = ENABLED  # FASTEDF_FUSE=0: node by node

    def tick(self, loss):
        """A verified loss's node-by-node forward: count the loop's time; fuse its graph once it pays."""
        w = self.watches.get(id(loss))
        if w is None or w.ref() is not loss:  # new, or a dead loss's id reused
            if not self.enabled:
                return
            w = self._watch(loss)
        if w.off:  # fused, or failed
            return
        now = time.perf_counter()
        if w.last is not None and now - w.last < config.LOOP_GAP:
            w.spent += now - w.last
            w.steps += 1
        w.last = now
        if w.spent > w.wait:
            try:
                self._try(w, loss)
            except Unfusable as why:
                self.refused[w.name] = str(why)
                w.off = w.unfusable = True
                self._release(loss)
            except Refused as why:
                self.refused[w.name] = str(why)
                w.wait, w.retry = w.spent + w.retry, 2 * w.retry
            except Exception as error:  # noqa: BLE001  a program that does not compile: node by node
                w.off = True
                self.refused[w.name] = f"fastedf internal error: {type(error).__name__}: {error}"

    def unfusable(self, loss):
        """Whether `loss`'s graph was found unfusable."""
        w = self.watches.get(id(loss))
        return w is not None and w.unfusable and w.ref() is loss

    def keeps(self, cls, cut):
        """Whether a fused graph, or a watched one not found unfusable, has a node of class `cls` in the part a
        program runs (`cut`: _outside's)."""
        if any(type(n) is cls for plan in self.plans for n in plan.s.ops):
            return True
        for w in list(self.watches.values()):
            loss = w.ref()
            if loss is not None and not (w.off or cut(loss)) and any(type(n) is cls for n in _graph(loss, cut)[0]):
                return True
        return False

    def _release(self, loss):
        """The classes of an unfusable graph were kept accelerated for its program: each that node by node is
        no faster than the user's code, and that no other graph may fuse, is given back now, not at its next
        re-check."""
        if self.registry.eager:  # --explain and --check keep every class they verified
            return
        classes = {nc.cls: nc for nc in self.registry.classes}
        for node in _graph(loss, _outside(self.registry))[0]:
            nc = classes.get(type(node))
            if nc is not None and nc.state == "accelerated" and not nc.paying(node):
                nc.give_back("verified, but node by node no faster than the user's code")

    def _watch(self, loss):
        """A new _Watch for `loss`; the watches of losses that died go (a script may build a graph a step)."""
        if len(self.watches) >= MAX_WATCHES:
            self.watches = {key: v for key, v in self.watches.items() if v.ref() is not None}
        w = self.watches[id(loss)] = _Watch(loss)
        return w

    def _try(self, w, loss):
        s = Structure(self.registry, loss)
        share = _share(s, w)
        cost = fused.WARM_SECONDS + ("numba" not in sys.modules) * _numba_import_seconds()
        # What fusing could save, from the records: this graph's share of the time the script's whole last run
        # spent in its node methods, half of it.  When that repays the program twice over, no wait; when a part
        # of a graph cannot repay it, that part is not fused this run.  The ski-rental rule below is for what
        # is not known: a part waits until its own time repays the program
        ahead = share * self.registry.expected_total / 2
        known = ahead >= 2 * cost
        if share < 1.0 and not known:
            if self.registry.expected_total and ahead < cost:
                raise Unfusable(f"its part of each step ({share:.0%}) would not repay the program in this run "
                                "(the script's last run)")
            if w.spent * share < cost:  # nothing (not even Numba's import, in lowering) before its time repays it
                return _wait(w, w.spent, share, cost)
        source = _lowered(s, [n.value for n in s.leaves])
        if w.program is None:
            w.program = fused._programs.get(source) or fused._programs.setdefault(source, fused.StepProgram(source))
        if not w.program.cached():
            # A compile repays only loops that long; the structure's loops in this process and in earlier runs
            # of it count (a script run again and again compiles once)
            spent = sum(v.spent for v in self.watches.values() if v.program is w.program) + records.earlier("program:" + w.program.name)
            if spent * share < fused.COLD_SECONDS:
                return _wait(w, spent, share, fused.COLD_SECONDS)
        elif w.program._step is None and not known and w.spent * share < fused.WARM_SECONDS:
            # a program loaded costs nothing more; its load does (Numba is in, lowering imported it)
            return _wait(w, w.spent, share, fused.WARM_SECONDS)
        plan = Plan(self, s, w.program)
        w.off = True  # the plan has it (a watch holds no plan: the plan holds the graph)
        if len(self.plans) >= MAX_PLANS:  # a plan holds its graph: the oldest goes node by node, and may go
            self.drop(self.plans[0])
        self.plans.append(plan)
        for k, node in enumerate(s.ops):
            self.owners[id(node)] = (plan, k, s.direct[k], s.cut_direct[k])
        self.refused.pop(w.name, None)

    def finish(self):
        """Add this process's loop time to each unfused structure's record, for the runs that follow."""
        spent = {}
        for w in self.watches.values():
            if w.program is not None and not w.program.cached():
                key = "program:" + w.program.name
                spent[key] = spent.get(key, 0.0) + w.spent
        records.remember(spent, accumulate=spent)

    def fused_calls(self, nc):
        """How many forward (or backward) calls of the class's nodes the programs ran."""
        return sum((p.steps - p.node_steps) * sum(c is nc for c in p.s.classes) for p in self.plans)

    def drop(self, plan):
        """The plan's graph runs node by node from now on (its counts stay in the report's totals)."""
        for node in plan.s.ops:
            if self.owners.get(id(node), (None,))[0] is plan:
                del self.owners[id(node)]
        self.plans.remove(plan)
        self.dropped[0] += plan.steps - plan.node_steps
        self.dropped[1] += plan.node_steps

    def plan_alive(self, plan):
        """False (and the plan dropped) once a class of its graph is no longer accelerated."""
        if plan.generation == self.registry.generation:
            return True
        if all(nc.state == "accelerated" for nc in plan.s.classes):
            plan.generation = self.registry.generation
            return True
        self.drop(plan)
        return False

    def steps(self):
        """(fused steps, node-by-node steps) of every plan."""
        return (self.dropped[0] + sum(p.steps - p.node_steps for p in self.plans),
                self.dropped[1] + sum(p.node_steps for p in self.plans))


def _wait(w, spent, share, cost):
    """Look at the graph again once its share of the loop's time (`spent` so far, counting earlier runs where
    they count) has reached `cost`."""
    w.wait = w.spent + (cost - spent * share) / share


def _share(s, w):
    """The part of the loop's time the program can take over: 1 for a whole graph; for a graph with cut nodes,
    its operations' share of the loop's steps (their user's code, as timed on verified calls, against the loop's
    time per step), so that a program running a small part of a long step waits until that part repays it."""
    if not w.steps or not any(n.inputs for n in s.leaves):
        return 1.0
    from .nodes import median
    per_step = 0.0
    for nc in s.classes:
        user = median(nc.user_times)
        if user is None:
            return 1.0
        per_step += 2 * user
    return max(min(1.0, per_step * w.steps / w.spent), 1e-3)


def _numba_import_seconds():
    from .nodes import NUMBA_IMPORT_SECONDS
    return NUMBA_IMPORT_SECONDS


class _Watch:
    """A loss's loop time (held weakly: a watch keeps no graph alive)."""

    def __init__(self, loss):
        try:
            self.ref = weakref.ref(loss)
        except TypeError:  # a class with __slots__ and no __weakref__: the watch holds it
            self.ref = lambda: loss
        self.name = f"{type(loss).__module__}.{type(loss).__qualname__}"
        self.last, self.spent, self.wait, self.retry = None, 0.0, 0.0, fused.RETRY_SECONDS
        self.steps = 0  # the loop's steps counted in `spent`
        self.program = None
        self.off = self.unfusable = False


def _lowered(s, vals):
    """The step program's source for the structure (its leaves' values giving the shapes); raises Refused."""
    layout = Layout(s, vals)
    names = {}
    for n, (kind, k, i, _) in enumerate(layout.shapes):
        names[kind, k, i] = f"B{n}"
    leaf = {id(n): f"L{j}" for j, n in enumerate(s.leaves)}
    lowered = []
    for k, node in enumerate(s.ops):
        c = s.classes[k].match.candidate
        ins = [leaf[id(n)] if id(n) in leaf else names["V", s.place[id(n)], None] for n in node.inputs]
        shapes = [np.shape(vals[s.leaf_place[id(n)]] if id(n) in leaf else layout.values[s.place[id(n)]])
                  for n in node.inputs]
        up = s.upstream[k]
        g = None if up is None else names["G", up[0], up[1]]
        grads = {i: names["G", k, i] for i in s.classes[k].match.keys}
        lowered.append(LOWER[c.op](c, ins, names.get(("V", k, None)), g, grads, shapes))
    return _source(s.ops, s.leaves, lowered, [f"B{n}" for n in range(len(layout.shapes))])
