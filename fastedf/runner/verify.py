"""Comparing the user's results with a candidate's, watching the user's calls, and probing scratch copies.

Values agree when they have the same type, shape and dtype and every element
is within 1e-12 relative (NaN where the other is NaN, the same infinities);
the tolerance also allows 1e-12 of the array's largest magnitude, so that
sums which cancel (a bias gradient) are not failed for their last bits.
"""
import contextlib
import io
import sys
import warnings

import numpy as np

F64 = np.dtype(np.float64)  # fastedf.node's, whose module `fastedf run` does not need at start-up

RTOL = 1e-12


def signature(value):
    """What a verified call is guarded by: an array's shape and dtype, or a scalar's type."""
    if type(value) is np.ndarray:
        return value.shape if value.dtype is F64 else (value.shape, value.dtype.char)
    return type(value)


def differs(user, mine):
    """None when `mine` equals the user's result (see the module's tolerance), else the first difference."""
    if type(user) is not type(mine):
        return f"gives a {type(mine).__name__} where the user's code gives a {type(user).__name__}"
    if not isinstance(user, (np.ndarray, np.generic, float, int, complex)):
        return None if user is mine or user == mine else f"gives {mine!r} where the user's code gives {user!r}"
    a, b = np.asarray(user), np.asarray(mine)
    if a.shape != b.shape:
        return f"gives shape {b.shape} where the user's code gives {a.shape}"
    if a.dtype != b.dtype:
        return f"gives dtype {b.dtype} where the user's code gives {a.dtype}"
    if a.dtype.kind not in "fc":
        bad = np.flatnonzero(a != b)
    else:
        with np.errstate(all="ignore"):
            finite = np.isfinite(a)
            scale = np.max(np.abs(a[finite]), initial=0.0)
            close = (a == b) | (np.abs(a - b) <= RTOL * (np.abs(a) + scale)) | (np.isnan(a) & np.isnan(b))
        bad = np.flatnonzero(~close)
    if not len(bad):
        return None
    at = np.unravel_index(bad[0], a.shape) if a.ndim else ()
    where = f" at {tuple(int(i) for i in at)}" if a.ndim else ""
    return f"gives {b[at]!r}{where} where the user's code gives {a[at]!r}"


def form_of(user):
    """How a scalar-like result is returned: the conversion that gives a candidate's result the user's type."""
    kind = type(user)
    if kind is float:
        return lambda v: v if type(v) is float else float(np.asarray(v).reshape(()))
    if kind is np.float64:
        return lambda v: v if type(v) is np.float64 else np.float64(np.asarray(v).reshape(()))
    if kind is np.ndarray and user.size == 1:
        shape, dtype = user.shape, user.dtype
        return lambda v: v if type(v) is np.ndarray and v.shape == shape else np.asarray(v, dtype).reshape(shape)
    return None


class _Tee(io.TextIOBase):
    """stdout while the user's node code runs for real: passed on unchanged, and noticed."""

    def __init__(self, target):
        self.target, self.wrote = target, False

    def write(self, text):
        self.wrote = self.wrote or bool(text)
        return self.target.write(text)

    def flush(self):
        self.target.flush()


def generators(*namespaces):
    """The NumPy random generators held in these namespaces (a node's attributes, its module's globals)."""
    found = []
    for space in namespaces:
        for value in list(space.values()):
            if isinstance(value, (np.random.Generator, np.random.RandomState)):
                found.append(value)
    return found


def _rng_states(gens):
    state = np.random.get_state()
    return [state[1].copy(), state[2:]] + [_state_of(g) for g in gens]


def _state_of(gen):
    return repr(gen.bit_generator.state if isinstance(gen, np.random.Generator) else gen.get_state(legacy=False))


class Watch:
    """Around a real call of the user's method: did it print, draw random numbers or change other attributes?"""

    def __init__(self, node, gens):
        self.node, self.gens = node, gens

    def __enter__(self):
        attrs = vars(self.node)
        self.before = {k: v for k, v in attrs.items() if k not in ("value", "gradients")}
        self.arrays = {k: v.copy() for k, v in self.before.items() if type(v) is np.ndarray}
        self.rng = _rng_states(self.gens)
        self.stdout, self.tee = sys.stdout, _Tee(sys.stdout)
        sys.stdout = self.tee
        return self

    def __exit__(self, *exc):
        sys.stdout = self.stdout
        after = {k: v for k, v in vars(self.node).items() if k not in ("value", "gradients")}
        self.changed = sorted(k for k, v in after.items() if k not in self.before or v is not self.before[k]
                              or (k in self.arrays and not np.array_equal(v, self.arrays[k], equal_nan=True)))
        self.printed = self.tee.wrote
        now = _rng_states(self.gens)
        self.random = not (np.array_equal(now[0], self.rng[0]) and now[1:] == self.rng[1:])
        return False


@contextlib.contextmanager
def quiet(gens):
    """For code run on probes: no output, no warnings, the random generators' states put back afterwards."""
    saved, states = np.random.get_state(), [(g, g.bit_generator.state if isinstance(g, np.random.Generator)
                                             else g.get_state()) for g in gens]
    stdout, captured = sys.stdout, io.StringIO()
    sys.stdout = captured
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        sys.stdout = stdout
        np.random.set_state(saved)
        for g, state in states:
            if isinstance(g, np.random.Generator):
                g.bit_generator.state = state
            else:
                g.set_state(state)


class StandIn:
    """An input or consumer of a scratch node: the protocol's attributes only."""

    def __init__(self, value=None):
        self.value, self.inputs, self.outputs, self.gradients = value, [], [], {}


def _stand_in_like(real, value):
    """A stand-in of the real input's own class (isinstance checks still hold), or a plain one."""
    try:
        stand = object.__new__(type(real))
        vars(stand).update(value=value, inputs=[], outputs=[], gradients={})
        return stand
    except (TypeError, AttributeError):
        return StandIn(value)


def scratch(node, values, consumers):
    """A copy of `node` wired to stand-in inputs holding `values` and `consumers` stand-in consumers.

    The user's real nodes, arrays and generators are not touched by its calls
    (arrays among its attributes are copies; references to its inputs are
    the stand-ins).  Returns (copy, stand-ins, consumer stand-ins).
    """
    stands = [_stand_in_like(real, value) for real, value in zip(node.inputs, values)]
    swap = {id(real): stand for real, stand in zip(node.inputs, stands)}

    def copied(v):
        if id(v) in swap:
            return swap[id(v)]
        if type(v) is np.ndarray:
            return v.copy()
        if type(v) in (list, tuple):
            return type(v)(copied(x) for x in v)
        return v

    copy = object.__new__(type(node))
    vars(copy).update({k: copied(v) for k, v in vars(node).items()})
    copy.inputs, copy.gradients = stands, {}
    outs = [StandIn() for _ in range(consumers)]
    copy.outputs = outs
    for stand in stands:
        stand.outputs = [copy]
    return copy, stands, outs


def attributes(node):
    """A node's attributes other than its protocol ones, arrays copied: what a replay compares."""
    return {k: (v.copy() if type(v) is np.ndarray else v) for k, v in vars(node).items()
            if k not in ("value", "gradients", "inputs", "outputs")}


def same_attributes(a, b):
    if a.keys() != b.keys():
        return False
    for k, v in a.items():
        w = b[k]
        if type(v) is np.ndarray or type(w) is np.ndarray:
            if not (type(v) is type(w) and v.shape == w.shape and np.array_equal(v, w, equal_nan=True)):
                return False
        elif isinstance(v, (int, float, str, bool, type(None), np.generic)) and not (v == w or v != v and w != w):
            return False
    return True
